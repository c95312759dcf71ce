"""Make sure an admin can log in, and print the login.

The password comes from MERGEABLE_ADMIN_PASSWORD, else one is generated on first use and kept in
var/admin-password (readable only by its owner) so that every `make run` prints the same login.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from evalsite.roles import ADMIN, set_role


class Command(BaseCommand):
    help = "Create the admin user if missing and print its login."

    def handle(self, *args, **options) -> None:
        username = os.getenv("MERGEABLE_ADMIN_USER", "admin")
        password = os.getenv("MERGEABLE_ADMIN_PASSWORD") or self._stored_password()
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_user(username=username, password=password)
        elif not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
        set_role(user, ADMIN)
        self.stdout.write("")
        self.stdout.write("  Mergeable login:  " + self.style.SUCCESS(f"{username} / {password}"))
        self.stdout.write("")

    def _stored_password(self) -> str:
        path = settings.VAR_DIR / "admin-password"
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(password + "\n")
        return password

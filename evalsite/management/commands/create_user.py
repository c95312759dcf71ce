from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from evalsite.roles import ROLES, set_role


class Command(BaseCommand):
    help = "Create a user with a role (scorer, lead or admin). Prints a generated password."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=ROLES)
        parser.add_argument("--email", default="")
        parser.add_argument("--password", help="default: a generated one, printed once")

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        username = options["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise CommandError(f"A user named {username!r} already exists.")
        password = options["password"] or secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.create_user(
                username=username, email=options["email"], password=password
            )
            set_role(user, options["role"])
        shown = "" if options["password"] else f" with password {password}"
        self.stdout.write(f"Created {username} ({options['role']}){shown}")

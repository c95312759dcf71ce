from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction
from django.db.models.functions import Cast

from evalsite.fields import DecryptionError, rotate
from runs.models import LanguageModel


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored API key with the newest key in MERGEABLE_ENCRYPTION_KEYS "
        "(the first). Run after prepending a new key; then the old key can be removed."
    )

    def handle(self, *args, **options) -> None:
        with transaction.atomic():
            # The raw column: a plain-text cast skips the field's decryption on the way out.
            rows = (
                LanguageModel.objects.select_for_update()
                .exclude(api_key="")
                .annotate(token=Cast("api_key", models.TextField()))
                .values_list("pk", "name", "token")
                .order_by("pk")
            )
            rotated: list[tuple[int, str]] = []
            unreadable: list[str] = []
            for pk, name, token in rows:
                try:
                    rotated.append((pk, rotate(token)))
                except DecryptionError:
                    unreadable.append(name)
            if unreadable:
                # All or nothing: a half-rotated table would leave keys only the old key opens.
                raise CommandError(
                    "No key was rotated: no key in MERGEABLE_ENCRYPTION_KEYS decrypts the API key "
                    f"of model(s): {', '.join(unreadable)}"
                )
            for pk, token in rotated:
                # A Value with a plain output field is written as is; the field would encrypt again.
                LanguageModel.objects.filter(pk=pk).update(
                    api_key=models.Value(token, output_field=models.TextField())
                )
        self.stdout.write(f"Rotated {len(rotated)} API key(s) to the newest encryption key.")

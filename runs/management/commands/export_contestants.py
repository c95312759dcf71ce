from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.files.contestants import export_contestants
from runs.models import Contestant


class Command(BaseCommand):
    help = (
        "Print contestants and their models as a contestants YAML file (default: every active "
        "one). API keys are never included; api_key_env is."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="contestant names (default: all active)")

    def handle(self, *args, **options) -> None:
        names = options["names"]
        contestants = None
        if names:
            contestants = list(Contestant.objects.filter(name__in=names).select_related("model"))
            missing = sorted(set(names) - {c.name for c in contestants})
            if missing:
                raise CommandError(f"No contestant is named: {', '.join(missing)}")
        self.stdout.write(export_contestants(contestants), ending="")

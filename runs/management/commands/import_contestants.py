from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from runs.files.contestants import import_contestants
from runs.files.strict import FormatError


class Command(BaseCommand):
    help = "Create or update models and contestants from a contestants YAML file."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="a contestants file (see FORMATS.md)")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from None
        try:
            # Script paths in the file are relative to the file, wherever it is run from.
            report = import_contestants(text, filename=str(path), base_dir=path.parent.resolve())
        except FormatError as exc:
            raise CommandError(f"Nothing was imported.\n{exc}") from None
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(f"Imported {path}: {report.summary()}")

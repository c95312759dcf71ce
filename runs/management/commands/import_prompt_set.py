from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from runs.files.prompt_sets import import_prompt_set
from runs.files.strict import FormatError


class Command(BaseCommand):
    help = "Create or update a prompt set from a prompt-set YAML file; prints what changed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", help="a prompt-set file (see FORMATS.md)")

    def handle(self, *args, **options) -> None:
        path = Path(options["file"])
        text = _read(path)
        try:
            report = import_prompt_set(text, filename=str(path))
        except FormatError as exc:
            raise CommandError(f"Nothing was imported.\n{exc}") from None
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(f"Imported {path}: {report.summary()}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"Cannot read {path}: {exc}") from None

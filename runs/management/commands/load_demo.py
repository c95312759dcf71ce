from __future__ import annotations

from django.core.management.base import BaseCommand

from runs import demo


class Command(BaseCommand):
    help = "Load the demo repository, prompt set and scripted contestants (idempotent)."

    def handle(self, *args, **options) -> None:
        for line in demo.load():
            self.stdout.write(line)

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from runs.files.prompt_sets import export_prompt_set
from runs.models import PromptSet


class Command(BaseCommand):
    help = "Print a prompt set as a prompt-set YAML file (importing it again changes nothing)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="the prompt set's name")

    def handle(self, *args, **options) -> None:
        name = options["name"]
        prompt_set = PromptSet.objects.filter(name=name).first()
        if prompt_set is None:
            known = ", ".join(PromptSet.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"No prompt set is named {name!r}. Prompt sets: {known}")
        self.stdout.write(export_prompt_set(prompt_set), ending="")

"""import_run: bring a run produced elsewhere (a patch or a branch) into Mergeable."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from runs import imports
from runs.models import Prompt, Run


class Command(BaseCommand):
    help = (
        "Import a change an agent made elsewhere as a run: applied at the prompt's commit, "
        "tested, stored with its transcript. Prints 'Run N (imported): finished|failed'."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prompt-set", required=True)
        parser.add_argument("--prompt", required=True, help="the prompt's key in the set")
        parser.add_argument("--contestant", required=True, help="created if it does not exist")
        parser.add_argument(
            "--campaign", default="", help=f"default: {imports.DEFAULT_CAMPAIGN_NAME!r}"
        )
        change = parser.add_mutually_exclusive_group(required=True)
        change.add_argument("--patch", type=Path, help="a unified diff file")
        change.add_argument("--branch", help="a branch of the prompt's repository")
        parser.add_argument(
            "--transcript",
            type=Path,
            action="append",
            default=[],
            help="a transcript file; repeat for Roo Code's two task files",
        )

    def handle(self, *args, **options) -> None:
        prompt = (
            Prompt.objects.select_related("prompt_set", "repository")
            .filter(prompt_set__name=options["prompt_set"], key=options["prompt"])
            .first()
        )
        if prompt is None:
            raise CommandError(
                f"No prompt {options['prompt']!r} in a prompt set named {options['prompt_set']!r}"
            )
        patch = None
        if options["patch"] is not None:
            patch = _read(options["patch"]).decode("utf-8", "surrogateescape")
        transcript_name, transcript_text, extra_files = "", None, {}
        if options["transcript"]:
            files = {
                path.name: _read(path).decode("utf-8", "replace") for path in options["transcript"]
            }
            try:
                transcript_name, transcript_text, extra_files = imports.split_transcript_files(
                    files
                )
            except imports.ImportProblem as exc:
                raise CommandError(str(exc)) from None
        try:
            run = imports.import_run(
                campaign_name=options["campaign"],
                prompt=prompt,
                contestant_name=options["contestant"],
                patch=patch,
                branch=options["branch"],
                transcript_text=transcript_text,
                transcript_filename=transcript_name,
                extra_files=extra_files,
            )
        except imports.ImportProblem as exc:
            raise CommandError(str(exc)) from None
        outcome = "failed" if run.status == Run.FAILED else "finished"
        self.stdout.write(f"Run {run.pk} (imported): {outcome}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from None

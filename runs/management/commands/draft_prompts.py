from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from runs import drafts
from runs.models import Repository


class Command(BaseCommand):
    help = (
        "List the changes of a repository's history that change both code and tests (merges, "
        "or single commits on the branch); with --draft, draft prompts from some of them and "
        "queue their proofs (with --prove-now, prove them here instead)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--repository", required=True, help="the repository's name")
        parser.add_argument("--since", default="", help="only changes after this date (2024-01-31)")
        parser.add_argument("--branch", default="", help="default: the repository's default branch")
        parser.add_argument("--paths", default="", help="a glob one of the change's files matches")
        parser.add_argument("--limit", type=int, default=None, help="at most this many candidates")
        parser.add_argument("--json", action="store_true", help="one JSON object per candidate")
        parser.add_argument(
            "--draft",
            nargs="*",
            metavar="SHA",
            help="draft these candidates (all those listed when no sha is given)",
        )
        parser.add_argument(
            "--prove-now", action="store_true", help="prove the drafts in this process"
        )

    def handle(self, *args, **options) -> None:
        repository = Repository.objects.filter(name=options["repository"]).first()
        if repository is None:
            names = ", ".join(Repository.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No repository {options['repository']!r} (repositories: {names}).")
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be a positive number.")
        try:
            found = drafts.candidates(
                repository,
                branch=options["branch"],
                since=options["since"],
                paths=options["paths"],
                limit=options["limit"],
            )
        except drafts.DraftingError as exc:
            raise CommandError(str(exc)) from None
        for candidate in found:
            self.stdout.write(_line(candidate, as_json=options["json"]))
        if not options["json"]:
            self.stdout.write(f"{len(found)} candidate(s) in {repository.name}.")
        if options["draft"] is None:
            return
        wanted = options["draft"] or [candidate.sha for candidate in found]
        for sha in wanted:
            try:
                draft = drafts.draft_from_candidate(
                    repository, sha, queue_proof=not options["prove_now"]
                )
            except drafts.DraftingError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"Drafted {draft.commit[:12]}: {draft.title}")
            if options["prove_now"]:
                status = drafts.prove_draft(draft.pk)
                draft.refresh_from_db()
                reason = draft.proof.get("reason", "")
                self.stdout.write(f"  {status}: {reason}")


def _line(candidate: drafts.Candidate, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(candidate.as_dict())
    kind = "merge " if candidate.is_merge else ""
    return (
        f"{candidate.sha[:12]}  {candidate.author_date:%Y-%m-%d}  {kind}{candidate.subject}\n"
        f"    {len(candidate.files)} file(s), +{candidate.additions} -{candidate.deletions}; "
        f"tests: {', '.join(candidate.tests)}"
    )

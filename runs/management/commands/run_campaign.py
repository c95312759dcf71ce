"""run_campaign: launch a campaign from the command line (FORMATS.md), optionally waiting."""

from __future__ import annotations

import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from runs import campaigns, execution
from runs.models import Contestant, PromptSet, Run


class Command(BaseCommand):
    help = "Launch a campaign: a prompt set × contestants × repeats. Prints 'Campaign N'."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prompt-set", required=True)
        parser.add_argument("--contestants", required=True, help="comma-separated names")
        parser.add_argument("--repeats", type=int, default=1)
        parser.add_argument("--name", default="")
        parser.add_argument("--budget", type=float, default=None, help="USD")
        parser.add_argument(
            "--wait", action="store_true", help="show progress until every run ends"
        )

    def handle(self, *args, **options) -> None:
        prompt_set = PromptSet.objects.filter(name=options["prompt_set"]).first()
        if prompt_set is None:
            raise CommandError(f"No prompt set named {options['prompt_set']!r}")
        names = [n.strip() for n in options["contestants"].split(",") if n.strip()]
        found = {c.name: c for c in Contestant.objects.filter(name__in=names)}
        missing = [n for n in names if n not in found]
        if missing:
            raise CommandError(f"Unknown contestants: {', '.join(missing)}")
        try:
            campaign = campaigns.launch(
                prompt_set=prompt_set,
                contestants=[found[n] for n in names],
                repeats=options["repeats"],
                name=options["name"],
                budget_usd=options["budget"],
            )
        except campaigns.LaunchError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Campaign {campaign.pk}")
        if not options["wait"]:
            return
        errored = self._wait(campaign)
        if errored:
            self.stderr.write(f"{errored} run{'s' if errored != 1 else ''} errored")
            sys.exit(1)

    def _wait(self, campaign) -> int:
        while True:
            if settings.EMBEDDED_QUEUE:
                # With the embedded queue there may be no worker: execute queued runs here. The
                # claim is a conditional UPDATE, so a worker that is running never runs one twice.
                for run_id in campaign.runs.filter(status=Run.QUEUED).values_list("id", flat=True):
                    execution.execute(run_id)
                    self._progress(campaign)
            progress = campaign.progress()
            self._progress(campaign, progress)
            if progress["ended"] >= progress["total"]:
                self.stdout.write("")
                return progress["counts"].get(Run.ERRORED, 0)
            time.sleep(1.0)

    def _progress(self, campaign, progress=None) -> None:
        progress = progress or campaign.progress()
        total, ended = progress["total"], progress["ended"]
        width = 30
        filled = int(width * ended / total) if total else width
        counts = ", ".join(f"{n} {s}" for s, n in sorted(progress["counts"].items()))
        self.stdout.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} ended  ({counts})",
            ending="",
        )
        self.stdout.flush()

"""Recount the leaderboards' stored aggregates: `rebuild_aggregates [--check]`.

Run it after writing reviews, adjudications or votes in bulk (`bulk_create`, `.update()`), which
bypasses the upkeep in their `save` methods. With --check it only reports what has drifted.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from scoring.leaderboard import invalidate
from scoring.models import rebuild_aggregates, tally_drift


class Command(BaseCommand):
    help = "Recount every run's review tally and the pairwise vote tallies from scratch."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Compare the stored tallies with a recount, change nothing; exit 1 on drift.",
        )

    def handle(self, *args, check: bool, **options) -> None:
        if check:
            drifted = tally_drift()
            if drifted:
                raise CommandError(
                    f"{len(drifted)} tallies differ from a recount, e.g. {drifted[:5]}; "
                    "run rebuild_aggregates to repair them."
                )
            self.stdout.write("The stored tallies match a recount.")
            return
        written = rebuild_aggregates()
        invalidate(None)
        self.stdout.write(
            f"Recounted {written['run_tallies']} run tallies and {written['vote_tallies']} "
            "vote tallies."
        )

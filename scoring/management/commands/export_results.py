"""Write a campaign's results to stdout: `export_results CAMPAIGN_ID [--format json|csv]`."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from runs.models import Campaign
from scoring import exports


class Command(BaseCommand):
    help = "Print a campaign's runs, reviews, comparisons and leaderboard as JSON or CSV."

    def add_arguments(self, parser) -> None:
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("--format", choices=["json", "csv"], default="json")
        parser.add_argument(
            "--transcripts",
            action="store_true",
            help="Include each run's transcript (JSON only; can be large).",
        )

    def handle(self, *args, campaign_id: int, format: str, transcripts: bool, **options) -> None:
        campaign = Campaign.objects.select_related("prompt_set").filter(pk=campaign_id).first()
        if campaign is None:
            raise CommandError(f"No campaign with id {campaign_id}.")
        if format == "csv":
            if transcripts:
                raise CommandError("--transcripts only applies to --format json.")
            self.stdout.write(exports.results_csv(campaign), ending="")
            return
        data = exports.results(campaign, transcripts=transcripts)
        self.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str))

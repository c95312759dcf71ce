"""A lead settles a run whose reviewers disagree: a final verdict and a note saying why."""

from __future__ import annotations

from django.utils import timezone

from runs.models import Run
from scoring.models import Adjudication


def adjudicate(run: Run, lead, verdict: str, note: str) -> Adjudication:
    """Record (or replace) the lead's final verdict on `run`. The leaderboard uses it in place
    of the reviews' verdicts from the next request on (saving tells the cache)."""
    adjudication, _ = Adjudication.objects.update_or_create(
        run=run,
        defaults={
            "verdict": verdict,
            "note": note,
            "decided_by": lead,
            "decided_at": timezone.now(),
        },
    )
    return adjudication

"""The dashboard: what is running, what waits for the user, and standings for leads only."""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from runs.models import Run
from scoring.models import Review
from tests.world import build_world


def test_it_shows_standings_to_leads_and_never_to_scorers(client_for, scorer, lead):
    world = build_world(lead)  # alpha's run has lead's review
    Review.objects.create(
        run=world["runs"][1], reviewer=lead, verdict="no", submitted_at=timezone.now()
    )

    for_lead = client_for(lead).get(reverse("dashboard")).content.decode()
    for_scorer = client_for(scorer).get(reverse("dashboard")).content.decode()

    assert "Latest leaderboard" in for_lead and "alpha" in for_lead and "beta" in for_lead
    assert "Latest leaderboard" not in for_scorer
    assert "alpha" not in for_scorer and "beta" not in for_scorer


def test_it_lists_running_work_without_run_ids_for_scorers(client_for, scorer, lead):
    world = build_world(lead)
    run = world["runs"][1]
    Run.objects.filter(pk=run.pk).update(
        status=Run.AWAITING_ANSWER, questions=[{"question": "Which file?", "answer": None}]
    )

    for_scorer = client_for(scorer).get(reverse("dashboard")).content.decode()

    assert reverse("runs:blind_run", args=[run.review_key]) in for_scorer
    assert (
        f"Run {run.pk}" not in for_scorer and reverse("runs:run", args=[run.pk]) not in for_scorer
    )

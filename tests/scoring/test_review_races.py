"""Reviews written at the same moment, on PostgreSQL: every writer of a run's reviews locks the
run's row first, so a draft racing its own submit, or two scorers racing for a run's last place,
end as if one came after the other."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from runs.models import Campaign
from scoring import queue, reviews
from scoring.models import Review
from tests.scoring.test_review import ANSWERS, make_contestant, make_prompt, make_run

pytestmark = [pytest.mark.services_only, pytest.mark.django_db(transaction=True)]

ROUNDS = 12


def at_once(*calls) -> list:
    """Run each call on its own thread and connection, all released together; what each
    returned or raised."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            start.wait()
            results[index] = call()
        except Exception as exc:  # the race's loser may raise; the test says which is allowed
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.fixture
def runs_to_review():
    # services_only: run by the PostgreSQL pass, left out of the SQLite one (tests/conftest.py).
    prompt = make_prompt()
    first = make_run(prompt, make_contestant("agent-0", "model-0"))
    return [first] + [
        make_run(prompt, make_contestant(f"agent-{n}", f"model-{n}"), campaign=first.campaign)
        for n in range(1, ROUNDS)
    ]


def test_a_draft_saved_as_its_review_is_submitted_neither_fails_nor_unsubmits_it(runs_to_review):
    scorer = get_user_model().objects.create_user("racer")
    for run in runs_to_review:
        results = at_once(
            lambda run=run: reviews.save_draft(run, scorer, {"answers": {"right_files": "no"}}),
            lambda run=run: reviews.submit_review(run, scorer, ANSWERS, "", "", [], 5),
        )
        assert not [r for r in results if isinstance(r, Exception)], results
        review = Review.objects.get(run=run, reviewer=scorer)
        assert review.is_submitted and review.answers["right_files"] == ANSWERS["right_files"]


def test_two_scorers_submitting_a_run_s_last_place_at_once_get_one_review_in(runs_to_review):
    Campaign.objects.filter(pk=runs_to_review[0].campaign_id).update(reviews_wanted=1)
    users = get_user_model().objects
    first, second = users.create_user("first"), users.create_user("second")
    for run in runs_to_review:
        results = at_once(
            lambda run=run: reviews.submit_review(run, first, ANSWERS, "", "", [], 5),
            lambda run=run: reviews.submit_review(run, second, ANSWERS, "", "", [], 5),
        )
        refused = [r for r in results if isinstance(r, queue.NoPlaceLeft)]
        assert len(refused) == 1 and len([r for r in results if isinstance(r, Review)]) == 1
        assert Review.objects.filter(run=run, submitted_at__isnull=False).count() == 1

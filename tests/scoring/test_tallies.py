"""The tallies the leaderboards read (RunTally, VoteTally) never drift from the reviews,
adjudications and votes they count, and rebuild_aggregates repairs them when they do."""

from __future__ import annotations

import random
from itertools import product

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.db.models import F

from evalsite.roles import SCORER, set_role
from runs.models import Campaign, Run
from scoring import adjudications, leaderboard, pairing, reviews
from scoring.leaderboard import Filters
from scoring.leaderboard.filters import COUNT, EXCLUDE, MAJORITY, MEAN
from scoring.leaderboard.verdicts import run_values
from scoring.models import (
    Adjudication,
    Comparison,
    Review,
    ReviewVersion,
    RunTally,
    VoteTally,
    rebuild_aggregates,
    tally_drift,
)
from tests.scoring.test_review import ANSWERS, make_contestant, make_prompt, make_run


def _scorer(name: str):
    user = get_user_model().objects.create_user(username=name)
    set_role(user, SCORER)
    return user


def _answers(rng: random.Random, verdict: str) -> dict:
    return {
        "right_files": rng.choice(["yes", "no"]),
        "conventions": str(rng.randint(1, 5)),
        "recovered": rng.choice(["yes", "no"]),
        "merge": verdict,
    }


@pytest.fixture
def campaign_world(db, lead):
    """Two prompts (one with acceptance criteria) run by three contestants, twice each, with
    reviews, re-submitted reviews, drafts, adjudications and votes made the way the app
    makes them, and a few of them taken back."""
    rng = random.Random(3)
    prompts = [
        make_prompt(key="first", acceptance_criteria=["Adds it", "Tests it"]),
        make_prompt(key="second", acceptance_criteria=[]),
    ]
    contestants = [make_contestant(f"agent-{n}", f"model-{n}") for n in range(3)]
    campaign = Campaign.objects.create(
        name="March", prompt_set=prompts[0].prompt_set, reviews_wanted=3
    )
    runs = [
        make_run(prompt, contestant, campaign=campaign)
        for prompt in prompts
        for contestant in contestants
        for _ in range(2)
    ]
    scorers = [_scorer(f"scorer-{n}") for n in range(4)]
    verdicts = ["yes", "small_changes", "no"]
    for run in runs:
        for scorer in rng.sample(scorers, rng.randint(0, 3)):
            verdict = rng.choice(verdicts)
            reviews.submit_review(
                run, scorer, _answers(rng, verdict), verdict, "", [], 30, acceptance=[1]
            )
    # A reviewer changes their mind (a new version), another only saves a draft.
    changed = Review.objects.submitted().order_by("id").first()
    reviews.submit_review(
        changed.run, changed.reviewer, dict(ANSWERS, merge="no"), "no", "on second thought",
        [], 40, acceptance=[1, 2],
    )  # fmt: skip
    assert ReviewVersion.objects.filter(review=changed).exists()
    unreviewed = next(run for run in runs if not run.reviews.exists())
    reviews.save_draft(unreviewed, scorers[0], {"answers": ANSWERS, "verdict": "yes"})
    # A lead settles two runs, then changes one verdict and withdraws the other.
    disputed = [run for run in runs if run.reviews.submitted().count() >= 2][:2]
    for run in disputed:
        adjudications.adjudicate(run, lead, "yes", "Settled.")
    adjudications.adjudicate(disputed[0], lead, "no", "Looked again.")
    disputed[1].adjudication.delete()
    # Votes through pairwise mode, one of them deleted afterwards.
    for scorer in scorers[:3]:
        for _ in range(4):
            comparison = pairing.next_comparison_for(scorer, rng=rng)
            if comparison is not None:
                pairing.record_vote(comparison, rng.choice(["left", "right", "tie", "both_bad"]))
    Comparison.objects.filter(outcome__gt="").order_by("id").first().delete()
    # A review is deleted, and a scorer's account with everything they did.
    Review.objects.submitted().order_by("-id").first().delete()
    scorers[3].delete()
    return {"campaign": campaign, "runs": runs, "scorers": scorers[:3], "lead": lead}


def test_it_keeps_every_tally_equal_to_a_recount_through_the_apps_own_writes(campaign_world):
    assert RunTally.objects.exists() and VoteTally.objects.exists()
    assert tally_drift() == []


def test_it_counts_what_a_run_tally_says(campaign_world):
    run = next(r for r in campaign_world["runs"] if r.reviews.submitted().count() >= 2)
    submitted = list(run.reviews.submitted().order_by("reviewer_id"))
    tally = RunTally.objects.get(run=run)

    assert tally.reviews == len(submitted)
    assert (tally.yes, tally.small_changes, tally.no) == tuple(
        sum(1 for r in submitted if r.verdict == v) for v in ("yes", "small_changes", "no")
    )
    assert tally.verdicts == " ".join(f"{r.reviewer_id}:{r.verdict}" for r in submitted)


def test_it_counts_answers_ticked_criteria_and_adjudications_from_what_was_written(
    campaign_world,
):
    with_criteria = [
        r for r in campaign_world["runs"] if r.snapshot["prompt"]["acceptance_criteria"]
    ]
    for run in campaign_world["runs"]:
        submitted = list(run.reviews.submitted())
        adjudication = Adjudication.objects.filter(run=run).first()
        tally = RunTally.objects.filter(run=run).first()
        if not submitted and adjudication is None:
            assert tally is None or (tally.reviews, tally.adjudicated) == (0, "")
            continue
        criteria = run.snapshot["prompt"]["acceptance_criteria"]
        expected_answers: dict = {}
        for review in submitted:
            for key, value in review.answers.items():
                given = expected_answers.setdefault(key, {})
                given[str(value)] = given.get(str(value), 0) + 1
        assert tally.answers == {
            key: dict(sorted(v.items())) for key, v in expected_answers.items()
        }
        assert tally.acceptance_criteria == len(criteria)
        assert tally.acceptance_ticked == sum(
            len(set(criteria) & set(review.acceptance_met)) for review in submitted
        )
        assert tally.adjudicated == (adjudication.verdict if adjudication else "")
    # The world has what these cover: ticked criteria, and a standing and a withdrawn verdict.
    assert RunTally.objects.filter(run__in=with_criteria, acceptance_ticked__gte=2).exists()
    assert RunTally.objects.filter(adjudicated="no").count() == 1


def test_it_keeps_a_deleted_runs_tallies_consistent(campaign_world):
    run = next(r for r in campaign_world["runs"] if RunTally.objects.filter(run=r).exists())

    run.delete()

    assert not RunTally.objects.filter(run_id=run.pk).exists()
    assert tally_drift() == []


def test_it_gives_the_same_pages_from_the_tallies_as_after_a_rebuild(campaign_world):
    filters = Filters(campaign_id=campaign_world["campaign"].pk)
    pages = [leaderboard.board(filters), leaderboard.agreement(filters)]

    rebuild_aggregates()
    cache.clear()

    assert [leaderboard.board(filters), leaderboard.agreement(filters)] == pages


def test_it_leaves_out_the_votes_of_a_run_sent_back_to_the_queue(campaign_world):
    filters = Filters(campaign_id=campaign_world["campaign"].pk)
    votes = leaderboard.board(filters)["totals"]["votes"]
    voted = Comparison.objects.exclude(outcome="").first()
    involving = (
        Comparison.objects.exclude(outcome="").filter(run_a=voted.run_a).count()
        + Comparison.objects.exclude(outcome="").filter(run_b=voted.run_a).count()
    )

    Run.objects.filter(pk=voted.run_a_id).update(status=Run.QUEUED, finished_at=None)
    cache.clear()

    assert leaderboard.board(filters)["totals"]["votes"] == votes - involving


def test_it_finds_and_repairs_corrupted_tallies(campaign_world):
    filters = Filters(campaign_id=campaign_world["campaign"].pk)
    board = leaderboard.board(filters)
    tallied = RunTally.objects.filter(reviews__gt=0).order_by("run_id")
    RunTally.objects.filter(pk=tallied[0].pk).update(yes=F("yes") + 5, reviews=F("reviews") + 5)
    RunTally.objects.filter(pk=tallied[1].pk).delete()
    VoteTally.objects.filter(pk=VoteTally.objects.order_by("id").first().pk).update(votes=99)
    cache.clear()
    assert leaderboard.board(filters) != board  # the page believes what the tallies say

    with pytest.raises(CommandError, match="3 tallies differ from a recount"):
        call_command("rebuild_aggregates", "--check")
    call_command("rebuild_aggregates")

    assert tally_drift() == []
    call_command("rebuild_aggregates", "--check")
    assert leaderboard.board(filters) == board  # the command also drops cached pages


def test_it_counts_bulk_written_reviews_once_rebuilt(db):
    run = make_run()
    scorers = [_scorer(f"bulk-{n}") for n in range(2)]
    Review.objects.bulk_create(
        Review(run=run, reviewer=s, verdict="yes", answers=ANSWERS, submitted_at=run.finished_at)
        for s in scorers
    )
    assert tally_drift() == [f"run {run.pk}"]

    call_command("rebuild_aggregates")

    assert RunTally.objects.get(run=run).yes == 2
    assert tally_drift() == []


@pytest.mark.parametrize("reading", [MEAN, MAJORITY])
@pytest.mark.parametrize("errored", [COUNT, EXCLUDE])
def test_it_reads_every_run_as_would_merge_does(reading, errored):
    """The board's per-run rule, run over tallies, against the one-run rule the exports use."""
    combos = [
        (status, yes, small, no, adjudicated)
        for status in (Run.FINISHED, Run.ERRORED)
        for yes, small, no in product(range(3), repeat=3)
        for adjudicated in ("", "yes", "small_changes", "no")
    ]
    runs = {
        "id": tuple(range(len(combos))),
        "campaign_id": (1,) * len(combos),
        "status": tuple(c[0] for c in combos),
        "yes": tuple(c[1] for c in combos),
        "small_changes": tuple(c[2] for c in combos),
        "no": tuple(c[3] for c in combos),
        "adjudicated": tuple(c[4] or None for c in combos),
    }
    filters = Filters(verdict=reading, errored=errored)

    values = run_values(runs, {1: 0.3}, filters)["value"]

    for (status, yes, small, no, adjudicated), value in zip(combos, values, strict=True):
        if status == Run.ERRORED:
            expected = 0.0 if errored == COUNT else None
        else:
            verdicts = ["yes"] * yes + ["small_changes"] * small + ["no"] * no
            expected = leaderboard.would_merge(verdicts, 0.3, reading, adjudicated or None)
        if expected is None:
            assert np.isnan(value)
        else:
            assert value == pytest.approx(expected, abs=1e-12)

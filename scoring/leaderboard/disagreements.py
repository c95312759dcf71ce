"""Runs whose reviewers disagree, for a lead to settle with an adjudication.

A run is in dispute when two or more submitted reviews give different verdicts, or different
answers to one of the rubric's questions. Most divided first: verdicts furthest apart (yes
against no before yes against after small changes), then the larger share of reviewers outside
the most common verdict, then more questions in dispute.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

from runs.models import Run
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import COUNT, MEAN, Filters
from scoring.leaderboard.loading import (
    REVIEWABLE,
    load_adjudications,
    load_reviews,
    load_rubrics,
    load_runs,
)
from scoring.leaderboard.verdicts import VERDICT_ORDER, verdict_values
from scoring.models import VERDICTS, Review

VERDICT_LABELS = dict(VERDICTS)


def disagreements(filters: Filters) -> dict:
    """The disputed runs for `filters`, most divided first (cached).

    Keys: runs ([{run_id, spread, split, verdict_disputed, criteria (keys in dispute),
    reviews, adjudicated (verdict or None)}]), criteria ([{key, label, options}]),
    adjudicated (how many of the runs a lead has settled).
    """
    answers_only = replace(filters, verdict=MEAN, errored=COUNT)
    return cached("disagreements", answers_only, lambda: _compute(answers_only))


def _compute(filters: Filters) -> dict:
    runs = load_runs(filters, "campaign_id", statuses=REVIEWABLE)
    campaign_of = {run["id"]: run["campaign_id"] for run in runs}
    criteria, small_changes = load_rubrics(set(campaign_of.values()))
    reviews = load_reviews(filters, set(campaign_of), criteria)
    adjudications = load_adjudications(filters, set(campaign_of))

    by_run: dict[int, list[dict]] = defaultdict(list)
    for review in reviews:
        by_run[review["run_id"]].append(review)
    disputed = []
    for run_id, run_reviews in by_run.items():
        if len(run_reviews) < 2:
            continue
        verdicts = [r["verdict"] for r in run_reviews if r["verdict"] in VERDICT_ORDER]
        in_dispute = [
            criterion.key
            for criterion in criteria
            if len({r["answers"][criterion.key] for r in run_reviews} - {None, ""}) > 1
        ]
        if len(set(verdicts)) < 2 and not in_dispute:
            continue
        values = verdict_values(small_changes[campaign_of[run_id]])
        worth = [values[verdict] for verdict in verdicts]
        disputed.append(
            {
                "run_id": run_id,
                "spread": round(max(worth) - min(worth), 3) if worth else 0.0,
                "split": round(1 - Counter(verdicts).most_common(1)[0][1] / len(verdicts), 3)
                if verdicts
                else 0.0,
                "verdict_disputed": len(set(verdicts)) > 1,
                "criteria": in_dispute,
                "reviews": len(run_reviews),
                "adjudicated": adjudications.get(run_id),
            }
        )
    disputed.sort(key=lambda e: (-e["spread"], -e["split"], -len(e["criteria"]), e["run_id"]))
    return {
        "runs": disputed,
        "criteria": [
            {"key": c.key, "label": c.label, "options": dict(c.options())} for c in criteria
        ],
        "adjudicated": sum(1 for entry in disputed if entry["adjudicated"]),
    }


def side_by_side(entries: list[dict], criteria: list[dict]) -> list[dict]:
    """The entries with what a lead reads to settle them: the run, each reviewer's verdict,
    answers and notes side by side, and the adjudication so far. Two queries for the page."""
    ids = [entry["run_id"] for entry in entries]
    runs = Run.objects.select_related(
        "campaign", "prompt", "contestant__model", "adjudication__decided_by"
    ).in_bulk(ids)
    reviews: dict[int, list[Review]] = defaultdict(list)
    for review in (
        Review.objects.submitted()
        .filter(run_id__in=ids)
        .select_related("reviewer")
        .order_by("reviewer__username", "id")
    ):
        reviews[review.run_id].append(review)
    result = []
    for entry in entries:
        run = runs.get(entry["run_id"])
        if run is None:  # deleted since the list was cached
            continue
        run_reviews = reviews[run.pk]
        questions = [
            {
                "label": "Would you merge it?",
                "disputed": entry["verdict_disputed"],
                "answers": [VERDICT_LABELS.get(r.verdict, "—") for r in run_reviews],
            }
        ]
        for criterion in criteria:
            answers = [r.answers.get(criterion["key"]) for r in run_reviews]
            if all(answer in (None, "") for answer in answers):
                continue  # a question this run's rubric or prompt did not ask
            questions.append(
                {
                    "label": criterion["label"],
                    "disputed": criterion["key"] in entry["criteria"],
                    "answers": [
                        criterion["options"].get(str(a), str(a)) if a not in (None, "") else "—"
                        for a in answers
                    ],
                }
            )
        result.append(
            {
                **entry,
                "run": run,
                "reviewers": [r.reviewer.username for r in run_reviews],
                "questions": questions,
                "notes": [r.notes for r in run_reviews],
                "adjudication": getattr(run, "adjudication", None),
            }
        )
    return result

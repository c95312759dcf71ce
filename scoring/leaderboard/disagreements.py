"""Runs whose reviewers disagree, for a lead to settle with an adjudication.

A run is in dispute when two or more submitted reviews give different verdicts, or different
answers to one of the rubric's questions. Most divided first: verdicts furthest apart (yes
against no before yes against after small changes), then the larger share of reviewers outside
the most common verdict, then more questions in dispute.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace

import numpy as np

from runs.models import Run
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import COUNT, MEAN, Filters
from scoring.leaderboard.loading import (
    REVIEWABLE,
    AnswerCounts,
    campaigns_in,
    distinct_codes,
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
    scope = campaigns_in(filters, REVIEWABLE)
    criteria, small_changes = load_rubrics(scope)
    runs = load_runs(
        filters,
        statuses=REVIEWABLE,
        campaign_id="campaign_id",
        reviews="tally__reviews",
        no="tally__no",
        small_changes="tally__small_changes",
        yes="tally__yes",
        adjudicated="tally__adjudicated",
        **{f"answers:{c.key}": AnswerCounts(c.key) for c in criteria},
    )
    if set(runs["campaign_id"]) != scope:  # the tag filter left some campaigns out
        criteria, small_changes = load_rubrics(set(runs["campaign_id"]))
    # Per criterion and distinct answer counts: whether the reviewers gave different answers.
    split_answers = {}
    for criterion in criteria:
        texts, codes = distinct_codes(runs[f"answers:{criterion.key}"])
        differs = np.array([len(json.loads(text)) > 1 if text else False for text in texts])
        split_answers[criterion.key] = differs[codes] if len(texts) else np.zeros(0, bool)

    counts = np.nan_to_num(np.array([runs[v] for v in VERDICT_ORDER], dtype=float)).T
    counts = counts.reshape(-1, len(VERDICT_ORDER))
    campaigns, inverse = np.unique(
        np.array(runs["campaign_id"], dtype=np.int64), return_inverse=True
    )
    worth = np.array(
        [[verdict_values(small_changes[c])[v] for v in VERDICT_ORDER] for c in campaigns.tolist()]
    ).reshape(-1, len(VERDICT_ORDER))[inverse.reshape(-1)]
    used = counts > 0
    total = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = np.where(used, worth, -np.inf).max(axis=1) - np.where(used, worth, np.inf).min(
            axis=1
        )
        split = 1 - counts.max(axis=1, initial=0) / total
    verdict_disputed = used.sum(axis=1) > 1
    answers_disputed = np.zeros(len(total), dtype=bool)
    for differs in split_answers.values():
        answers_disputed |= differs
    reviewed_twice = np.nan_to_num(np.array(runs["reviews"], dtype=float)) >= 2
    positions = np.flatnonzero(reviewed_twice & (verdict_disputed | answers_disputed))
    reviewed = (total[positions] > 0).tolist()

    def shown(values: np.ndarray) -> np.ndarray:
        # Rounded as shown before they order the runs (Python's round, exact to the last
        # digit); 0 for a run without a verdict.
        pairs = zip(values[positions].tolist(), reviewed, strict=True)
        return np.array([round(value, 3) if ok else 0.0 for value, ok in pairs])

    spreads, splits = shown(spread), shown(split)
    in_dispute = {key: differs[positions] for key, differs in split_answers.items()}
    criteria_count = sum(in_dispute.values(), np.zeros(len(positions), dtype=int))
    run_ids = np.array(runs["id"], dtype=np.int64)[positions]
    # Most divided first: widest spread, then most even split, most criteria, oldest run.
    order = np.lexsort((run_ids, -criteria_count, -splits, -spreads))
    disputed = [
        {
            "run_id": runs["id"][position],
            "spread": spread_value,
            "split": split_value,
            "verdict_disputed": bool(verdict_disputed[position]),
            "criteria": [key for key, differs in in_dispute.items() if differs[index]],
            "reviews": runs["reviews"][position],
            "adjudicated": runs["adjudicated"][position] or None,
        }
        for index, position, spread_value, split_value in zip(
            order.tolist(),
            positions[order].tolist(),
            spreads[order].tolist(),
            splits[order].tolist(),
            strict=True,
        )
    ]
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

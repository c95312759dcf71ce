"""Do reviewers see the same thing when they look at the same run? Krippendorff's alpha per
question, reviews per run, and each reviewer against the others.

A lead's adjudication settles a run's verdict: agreement on the verdict is reported before
adjudication (the reviewers as they answered) and after it (an adjudicated run counts as every
reviewer of it giving the lead's verdict), so a lead sees how much disagreement is left in the
verdicts the board uses.

Everything here is read from the runs' tallies: alpha depends on who gave which answer only
through how many reviewers gave each answer to each run, and a run's row of the run x reviewer
matrix (`RunTally.verdicts`) is all the reviewer comparison needs.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import replace

import numpy as np
from django.contrib.auth import get_user_model

from scoring import stats
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import COUNT, MEAN, Filters
from scoring.leaderboard.formatting import number, percent
from scoring.leaderboard.loading import (
    REVIEWABLE,
    AnswerCounts,
    campaigns_in,
    distinct_codes,
    load_rubrics,
    load_runs,
    numeric_answers,
    zero,
)
from scoring.leaderboard.verdicts import VERDICT_ORDER
from scoring.models import Criterion

VERDICT_LABEL = "Would you merge it (verdict)"


def agreement(filters: Filters) -> dict:
    """Inter-rater agreement for `filters` (cached).

    Keys: measures ([{key, label, level, alpha, words, units, text}], the verdict first, which
    also has `after`: the same entry after adjudication), adjudicated_runs, histogram
    ([{reviews, runs}] for 0..max reviews per run), reviewers ([{username, reviews, compared,
    agree, share, text}]), reviewed_twice (runs with two or more reviews), reviews, runs.
    """
    # How the board reads verdicts and errored runs does not change what reviewers answered.
    answers_only = replace(filters, verdict=MEAN, errored=COUNT)
    return cached("agreement", answers_only, lambda: _compute(answers_only))


def alpha_entry(
    key: str, label: str, level: str, counts: np.ndarray, values: list[float] | None = None
) -> dict:
    """Alpha from `counts` (run x answer: how many reviewers gave it), with the words a lead
    reads it by; `values` are the answers' numbers, lowest first, for ordinal data."""
    counts = np.asarray(counts, dtype=float).reshape(-1, max(1, np.shape(counts)[-1]))
    units = int((counts.sum(axis=1) >= 2).sum())
    alpha = stats.krippendorff_alpha_counts(counts, level, values) if units else math.nan
    words = stats.interpret_alpha(alpha)
    if units and math.isnan(alpha):
        # Pairs exist but all gave one answer: no disagreement was possible to observe.
        words = "one answer throughout, so agreement cannot be measured"
    return {
        "key": key,
        "label": label,
        "level": level,
        "alpha": number(alpha, 3),
        "words": words,
        "units": units,
        "text": (
            f"α {alpha:.2f}: {words}, over {units} runs reviewed at least twice"
            if not math.isnan(alpha)
            else f"{words} ({units} runs reviewed at least twice)"
        ),
    }


def _load(filters: Filters, criteria: list[Criterion]) -> dict[str, tuple]:
    return load_runs(
        filters,
        statuses=REVIEWABLE,
        campaign_id="campaign_id",
        reviews=zero("tally__reviews"),
        no="tally__no",
        small_changes="tally__small_changes",
        yes="tally__yes",
        adjudicated="tally__adjudicated",
        verdicts="tally__verdicts",
        **{f"answers:{c.key}": AnswerCounts(c.key) for c in criteria},
    )


def verdict_counts(runs: dict[str, tuple]) -> np.ndarray:
    """run x verdict (VERDICT_ORDER): how many reviewers gave it, from the tallies' columns
    of the same names."""
    counts = np.array([runs[verdict] for verdict in VERDICT_ORDER], dtype=float)
    return np.nan_to_num(counts.T.reshape(-1, len(VERDICT_ORDER)))


def verdict_agreement(counts: np.ndarray, adjudicated: list[str]) -> dict:
    """Alpha on the verdict before and after adjudication: {before, after, adjudicated_runs}.

    `counts` is run x verdict (`verdict_counts`), `adjudicated` the lead's verdict per run ("")
    for none): an adjudicated run counts as each of its reviewers giving the lead's verdict.
    """
    settled = counts.copy()
    for position, verdict in enumerate(adjudicated):
        if verdict:
            reviewers = counts[position].sum()
            settled[position] = 0
            settled[position, VERDICT_ORDER.index(verdict)] = reviewers
    order = list(range(len(VERDICT_ORDER)))
    return {
        "before": alpha_entry("verdict", VERDICT_LABEL, "ordinal", counts, order),
        "after": alpha_entry("verdict", VERDICT_LABEL, "ordinal", settled, order),
        "adjudicated_runs": sum(1 for verdict in adjudicated if verdict),
    }


def _compute(filters: Filters) -> dict:
    scope = campaigns_in(filters, REVIEWABLE)
    criteria, _ = load_rubrics(scope)
    runs = _load(filters, criteria)
    if set(runs["campaign_id"]) != scope:  # the tag filter left some campaigns out
        criteria, _ = load_rubrics(set(runs["campaign_id"]))
    numeric = numeric_answers(criteria)

    verdicts = verdict_agreement(
        verdict_counts(runs), [value or "" for value in runs["adjudicated"]]
    )
    measures = [{**verdicts["before"], "after": verdicts["after"]}]
    for criterion in criteria:
        table = numeric[criterion.key]
        values = sorted(set(table.values()))
        where = {value: index for index, value in enumerate(values)}
        texts, codes = distinct_codes(runs[f"answers:{criterion.key}"])
        per_text = np.zeros((len(texts), max(1, len(values))))
        for position, text in enumerate(texts):
            for answer, times in (json.loads(text) if text else {}).items():
                if answer in table:
                    per_text[position, where[table[answer]]] += times
        level = "nominal" if criterion.scale == Criterion.YES_NO else "ordinal"
        measures.append(
            alpha_entry(criterion.key, criterion.label, level, per_text[codes], values or None)
        )

    per_run = Counter(runs["reviews"])
    top = max(per_run, default=0)
    return {
        "measures": measures,
        "adjudicated_runs": verdicts["adjudicated_runs"],
        "histogram": [{"reviews": k, "runs": per_run.get(k, 0)} for k in range(top + 1)],
        "reviewers": _reviewer_agreement(runs["verdicts"]),
        "reviewed_twice": sum(count for reviews, count in per_run.items() if reviews >= 2),
        "reviews": sum(runs["reviews"]),
        "runs": len(runs["id"]),
    }


def _reviewer_agreement(rows: tuple[str | None, ...]) -> list[dict]:
    """Per reviewer: on runs where the other reviewers' verdicts have a strict majority, the
    share where this reviewer's verdict equals it. `rows` are the runs' rows of the run x
    reviewer matrix ("7:yes 9:no"); runs reviewed alike are worked out once."""
    reviews: Counter[int] = Counter()
    compared: Counter[int] = Counter()
    agreed: Counter[int] = Counter()
    for row, times in Counter(rows).items():
        entries = [entry.split(":", 1) for entry in (row or "").split()]
        given = {int(reviewer): verdict for reviewer, verdict in entries}
        for reviewer in given:
            reviews[reviewer] += times
        judged = {r: v for r, v in given.items() if v in VERDICT_ORDER}
        if len(judged) < 2:
            continue
        for reviewer, verdict in judged.items():
            others = Counter(v for r, v in judged.items() if r != reviewer)
            majority, votes = others.most_common(1)[0]
            if 2 * votes <= sum(others.values()):
                continue
            compared[reviewer] += times
            agreed[reviewer] += times * (verdict == majority)
    names = dict(get_user_model().objects.filter(pk__in=reviews).values_list("pk", "username"))
    result = []
    for reviewer in sorted(reviews, key=lambda r: names.get(r, "")):
        n, k = compared[reviewer], agreed[reviewer]
        result.append(
            {
                "username": names.get(reviewer, ""),
                "reviews": reviews[reviewer],
                "compared": n,
                "agree": k,
                "share": number(k / n, 3) if n else None,
                "text": f"{percent(k / n)} ({k} of {n})" if n else "no overlapping reviews",
            }
        )
    return result

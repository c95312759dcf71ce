"""Do reviewers see the same thing when they look at the same run? Krippendorff's alpha per
question, reviews per run, and each reviewer against the others.

A lead's adjudication settles a run's verdict: agreement on the verdict is reported before
adjudication (the reviewers as they answered) and after it (an adjudicated run counts as every
reviewer of it giving the lead's verdict), so a lead sees how much disagreement is left in the
verdicts the board uses.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import replace

from scoring import stats
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import COUNT, MEAN, Filters
from scoring.leaderboard.formatting import number, percent
from scoring.leaderboard.loading import (
    REVIEWABLE,
    load_adjudications,
    load_reviews,
    load_rubrics,
    load_runs,
    numeric_answers,
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


def alpha_entry(key: str, label: str, level: str, table: dict[int, dict[int, object]], **kw):
    """Alpha over `table` (run -> reviewer -> answer), with the words a lead reads it by."""
    reviewers = sorted({reviewer for answers in table.values() for reviewer in answers})
    units = [run for run, answers in table.items() if len(answers) >= 2]
    data = [[table[run].get(reviewer) for run in units] for reviewer in reviewers]
    alpha = stats.krippendorff_alpha(data, level, **kw) if units else math.nan
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
        "units": len(units),
        "text": (
            f"α {alpha:.2f}: {words}, over {len(units)} runs reviewed at least twice"
            if not math.isnan(alpha)
            else f"{words} ({len(units)} runs reviewed at least twice)"
        ),
    }


def verdict_table(reviews: list[dict]) -> dict[int, dict[int, object]]:
    """run -> reviewer -> verdict, for the reviews that gave one."""
    table: dict[int, dict[int, object]] = defaultdict(dict)
    for review in reviews:
        if review["verdict"] in VERDICT_ORDER:
            table[review["run_id"]][review["reviewer_id"]] = review["verdict"]
    return table


def verdict_agreement(reviews: list[dict], adjudications: dict[int, str]) -> dict:
    """Alpha on the verdict before and after adjudication: {before, after, adjudicated_runs}."""
    table = verdict_table(reviews)
    settled = {
        run: dict.fromkeys(answers, adjudications[run]) if run in adjudications else answers
        for run, answers in table.items()
    }
    entry = {"label": VERDICT_LABEL, "level": "ordinal", "value_order": VERDICT_ORDER}
    return {
        "before": alpha_entry("verdict", table=table, **entry),
        "after": alpha_entry("verdict", table=settled, **entry),
        "adjudicated_runs": len(adjudications),
    }


def _compute(filters: Filters) -> dict:
    runs = load_runs(filters, "campaign_id", statuses=REVIEWABLE)
    run_ids = {run["id"] for run in runs}
    criteria, _ = load_rubrics({run["campaign_id"] for run in runs})
    reviews = load_reviews(filters, run_ids, criteria, "reviewer__username")
    adjudications = load_adjudications(filters, run_ids)
    numeric = numeric_answers(criteria)

    answers_by_key: dict[str, dict[int, dict[int, object]]] = defaultdict(lambda: defaultdict(dict))
    for review in reviews:
        answers = review["answers"]
        for key, table in numeric.items():
            value = table.get(str(answers.get(key, "")))
            if value is not None:
                answers_by_key[key][review["run_id"]][review["reviewer_id"]] = value

    verdicts = verdict_agreement(reviews, adjudications)
    measures = [{**verdicts["before"], "after": verdicts["after"]}]
    for criterion in criteria:
        level = "nominal" if criterion.scale == Criterion.YES_NO else "ordinal"
        measures.append(
            alpha_entry(criterion.key, criterion.label, level, answers_by_key[criterion.key])
        )

    per_run = Counter(review["run_id"] for review in reviews)
    histogram_counts = Counter(per_run.get(run_id, 0) for run_id in run_ids)
    top = max(histogram_counts, default=0)
    histogram = [{"reviews": k, "runs": histogram_counts.get(k, 0)} for k in range(top + 1)]

    return {
        "measures": measures,
        "adjudicated_runs": verdicts["adjudicated_runs"],
        "histogram": histogram,
        "reviewers": _reviewer_agreement(reviews, verdict_table(reviews)),
        "reviewed_twice": sum(1 for count in per_run.values() if count >= 2),
        "reviews": len(reviews),
        "runs": len(run_ids),
    }


def _reviewer_agreement(reviews: list[dict], verdicts: dict[int, dict[int, object]]) -> list[dict]:
    """Per reviewer: on runs where the other reviewers' verdicts have a strict majority, the
    share where this reviewer's verdict equals it."""
    names = {review["reviewer_id"]: review["reviewer__username"] for review in reviews}
    compared: Counter[int] = Counter()
    agreed: Counter[int] = Counter()
    counts = Counter(review["reviewer_id"] for review in reviews)
    for by_reviewer in verdicts.values():
        if len(by_reviewer) < 2:
            continue
        for reviewer, verdict in by_reviewer.items():
            others = Counter(v for r, v in by_reviewer.items() if r != reviewer)
            majority, votes = others.most_common(1)[0]
            if 2 * votes <= sum(others.values()):
                continue
            compared[reviewer] += 1
            agreed[reviewer] += verdict == majority
    result = []
    for reviewer in sorted(names, key=lambda r: names[r]):
        n, k = compared[reviewer], agreed[reviewer]
        result.append(
            {
                "username": names[reviewer],
                "reviews": counts[reviewer],
                "compared": n,
                "agree": k,
                "share": number(k / n, 3) if n else None,
                "text": f"{percent(k / n)} ({k} of {n})" if n else "no overlapping reviews",
            }
        )
    return result

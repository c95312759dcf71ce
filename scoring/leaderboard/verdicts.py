"""From a run's reviews to its "would merge" value: the one rule the board, the history, the
disagreements page and the results export all use."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from runs.models import Run
from scoring.leaderboard.filters import MAJORITY, MEAN, Filters
from scoring.models import (
    DEFAULT_SMALL_CHANGES_VALUE,
    VERDICT_NO,
    VERDICT_SMALL_CHANGES,
    VERDICT_YES,
)

# Lowest to highest, for ordinal agreement.
VERDICT_ORDER = [VERDICT_NO, VERDICT_SMALL_CHANGES, VERDICT_YES]


def verdict_values(small_changes_value: float = DEFAULT_SMALL_CHANGES_VALUE) -> dict[str, float]:
    """What each verdict is worth: yes 1, no 0, after small changes the rubric's value."""
    return {VERDICT_YES: 1.0, VERDICT_SMALL_CHANGES: small_changes_value, VERDICT_NO: 0.0}


def would_merge(
    verdicts: Iterable[str],
    small_changes_value: float = DEFAULT_SMALL_CHANGES_VALUE,
    reading: str = MEAN,
    adjudicated: str | None = None,
) -> float | None:
    """A run's "would merge" value from its submitted reviews' verdicts; None with no verdict.

    `reading` MEAN (the default): the mean of the verdicts' values (`verdict_values`).
    MAJORITY: 1 when a strict majority of the verdicts is yes, else 0. A lead's `adjudicated`
    verdict, when there is one, replaces the reviews' verdicts.
    """
    known = [adjudicated] if adjudicated else [v for v in verdicts if v in VERDICT_ORDER]
    if not known:
        return None
    if reading == MAJORITY:
        return 1.0 if 2 * known.count(VERDICT_YES) > len(known) else 0.0
    values = verdict_values(small_changes_value)
    return sum(values[verdict] for verdict in known) / len(known)


def acceptable(verdicts: Iterable[str], adjudicated: str | None = None) -> bool | None:
    """Whether a strict majority said yes or "after small changes" (or the lead did)."""
    known = [adjudicated] if adjudicated else [v for v in verdicts if v in VERDICT_ORDER]
    if not known:
        return None
    return 2 * sum(v in (VERDICT_YES, VERDICT_SMALL_CHANGES) for v in known) > len(known)


def run_values(
    runs: dict[str, tuple], small_changes: dict[int, float], filters: Filters
) -> dict[str, np.ndarray]:
    """Every run's value on a page read by `filters`, from `load_runs` columns: status,
    campaign_id, and the tally's yes, small_changes, no and adjudicated.

    A reviewed run is worth `would_merge` of its verdicts (the lead's adjudication in their
    place), and is `acceptable` as that function says; an errored run is worth 0 or is left out
    (nan), as the lead chose, whatever was said about it. Returns value, acceptable and
    adjudicated, aligned with the runs. tests/scoring/test_tallies.py checks this against
    `would_merge` for every small combination of verdicts.
    """
    size = len(runs["id"])
    errored = np.array(runs["status"], dtype=str).reshape(size) == Run.ERRORED
    reviewable = ~errored

    def count(name: str) -> np.ndarray:  # 0 for runs without a tally, and errored runs
        return np.nan_to_num(np.array(runs[name], dtype=float).reshape(size)) * reviewable

    yes, small, no = count("yes"), count("small_changes"), count("no")
    campaigns, inverse = np.unique(
        np.array(runs["campaign_id"], dtype=np.int64), return_inverse=True
    )
    worth = np.array([small_changes[c] for c in campaigns.tolist()], dtype=float)[
        inverse.reshape(-1)
    ]
    adjudicated = np.array([value or "" for value in runs["adjudicated"]], dtype=str).reshape(size)
    adjudicated[errored] = ""
    settled = adjudicated != ""
    # An adjudication stands for the reviews: one verdict, the lead's.
    yes = np.where(settled, adjudicated == VERDICT_YES, yes)
    small = np.where(settled, adjudicated == VERDICT_SMALL_CHANGES, small)
    no = np.where(settled, adjudicated == VERDICT_NO, no)
    total = yes + small + no
    with np.errstate(invalid="ignore", divide="ignore"):
        if filters.verdict == MAJORITY:
            value = (2 * yes > total).astype(float)
        else:
            value = (yes + small * worth) / total
        value[total == 0] = np.nan
        acceptable = 2 * (yes + small) > total
    acceptable &= total > 0
    value[errored] = 0.0 if filters.counts_errored else np.nan
    acceptable[errored] = False
    return {"value": value, "acceptable": acceptable, "adjudicated": settled}

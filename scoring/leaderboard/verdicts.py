"""From a run's reviews to its "would merge" value: the one rule the board, the history, the
disagreements page and the results export all use."""

from __future__ import annotations

from collections.abc import Iterable

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


def board_value(
    run: dict,
    verdicts: Iterable[str],
    small_changes_value: float,
    filters: Filters,
    adjudicated: str | None = None,
) -> float | None:
    """A run's value on a page read by `filters`: an errored run (`run["status"]`) is worth 0
    or left out (None), as the lead chose; any other run is worth `would_merge`."""
    if run["status"] == Run.ERRORED:
        return 0.0 if filters.counts_errored else None
    return would_merge(verdicts, small_changes_value, filters.verdict, adjudicated)

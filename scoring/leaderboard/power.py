"""How many more reviewed runs (or pairwise votes) would tell neighbouring contestants apart.

For each pair of neighbours on the board (in board order), at the rates observed so far:

1. The higher one's interval reaches down by `value - low`, the lower one's up by
   `high - value`. Each half-width shrinks as 1/√n with the number of reviewed runs n (votes
   for strengths), so with m more each it becomes half-width · √(n / (n + m)). Scaling the
   board's own interval keeps whatever widened it (prompts resampled as clusters, repeats).
2. The intervals separate when the gap between the two values exceeds the sum of the two
   shrunken half-widths. The smallest such m is found by bisection (the sum falls with m).

Read it as "if the rates stay where they are": with that many more runs each, the intervals
are expected to just separate, which happens in about half of such experiments (the observed
gap itself moves). tests/scoring/test_power.py checks this against a seeded simulation. The
method is in the README ("How many runs?").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Beyond this many more runs each the answer is "not in any practical campaign".
MAX_MORE = 100_000


@dataclass(frozen=True)
class Side:
    value: float
    low: float
    high: float
    n: int  # reviewed runs (or votes) behind the interval


def more_to_separate(higher: Side, lower: Side, *, limit: int = MAX_MORE) -> int | None:
    """The fewest more runs each after which `higher`'s interval lies above `lower`'s, at the
    observed values: 0 when they already do; None when the values are equal (or in the wrong
    order), or when it would take more than `limit`."""
    gap = higher.value - lower.value
    if gap <= 0 or higher.n < 1 or lower.n < 1:
        return None
    reach_down = max(higher.value - higher.low, 0.0)
    reach_up = max(lower.high - lower.value, 0.0)

    def separated(more: int) -> bool:
        shrunk = reach_down * math.sqrt(higher.n / (higher.n + more)) + reach_up * math.sqrt(
            lower.n / (lower.n + more)
        )
        return shrunk < gap

    if separated(0):
        return 0
    if not separated(limit):
        return None
    low, high = 0, limit  # not separated at low, separated at high
    while high - low > 1:
        middle = (low + high) // 2
        if separated(middle):
            high = middle
        else:
            low = middle
    return high


def _about(more: int) -> int:
    """Rounded up to a figure that does not pretend to precision."""
    if more <= 20:
        return more
    step = 10 if more <= 200 else 50 if more <= 1000 else 500
    return math.ceil(more / step) * step


def guidance(board: dict) -> list[dict]:
    """One entry per neighbouring pair of ranked rows of `board` (leaderboard.board): {higher,
    lower, more, unit, sentence}, `more` None when no number of runs would do."""
    by_votes = board.get("rank_basis") == "pairwise votes"
    unit = "pairwise votes" if by_votes else "reviewed runs"
    value_key, interval_key, size_key = (
        ("strength", "strength_ci", "votes")
        if by_votes
        else ("merge_rate", "merge_rate_ci", "counted_runs")
    )
    ranked = [
        row
        for row in board["rows"]
        if row.get("rank") is not None and row.get(value_key) is not None and row.get(interval_key)
    ]
    result = []
    for higher_row, lower_row in zip(ranked, ranked[1:], strict=False):
        higher, lower = (
            Side(row[value_key], row[interval_key][0], row[interval_key][1], row[size_key])
            for row in (higher_row, lower_row)
        )
        more = more_to_separate(higher, lower)
        a, b = higher_row["label"], lower_row["label"]
        if more == 0:
            sentence = f"{a} and {b} are already told apart: their 95% intervals do not overlap."
        elif more is None and higher.value <= lower.value:
            sentence = (
                f"{a} and {b} have the same observed "
                f"{'strength' if by_votes else 'merge rate'}: more {unit} would tell them "
                "apart only if their rates drift apart."
            )
        elif more is None:
            sentence = (
                f"More than {MAX_MORE:,} more {unit} each would be needed to tell {a} from "
                f"{b}: at these rates they are, in practice, as good as each other."
            )
        else:
            sentence = f"About {_about(more)} more {unit} each would tell {a} from {b}."
        result.append(
            {
                "higher": a,
                "lower": b,
                "higher_contestant_id": higher_row["contestant_id"],
                "lower_contestant_id": lower_row["contestant_id"],
                "more": more,
                "unit": unit,
                "sentence": sentence,
            }
        )
    return result

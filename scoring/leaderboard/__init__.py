"""Queries -> rows for the leaderboard pages and exports.

Each page is computed from a fixed handful of queries (the number does not grow with the number
of runs) that return one row per run, never one per review or vote: reviews, adjudications and
votes are read through the tallies kept up to date where they are saved (`scoring.models`
RunTally and VoteTally). The arithmetic is done in numpy and `scoring.stats`, and the result is
cached per filter. One module per page, plus what they share:

- `standings`: the board (one row per contestant) and the dashboard's summary of it;
- `agreement`: reviewer agreement (Krippendorff's alpha), before and after adjudication;
- `history`: the merge rate per campaign over time;
- `disagreements`: the runs whose reviewers disagree, for a lead to adjudicate;
- `verdicts`: the one rule from a run's reviews to its "would merge" value;
- `filters`, `loading`, `formatting`: which runs, the queries, the numbers as shown;
- `cache`: caching, and how a cached page learns that it is out of date.

The names below are the package's interface; callers import them from here.
"""

from scoring.leaderboard.agreement import agreement
from scoring.leaderboard.cache import cached, invalidate
from scoring.leaderboard.disagreements import disagreements
from scoring.leaderboard.filters import Filters
from scoring.leaderboard.formatting import percent, rate_text
from scoring.leaderboard.history import history
from scoring.leaderboard.standings import (
    auc_sentence,
    board,
    latest_campaign_with_reviews,
    latest_summary,
    rows,
    spearman_sentence,
)
from scoring.leaderboard.verdicts import would_merge

__all__ = [
    "Filters",
    "agreement",
    "auc_sentence",
    "board",
    "cached",
    "disagreements",
    "history",
    "invalidate",
    "latest_campaign_with_reviews",
    "latest_summary",
    "percent",
    "rate_text",
    "rows",
    "spearman_sentence",
    "would_merge",
]

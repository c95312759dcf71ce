"""The leaderboard as data: what the page's JSON export and the API's /leaderboard both return."""

from __future__ import annotations

from scoring.leaderboard.filters import Filters
from scoring.leaderboard.power import guidance


def payload(filters: Filters, board: dict) -> dict:
    """One row per contestant with its merge rate and 95% interval, ranks, tags, reviewer
    agreement, predictors and how many more reviews would tell neighbours apart."""
    return {
        "filters": filters.query(),
        "reading": board["reading"],
        "rank_basis": board["rank_basis"],
        "totals": board["totals"],
        "verdict_agreement": board["verdict_agreement"],
        "leaderboard": board["rows"],
        "tags": board["tags"],
        "predictors": board["predictors"],
        "power": guidance(board),
    }

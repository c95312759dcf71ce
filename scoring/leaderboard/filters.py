"""Which runs a leaderboard page covers, and how it reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

# How a run's reviews become its "would merge" value.
MEAN = "mean"  # the mean of the verdicts: yes 1, after small changes the rubric's value, no 0
MAJORITY = "majority"  # 1 when a strict majority said yes, else 0
READINGS = [
    (MEAN, "Mean of the verdicts"),
    (MAJORITY, "Strict majority said yes"),
]
# What an errored run (the harness or environment failed) counts as in the merge rate.
COUNT = "count"  # would not merge: 0
EXCLUDE = "exclude"  # left out
ERRORED_POLICIES = [
    (COUNT, "Count as would not merge"),
    (EXCLUDE, "Leave out"),
]
# GET parameter names where they differ from the field names.
_PARAMETERS = {"campaign_id": "campaign", "prompt_set_id": "prompt_set"}
_DEFAULTS = {"verdict": MEAN, "errored": COUNT}


@dataclass(frozen=True)
class Filters:
    """Which runs a board covers (empty fields do not filter) and how it reads them."""

    campaign_id: int | None = None
    prompt_set_id: int | None = None
    tag: str = ""
    date_from: date | None = None
    date_to: date | None = None
    verdict: str = MEAN
    errored: str = COUNT

    def key(self) -> str:
        return "|".join("" if value is None else str(value) for value in asdict(self).values())

    def query(self) -> dict[str, str]:
        """The filters as GET parameters, for links to exports and other pages. Readings at
        their default are left out, as a page reads a missing parameter as the default."""
        return {
            _PARAMETERS.get(field, field): str(value)
            for field, value in asdict(self).items()
            if value not in (None, "") and _DEFAULTS.get(field) != value
        }

    @property
    def counts_errored(self) -> bool:
        return self.errored == COUNT

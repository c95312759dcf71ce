"""Demo data for `make run`: filled in by the curation work."""

from __future__ import annotations


def load() -> list[str]:
    return ["Demo data: none yet."]

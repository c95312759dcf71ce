"""Queries -> rows for the leaderboard pages and exports."""

from __future__ import annotations


def latest_summary() -> dict | None:
    return None

"""Numbers as the leaderboard pages and exports show them."""

from __future__ import annotations

import math


def percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{round(100 * value)}%"


def amount(value: float) -> str:
    """A sum of would-merge values: "11", or "10.5" when halves are in it."""
    return f"{round(value, 1):g}"


def rate_text(k: float, n: int, interval: tuple[float, float] | None) -> str:
    """ "55% (34–74%, 11 of 20)", or "no reviews" when n is 0."""
    if n == 0 or interval is None:
        return "no reviews"
    return f"{percent(k / n)} ({percent(interval[0])}–{percent(interval[1])}, {amount(k)} of {n})"


def number(value: float | None, digits: int = 2) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def interval(bounds: tuple[float, float] | None, digits: int = 3) -> list[float] | None:
    if bounds is None or any(math.isnan(b) for b in bounds):
        return None
    return [round(float(bounds[0]), digits), round(float(bounds[1]), digits)]

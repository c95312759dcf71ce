"""Power guidance on the leaderboard: how many more reviewed runs would tell neighbours apart,
checked against a seeded simulation of the experiment it predicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from django.core.cache import cache
from django.urls import reverse
from scipy.stats import norm

from scoring import stats
from scoring.leaderboard.power import Side, more_to_separate
from tests.scoring.test_leaderboard import Builder

BOARD = reverse("scoring:leaderboard")
EXPORT = reverse("scoring:leaderboard_export")
Z = norm.ppf(0.975)


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def build(db):
    return Builder()


def _side(merges: int, n: int) -> Side:
    low, high = stats.wilson_interval(merges, n)
    return Side(merges / n, low, high, n)


def _wilson(successes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Wilson intervals for many counts at once (stats.wilson_interval, vectorised)."""
    p = successes / n
    centre = (p + Z**2 / (2 * n)) / (1 + Z**2 / n)
    half = Z * np.sqrt(p * (1 - p) / n + Z**2 / (4 * n**2)) / (1 + Z**2 / n)
    return centre - half, centre + half


def _separation_chance(p_high: float, p_low: float, n: int, rng, trials: int = 4000) -> float:
    high_low, _ = _wilson(rng.binomial(n, p_high, trials), n)
    _, low_high = _wilson(rng.binomial(n, p_low, trials), n)
    return float(np.mean(high_low > low_high))


def _simulated_size(p_high: float, p_low: float, seed: int) -> int:
    """The runs per contestant at which the simulated intervals separate half of the time."""
    rng = np.random.default_rng(seed)
    low, high = 2, 5000
    while high - low > 1:
        middle = (low + high) // 2
        if _separation_chance(p_high, p_low, middle, rng) >= 0.5:
            high = middle
        else:
            low = middle
    return high


@pytest.mark.parametrize(
    ("merges_high", "merges_low", "observed"),
    [(14, 10, 20), (8, 5, 10), (33, 27, 60), (12, 6, 20)],
)
def test_it_agrees_with_a_simulation_of_more_runs(merges_high, merges_low, observed):
    higher, lower = _side(merges_high, observed), _side(merges_low, observed)

    more = more_to_separate(higher, lower)

    simulated = _simulated_size(higher.value, lower.value, seed=merges_high * 100 + observed)
    assert more is not None and more > 0  # not yet apart
    assert abs(observed + more - simulated) <= max(0.15 * simulated, 3), (more, simulated)


def test_it_says_zero_when_the_intervals_already_separate():
    assert more_to_separate(_side(19, 20), _side(2, 20)) == 0


def test_it_has_no_answer_for_equal_rates():
    assert more_to_separate(_side(10, 20), _side(10, 20)) is None


def test_it_gives_up_beyond_the_limit():
    assert more_to_separate(_side(501, 1000), _side(500, 1000), limit=1000) is None


def test_it_says_it_on_the_board_and_in_the_json(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("strong"), merges=7, total=10)
    build.series(campaign, build.contestant("middle"), merges=5, total=10)
    build.series(campaign, build.contestant("weak"), merges=5, total=10)
    client = client_for(lead)

    html = client.get(BOARD, {"campaign": campaign.pk}).content.decode()
    payload = json.loads(client.get(EXPORT, {"campaign": campaign.pk}).content)

    pairs = payload["power"]
    assert [(p["higher"], p["lower"]) for p in pairs] == [
        ("strong", "middle"),
        ("middle", "weak"),
    ]
    first = pairs[0]
    assert first["unit"] == "reviewed runs" and first["more"] > 10
    assert first["sentence"].startswith("About ")
    assert "more reviewed runs each would tell strong from middle." in first["sentence"]
    assert first["sentence"] in html
    assert pairs[1]["more"] is None
    assert "have the same observed merge rate" in pairs[1]["sentence"]

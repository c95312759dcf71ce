"""The statistics the leaderboards compute from totals (per-prompt sums, answer counts, vote
counts) give what the same statistics give on the individual values."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from scoring import stats


def _clustered_sample(rng: random.Random, clusters: int) -> tuple[list[float], list[int]]:
    values, labels = [], []
    for cluster in rng.sample(range(1000), clusters):
        for _ in range(rng.randint(1, 4)):
            values.append(rng.choice([0.0, 0.5, 1.0, 2 / 3]))
            labels.append(cluster)
    return values, labels


def test_it_bootstraps_many_samples_from_their_cluster_totals_as_from_their_values():
    rng = random.Random(5)
    # Two samples share a size, so they share draws; the third has its own.
    samples = [_clustered_sample(rng, n) for n in (12, 12, 30)]

    batched = stats.clustered_mean_cis([stats.cluster_totals(v, c) for v, c in samples])
    rates = stats.clustered_rate_intervals([stats.cluster_totals(v, c) for v, c in samples])

    assert batched == [stats.bootstrap_mean_ci(v, clusters=c) for v, c in samples]
    assert rates == [stats.rate_interval(v, c) for v, c in samples]
    assert batched[0] != batched[1]  # same draws, different data


def test_it_totals_clusters_in_order_of_first_appearance():
    sums, sizes = stats.cluster_totals([1.0, 2.0, 4.0, 8.0], np.array([7, 3, 7, 5]))
    assert sums.tolist() == [5.0, 2.0, 8.0] and sizes.tolist() == [2.0, 1.0, 1.0]
    sums, sizes = stats.cluster_totals([3.0, 4.0], ["b", "a"], sizes=[2, 1])
    assert sums.tolist() == [3.0, 4.0] and sizes.tolist() == [2.0, 1.0]


def test_it_gives_a_single_value_and_an_empty_sample_their_own_intervals():
    one, empty = stats.clustered_mean_cis(
        [(np.array([0.75]), np.array([1.0])), (np.zeros(0), np.zeros(0))]
    )
    assert one == (0.75, 0.75)
    assert all(math.isnan(bound) for bound in empty)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_it_measures_alpha_from_answer_counts_as_from_the_reliability_data(level):
    rng = random.Random(11)
    values = [1.0, 2.0, 3.0, 5.0]
    data = [[rng.choice([*values, None, None]) for _ in range(40)] for _ in range(5)]
    counts = np.array(
        [[sum(1 for row in data if row[unit] == value) for value in values] for unit in range(40)]
    )

    alpha = stats.krippendorff_alpha_counts(counts, level, values)

    assert alpha == pytest.approx(stats.krippendorff_alpha(data, level), abs=1e-12)


def test_it_has_no_alpha_from_counts_without_two_different_paired_answers():
    assert math.isnan(stats.krippendorff_alpha_counts(np.array([[2, 0], [0, 1]]), "nominal"))


def test_it_fits_bradley_terry_to_counted_outcomes_as_to_listed_ones():
    outcomes = [("a", "b", 1.0), ("b", "c", 0.5), ("c", "a", 0.0), ("a", "c", 1.0)]
    counts = [5, 3, 2, 4]
    listed = [outcome for outcome, n in zip(outcomes, counts, strict=True) for _ in range(n)]

    strengths = stats.bradley_terry(outcomes, counts)
    intervals = stats.bradley_terry_ci(outcomes, counts=counts)

    expected = stats.bradley_terry(listed)
    assert strengths == pytest.approx(expected, abs=1e-9)
    for player, (low, high) in stats.bradley_terry_ci(listed).items():
        assert intervals[player] == pytest.approx((low, high), abs=1e-9)
    with pytest.raises(ValueError, match="whole number"):
        stats.bradley_terry(outcomes, [1, 2, 3, 0.5])

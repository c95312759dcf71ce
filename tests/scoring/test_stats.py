from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from scoring import stats

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C:
# four observers, twelve units, values 1-5, None where an observer did not code a unit.
KRIPPENDORFF_2011_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def _simulate_games(strengths: dict[str, float], games: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    names = list(strengths)
    outcomes = []
    for _ in range(games):
        first, second = rng.choice(len(names), size=2, replace=False)
        a, b = names[first], names[second]
        p_first_wins = 1.0 / (1.0 + math.exp(strengths[b] - strengths[a]))
        outcomes.append((a, b, 1.0 if rng.random() < p_first_wins else 0.0))
    return outcomes


# --- wilson_interval -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, table I, method 3 (Wilson score).
        (81, 263, (0.2553, 0.3662)),
        (15, 148, (0.0624, 0.1605)),
        (0, 20, (0.0, 0.1611)),
        (1, 29, (0.0061, 0.1718)),
        (29, 29, (0.8830, 1.0)),
    ],
)
def test_it_matches_newcombes_published_wilson_intervals(successes, n, expected):
    low, high = stats.wilson_interval(successes, n)
    assert low == pytest.approx(expected[0], abs=5e-5)
    assert high == pytest.approx(expected[1], abs=5e-5)


def test_it_matches_the_wilson_formula_at_other_confidence_levels():
    successes, n, z = 7, 40, 2.5758293035489  # z for 99%
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = stats.wilson_interval(successes, n, confidence=0.99)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)


def test_it_knows_nothing_about_a_rate_with_no_trials():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [(-1, 5, 0.95), (6, 5, 0.95), (0, -1, 0.95), (1, 5, 0.0), (1, 5, 1.0), (1.5, 5, 0.95)],
)
def test_it_rejects_impossible_proportions(successes, n, confidence):
    with pytest.raises(ValueError):
        stats.wilson_interval(successes, n, confidence)


# --- bootstrap_mean_ci -----------------------------------------------------------------------


def test_it_brackets_the_mean_with_a_normal_theory_width():
    values = np.random.default_rng(3).normal(loc=3.0, scale=2.0, size=400)
    low, high = stats.bootstrap_mean_ci(values.tolist())
    assert low < values.mean() < high
    expected_width = 2 * 1.959964 * values.std(ddof=1) / math.sqrt(values.size)
    assert high - low == pytest.approx(expected_width, rel=0.15)


def test_it_widens_the_interval_when_scores_on_a_prompt_move_together():
    rng = np.random.default_rng(5)
    prompt_effects = rng.normal(scale=1.0, size=12)
    prompts = [prompt for prompt in range(12) for _ in range(10)]
    values = [prompt_effects[prompt] + rng.normal(scale=0.1) for prompt in prompts]

    naive_low, naive_high = stats.bootstrap_mean_ci(values)
    low, high = stats.bootstrap_mean_ci(values, clusters=prompts)

    assert low < np.mean(values) < high
    assert (high - low) > 2 * (naive_high - naive_low)


def test_it_accepts_any_hashable_cluster_labels():
    values = [1.0, 2.0, 3.0, 4.0]
    by_number = stats.bootstrap_mean_ci(values, clusters=[1, 1, 2, 2])
    by_name = stats.bootstrap_mean_ci(values, clusters=["fix-login", "fix-login", "x", "x"])
    assert by_number == by_name


def test_it_gives_the_same_interval_for_the_same_seed():
    values = list(np.random.default_rng(0).random(50))
    assert stats.bootstrap_mean_ci(values, seed=4) == stats.bootstrap_mean_ci(values, seed=4)
    assert stats.bootstrap_mean_ci(values, seed=4) != stats.bootstrap_mean_ci(values, seed=5)


def test_it_handles_empty_and_single_samples():
    low, high = stats.bootstrap_mean_ci([])
    assert math.isnan(low) and math.isnan(high)
    assert stats.bootstrap_mean_ci([4.0]) == (4.0, 4.0)


def test_it_rejects_clusters_of_the_wrong_length():
    with pytest.raises(ValueError):
        stats.bootstrap_mean_ci([1.0, 2.0, 3.0], clusters=[1, 2])


# --- rate_interval ---------------------------------------------------------------------------


@pytest.mark.parametrize(("successes", "n"), [(1, 1), (3, 3), (0, 4), (0, 20)])
def test_it_never_lets_a_rate_look_certain_on_a_few_runs(successes, n):
    """Three runs all merged resample to 100%-100%; the interval stays the Wilson one."""
    values = [1.0] * successes + [0.0] * (n - successes)

    low, high = stats.rate_interval(values, clusters=list(range(n)))

    assert (low, high) == pytest.approx(stats.wilson_interval(successes, n), abs=1e-9)


def test_it_matches_the_wilson_formula_for_a_mean_of_fractional_values():
    # Six runs worth 1, 0.5 and 0: the share 0.5 over six units, by the formula.
    values = [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    z, p, n = 1.959963984540054, 0.5, 6
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))

    low, high = stats.rate_interval(values, clusters=[1, 2, 3, 1, 2, 3], rounds=200)

    # The prompts' means are 0.75, 0.5 and 0.25: resampling them never leaves 0.25 to 0.75,
    # so the Wilson interval is the wider one.
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-9)


def test_it_resamples_whole_prompts_when_their_runs_move_together():
    # Four prompts, ten runs each: two always merged, two never.
    values = [1.0] * 20 + [0.0] * 20
    prompts = [index // 10 for index in range(40)]

    low, high = stats.rate_interval(values, clusters=prompts)

    assert (low, high) == stats.bootstrap_mean_ci(values, clusters=prompts)
    wilson_low, wilson_high = stats.wilson_interval(20, 40)
    assert low < wilson_low - 0.1 and high > wilson_high + 0.1


def test_it_rejects_rate_values_outside_zero_to_one():
    with pytest.raises(ValueError):
        stats.rate_interval([0.5, 1.5], clusters=[1, 2])


def test_it_knows_nothing_about_an_empty_rate():
    low, high = stats.rate_interval([], clusters=[])
    assert math.isnan(low) and math.isnan(high)


# --- bradley_terry ---------------------------------------------------------------------------


def test_it_recovers_known_strengths_from_many_games():
    true = {"ada": -1.2, "bob": -0.4, "cyd": 0.0, "dee": 0.5, "eve": 1.1}
    centre = sum(true.values()) / len(true)
    estimated = stats.bradley_terry(_simulate_games(true, 20_000, seed=7))
    for name, strength in true.items():
        assert estimated[name] == pytest.approx(strength - centre, abs=0.08)


def test_it_agrees_with_an_independent_maximum_likelihood_fit():
    outcomes = _simulate_games({"a": 0.8, "b": 0.0, "c": -0.3, "d": -0.5}, 3_000, seed=11)
    names = ["a", "b", "c", "d"]
    index = {name: i for i, name in enumerate(names)}

    firsts = np.array([index[first] for first, _, _ in outcomes])
    seconds = np.array([index[second] for _, second, _ in outcomes])
    results = np.array([result for _, _, result in outcomes])

    def negative_log_likelihood(theta):
        margin = theta[firsts] - theta[seconds]
        losses = results * np.logaddexp(0, -margin) + (1 - results) * np.logaddexp(0, margin)
        return losses.sum()

    reference = minimize(negative_log_likelihood, np.zeros(4), method="BFGS").x
    reference -= reference.mean()
    estimated = stats.bradley_terry(outcomes)
    for name in names:
        # The prior weighs one game per player against 3,000 real ones.
        assert estimated[name] == pytest.approx(reference[index[name]], abs=0.01)


def test_it_maximises_the_documented_prior_when_data_are_sparse():
    outcomes = [("a", "b", 1.0), ("a", "b", 1.0), ("b", "c", 0.5), ("c", "a", 0.0)]
    names = ["a", "b", "c"]
    index = {name: i for i, name in enumerate(names)}

    def negative_log_posterior(theta):
        total = 0.0
        for first, second, result in outcomes:
            margin = theta[index[first]] - theta[index[second]]
            total += result * np.logaddexp(0, -margin) + (1 - result) * np.logaddexp(0, margin)
        # One virtual tie per player against a virtual player of log-strength 0.
        for value in theta:
            total += 0.5 * np.logaddexp(0, -value) + 0.5 * np.logaddexp(0, value)
        return total

    reference = minimize(negative_log_posterior, np.zeros(3), method="BFGS", tol=1e-10).x
    reference -= reference.mean()
    estimated = stats.bradley_terry(outcomes)
    for name in names:
        assert estimated[name] == pytest.approx(reference[index[name]], abs=1e-5)


def test_it_centres_strengths_on_zero():
    outcomes = _simulate_games({"a": 2.0, "b": 1.0, "c": 0.5}, 500, seed=2)
    assert sum(stats.bradley_terry(outcomes).values()) == pytest.approx(0.0, abs=1e-9)


def test_it_does_not_depend_on_which_side_a_player_was_listed():
    outcomes = _simulate_games({"a": 0.3, "b": 0.0, "c": -0.6}, 400, seed=9)
    swapped = [(second, first, 1.0 - result) for first, second, result in outcomes]
    original = stats.bradley_terry(outcomes)
    for name, strength in stats.bradley_terry(swapped).items():
        assert strength == pytest.approx(original[name], abs=1e-9)


def test_it_counts_a_tie_as_half_a_win_each():
    ties = stats.bradley_terry([("a", "b", 0.5)] * 10)
    split = stats.bradley_terry([("a", "b", 1.0)] * 5 + [("a", "b", 0.0)] * 5)
    assert ties["a"] == pytest.approx(0.0, abs=1e-9)
    assert ties == pytest.approx(split)

    mostly_ties = stats.bradley_terry([("a", "b", 0.5)] * 4 + [("a", "b", 1.0)] * 2)
    wins_only = stats.bradley_terry([("a", "b", 1.0)] * 4 + [("a", "b", 0.0)] * 2)
    assert mostly_ties == pytest.approx(wins_only)


def test_it_finds_the_odds_ratio_between_two_players():
    strengths = stats.bradley_terry([("a", "b", 1.0)] * 600 + [("b", "a", 1.0)] * 300)
    assert strengths["a"] - strengths["b"] == pytest.approx(math.log(2.0), abs=0.01)


def test_it_keeps_an_undefeated_player_finite_and_on_top():
    strengths = stats.bradley_terry(
        [("champ", "b", 1.0)] * 5 + [("c", "champ", 0.0)] * 3 + [("b", "c", 0.5)] * 4
    )
    assert all(math.isfinite(value) for value in strengths.values())
    assert strengths["champ"] > strengths["b"]
    assert strengths["champ"] > strengths["c"]


def test_it_rates_groups_that_never_met_on_a_common_scale():
    strengths = stats.bradley_terry([("a", "b", 1.0), ("c", "d", 1.0)])
    assert all(math.isfinite(value) for value in strengths.values())
    assert strengths["a"] == pytest.approx(strengths["c"])
    assert strengths["b"] == pytest.approx(strengths["d"])
    assert strengths["a"] > strengths["b"]


def test_it_rejects_bad_outcomes():
    with pytest.raises(ValueError):
        stats.bradley_terry([("a", "b", 2.0)])
    with pytest.raises(ValueError):
        stats.bradley_terry([("a", "a", 1.0)])


def test_it_returns_nothing_for_no_outcomes():
    assert stats.bradley_terry([]) == {}
    assert stats.bradley_terry_ci([]) == {}


# --- bradley_terry_ci ------------------------------------------------------------------------


def test_it_brackets_the_strengths_and_separates_clearly_different_players():
    outcomes = _simulate_games({"strong": 1.5, "middle": 0.0, "weak": -1.5}, 3_000, seed=13)
    strengths = stats.bradley_terry(outcomes)
    intervals = stats.bradley_terry_ci(outcomes, rounds=300)
    assert set(intervals) == set(strengths)
    for name, (low, high) in intervals.items():
        assert low < strengths[name] < high
    assert intervals["strong"][0] > intervals["middle"][1]
    assert intervals["middle"][0] > intervals["weak"][1]
    assert stats.tied_ranks(intervals) == {"strong": 1, "middle": 2, "weak": 3}


def test_it_narrows_strength_intervals_as_votes_accumulate():
    true = {"a": 0.4, "b": 0.0, "c": -0.4}
    few = stats.bradley_terry_ci(_simulate_games(true, 150, seed=1), rounds=300)
    many = stats.bradley_terry_ci(_simulate_games(true, 6_000, seed=1), rounds=300)
    for name in true:
        assert (many[name][1] - many[name][0]) < (few[name][1] - few[name][0]) / 3


def test_it_overlaps_intervals_of_players_that_are_equally_strong():
    outcomes = _simulate_games({"a": 0.0, "b": 0.0, "c": 0.0}, 600, seed=21)
    intervals = stats.bradley_terry_ci(outcomes, rounds=300)
    assert set(stats.tied_ranks(intervals).values()) == {1}


def test_it_gives_the_same_strength_intervals_for_the_same_seed():
    outcomes = _simulate_games({"a": 0.5, "b": 0.0}, 200, seed=3)
    first = stats.bradley_terry_ci(outcomes, rounds=200, seed=8)
    assert stats.bradley_terry_ci(outcomes, rounds=200, seed=8) == first


# --- tied_ranks ------------------------------------------------------------------------------


def test_it_ranks_overlapping_intervals_as_ties():
    ranks = stats.tied_ranks(
        {"a": (5.0, 6.0), "b": (4.5, 5.5), "c": (1.0, 2.0), "d": (1.5, 4.8), "e": (0.0, 0.5)}
    )
    # c is beaten by a and b; d overlaps b so only a is clearly above it; all four beat e.
    assert ranks == {"a": 1, "b": 1, "c": 3, "d": 2, "e": 5}


def test_it_treats_a_contestant_without_data_as_tied_with_everyone():
    ranks = stats.tied_ranks({"a": (5.0, 6.0), "b": (1.0, 2.0), "new": (math.nan, math.nan)})
    assert ranks == {"a": 1, "b": 2, "new": 1}


# --- krippendorff_alpha ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_it_matches_krippendorffs_worked_example(level, expected):
    alpha = stats.krippendorff_alpha(KRIPPENDORFF_2011_C, level)
    assert alpha == pytest.approx(expected, abs=5e-4)


def test_it_matches_krippendorffs_binary_example():
    # Krippendorff (2011), section A: two observers, ten units, alpha = 0.095.
    data = [[0, 1, 0, 0, 0, 0, 0, 0, 1, 0], [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]]
    assert stats.krippendorff_alpha(data) == pytest.approx(0.095, abs=5e-4)


def test_it_accepts_labels_for_nominal_data():
    # Krippendorff (2011), section B: two observers, twelve units, nominal labels, alpha = 0.692.
    data = [list("aabbdcccedda"), list("babbbcccedddd"[:12])]
    assert stats.krippendorff_alpha(data) == pytest.approx(0.692, abs=5e-4)


def test_it_agrees_on_merge_verdicts_given_as_words():
    words = {1: "no", 2: "small_changes", 3: "yes", 4: "maybe", 5: "never"}
    labelled = [[None if v is None else words[v] for v in row] for row in KRIPPENDORFF_2011_C]
    assert stats.krippendorff_alpha(labelled) == pytest.approx(0.743, abs=5e-4)
    ordinal = stats.krippendorff_alpha(
        labelled, "ordinal", value_order=["no", "small_changes", "yes", "maybe", "never"]
    )
    assert ordinal == pytest.approx(0.815, abs=5e-4)


def test_it_needs_an_order_for_ordinal_labels():
    with pytest.raises(ValueError):
        stats.krippendorff_alpha([["yes", "no"], ["yes", "yes"]], "ordinal")
    with pytest.raises(ValueError):
        stats.krippendorff_alpha([["yes", "no"], ["yes", "perhaps"]], value_order=["no", "yes"])


def test_it_reports_perfect_agreement_as_one():
    assert stats.krippendorff_alpha([["yes", "no", None], ["yes", "no", "no"]]) == 1.0


def test_it_returns_nan_without_enough_overlapping_reviews():
    no_overlap = [["yes", None, "no"], [None, "no", None]]
    everyone_said_yes = [["yes", "yes"], ["yes", "yes"]]
    assert math.isnan(stats.krippendorff_alpha(no_overlap))
    assert math.isnan(stats.krippendorff_alpha(everyone_said_yes))
    assert math.isnan(stats.krippendorff_alpha([]))


def test_it_rejects_unknown_levels_and_ragged_rows():
    with pytest.raises(ValueError):
        stats.krippendorff_alpha(KRIPPENDORFF_2011_C, "ratio")
    with pytest.raises(ValueError):
        stats.krippendorff_alpha([[1, 2, 3], [1, 2]])


@pytest.mark.parametrize(
    ("alpha", "words"),
    [
        (0.95, "reliable"),
        (0.8, "reliable"),
        (0.7, "tentative"),
        (0.667, "tentative"),
        (0.5, "unreliable"),
        (-0.2, "unreliable"),
        (math.nan, "not enough overlapping reviews"),
        (None, "not enough overlapping reviews"),
    ],
)
def test_it_interprets_alpha_in_plain_words(alpha, words):
    assert stats.interpret_alpha(alpha) == words


# --- auc, spearman, median -------------------------------------------------------------------


def test_it_measures_how_well_a_signal_separates_verdicts():
    assert stats.auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert stats.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert stats.auc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    # Positives 3, 2; negatives 2, 1: pairs (3>2, 3>1, 2=2, 2>1) -> 3.5 of 4.
    assert stats.auc([3, 2, 2, 1], [1, 1, 0, 0]) == pytest.approx(0.875)


def test_it_ignores_missing_signals_in_auc_and_needs_both_verdicts():
    assert stats.auc([3, None, 1], [1, 0, 0]) == 1.0
    assert math.isnan(stats.auc([0.3, 0.4], [1, 1]))
    assert math.isnan(stats.auc([], []))


def test_it_correlates_ranks():
    assert stats.spearman([1, 2, 3, 4], [1, 8, 27, 64]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x, y = [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]
    squared_rank_gaps = sum((a - b) ** 2 for a, b in zip(x, y, strict=True))
    assert stats.spearman(x, y) == pytest.approx(1 - 6 * squared_rank_gaps / (5 * (25 - 1)))


def test_it_returns_nan_for_an_undefined_correlation():
    assert math.isnan(stats.spearman([1, 1, 1], [1, 2, 3]))
    assert math.isnan(stats.spearman([1], [2]))
    assert math.isnan(stats.spearman([1, None, 3], [None, 2, 4]))
    with pytest.raises(ValueError):
        stats.spearman([1, 2], [1, 2, 3])


def test_it_takes_the_median_of_present_values():
    assert stats.median([3, None, 1, 2]) == 2.0
    assert stats.median([4, 1, None, 2, 3]) == 2.5
    assert stats.median([None, None]) is None
    assert stats.median([]) is None

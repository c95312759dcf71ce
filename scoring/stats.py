"""Pure statistics for leaderboards and reviewer agreement.

No Django here: every function takes plain Python values and returns plain Python values, so the
leaderboard code can call it with whatever its queries produced and the tests need no database.
The heavy lifting is done by numpy, scipy and the `krippendorff` package; what is written here is
input validation, the handling of empty and degenerate data, and the vectorised resampling that
keeps the leaderboard fast.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import Literal

import krippendorff
import numpy as np
from scipy import sparse as scipy_sparse
from scipy import stats as scipy_stats
from scipy.special import expit

AlphaLevel = Literal["nominal", "ordinal", "interval"]

# Bootstrap resampling is done in blocks so a large sample cannot allocate an unbounded
# rounds x clusters index matrix.
_BOOTSTRAP_BLOCK_ELEMENTS = 2_000_000

# Newton's method on the Bradley-Terry log-likelihood: the tolerance is on the log-strength step.
_NEWTON_TOLERANCE = 1e-10
_NEWTON_MAX_ITERATIONS = 100
_LINE_SEARCH_HALVINGS = 40


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")


def _percentile_bounds(samples: np.ndarray, confidence: float, axis: int = 0) -> np.ndarray:
    tail = (1.0 - confidence) / 2.0
    return np.quantile(samples, [tail, 1.0 - tail], axis=axis)


# --- Proportions -----------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion such as the merge-verdict rate.

    Unlike the textbook "p +/- 1.96 SE" interval it stays inside [0, 1] and does not collapse to
    a point at 0/n or n/n, which matters for the small counts a team produces. No continuity
    correction (Newcombe 1998, method 3). With no trials at all nothing is known: (0.0, 1.0).
    """
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    _check_confidence(confidence)
    if n == 0:
        return (0.0, 1.0)
    # The formula directly: scipy's binomtest gives the same bounds at a hundred times the cost,
    # which a board with a few rates per contestant pays on every cold page.
    low, high = _wilson_bounds(successes / n, int(n), confidence)
    return (0.0 if successes == 0 else low, 1.0 if successes == n else high)


# --- Means ---------------------------------------------------------------------------------


def bootstrap_mean_ci(
    values: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    confidence: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of `values`.

    With `clusters` (one label per value, e.g. the prompt id of each score) whole clusters are
    resampled, each round drawing as many clusters as there are, with replacement, and taking
    the mean of all values in the drawn clusters. Scores on the same prompt are correlated, so
    resampling them as if independent would give intervals that are too narrow.

    Empty input gives (nan, nan); a single value v gives (v, v). The same `seed` always gives
    the same interval.
    """
    _check_confidence(confidence)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
    data = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(data)):
        raise ValueError("values must be finite numbers (drop missing scores before calling)")
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size == 1:
        return (float(data[0]), float(data[0]))

    if clusters is None:
        cluster_sums, cluster_sizes = data, np.ones_like(data)
    else:
        if len(clusters) != data.size:
            raise ValueError(
                f"clusters has {len(clusters)} labels but values has {data.size} entries"
            )
        cluster_sums, cluster_sizes = cluster_totals(data, clusters)
    [means] = _bootstrap_means([(cluster_sums, cluster_sizes)], rounds, seed)
    low, high = _percentile_bounds(means, confidence)
    return (float(low), float(high))


def cluster_totals(
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[Hashable] | np.ndarray,
    sizes: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The sum and the number of `values` in each cluster, clusters in order of first appearance:
    what the cluster bootstrap resamples. With `sizes`, each value is already the sum of that
    many values (a run's answers, say)."""
    data = np.asarray(values, dtype=float).ravel()
    if isinstance(clusters, np.ndarray) and clusters.dtype.kind in "iu":
        _, first, codes = np.unique(clusters, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # sorted labels -> first-appearance order
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        codes = rank[codes.ravel()]
    else:
        index_of: dict[Hashable, int] = {}
        codes = np.fromiter(
            (index_of.setdefault(label, len(index_of)) for label in clusters),
            dtype=np.intp,
            count=data.size,
        )
    counts = np.bincount(codes) if sizes is None else np.bincount(codes, weights=sizes)
    return np.bincount(codes, weights=data), counts.astype(float)


def clustered_mean_cis(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    confidence: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """`bootstrap_mean_ci` with clusters for several samples at once, each given as its
    clusters' sums and sizes in order of first appearance (`cluster_totals`); the same
    intervals, computed faster: samples with as many clusters share their draws."""
    _check_confidence(confidence)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
    samples = [(np.asarray(a, dtype=float), np.asarray(b, dtype=float)) for a, b in samples]
    result: list[tuple[float, float]] = [(math.nan, math.nan)] * len(samples)
    resampled = []
    for index, (sums, sizes) in enumerate(samples):
        if sizes.sum() == 1:
            result[index] = (float(sums.sum()), float(sums.sum()))
        elif sizes.sum() > 1:
            resampled.append(index)
    means = _bootstrap_means([samples[index] for index in resampled], rounds, seed)
    for index, sample_means in zip(resampled, means, strict=True):
        low, high = _percentile_bounds(sample_means, confidence)
        result[index] = (float(low), float(high))
    return result


def _bootstrap_means(
    samples: Sequence[tuple[np.ndarray, np.ndarray]], rounds: int, seed: int
) -> list[np.ndarray]:
    """For each sample (cluster sums, cluster sizes), the mean of every bootstrap round.

    Each round draws as many clusters as the sample has, with replacement; the draws depend
    only on the seed and the number of clusters, so samples of equal size share them. They are
    turned into how often each cluster was drawn, and a round's mean is a dot product.
    """
    means = [np.empty(rounds) for _ in samples]
    by_size: dict[int, list[int]] = {}
    for index, (sums, _) in enumerate(samples):
        by_size.setdefault(sums.size, []).append(index)
    for count, members in by_size.items():
        # Every member's sums and sizes as the columns of one matrix: one product per block
        # reads the draws once, where one product per column read them twice per sample.
        columns = np.stack([column for index in members for column in samples[index]], axis=1)
        rng = np.random.default_rng(seed)
        block = max(1, _BOOTSTRAP_BLOCK_ELEMENTS // count)
        for start in range(0, rounds, block):
            stop = min(rounds, start + block)
            drawn = rng.integers(0, count, size=(stop - start, count))
            drawn += (np.arange(stop - start) * count)[:, None]
            times = np.bincount(drawn.ravel(), minlength=(stop - start) * count)
            times = times.reshape(stop - start, count).astype(float)
            # einsum rather than a BLAS product: BLAS threads spinning on a busy machine
            # made this ten times slower, and einsum's plain loop sums in a fixed order.
            totals = np.einsum("rc,ck->rk", times, columns)
            for position, index in enumerate(members):
                drawn_sums, drawn_sizes = totals[:, 2 * position], totals[:, 2 * position + 1]
                means[index][start:stop] = drawn_sums / drawn_sizes
    return means


@functools.lru_cache(maxsize=16)
def _normal_quantile(probability: float) -> float:
    return float(scipy_stats.norm.ppf(probability))


def _wilson_bounds(mean: float, n: int, confidence: float) -> tuple[float, float]:
    """The Wilson score formula for an observed share `mean` of `n` trials (any share, not
    only k/n), so that it also applies to averages of values between 0 and 1."""
    z = _normal_quantile(0.5 + confidence / 2.0)
    z2 = z * z
    centre = (mean + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate_interval(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    confidence: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Interval for a rate whose units are each worth between 0 and 1, such as a contestant's
    merge rate over runs that are each "would merge" 1, 0 or in between.

    The interval is the percentile bootstrap of `bootstrap_mean_ci` resampling whole
    `clusters` (the prompt of each run: runs of one prompt are correlated), widened where
    needed to the Wilson interval for the same mean over the same number of units. The
    percentile bootstrap alone collapses to a point when every unit has the same value (three
    runs all merged: 100% to 100%) and is too narrow with a handful of clusters; the Wilson
    bound keeps a small sample from looking certain, and the bootstrap widens it when prompts
    make the runs move together.

    Empty input gives (nan, nan).
    """
    data = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(data)):
        raise ValueError("values must be finite numbers (drop missing scores before calling)")
    if data.size and (np.any(data < 0.0) or np.any(data > 1.0)):
        raise ValueError("rate values must lie between 0 and 1")
    if len(clusters) != data.size:
        raise ValueError(f"clusters has {len(clusters)} labels but values has {data.size} entries")
    [bounds] = clustered_rate_intervals([cluster_totals(data, clusters)], confidence, rounds, seed)
    return bounds


def clustered_rate_intervals(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    confidence: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """`rate_interval` for several samples at once, each given as its clusters' sums and sizes
    in order of first appearance (`cluster_totals`)."""
    return widened_to_wilson(
        samples, clustered_mean_cis(samples, confidence, rounds, seed), confidence
    )


def widened_to_wilson(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    bounds: Sequence[tuple[float, float]],
    confidence: float = 0.95,
) -> list[tuple[float, float]]:
    """`clustered_rate_intervals` from the samples' bootstrap intervals (`clustered_mean_cis`),
    for a caller that bootstraps them together with other samples."""
    result = []
    for (sums, sizes), (low, high) in zip(samples, bounds, strict=True):
        n = int(np.sum(sizes))
        if n == 0:
            result.append((math.nan, math.nan))
            continue
        wilson_low, wilson_high = _wilson_bounds(float(np.sum(sums)) / n, n, confidence)
        result.append((min(low, wilson_low), max(high, wilson_high)))
    return result


# --- Bradley-Terry -------------------------------------------------------------------------


class _Aggregated:
    """Outcomes collapsed into cells (pair, result) -> count, with players numbered 0..K-1.

    Pairs are stored as (i, j) with i < j and `result` is i's share of the win, so (a, b, 1.0)
    and (b, a, 0.0) land in the same cell.
    """

    def __init__(
        self, outcomes: Iterable[tuple[str, str, float]], counts: Iterable[int] | None = None
    ) -> None:
        self.players: list[str] = []
        index_of: dict[str, int] = {}
        cells: Counter[tuple[int, int, float]] = Counter()
        outcomes = list(outcomes)
        counts = [1] * len(outcomes) if counts is None else list(counts)
        if len(counts) != len(outcomes):
            raise ValueError(f"{len(counts)} counts for {len(outcomes)} outcomes")
        for (first, second, result), times in zip(outcomes, counts, strict=True):
            if times < 0 or int(times) != times:
                raise ValueError(f"a count must be a whole number of games, got {times!r}")
            result = float(result)
            if not 0.0 <= result <= 1.0:
                raise ValueError(f"result must be between 0 and 1, got {result!r}")
            if first == second:
                raise ValueError(f"a player cannot be compared with itself: {first!r}")
            for player in (first, second):
                if player not in index_of:
                    index_of[player] = len(self.players)
                    self.players.append(player)
            i, j = index_of[first], index_of[second]
            if i < j:
                cells[(i, j, result)] += int(times)
            else:
                cells[(j, i, 1.0 - result)] += int(times)
        keys = list(cells)
        self.first = np.array([key[0] for key in keys], dtype=np.intp)
        self.second = np.array([key[1] for key in keys], dtype=np.intp)
        self.result = np.array([key[2] for key in keys], dtype=float)
        self.counts = np.array([cells[key] for key in keys], dtype=float)

    def wins(self, counts: np.ndarray) -> np.ndarray:
        """Win matrices (B, K, K) for a batch of cell counts (B, C); ties count half each way."""
        size = len(self.players)
        cells = np.arange(len(self.counts))
        # Each cell adds to two entries of a win matrix: a sparse product, not a dense one
        # (and no BLAS threads, which spin badly on a busy machine).
        per_cell = scipy_sparse.csr_matrix(
            (
                np.concatenate([self.result, 1.0 - self.result]),
                (
                    np.concatenate([cells, cells]),
                    np.concatenate(
                        [self.first * size + self.second, self.second * size + self.first]
                    ),
                ),
            ),
            shape=(len(self.counts), size * size),
        )
        return np.asarray((per_cell.T @ counts.T).T).reshape(-1, size, size)


def _log_posterior(theta: np.ndarray, wins: np.ndarray) -> np.ndarray:
    difference = theta[:, :, None] - theta[:, None, :]
    games = (wins * -np.logaddexp(0.0, -difference)).sum(axis=(1, 2))
    # The prior: one virtual tie per player against a virtual player of log-strength 0.
    prior = (0.5 * theta - np.logaddexp(theta, 0.0)).sum(axis=1)
    return games + prior


def _fit_log_strengths(wins: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Maximise the penalised Bradley-Terry log-likelihood for a batch of win matrices.

    Newton's method with a backtracking line search, vectorised over the batch. The virtual
    ties make the objective strictly concave, so the maximum exists, is unique and Newton
    converges to it from any start; a warm start from the point estimate makes bootstrap rounds
    converge in a few steps.
    """
    games = wins + wins.transpose(0, 2, 1)
    won = wins.sum(axis=2)
    theta = start.copy()
    diagonal = np.arange(theta.shape[1])
    for _ in range(_NEWTON_MAX_ITERATIONS):
        p_beats = expit(theta[:, :, None] - theta[:, None, :])
        p_prior = expit(theta)
        gradient = won - (games * p_beats).sum(axis=2) + 0.5 - p_prior
        curvature = games * p_beats * (1.0 - p_beats)
        negative_hessian = -curvature
        negative_hessian[:, diagonal, diagonal] = curvature.sum(axis=2) + p_prior * (1 - p_prior)
        step = np.linalg.solve(negative_hessian, gradient[..., None])[..., 0]

        current = _log_posterior(theta, wins)
        # Rounding noise in a sum of thousands of terms must not block a tiny final step.
        slack = 1e-12 * (1.0 + np.abs(current))
        ascent = (gradient * step).sum(axis=1)
        scale = np.ones(theta.shape[0])
        pending = np.ones(theta.shape[0], dtype=bool)
        for _ in range(_LINE_SEARCH_HALVINGS):
            trial = theta + scale[:, None] * step
            improved = _log_posterior(trial, wins) >= current + 1e-4 * scale * ascent - slack
            pending &= ~improved
            if not pending.any():
                break
            scale[pending] /= 2.0
        theta = theta + scale[:, None] * step
        if np.max(np.abs(scale[:, None] * step), initial=0.0) < _NEWTON_TOLERANCE:
            break
    return theta - theta.mean(axis=1, keepdims=True)


def bradley_terry(
    outcomes: Iterable[tuple[str, str, float]], counts: Iterable[int] | None = None
) -> dict[str, float]:
    """Bradley-Terry log-strengths from pairwise outcomes.

    Each outcome is (first, second, result): result 1.0 when first won, 0.0 when second won,
    0.5 for a tie, which counts as half a win for each (any value in [0, 1] is accepted as that
    share of a win). Returns natural-log strengths with mean 0, so that the probability that a
    beats b is 1 / (1 + exp(strength[b] - strength[a])).

    Prior, always applied: every player gets one virtual tie (half a win, half a loss) against
    a virtual player of log-strength 0. Without it the maximum-likelihood estimate does not
    exist when a player never lost (its strength runs off to infinity), never won, or when the
    comparison graph falls apart into groups that never met. Applying it always, rather than
    only in those cases, keeps estimates from jumping when a player's first loss arrives and
    makes every bootstrap round use the same estimator. It weighs as much as one game per
    player, so it is negligible once players have tens of games, and it pulls a player with
    little data towards the average, which is what a leaderboard should do. The result is
    therefore the posterior mode, which converges to the maximum-likelihood estimate.

    With `counts`, each outcome stands for that many games: the same as listing it that often.

    Empty input gives {}.
    """
    aggregated = _Aggregated(outcomes, counts)
    if not aggregated.players:
        return {}
    wins = aggregated.wins(aggregated.counts[None, :])
    theta = _fit_log_strengths(wins, np.zeros((1, len(aggregated.players))))[0]
    return {player: float(value) for player, value in zip(aggregated.players, theta, strict=True)}


def bradley_terry_ci(
    outcomes: Iterable[tuple[str, str, float]],
    confidence: float = 0.95,
    rounds: int = 1000,
    seed: int = 0,
    counts: Iterable[int] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for the log-strengths of `bradley_terry`.

    Each round resamples the outcomes with replacement (as many as there were), refits with the
    same prior, and centres the strengths to mean 0. The resampling draws multinomial counts
    over the distinct (pair, result) cells and fits all rounds at once, warm-started from the
    point estimate, so the cost does not grow with the number of outcomes.

    A player absent from a resample keeps only its virtual tie in that round, so its strength
    there is pulled to the average; with a sensible amount of data this almost never happens.
    `counts` as for `bradley_terry`.
    """
    _check_confidence(confidence)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds!r}")
    aggregated = _Aggregated(outcomes, counts)
    if not aggregated.players:
        return {}
    total = aggregated.counts.sum()
    point = _fit_log_strengths(
        aggregated.wins(aggregated.counts[None, :]), np.zeros((1, len(aggregated.players)))
    )
    rng = np.random.default_rng(seed)
    resampled = rng.multinomial(int(total), aggregated.counts / total, size=rounds).astype(float)
    theta = _fit_log_strengths(aggregated.wins(resampled), np.repeat(point, rounds, axis=0))
    low, high = _percentile_bounds(theta, confidence, axis=0)
    return {
        player: (float(low[index]), float(high[index]))
        for index, player in enumerate(aggregated.players)
    }


# --- Ranks ---------------------------------------------------------------------------------


def tied_ranks(intervals: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Ranks that admit ties: 1 + the number of contestants clearly better than this one.

    "Clearly better" means the other's lower bound is above this one's upper bound (higher is
    better). Overlapping intervals therefore share ranks, and ranks can skip: with intervals
    A (5, 6), B (5, 6), C (1, 2), A and B are both 1 and C is 3.

    A bound that is nan (no data) is read as unbounded on that side: a contestant with no data
    is tied with everyone and pushes nobody down, so callers should show it as unranked.
    """
    names = list(intervals)
    bounds = np.array([intervals[name] for name in names], dtype=float).reshape(-1, 2)
    lowers = np.where(np.isnan(bounds[:, 0]), -np.inf, bounds[:, 0])
    uppers = np.where(np.isnan(bounds[:, 1]), np.inf, bounds[:, 1])
    sorted_lowers = np.sort(lowers)
    better = sorted_lowers.size - np.searchsorted(sorted_lowers, uppers, side="right")
    return {name: 1 + int(count) for name, count in zip(names, better, strict=True)}


# --- Agreement -----------------------------------------------------------------------------


def _alpha_codes(
    reliability_data: Sequence[Sequence[object]],
    level: AlphaLevel,
    value_order: Sequence[Hashable] | None,
) -> np.ndarray:
    """The reliability data as a float matrix with nan for missing values.

    Nominal labels of any hashable type become arbitrary codes (only equality matters);
    `value_order` turns labels into their positions in that order; otherwise ordinal and
    interval data must already be numbers.
    """
    rows = [list(row) for row in reliability_data]
    if len({len(row) for row in rows}) > 1:
        raise ValueError("every reviewer row must have one entry per unit (use None for missing)")
    codes = np.full((len(rows), len(rows[0]) if rows else 0), np.nan)
    position = None if value_order is None else {value: i for i, value in enumerate(value_order)}
    nominal_codes: dict[Hashable, int] = {}
    for r, row in enumerate(rows):
        for u, value in enumerate(row):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if position is not None:
                if value not in position:
                    raise ValueError(f"{value!r} is not in value_order {list(position)!r}")
                codes[r, u] = position[value]
            elif level == "nominal":
                codes[r, u] = nominal_codes.setdefault(value, len(nominal_codes))
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                codes[r, u] = float(value)
            else:
                raise ValueError(
                    f"{level} alpha needs numbers or a value_order for labels, got {value!r}"
                )
    return codes


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[object]],
    level: AlphaLevel = "nominal",
    *,
    value_order: Sequence[Hashable] | None = None,
) -> float:
    """Krippendorff's alpha: agreement among reviewers beyond what chance would give.

    `reliability_data` has one row per reviewer and one column per unit (a run, for one
    criterion); None marks a unit the reviewer did not review. `level` is "nominal" (labels:
    "yes", "no", "small_changes"; only equality matters), "ordinal" (ordered; distances
    depend on how often the values in between were used) or "interval" (numeric differences).
    For ordinal or interval data given as labels, pass `value_order` from lowest to highest
    (e.g. ["no", "small_changes", "yes"]); labels are then replaced by their positions.

    1 is perfect agreement, 0 is chance, negative is systematic disagreement. Returns nan when
    alpha is undefined: no unit has two reviews, or every paired review used the same single
    value so that no disagreement was even possible to observe.
    """
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    codes = _alpha_codes(reliability_data, level, value_order)
    # Only units with at least two reviews carry information about agreement.
    pairable = codes[:, (~np.isnan(codes)).sum(axis=0) >= 2]
    if np.unique(pairable[~np.isnan(pairable)]).size < 2:
        return math.nan
    return float(krippendorff.alpha(reliability_data=pairable, level_of_measurement=level))


def krippendorff_alpha_counts(
    value_counts: np.ndarray, level: AlphaLevel = "nominal", values: Sequence[float] | None = None
) -> float:
    """`krippendorff_alpha` from how many reviewers gave each value to each unit.

    `value_counts[u, v]` counts the reviewers who gave unit u the v-th of `values` (lowest first
    for ordinal and interval data; positions 0, 1, ... without it). Alpha depends on who gave
    what only through these counts, so this equals `krippendorff_alpha` on the reliability data
    they come from, and needs no reviewer x unit matrix. Units counted alike may be repeated
    rows; nan in the same cases.
    """
    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
    counts = np.asarray(value_counts, dtype=float).reshape(-1, np.shape(value_counts)[-1])
    domain = np.arange(counts.shape[1], dtype=float) if values is None else np.asarray(values)
    if domain.size != counts.shape[1]:
        raise ValueError(f"{domain.size} values for {counts.shape[1]} columns of counts")
    pairable = counts[counts.sum(axis=1) >= 2]
    used = pairable.sum(axis=0) > 0
    if used.sum() < 2:
        return math.nan
    return float(
        krippendorff.alpha(
            value_counts=pairable[:, used],
            value_domain=domain[used],
            level_of_measurement=level,
        )
    )


def interpret_alpha(alpha: float | None) -> str:
    """Krippendorff's (2004) guidance in plain words.

    At least 0.8: "reliable"; 0.667 up to 0.8: "tentative" (fit for tentative conclusions
    only); below 0.667: "unreliable"; nan or None: "not enough overlapping reviews".
    """
    if alpha is None or math.isnan(alpha):
        return "not enough overlapping reviews"
    if alpha >= 0.8:
        return "reliable"
    if alpha >= 0.667:
        return "tentative"
    return "unreliable"


# --- What predicts the human verdict --------------------------------------------------------


def _complete_pairs(x: Sequence[object], y: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"inputs differ in length: {len(x)} and {len(y)}")
    # None becomes nan, and is dropped with it.
    left = np.array(x, dtype=float).ravel()
    right = np.array(y, dtype=float).ravel()
    keep = ~(np.isnan(left) | np.isnan(right))
    return left[keep], right[keep]


def auc(scores: Sequence[float | None], labels: Sequence[bool | int | None]) -> float:
    """Area under the ROC curve: how well `scores` separate positive from negative `labels`.

    The probability that a random positive scores above a random negative, ties counting half
    (the Mann-Whitney U statistic divided by the number of positive-negative pairs). 0.5 is
    no better than chance. Pairs where score or label is None are dropped; nan when either
    class is then missing.
    """
    values, truth = _complete_pairs(scores, labels)
    positives, negatives = values[truth != 0], values[truth == 0]
    if positives.size == 0 or negatives.size == 0:
        return math.nan
    statistic = scipy_stats.mannwhitneyu(positives, negatives, method="asymptotic").statistic
    return float(statistic / (positives.size * negatives.size))


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> float:
    """Spearman rank correlation; pairs with a None are dropped.

    nan when undefined: fewer than two complete pairs or a side that is constant.
    """
    left, right = _complete_pairs(x, y)
    if left.size < 2 or np.all(left == left[0]) or np.all(right == right[0]):
        return math.nan
    return float(scipy_stats.spearmanr(left, right).statistic)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return float(statistics.median(present))

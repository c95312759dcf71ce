"""Queries -> rows for the leaderboard pages and exports.

Each page is computed from a fixed handful of `values()` queries (the number does not grow with
the number of runs), the arithmetic is done in numpy and `scoring.stats`, and the result is
cached per filter. Decisions a lead should know, also stated on the pages:

- The unit is the run. A run counts as "would merge" when a strict majority of its submitted
  reviews said yes, and as "acceptable" when a strict majority said yes or "after small
  changes". Runs nobody has reviewed yet are left out of both rates. Reviews of one run are
  correlated, so treating each review as a trial would make the intervals too narrow.
- Only submitted reviews count, only reviewable runs (finished, failed, timed out) count.
- Pairwise votes: "a" and "b" are wins, "tie" and "both bad" both count as a tie (half a win
  each way): "both bad" says neither was better, which is what a tie means for relative
  strength. Undecided comparisons are ignored, and so are comparisons between two runs of the
  same contestant.
- Ranks admit ties (`stats.tied_ranks`) on the merge-rate Wilson intervals; when the filtered
  runs have no reviews at all they come from the Bradley-Terry intervals instead. A contestant
  with nothing to rank on is unranked (rank None).

Caching: results are cached (Django's cache) under a key holding the filters and a generation
number; `invalidate(campaign_id)` bumps the generation, and the receivers at the bottom call it
when a review is submitted, a comparison decided or a run created or changes status. Import
this module in `ScoringConfig.ready()` so the receivers are connected in every process.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from runs.models import Campaign, Contestant, LanguageModel, Run
from scoring import stats
from scoring.models import (
    VERDICT_NO,
    VERDICT_SMALL_CHANGES,
    VERDICT_YES,
    CampaignRubric,
    Comparison,
    Criterion,
    Review,
    Rubric,
)

# The rubric's "merge" criterion is the verdict itself, reported as the merge rate.
MERGE_KEY = "merge"
VERDICT_ORDER = [VERDICT_NO, VERDICT_SMALL_CHANGES, VERDICT_YES]
BOOTSTRAP_ROUNDS = 1000
# Below these a predictor's number says more about noise than about the signal.
MIN_RUNS_FOR_AUC = 8
MIN_CONTESTANTS_FOR_SPEARMAN = 4
# Bounds how long another process (which the in-process receivers cannot reach when the cache
# is per-process memory) can show a stale board.
CACHE_SECONDS = 60
_CACHE_PREFIX = "leaderboard"
_OUTCOME_RESULT = {
    Comparison.A: 1.0,
    Comparison.B: 0.0,
    Comparison.TIE: 0.5,
    Comparison.BOTH_BAD: 0.5,
}


@dataclass(frozen=True)
class Filters:
    """Which runs a board covers. Empty fields do not filter."""

    campaign_id: int | None = None
    prompt_set_id: int | None = None
    tag: str = ""
    date_from: date | None = None
    date_to: date | None = None

    def key(self) -> str:
        return "|".join("" if value is None else str(value) for value in asdict(self).values())

    def query(self) -> dict[str, str]:
        """The filters as GET parameters, for links to exports and other pages."""
        names = {"campaign_id": "campaign", "prompt_set_id": "prompt_set"}
        return {
            names.get(field, field): str(value)
            for field, value in asdict(self).items()
            if value not in (None, "")
        }


# --- Formatting ------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{round(100 * value)}%"


def rate_text(k: int, n: int, interval: tuple[float, float] | None) -> str:
    """ "55% (34–74%, 11 of 20)", or "no reviews" when n is 0."""
    if n == 0 or interval is None:
        return "no reviews"
    return f"{percent(k / n)} ({percent(interval[0])}–{percent(interval[1])}, {k} of {n})"


def _number(value: float | None, digits: int = 2) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), digits)


def _interval(bounds: tuple[float, float] | None, digits: int = 3) -> list[float] | None:
    if bounds is None or any(math.isnan(b) for b in bounds):
        return None
    return [round(float(bounds[0]), digits), round(float(bounds[1]), digits)]


# --- Caching ---------------------------------------------------------------------------------


def _generation_keys(campaign_id: int | None) -> list[str]:
    scope = "all" if campaign_id is None else str(campaign_id)
    return [f"{_CACHE_PREFIX}:gen:epoch", f"{_CACHE_PREFIX}:gen:{scope}"]


def _bump(key: str) -> None:
    cache.add(key, 0, timeout=None)
    try:
        cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=None)


def invalidate(campaign_id: int | None = None) -> None:
    """Forget cached boards that may include `campaign_id` (None: forget every board).

    Boards filtered to another campaign stay cached; boards over all campaigns are dropped.
    """
    if campaign_id is None:
        _bump(f"{_CACHE_PREFIX}:gen:epoch")
        return
    _bump(f"{_CACHE_PREFIX}:gen:{campaign_id}")
    _bump(f"{_CACHE_PREFIX}:gen:all")


def _cached(kind: str, filters: Filters, compute: Callable[[], dict]) -> dict:
    keys = _generation_keys(filters.campaign_id)
    generations = cache.get_many(keys)
    stamp = ".".join(str(generations.get(key, 0)) for key in keys)
    key = f"{_CACHE_PREFIX}:{kind}:{stamp}:{filters.key()}"
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, CACHE_SECONDS)
    return value


# --- Loading ---------------------------------------------------------------------------------


def _run_conditions(filters: Filters, prefix: str = "") -> Q:
    """The filters on runs as a Q, with `prefix` ("run__") to apply them through a relation.

    Reviews and comparisons join to their runs with these rather than `run__in=<subquery>`:
    SQLite plans a pair of IN subqueries on a large table very badly.
    """
    conditions = {f"{prefix}status__in": [Run.FINISHED, Run.FAILED, Run.TIMED_OUT]}
    if filters.campaign_id is not None:
        conditions[f"{prefix}campaign_id"] = filters.campaign_id
    if filters.prompt_set_id is not None:
        conditions[f"{prefix}campaign__prompt_set_id"] = filters.prompt_set_id
    if filters.date_from is not None:
        conditions[f"{prefix}finished_at__date__gte"] = filters.date_from
    if filters.date_to is not None:
        conditions[f"{prefix}finished_at__date__lte"] = filters.date_to
    return Q(**conditions)


def _runs_queryset(filters: Filters) -> QuerySet:
    return Run.objects.filter(_run_conditions(filters))


def _load_runs(filters: Filters, *fields: str, **expressions) -> list[dict]:
    """The filtered runs as dicts. Tags live in the run's snapshot (JSON), so the tag filter is
    applied here rather than in SQL, where JSON containment is not portable to SQLite."""
    rows = list(
        _runs_queryset(filters)
        .order_by("id")
        .values("id", "contestant_id", *fields, tags=_snapshot("tags"), **expressions)
    )
    for row in rows:
        row["tags"] = [str(tag) for tag in row["tags"] or []]
    if filters.tag:
        rows = [row for row in rows if filters.tag in row["tags"]]
    return rows


def _snapshot(key: str) -> KeyTransform:
    return KeyTransform(key, KeyTransform("prompt", "snapshot"))


def _load_reviews(
    filters: Filters, run_ids: set[int], criteria: list[Criterion], *fields: str
) -> list[dict]:
    """Submitted reviews of the runs, each with `answers` holding only the criteria's answers.

    The answers are read as text straight from the JSON column, one column per criterion:
    decoding thousands of whole answer dicts in Python is the slowest part otherwise.
    """
    columns = {
        f"answer_{index}": KeyTextTransform(criterion.key, "answers")
        for index, criterion in enumerate(criteria)
    }
    reviews = []
    for review in (
        Review.objects.submitted()
        .filter(_run_conditions(filters, "run__"))
        .order_by("id")
        .values("run_id", "reviewer_id", "verdict", *fields, **columns)
    ):
        if review["run_id"] in run_ids:
            review["answers"] = {
                criterion.key: review.pop(f"answer_{index}")
                for index, criterion in enumerate(criteria)
            }
            reviews.append(review)
    return reviews


def _load_criteria(campaign_ids: set[int]) -> list[Criterion]:
    """The scored criteria of the campaigns' rubrics, one per key, without the verdict."""
    links = dict(
        CampaignRubric.objects.filter(campaign_id__in=campaign_ids).values_list(
            "campaign_id", "rubric_id"
        )
    )
    rubric_ids = set(links.values())
    if campaign_ids - links.keys():
        default = Rubric.default()
        if default is not None:
            rubric_ids.add(default.pk)
    seen: dict[str, Criterion] = {}
    for criterion in Criterion.objects.filter(rubric_id__in=rubric_ids).order_by(
        "position", "rubric_id", "id"
    ):
        if criterion.key != MERGE_KEY:
            seen.setdefault(criterion.key, criterion)
    return list(seen.values())


def _numeric_answers(criteria: list[Criterion]) -> dict[str, dict[str, float]]:
    """criterion key -> answer -> number, so thousands of answers need no method calls."""
    table: dict[str, dict[str, float]] = {}
    for criterion in criteria:
        table[criterion.key] = {}
        for value, _label in criterion.options():
            number = criterion.numeric(value)
            if number is not None:
                table[criterion.key][value] = number
    return table


def _run_verdicts(
    run_index: dict[int, int], reviews: list[dict]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run: number of submitted reviews, strict-majority yes, strict-majority acceptable."""
    size = len(run_index)
    positions = np.fromiter((run_index[r["run_id"]] for r in reviews), np.intp, len(reviews))
    yes = np.fromiter((r["verdict"] == VERDICT_YES for r in reviews), float, len(reviews))
    acceptable = np.fromiter(
        (r["verdict"] in (VERDICT_YES, VERDICT_SMALL_CHANGES) for r in reviews), float, len(reviews)
    )
    count = np.bincount(positions, minlength=size)
    merge = (count > 0) & (2 * np.bincount(positions, yes, size) > count)
    ok = (count > 0) & (2 * np.bincount(positions, acceptable, size) > count)
    return count, merge, ok


# --- The board -------------------------------------------------------------------------------


def board(filters: Filters) -> dict:
    """Everything the leaderboard page and export show for `filters` (cached).

    Keys: rows (one dict per contestant, best first), rank_basis ("merge rate", "pairwise
    votes" or ""), criteria ([{key, label}]), tags ([{tag, cells}] in row order), predictors
    ([{signal, measure, value, n, unit, sentence}]), totals ({runs, reviewed_runs, reviews,
    votes}).
    """
    return _cached("board", filters, lambda: _compute_board(filters))


def rows(filters: Filters) -> list[dict]:
    return board(filters)["rows"]


def _compute_board(filters: Filters) -> dict:
    runs = _load_runs(
        filters,
        "campaign_id",
        "prompt_id",
        "repeat",
        "test_exit_code",
        "files_changed",
        "additions",
        "deletions",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "started_at",
        "finished_at",
        "questions",
        clarification_expected=_snapshot("clarification_expected"),
        expected_files=_snapshot("expected_files"),
    )
    run_index = {run["id"]: i for i, run in enumerate(runs)}
    criteria = _load_criteria({run["campaign_id"] for run in runs})
    reviews = _load_reviews(filters, set(run_index), criteria)
    comparisons = [
        vote
        for vote in Comparison.objects.filter(
            _run_conditions(filters, "run_a__"),
            decided_at__isnull=False,
            outcome__in=list(_OUTCOME_RESULT),
        ).values("run_a_id", "run_b_id", "outcome", "run_a__contestant_id", "run_b__contestant_id")
        if vote["run_a_id"] in run_index and vote["run_b_id"] in run_index
    ]
    contestants = list(
        Contestant.objects.filter(id__in={run["contestant_id"] for run in runs}).select_related(
            "model"
        )
    )

    c_index = {contestant.pk: i for i, contestant in enumerate(contestants)}
    run_contestant = np.fromiter((c_index[r["contestant_id"]] for r in runs), np.intp, len(runs))
    count, merge, acceptable = _run_verdicts(run_index, reviews)
    reviewed = count > 0

    def per_contestant(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(run_contestant, weights, len(contestants))

    totals = {
        "runs": per_contestant(),
        "reviewed": per_contestant(reviewed.astype(float)),
        "merges": per_contestant(merge.astype(float)),
        "acceptable": per_contestant(acceptable.astype(float)),
        "reviews": per_contestant(count.astype(float)),
    }
    signals = _run_signals(runs)
    for name in ("tested", "passed", "clarify_expected", "asked"):
        totals[name] = per_contestant(signals[name].astype(float))
    votes = Counter()
    for vote in comparisons:
        votes[vote["run_a__contestant_id"]] += 1
        votes[vote["run_b__contestant_id"]] += 1

    strengths, strength_intervals = _bradley_terry(comparisons)
    criterion_stats = _criterion_means(criteria, reviews, runs, run_index, run_contestant)
    spread = _repeat_spread(runs, reviewed, merge, run_contestant, len(contestants))

    result_rows = []
    for i, contestant in enumerate(contestants):
        mine = run_contestant == i
        k, n = int(totals["merges"][i]), int(totals["reviewed"][i])
        k_ok = int(totals["acceptable"][i])
        merge_ci = stats.wilson_interval(k, n) if n else None
        ok_ci = stats.wilson_interval(k_ok, n) if n else None
        tested, passed = int(totals["tested"][i]), int(totals["passed"][i])
        expected, asked = int(totals["clarify_expected"][i]), int(totals["asked"][i])
        recall = signals["recall"][mine]
        recall = recall[~np.isnan(recall)]
        key = str(contestant.pk)
        strength = strengths.get(key)
        result_rows.append(
            {
                "contestant_id": contestant.pk,
                "contestant": contestant.name,
                "label": contestant.label,
                "scripted": contestant.is_scripted,
                "model": contestant.model.name,
                "rank": None,
                "tied": False,
                "runs": int(totals["runs"][i]),
                "reviewed_runs": n,
                "reviews": int(totals["reviews"][i]),
                "votes": votes[contestant.pk],
                "merges": k,
                "merge_rate": _number(k / n, 3) if n else None,
                "merge_rate_ci": _interval(merge_ci),
                "merge_rate_text": rate_text(k, n, merge_ci),
                "acceptable": k_ok,
                "acceptable_rate": _number(k_ok / n, 3) if n else None,
                "acceptable_rate_ci": _interval(ok_ci),
                "acceptable_rate_text": rate_text(k_ok, n, ok_ci),
                "criteria": criterion_stats.get(i, {}),
                "strength": _number(strength, 3),
                "strength_ci": _interval(strength_intervals.get(key)),
                "win_chance": _number(1 / (1 + math.exp(-strength)), 3)
                if strength is not None
                else None,
                "tests_run": tested,
                "tests_passed": passed,
                "tests_pass_rate": _number(passed / tested, 3) if tested else None,
                "expected_files_recall": _number(recall.mean(), 3) if recall.size else None,
                "recall_runs": int(recall.size),
                "clarification_prompts": expected,
                "clarification_asked": asked,
                "clarification_rate": _number(asked / expected, 3) if expected else None,
                "median_cost_usd": _median(signals["cost"][mine], 4),
                "median_tokens": _median(signals["tokens"][mine], 0),
                "median_duration_s": _median(signals["duration"][mine], 1),
                **spread[i],
            }
        )
    rank_basis = _assign_ranks(result_rows)
    ordered = sorted(result_rows, key=_row_order)
    return {
        "rows": ordered,
        "rank_basis": rank_basis,
        "criteria": [{"key": c.key, "label": c.label} for c in criteria],
        "tags": _tag_breakdown(runs, reviewed, merge, ordered),
        "predictors": _predictors(runs, signals, reviewed, merge, ordered, contestants),
        "totals": {
            "runs": len(runs),
            "reviewed_runs": int(reviewed.sum()),
            "reviews": len(reviews),
            "votes": len(comparisons),
        },
    }


def _median(values: np.ndarray, digits: int) -> float | None:
    present = values[~np.isnan(values)]
    return _number(float(np.median(present)), digits) if present.size else None


def _run_signals(runs: list[dict]) -> dict[str, np.ndarray]:
    """Automatic per-run measurements as arrays aligned with `runs` (nan where unknown)."""
    size = len(runs)

    def array(values) -> np.ndarray:
        return np.fromiter(values, float, size)

    def recall(run: dict) -> float:
        expected = run["expected_files"] or []
        if not expected:
            return math.nan
        changed = set(run["files_changed"] or [])
        return sum(1 for path in expected if path in changed) / len(expected)

    def duration(run: dict) -> float:
        if run["started_at"] and run["finished_at"]:
            return (run["finished_at"] - run["started_at"]).total_seconds()
        return math.nan

    exit_codes = array(
        math.nan if r["test_exit_code"] is None else r["test_exit_code"] for r in runs
    )
    return {
        "tested": ~np.isnan(exit_codes),
        "passed": exit_codes == 0,
        "tests_ok": np.where(np.isnan(exit_codes), np.nan, (exit_codes == 0).astype(float)),
        "clarify_expected": array(bool(r["clarification_expected"]) for r in runs) > 0,
        "asked": array(bool(r["clarification_expected"]) and bool(r["questions"]) for r in runs)
        > 0,
        "recall": array(recall(r) for r in runs),
        "diff_size": array(r["additions"] + r["deletions"] for r in runs),
        "cost": array(r["cost_usd"] for r in runs),
        "tokens": array(r["input_tokens"] + r["output_tokens"] for r in runs),
        "duration": array(duration(r) for r in runs),
    }


def _bradley_terry(
    comparisons: list[dict],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    outcomes = [
        (str(vote["run_a__contestant_id"]), str(vote["run_b__contestant_id"]), result)
        for vote in comparisons
        if vote["run_a__contestant_id"] != vote["run_b__contestant_id"]
        for result in [_OUTCOME_RESULT[vote["outcome"]]]
    ]
    if not outcomes:
        return {}, {}
    return stats.bradley_terry(outcomes), stats.bradley_terry_ci(outcomes, rounds=BOOTSTRAP_ROUNDS)


def _criterion_means(
    criteria: list[Criterion],
    reviews: list[dict],
    runs: list[dict],
    run_index: dict[int, int],
    run_contestant: np.ndarray,
) -> dict[int, dict[str, dict]]:
    """contestant index -> criterion key -> {mean, ci, n}; intervals resample whole prompts."""
    numeric = _numeric_answers(criteria)
    values: dict[tuple[int, str], list[float]] = defaultdict(list)
    clusters: dict[tuple[int, str], list[int]] = defaultdict(list)
    for review in reviews:
        position = run_index[review["run_id"]]
        contestant = int(run_contestant[position])
        answers = review["answers"]
        for key, table in numeric.items():
            number = table.get(str(answers.get(key, "")))
            if number is not None:
                values[(contestant, key)].append(number)
                clusters[(contestant, key)].append(runs[position]["prompt_id"])
    result: dict[int, dict[str, dict]] = defaultdict(dict)
    for (contestant, key), numbers in values.items():
        low, high = stats.bootstrap_mean_ci(
            numbers, clusters[(contestant, key)], rounds=BOOTSTRAP_ROUNDS
        )
        mean = float(np.mean(numbers))
        result[contestant][key] = {
            "mean": _number(mean, 3),
            "ci": _interval((low, high)),
            "n": len(numbers),
            "text": f"{mean:.2f} ({low:.2f}–{high:.2f})",
        }
    return result


def _repeat_spread(
    runs: list[dict],
    reviewed: np.ndarray,
    merge: np.ndarray,
    run_contestant: np.ndarray,
    size: int,
) -> list[dict]:
    """Per contestant: how often repeats of one prompt got different verdicts, and the spread
    (standard deviation) of the merge rate computed separately for each repeat number."""
    by_prompt: dict[tuple[int, int, int], set[bool]] = defaultdict(set)
    by_repeat: dict[tuple[int, int], list[bool]] = defaultdict(list)
    for position, run in enumerate(runs):
        if not reviewed[position]:
            continue
        contestant = int(run_contestant[position])
        by_prompt[(contestant, run["campaign_id"], run["prompt_id"])].add(bool(merge[position]))
        by_repeat[(contestant, run["repeat"])].append(bool(merge[position]))
    repeated_prompts = Counter()
    disagreeing = Counter()
    repeats_per_prompt: dict[tuple[int, int, int], int] = Counter()
    for position, run in enumerate(runs):
        if reviewed[position]:
            key = (int(run_contestant[position]), run["campaign_id"], run["prompt_id"])
            repeats_per_prompt[key] += 1
    for key, verdicts in by_prompt.items():
        if repeats_per_prompt[key] >= 2:
            repeated_prompts[key[0]] += 1
            disagreeing[key[0]] += len(verdicts) > 1
    result = []
    for contestant in range(size):
        rates = [np.mean(v) for (c, _), v in by_repeat.items() if c == contestant]
        prompts = repeated_prompts[contestant]
        share = disagreeing[contestant] / prompts if prompts else None
        result.append(
            {
                "repeat_prompts": prompts,
                "repeat_disagreement": _number(share, 3),
                "repeat_disagreement_text": (
                    f"{percent(share)} of {prompts} prompt{'s' if prompts != 1 else ''}"
                    if prompts
                    else "no repeats reviewed"
                ),
                "repeat_std": _number(float(np.std(rates)), 3) if len(rates) >= 2 else None,
            }
        )
    return result


def _assign_ranks(rows: list[dict]) -> str:
    """Fill rank and tied in place; returns what the ranks are based on."""
    intervals = {
        row["contestant_id"]: tuple(row["merge_rate_ci"]) for row in rows if row["merge_rate_ci"]
    }
    basis = "merge rate"
    if not intervals:
        intervals = {
            row["contestant_id"]: tuple(row["strength_ci"]) for row in rows if row["strength_ci"]
        }
        basis = "pairwise votes"
    if not intervals:
        return ""
    ranks = stats.tied_ranks(intervals)
    shared = Counter(ranks.values())
    for row in rows:
        rank = ranks.get(row["contestant_id"])
        row["rank"] = rank
        row["tied"] = rank is not None and shared[rank] > 1
    return basis


def _row_order(row: dict) -> tuple:
    def descending(value: float | None) -> float:
        return -value if value is not None else math.inf

    return (
        row["rank"] if row["rank"] is not None else math.inf,
        descending(row["merge_rate"]),
        descending(row["strength"]),
        row["label"],
    )


def _tag_breakdown(
    runs: list[dict], reviewed: np.ndarray, merge: np.ndarray, ordered: list[dict]
) -> list[dict]:
    """Merge rate per tag and contestant, cells in the order of the board's rows."""
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    tags: set[str] = set()
    for position, run in enumerate(runs):
        for tag in run["tags"]:
            tags.add(tag)
            if reviewed[position]:
                cell = counts[(tag, run["contestant_id"])]
                cell[0] += int(merge[position])
                cell[1] += 1
    breakdown = []
    for tag in sorted(tags):
        cells = []
        for row in ordered:
            k, n = counts.get((tag, row["contestant_id"]), (0, 0))
            cells.append(
                {
                    "contestant": row["contestant"],
                    "merges": k,
                    "reviewed_runs": n,
                    "merge_rate": _number(k / n, 3) if n else None,
                    "text": f"{percent(k / n)} ({k} of {n})" if n else "—",
                }
            )
        breakdown.append({"tag": tag, "cells": cells})
    return breakdown


# --- What predicts the human verdict ---------------------------------------------------------


def _strength_word(distance: float, thresholds: tuple[float, float, float]) -> str:
    strong, moderate, weak = thresholds
    if distance >= strong:
        return "well"
    if distance >= moderate:
        return "moderately"
    if distance >= weak:
        return "weakly"
    return "no better than chance"


def auc_sentence(signal: str, value: float, n: int) -> str:
    """ "Tests passing predicted the verdict well (AUC 0.82 over 40 runs)." """
    if n < MIN_RUNS_FOR_AUC or math.isnan(value):
        return f"{signal}: not enough data ({n} reviewed run{'s' if n != 1 else ''} with both "
        "outcomes needed)."
    word = _strength_word(abs(value - 0.5), (0.3, 0.2, 0.1))
    reverse = ", in reverse: higher values went with not merging" if value < 0.4 else ""
    return f"{signal} predicted the verdict {word}{reverse} (AUC {value:.2f} over {n} runs)."


def spearman_sentence(signal: str, value: float, n: int) -> str:
    if n < MIN_CONTESTANTS_FOR_SPEARMAN or math.isnan(value):
        return f"{signal}: not enough data ({n} contestant{'s' if n != 1 else ''} with a score)."
    word = _strength_word(abs(value), (0.7, 0.4, 0.2))
    reverse = ", in reverse: higher scores went with lower merge rates" if value < -0.2 else ""
    return (
        f"{signal} predicted the merge rate {word}{reverse} "
        f"(Spearman {value:.2f} over {n} contestants)."
    )


def _predictors(
    runs: list[dict],
    signals: dict[str, np.ndarray],
    reviewed: np.ndarray,
    merge: np.ndarray,
    ordered: list[dict],
    contestants: list[Contestant],
) -> list[dict]:
    labels = merge[reviewed].astype(float)
    both_classes = labels.size and 0 < labels.sum() < labels.size
    result = []
    for signal, key in (
        ("Tests passing", "tests_ok"),
        ("Expected-files recall", "recall"),
        ("Diff size", "diff_size"),
    ):
        scores = signals[key][reviewed]
        n = int((~np.isnan(scores)).sum())
        value = stats.auc(list(scores), list(labels)) if both_classes else math.nan
        result.append(
            {
                "signal": signal,
                "measure": "AUC",
                "value": _number(value, 3),
                "n": n,
                "unit": "runs",
                "sentence": auc_sentence(signal, value, n),
            }
        )
    by_id = {contestant.pk: contestant for contestant in contestants}
    names = sorted(
        {
            name
            for contestant in contestants
            for name, score in (contestant.benchmarks or {}).items()
            if isinstance(score, (int, float)) and not isinstance(score, bool)
        }
    )
    for name in names:
        pairs = [
            (by_id[row["contestant_id"]].benchmarks.get(name), row["merge_rate"])
            for row in ordered
            if row["merge_rate"] is not None
        ]
        pairs = [(float(b), rate) for b, rate in pairs if isinstance(b, (int, float))]
        value = stats.spearman([b for b, _ in pairs], [r for _, r in pairs])
        result.append(
            {
                "signal": f"Benchmark {name}",
                "measure": "Spearman",
                "value": _number(value, 3),
                "n": len(pairs),
                "unit": "contestants",
                "sentence": spearman_sentence(f"Benchmark {name}", value, len(pairs)),
            }
        )
    return result


# --- Agreement -------------------------------------------------------------------------------


def agreement(filters: Filters) -> dict:
    """Inter-rater agreement for `filters` (cached).

    Keys: measures ([{key, label, level, alpha, words, units}], the verdict first),
    histogram ([{reviews, runs}] for 0..max reviews per run), reviewers ([{username,
    reviews, compared, agree, share, text}]), reviewed_twice (runs with two or more reviews).
    """
    return _cached("agreement", filters, lambda: _compute_agreement(filters))


def _alpha_entry(key: str, label: str, level: str, table: dict[int, dict[int, object]], **kw):
    reviewers = sorted({reviewer for answers in table.values() for reviewer in answers})
    units = [run for run, answers in table.items() if len(answers) >= 2]
    data = [[table[run].get(reviewer) for run in units] for reviewer in reviewers]
    alpha = stats.krippendorff_alpha(data, level, **kw) if units else math.nan
    words = stats.interpret_alpha(alpha)
    if units and math.isnan(alpha):
        # Pairs exist but all gave one answer: no disagreement was possible to observe.
        words = "one answer throughout, so agreement cannot be measured"
    return {
        "key": key,
        "label": label,
        "level": level,
        "alpha": _number(alpha, 3),
        "words": words,
        "units": len(units),
        "text": (
            f"α {alpha:.2f}: {words}, over {len(units)} runs reviewed at least twice"
            if not math.isnan(alpha)
            else f"{words} ({len(units)} runs reviewed at least twice)"
        ),
    }


def _compute_agreement(filters: Filters) -> dict:
    runs = _load_runs(filters, "campaign_id")
    run_ids = {run["id"] for run in runs}
    criteria = _load_criteria({run["campaign_id"] for run in runs})
    reviews = _load_reviews(filters, run_ids, criteria, "reviewer__username")
    numeric = _numeric_answers(criteria)

    verdicts: dict[int, dict[int, object]] = defaultdict(dict)
    answers_by_key: dict[str, dict[int, dict[int, object]]] = defaultdict(lambda: defaultdict(dict))
    for review in reviews:
        if review["verdict"] in VERDICT_ORDER:
            verdicts[review["run_id"]][review["reviewer_id"]] = review["verdict"]
        answers = review["answers"]
        for key, table in numeric.items():
            number = table.get(str(answers.get(key, "")))
            if number is not None:
                answers_by_key[key][review["run_id"]][review["reviewer_id"]] = number

    measures = [
        _alpha_entry(
            "verdict",
            "Would you merge it (verdict)",
            "ordinal",
            verdicts,
            value_order=VERDICT_ORDER,
        )
    ]
    for criterion in criteria:
        level = "nominal" if criterion.scale == Criterion.YES_NO else "ordinal"
        measures.append(
            _alpha_entry(criterion.key, criterion.label, level, answers_by_key[criterion.key])
        )

    per_run = Counter(review["run_id"] for review in reviews)
    histogram_counts = Counter(per_run.get(run_id, 0) for run_id in run_ids)
    top = max(histogram_counts, default=0)
    histogram = [{"reviews": k, "runs": histogram_counts.get(k, 0)} for k in range(top + 1)]

    return {
        "measures": measures,
        "histogram": histogram,
        "reviewers": _reviewer_agreement(reviews, verdicts),
        "reviewed_twice": sum(1 for count in per_run.values() if count >= 2),
        "reviews": len(reviews),
        "runs": len(run_ids),
    }


def _reviewer_agreement(reviews: list[dict], verdicts: dict[int, dict[int, object]]) -> list[dict]:
    """Per reviewer: on runs where the other reviewers' verdicts have a strict majority, the
    share where this reviewer's verdict equals it."""
    names = {review["reviewer_id"]: review["reviewer__username"] for review in reviews}
    compared: Counter[int] = Counter()
    agreed: Counter[int] = Counter()
    counts = Counter(review["reviewer_id"] for review in reviews)
    for by_reviewer in verdicts.values():
        if len(by_reviewer) < 2:
            continue
        for reviewer, verdict in by_reviewer.items():
            others = Counter(v for r, v in by_reviewer.items() if r != reviewer)
            majority, votes = others.most_common(1)[0]
            if 2 * votes <= sum(others.values()):
                continue
            compared[reviewer] += 1
            agreed[reviewer] += verdict == majority
    result = []
    for reviewer in sorted(names, key=lambda r: names[r]):
        n, k = compared[reviewer], agreed[reviewer]
        result.append(
            {
                "username": names[reviewer],
                "reviews": counts[reviewer],
                "compared": n,
                "agree": k,
                "share": _number(k / n, 3) if n else None,
                "text": f"{percent(k / n)} ({k} of {n})" if n else "no overlapping reviews",
            }
        )
    return result


# --- History ---------------------------------------------------------------------------------


def history(filters: Filters) -> dict:
    """Merge rate per campaign (oldest first) for each contestant and each model (cached).

    Keys: campaigns ([{id, name, created_at}]), contestants and models ([{label, points}],
    points aligned with campaigns, None where the campaign has no reviewed run of it). The
    campaign and tag filters are ignored: history is across campaigns.
    """
    across = Filters(
        prompt_set_id=filters.prompt_set_id, date_from=filters.date_from, date_to=filters.date_to
    )
    return _cached("history", across, lambda: _compute_history(across))


def _compute_history(filters: Filters) -> dict:
    submitted = Q(reviews__submitted_at__isnull=False)
    per_run = list(
        _runs_queryset(filters)
        .annotate(
            n=Count("reviews", filter=submitted),
            yes=Count("reviews", filter=submitted & Q(reviews__verdict=VERDICT_YES)),
        )
        .filter(n__gt=0)
        .order_by()
        .values_list("campaign_id", "contestant_id", "contestant__model_id", "n", "yes")
    )
    campaign_ids = {row[0] for row in per_run}
    campaigns = list(
        Campaign.objects.filter(id__in=campaign_ids)
        .order_by("created_at", "id")
        .values("id", "name", "created_at")
    )
    contestants = {
        c.pk: c for c in Contestant.objects.filter(id__in={row[1] for row in per_run})
        .select_related("model")
    }  # fmt: skip
    models = {m.pk: m for m in LanguageModel.objects.filter(id__in={row[2] for row in per_run})}

    data = np.array([row[3:] for row in per_run], dtype=float).reshape(-1, 2)
    merged = 2 * data[:, 1] > data[:, 0]
    cells: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0, 0])
    for (campaign_id, contestant_id, model_id, _n, _yes), did_merge in zip(
        per_run, merged, strict=True
    ):
        for kind, owner in (("contestant", contestant_id), ("model", model_id)):
            cell = cells[(kind, owner, campaign_id)]
            cell[0] += int(did_merge)
            cell[1] += 1

    def series(kind: str, owners: dict, label: Callable) -> list[dict]:
        result = []
        for owner_id, owner in owners.items():
            points = []
            for campaign in campaigns:
                k, n = cells.get((kind, owner_id, campaign["id"]), (0, 0))
                interval = stats.wilson_interval(k, n) if n else None
                points.append(
                    {
                        "campaign_id": campaign["id"],
                        "merges": k,
                        "reviewed_runs": n,
                        "merge_rate": _number(k / n, 3),
                        "merge_rate_ci": _interval(interval),
                        "text": rate_text(k, n, interval),
                    }
                    if n
                    else None
                )
            result.append({"label": label(owner), "points": points})
        return sorted(result, key=lambda entry: entry["label"])

    return {
        "campaigns": campaigns,
        "contestants": series("contestant", contestants, lambda c: c.label),
        "models": series(
            "model", models, lambda m: f"{m.name} (scripted)" if m.is_scripted else m.name
        ),
    }


# --- The dashboard ---------------------------------------------------------------------------


def latest_campaign_with_reviews() -> Campaign | None:
    reviewed = Review.objects.submitted().filter(run__campaign=OuterRef("pk"))
    return Campaign.objects.filter(Exists(reviewed)).order_by("-created_at", "-id").first()


def latest_summary() -> dict | None:
    """The most recent campaign with submitted reviews and its ranking, for the dashboard."""
    campaign = latest_campaign_with_reviews()
    if campaign is None:
        return None
    return {
        "campaign": campaign,
        "rows": [
            {
                "rank": row["rank"] if row["rank"] is not None else "—",
                "label": row["label"],
                "merge_rate_text": row["merge_rate_text"],
            }
            for row in rows(Filters(campaign_id=campaign.pk))
        ],
    }


# --- Invalidation ----------------------------------------------------------------------------


@receiver(post_save, sender=Review, dispatch_uid="leaderboard_review_saved")
def _review_saved(sender, instance: Review, **kwargs) -> None:
    # Drafts are saved often and change nothing on the board.
    if instance.submitted_at is not None:
        invalidate(instance.run.campaign_id)


@receiver(post_delete, sender=Review, dispatch_uid="leaderboard_review_deleted")
def _review_deleted(sender, instance: Review, **kwargs) -> None:
    invalidate(None)


@receiver(post_save, sender=Comparison, dispatch_uid="leaderboard_comparison_saved")
def _comparison_saved(sender, instance: Comparison, **kwargs) -> None:
    if instance.outcome:
        invalidate(instance.run_a.campaign_id)


@receiver(post_save, sender=Run, dispatch_uid="leaderboard_run_saved")
def _run_saved(sender, instance: Run, created: bool, update_fields=None, **kwargs) -> None:
    # Heartbeats and progress saves name their fields; only a new run or a status change can
    # move a run into or out of the board.
    if created or update_fields is None or "status" in update_fields:
        invalidate(instance.campaign_id)

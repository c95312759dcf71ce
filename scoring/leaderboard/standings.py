"""The leaderboard itself: one row per contestant, best first, with what predicts the verdict.

Decisions a lead should know, also stated on the page:

- The unit is the run. A run's "would merge" value is the mean of its submitted reviews'
  verdicts (yes 1, "after small changes" the rubric's value, 0.5 unless it says otherwise, no
  0), or, read by strict majority, 1 when most of them said yes. A lead's adjudication replaces
  the reviews' verdicts for that run. Reviews of one run are correlated, so treating each
  review as a trial would make the intervals too narrow.
- A contestant's merge rate is the mean of its runs' values, with a 95% interval that
  resamples whole prompts (`stats.rate_interval`).
- Every run that ended is on the board, except cancelled ones. Errored runs (the harness or
  environment failed) count as "would not merge" unless the lead leaves them out; runs not yet
  reviewed are left out until they are. The completion rate is the share of runs that ran to
  the end (finished or failed), not errored or timed out, with a Wilson interval.
- Pairwise votes: "a" and "b" are wins, "tie" and "both bad" both count as a tie (half a win
  each way): "both bad" says neither was better, which is what a tie means for relative
  strength. Undecided comparisons are ignored, and so are comparisons between two runs of the
  same contestant.
- Ranks admit ties (`stats.tied_ranks`) on the merge-rate intervals; when the filtered runs
  have no verdicts at all they come from the Bradley-Terry intervals instead. A contestant with
  nothing to rank on, or whose every run errored, is unranked (rank None) and listed last.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
from django.db.models import Exists, OuterRef

from runs.models import Campaign, Contestant, Run
from scoring import stats
from scoring.leaderboard.agreement import verdict_agreement
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import Filters
from scoring.leaderboard.formatting import amount, interval, number, percent, rate_text
from scoring.leaderboard.loading import (
    REVIEWABLE,
    load_adjudications,
    load_reviews,
    load_rubrics,
    load_runs,
    numeric_answers,
    run_conditions,
    snapshot,
)
from scoring.leaderboard.verdicts import acceptable, board_value
from scoring.models import Comparison, Criterion, Review

BOOTSTRAP_ROUNDS = 1000
# Below these a predictor's number says more about noise than about the signal.
MIN_RUNS_FOR_AUC = 8
MIN_CONTESTANTS_FOR_SPEARMAN = 4
_OUTCOME_RESULT = {
    Comparison.A: 1.0,
    Comparison.B: 0.0,
    Comparison.TIE: 0.5,
    Comparison.BOTH_BAD: 0.5,
}


def board(filters: Filters) -> dict:
    """Everything the leaderboard page and export show for `filters` (cached).

    Keys: rows (one dict per contestant, best first), rank_basis ("merge rate", "pairwise
    votes" or ""), criteria ([{key, label}]), tags ([{tag, cells}] in row order), predictors
    ([{signal, measure, value, n, unit, sentence}]), totals ({runs, counted_runs,
    reviewed_runs, reviews, votes, errored_runs, timed_out_runs, adjudicated_runs}), reading
    ({verdict, errored, small_changes_values}), verdict_agreement ({before, after,
    adjudicated_runs}: Krippendorff's alpha on the verdict).
    """
    return cached("board", filters, lambda: _compute(filters))


def rows(filters: Filters) -> list[dict]:
    return board(filters)["rows"]


def _run_values(
    runs: list[dict],
    reviews: list[dict],
    adjudications: dict[int, str],
    small_changes: dict[int, float],
    filters: Filters,
) -> dict[str, np.ndarray]:
    """Per run, aligned with `runs`: its would-merge value (nan where it does not count), and
    whether a human judged it, a majority found it acceptable, a lead adjudicated it."""
    verdicts: dict[int, list[str]] = defaultdict(list)
    for review in reviews:
        verdicts[review["run_id"]].append(review["verdict"])
    size = len(runs)
    value = np.full(size, np.nan)
    ok = np.zeros(size, dtype=bool)
    for position, run in enumerate(runs):
        adjudicated = adjudications.get(run["id"])
        merge = board_value(
            run,
            verdicts.get(run["id"], ()),
            small_changes[run["campaign_id"]],
            filters,
            adjudicated,
        )
        if merge is not None:
            value[position] = merge
            ok[position] = bool(acceptable(verdicts.get(run["id"], ()), adjudicated))
    errored = np.fromiter((run["status"] == Run.ERRORED for run in runs), bool, size)
    return {
        "value": value,
        "judged": ~np.isnan(value) & ~errored,
        "acceptable": ok,
        "adjudicated": np.fromiter((run["id"] in adjudications for run in runs), bool, size),
        "errored": errored,
        "timed_out": np.fromiter((run["status"] == Run.TIMED_OUT for run in runs), bool, size),
        # The agent changed the tests that grade it (they were put back before the tests ran).
        "protected": np.fromiter((bool(run["test_files_modified"]) for run in runs), bool, size),
        "reviews": np.fromiter((len(verdicts.get(run["id"], ())) for run in runs), np.intp, size),
    }


def _acceptance_met(runs, reviews, run_index, c_index, count: int) -> list[list[float]]:
    """Per contestant: for each review of a run whose prompt has acceptance criteria, the share
    of them the reviewer ticked as met."""
    shares: list[list[float]] = [[] for _ in range(count)]
    for review in reviews:
        run = runs[run_index[review["run_id"]]]
        wanted = {str(c) for c in run["acceptance_criteria"] or []}
        if wanted:
            met = wanted & {str(c) for c in review["acceptance_met"] or []}
            shares[c_index[run["contestant_id"]]].append(len(met) / len(wanted))
    return shares


def _compute(filters: Filters) -> dict:
    runs = load_runs(
        filters,
        "campaign_id",
        "prompt_id",
        "repeat",
        "test_exit_code",
        "test_files_modified",
        "files_changed",
        "additions",
        "deletions",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "started_at",
        "finished_at",
        "questions",
        clarification_expected=snapshot("clarification_expected"),
        expected_files=snapshot("expected_files"),
        acceptance_criteria=snapshot("acceptance_criteria"),
    )
    run_index = {run["id"]: i for i, run in enumerate(runs)}
    criteria, small_changes = load_rubrics({run["campaign_id"] for run in runs})
    reviewable = {run["id"] for run in runs if run["status"] in REVIEWABLE}
    reviews = load_reviews(filters, reviewable, criteria, "acceptance_met")
    adjudications = load_adjudications(filters, reviewable)
    comparisons = [
        vote
        for vote in Comparison.objects.filter(
            run_conditions(filters, "run_a__"),
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
    acceptance = _acceptance_met(runs, reviews, run_index, c_index, len(contestants))
    run_contestant = np.fromiter((c_index[r["contestant_id"]] for r in runs), np.intp, len(runs))
    per_run = _run_values(runs, reviews, adjudications, small_changes, filters)
    value, judged = per_run["value"], per_run["judged"]
    counted = ~np.isnan(value)
    prompt_ids = np.fromiter((run["prompt_id"] for run in runs), np.int64, len(runs))

    def per_contestant(weights: np.ndarray | None = None) -> np.ndarray:
        if weights is not None:
            weights = weights.astype(float)
        return np.bincount(run_contestant, weights, len(contestants))

    totals = {
        "runs": per_contestant(),
        "counted": per_contestant(counted),
        "judged": per_contestant(judged),
        "acceptable": per_contestant(per_run["acceptable"]),
        "adjudicated": per_contestant(per_run["adjudicated"]),
        "errored": per_contestant(per_run["errored"]),
        "timed_out": per_contestant(per_run["timed_out"]),
        "protected": per_contestant(per_run["protected"]),
        "reviews": per_contestant(per_run["reviews"]),
    }
    signals = _run_signals(runs)
    for name in ("tested", "passed", "clarify_expected", "asked"):
        totals[name] = per_contestant(signals[name])
    votes = Counter()
    for vote in comparisons:
        votes[vote["run_a__contestant_id"]] += 1
        votes[vote["run_b__contestant_id"]] += 1

    strengths, strength_intervals = _bradley_terry(comparisons)
    criterion_stats = _criterion_means(criteria, reviews, runs, run_index, run_contestant)
    spread = _repeat_spread(runs, judged, value, run_contestant, len(contestants))

    result_rows = []
    for i, contestant in enumerate(contestants):
        mine = run_contestant == i
        mine_counted = mine & counted
        n = int(totals["counted"][i])
        k = float(value[mine_counted].sum())
        merge_ci = (
            stats.rate_interval(
                value[mine_counted], prompt_ids[mine_counted], rounds=BOOTSTRAP_ROUNDS
            )
            if n
            else None
        )
        n_judged, k_ok = int(totals["judged"][i]), int(totals["acceptable"][i])
        ok_ci = stats.wilson_interval(k_ok, n_judged) if n_judged else None
        run_count = int(totals["runs"][i])
        errored, timed_out = int(totals["errored"][i]), int(totals["timed_out"][i])
        completed = run_count - errored - timed_out
        completion_ci = stats.wilson_interval(completed, run_count) if run_count else None
        tested, passed = int(totals["tested"][i]), int(totals["passed"][i])
        expected, asked = int(totals["clarify_expected"][i]), int(totals["asked"][i])
        recall = signals["recall"][mine]
        recall = recall[~np.isnan(recall)]
        met = acceptance[i]
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
                "runs": run_count,
                "counted_runs": n,
                "reviewed_runs": n_judged,
                "reviews": int(totals["reviews"][i]),
                "votes": votes[contestant.pk],
                "merges": number(k, 3),
                "merge_rate": number(k / n, 3) if n else None,
                "merge_rate_ci": interval(merge_ci),
                "merge_rate_text": rate_text(k, n, merge_ci),
                "acceptable": k_ok,
                "acceptable_rate": number(k_ok / n_judged, 3) if n_judged else None,
                "acceptable_rate_ci": interval(ok_ci),
                "acceptable_rate_text": rate_text(k_ok, n_judged, ok_ci),
                "adjudicated_runs": int(totals["adjudicated"][i]),
                "errored_runs": errored,
                "timed_out_runs": timed_out,
                "test_files_modified_runs": int(totals["protected"][i]),
                "completed_runs": completed,
                "only_errored": run_count > 0 and errored == run_count,
                "completion_rate": number(completed / run_count, 3) if run_count else None,
                "completion_rate_ci": interval(completion_ci),
                "completion_rate_text": (
                    f"{percent(completed / run_count)} ({percent(completion_ci[0])}–"
                    f"{percent(completion_ci[1])}, {completed} of {run_count})"
                    if completion_ci
                    else "—"
                ),
                "criteria": criterion_stats.get(i, {}),
                "strength": number(strength, 3),
                "strength_ci": interval(strength_intervals.get(key)),
                "win_chance": number(1 / (1 + math.exp(-strength)), 3)
                if strength is not None
                else None,
                "tests_run": tested,
                "tests_passed": passed,
                "tests_pass_rate": number(passed / tested, 3) if tested else None,
                "expected_files_recall": number(recall.mean(), 3) if recall.size else None,
                "recall_runs": int(recall.size),
                # The share of its prompts' acceptance criteria reviewers ticked as met.
                "acceptance_met_rate": number(float(np.mean(met)), 3) if met else None,
                "acceptance_reviews": len(met),
                "clarification_prompts": expected,
                "clarification_asked": asked,
                "clarification_rate": number(asked / expected, 3) if expected else None,
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
        "tags": _tag_breakdown(runs, value, ordered),
        "predictors": _predictors(signals, judged, value, ordered, contestants),
        "totals": {
            "runs": len(runs),
            "counted_runs": int(counted.sum()),
            "reviewed_runs": int(judged.sum()),
            "reviews": len(reviews),
            "votes": len(comparisons),
            "errored_runs": int(per_run["errored"].sum()),
            "timed_out_runs": int(per_run["timed_out"].sum()),
            "adjudicated_runs": int(per_run["adjudicated"].sum()),
        },
        "reading": {
            "verdict": filters.verdict,
            "errored": filters.errored,
            "small_changes_values": sorted(set(small_changes.values())),
        },
        "verdict_agreement": verdict_agreement(reviews, adjudications),
    }


def _median(values: np.ndarray, digits: int) -> float | None:
    present = values[~np.isnan(values)]
    return number(float(np.median(present)), digits) if present.size else None


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
    numeric = numeric_answers(criteria)
    values: dict[tuple[int, str], list[float]] = defaultdict(list)
    clusters: dict[tuple[int, str], list[int]] = defaultdict(list)
    for review in reviews:
        position = run_index[review["run_id"]]
        contestant = int(run_contestant[position])
        answers = review["answers"]
        for key, table in numeric.items():
            value = table.get(str(answers.get(key, "")))
            if value is not None:
                values[(contestant, key)].append(value)
                clusters[(contestant, key)].append(runs[position]["prompt_id"])
    result: dict[int, dict[str, dict]] = defaultdict(dict)
    for (contestant, key), numbers in values.items():
        low, high = stats.bootstrap_mean_ci(
            numbers, clusters[(contestant, key)], rounds=BOOTSTRAP_ROUNDS
        )
        mean = float(np.mean(numbers))
        result[contestant][key] = {
            "mean": number(mean, 3),
            "ci": interval((low, high)),
            "n": len(numbers),
            "text": f"{mean:.2f} ({low:.2f}–{high:.2f})",
        }
    return result


def _repeat_spread(
    runs: list[dict],
    judged: np.ndarray,
    value: np.ndarray,
    run_contestant: np.ndarray,
    size: int,
) -> list[dict]:
    """Per contestant: how often repeats of one prompt got different verdicts, and the spread
    (standard deviation) of the merge rate computed separately for each repeat number. Only
    runs a human judged: an errored run says nothing about how repeatable the agent is."""
    by_prompt: dict[tuple[int, int, int], list[float]] = defaultdict(list)
    by_repeat: dict[tuple[int, int], list[float]] = defaultdict(list)
    for position, run in enumerate(runs):
        if not judged[position]:
            continue
        contestant = int(run_contestant[position])
        by_prompt[(contestant, run["campaign_id"], run["prompt_id"])].append(value[position])
        by_repeat[(contestant, run["repeat"])].append(value[position])
    repeated_prompts = Counter()
    disagreeing = Counter()
    for key, values in by_prompt.items():
        if len(values) >= 2:
            repeated_prompts[key[0]] += 1
            disagreeing[key[0]] += len(set(values)) > 1
    result = []
    for contestant in range(size):
        rates = [np.mean(v) for (c, _), v in by_repeat.items() if c == contestant]
        prompts = repeated_prompts[contestant]
        share = disagreeing[contestant] / prompts if prompts else None
        result.append(
            {
                "repeat_prompts": prompts,
                "repeat_disagreement": number(share, 3),
                "repeat_disagreement_text": (
                    f"{percent(share)} of {prompts} prompt{'s' if prompts != 1 else ''}"
                    if prompts
                    else "no repeats reviewed"
                ),
                "repeat_std": number(float(np.std(rates)), 3) if len(rates) >= 2 else None,
            }
        )
    return result


def _assign_ranks(rows: list[dict]) -> str:
    """Fill rank and tied in place; returns what the ranks are based on. A contestant whose
    every run errored is never ranked, whatever errored runs count as."""
    rankable = [row for row in rows if not row["only_errored"]]
    intervals = {
        row["contestant_id"]: tuple(row["merge_rate_ci"])
        for row in rankable
        if row["merge_rate_ci"]
    }
    basis = "merge rate"
    if not intervals:
        intervals = {
            row["contestant_id"]: tuple(row["strength_ci"])
            for row in rankable
            if row["strength_ci"]
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
        row["only_errored"],
        row["rank"] if row["rank"] is not None else math.inf,
        descending(row["merge_rate"]),
        descending(row["strength"]),
        row["label"],
    )


def _tag_breakdown(runs: list[dict], value: np.ndarray, ordered: list[dict]) -> list[dict]:
    """Merge rate per tag and contestant, cells in the order of the board's rows."""
    counts: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    tags: set[str] = set()
    for position, run in enumerate(runs):
        for tag in run["tags"]:
            tags.add(tag)
            if not math.isnan(value[position]):
                cell = counts[(tag, run["contestant_id"])]
                cell[0] += float(value[position])
                cell[1] += 1
    breakdown = []
    for tag in sorted(tags):
        cells = []
        for row in ordered:
            k, n = counts.get((tag, row["contestant_id"]), (0.0, 0))
            cells.append(
                {
                    "contestant": row["contestant"],
                    "merges": number(k, 3),
                    "counted_runs": n,
                    "merge_rate": number(k / n, 3) if n else None,
                    "text": f"{percent(k / n)} ({amount(k)} of {n})" if n else "—",
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
    signals: dict[str, np.ndarray],
    judged: np.ndarray,
    value: np.ndarray,
    ordered: list[dict],
    contestants: list[Contestant],
) -> list[dict]:
    """How well automatic signals separate the runs humans would merge (a would-merge value
    above one half) from the rest, over the runs a human judged; and how well each public
    benchmark orders the contestants' merge rates."""
    labels = (value[judged] > 0.5).astype(float)
    both_classes = labels.size and 0 < labels.sum() < labels.size
    result = []
    for signal, key in (
        ("Tests passing", "tests_ok"),
        ("Expected-files recall", "recall"),
        ("Diff size", "diff_size"),
    ):
        scores = signals[key][judged]
        n = int((~np.isnan(scores)).sum())
        auc = stats.auc(list(scores), list(labels)) if both_classes else math.nan
        result.append(
            {
                "signal": signal,
                "measure": "AUC",
                "value": number(auc, 3),
                "n": n,
                "unit": "runs",
                "sentence": auc_sentence(signal, auc, n),
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
        rho = stats.spearman([b for b, _ in pairs], [r for _, r in pairs])
        result.append(
            {
                "signal": f"Benchmark {name}",
                "measure": "Spearman",
                "value": number(rho, 3),
                "n": len(pairs),
                "unit": "contestants",
                "sentence": spearman_sentence(f"Benchmark {name}", rho, len(pairs)),
            }
        )
    return result


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

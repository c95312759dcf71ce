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

import json
import math
from collections import Counter

import numpy as np
from django.db.models import Exists, OuterRef, Q

from runs.models import Campaign, Contestant, Run
from scoring import stats
from scoring.leaderboard.agreement import verdict_agreement, verdict_counts
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import Filters
from scoring.leaderboard.formatting import amount, interval, number, percent, rate_text
from scoring.leaderboard.loading import (
    DIFF_SIZE,
    FILES_CHANGED,
    TOKENS,
    AnswerCounts,
    DurationMicroseconds,
    campaigns_in,
    column,
    distinct_codes,
    flag,
    load_rubrics,
    load_runs,
    load_votes,
    numeric_answers,
    positions,
    zero,
)
from scoring.leaderboard.verdicts import run_values
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


def _load(filters: Filters, criteria: list[Criterion]) -> dict[str, tuple]:
    """One row per run on the board: what the run did, and its tally."""
    return load_runs(
        filters,
        contestant_id="contestant_id",
        campaign_id="campaign_id",
        prompt_id="prompt_id",
        repeat="repeat",
        status="status",
        test_exit_code="test_exit_code",
        diff_size=DIFF_SIZE,
        cost="cost_usd",
        tokens=TOKENS,
        duration=DurationMicroseconds(),
        # The agent changed the tests that grade it (they were put back before the tests ran).
        protected=flag(~Q(test_files_modified=[])),
        questions=flag(~Q(questions=[])),
        prompt="prompt_facts",
        files_changed=FILES_CHANGED,
        reviews=zero("tally__reviews"),
        yes="tally__yes",
        small_changes="tally__small_changes",
        no="tally__no",
        adjudicated="tally__adjudicated",
        acceptance_criteria=zero("tally__acceptance_criteria"),
        acceptance_ticked=zero("tally__acceptance_ticked"),
        **{f"answers:{c.key}": AnswerCounts(c.key) for c in criteria},
    )


def _compute(filters: Filters) -> dict:
    scope = campaigns_in(filters)
    criteria, small_changes = load_rubrics(scope)
    runs = _load(filters, criteria)
    if set(runs["campaign_id"]) != scope:  # the tag filter left some campaigns out
        criteria, small_changes = load_rubrics(set(runs["campaign_id"]))
    size = len(runs["id"])
    votes = load_votes(filters)
    contestants = list(
        Contestant.objects.filter(id__in=set(runs["contestant_id"])).select_related("model")
    )

    run_contestant = positions(runs["contestant_id"], [c.pk for c in contestants])
    prompt_ids = np.array(runs["prompt_id"], dtype=np.int64).reshape(size)
    status = np.array(runs["status"], dtype=str).reshape(size)
    errored = status == Run.ERRORED
    reviewable = ~errored  # every other status on the board is reviewable
    per_run = run_values(runs, small_changes, filters)
    value = per_run["value"]
    counted = ~np.isnan(value)
    judged = counted & ~errored
    reviews = column(runs, "reviews") * reviewable
    prompts, prompt_codes = distinct_codes(runs["prompt"])
    facts = _prompt_facts(prompts)
    signals = _run_signals(runs, facts, prompt_codes)

    def per_contestant(weights: np.ndarray | None = None) -> np.ndarray:
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
        return np.bincount(run_contestant, weights, len(contestants))

    # Acceptance criteria: each review of a run whose prompt has some is worth the share ticked.
    wanted = column(runs, "acceptance_criteria") * reviewable
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(wanted > 0, column(runs, "acceptance_ticked") / wanted, 0)
    totals = {
        "runs": per_contestant(),
        "counted": per_contestant(counted),
        "judged": per_contestant(judged),
        "acceptable": per_contestant(per_run["acceptable"]),
        "adjudicated": per_contestant(per_run["adjudicated"] & reviewable),
        "errored": per_contestant(errored),
        "timed_out": per_contestant(status == Run.TIMED_OUT),
        "protected": per_contestant(column(runs, "protected")),
        "reviews": per_contestant(reviews),
        "merges": per_contestant(np.where(counted, value, 0.0)),
        "acceptance_reviews": per_contestant(np.where(wanted > 0, reviews, 0)),
        "acceptance_met": per_contestant(shares),
    }
    for name in ("tested", "passed", "clarify_expected", "asked"):
        totals[name] = per_contestant(signals[name])
    contestant_votes = Counter()
    for (contestant_a, contestant_b, _), count in votes.items():
        contestant_votes[contestant_a] += count
        contestant_votes[contestant_b] += count

    strengths, strength_intervals = _bradley_terry(votes)
    merge_samples = [
        stats.cluster_totals(value[mine], prompt_ids[mine])
        for mine in ((run_contestant == i) & counted for i in range(len(contestants)))
    ]
    criterion_keys, criterion_samples = _criterion_samples(
        criteria, runs, reviewable, run_contestant, prompt_ids
    )
    # Every interval on the page in one bootstrap: samples over as many prompts share draws.
    bounds = stats.clustered_mean_cis(merge_samples + criterion_samples, rounds=BOOTSTRAP_ROUNDS)
    merge_cis = stats.widened_to_wilson(merge_samples, bounds[: len(merge_samples)])
    criterion_stats = _criterion_means(
        criteria, criterion_keys, criterion_samples, bounds[len(merge_samples) :]
    )
    spread = _repeat_spread(runs, judged, value, run_contestant, len(contestants))

    result_rows = []
    for i, contestant in enumerate(contestants):
        mine = run_contestant == i
        n = int(totals["counted"][i])
        k = float(totals["merges"][i])
        merge_ci = merge_cis[i] if n else None
        n_judged, k_ok = int(totals["judged"][i]), int(totals["acceptable"][i])
        ok_ci = stats.wilson_interval(k_ok, n_judged) if n_judged else None
        run_count = int(totals["runs"][i])
        errored_runs, timed_out = int(totals["errored"][i]), int(totals["timed_out"][i])
        completed = run_count - errored_runs - timed_out
        completion_ci = stats.wilson_interval(completed, run_count) if run_count else None
        tested, passed = int(totals["tested"][i]), int(totals["passed"][i])
        expected, asked = int(totals["clarify_expected"][i]), int(totals["asked"][i])
        recall = signals["recall"][mine]
        recall = recall[~np.isnan(recall)]
        acceptance_reviews = int(totals["acceptance_reviews"][i])
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
                "votes": contestant_votes[contestant.pk],
                "merges": number(k, 3),
                "merge_rate": number(k / n, 3) if n else None,
                "merge_rate_ci": interval(merge_ci),
                "merge_rate_text": rate_text(k, n, merge_ci),
                "acceptable": k_ok,
                "acceptable_rate": number(k_ok / n_judged, 3) if n_judged else None,
                "acceptable_rate_ci": interval(ok_ci),
                "acceptable_rate_text": rate_text(k_ok, n_judged, ok_ci),
                "adjudicated_runs": int(totals["adjudicated"][i]),
                "errored_runs": errored_runs,
                "timed_out_runs": timed_out,
                "test_files_modified_runs": int(totals["protected"][i]),
                "completed_runs": completed,
                "only_errored": run_count > 0 and errored_runs == run_count,
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
                "acceptance_met_rate": number(
                    float(totals["acceptance_met"][i]) / acceptance_reviews, 3
                )
                if acceptance_reviews
                else None,
                "acceptance_reviews": acceptance_reviews,
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
    adjudicated = [
        (verdict or "") if ok else ""
        for verdict, ok in zip(runs["adjudicated"], reviewable, strict=True)
    ]
    return {
        "rows": ordered,
        "rank_basis": rank_basis,
        "criteria": [{"key": c.key, "label": c.label} for c in criteria],
        "tags": _tag_breakdown(facts, prompt_codes, run_contestant, value, ordered, contestants),
        "predictors": _predictors(signals, judged, value, ordered, contestants),
        "totals": {
            "runs": size,
            "counted_runs": int(counted.sum()),
            "reviewed_runs": int(judged.sum()),
            "reviews": int(reviews.sum()),
            "votes": sum(votes.values()),
            "errored_runs": int(errored.sum()),
            "timed_out_runs": int((status == Run.TIMED_OUT).sum()),
            "adjudicated_runs": sum(1 for verdict in adjudicated if verdict),
        },
        "reading": {
            "verdict": filters.verdict,
            "errored": filters.errored,
            "small_changes_values": sorted(set(small_changes.values())),
        },
        "verdict_agreement": verdict_agreement(
            verdict_counts(runs) * reviewable[:, None], adjudicated
        ),
    }


def _median(values: np.ndarray, digits: int) -> float | None:
    present = values[~np.isnan(values)]
    return number(float(np.median(present)), digits) if present.size else None


def _prompt_facts(texts: list[str | None]) -> list[dict]:
    """Each run prompt's facts from their JSON text (`runs.models.PromptFacts`), decoded in
    one call: thousands of small `json.loads` cost more in calls than in parsing."""
    decoded = json.loads("[" + ",".join(text or "null" for text in texts) + "]")
    return [
        {
            "tags": [str(tag) for tag in tags] if isinstance(tags, list) else [],
            "expected_files": expected or [],
            "clarification_expected": bool(clarification),
        }
        for tags, expected, clarification in (facts or (None, None, None) for facts in decoded)
    ]


def _run_signals(runs: dict[str, tuple], facts: list[dict], codes: np.ndarray) -> dict:
    """Automatic per-run measurements as arrays aligned with the runs (nan where unknown)."""
    exit_codes = column(runs, "test_exit_code")
    expected = np.array([fact["clarification_expected"] for fact in facts], dtype=bool)[codes]
    return {
        "tested": ~np.isnan(exit_codes),
        "passed": exit_codes == 0,
        "tests_ok": np.where(np.isnan(exit_codes), np.nan, (exit_codes == 0).astype(float)),
        "clarify_expected": expected,
        "asked": expected & (column(runs, "questions") > 0),
        "recall": _recall(facts, codes, runs["files_changed"]),
        "diff_size": column(runs, "diff_size"),
        "cost": column(runs, "cost"),
        "tokens": column(runs, "tokens"),
        "duration": column(runs, "duration") / 1e6,
    }


def _recall(facts: list[dict], codes: np.ndarray, changed_texts: tuple) -> np.ndarray:
    """Per run, the share of the prompt's expected files the agent changed (nan when it
    expects none); equal pairs of prompt and changed files are worked out once."""
    changed, changed_codes = distinct_codes(changed_texts)
    pairs, pair_codes = np.unique(codes * len(changed) + changed_codes, return_inverse=True)
    shares = np.full(len(pairs), np.nan)
    for position, pair in enumerate(pairs.tolist()):
        expected = facts[pair // len(changed)]["expected_files"]
        if expected:
            text = changed[pair % len(changed)]
            paths = set(json.loads(text) if text else [])
            shares[position] = sum(1 for path in expected if path in paths) / len(expected)
    return shares[pair_codes.reshape(-1)]


def _bradley_terry(
    votes: Counter[tuple[int, int, str]],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Strengths and intervals from the votes between different contestants, in a fixed
    order (by contestant, then outcome) so that the bootstrap does not depend on vote order."""
    cells = sorted((a, b, outcome, count) for (a, b, outcome), count in votes.items() if a != b)
    if not cells:
        return {}, {}
    outcomes = [(str(a), str(b), _OUTCOME_RESULT[outcome]) for a, b, outcome, _ in cells]
    counts = [count for *_, count in cells]
    return (
        stats.bradley_terry(outcomes, counts),
        stats.bradley_terry_ci(outcomes, rounds=BOOTSTRAP_ROUNDS, counts=counts),
    )


def _criterion_samples(
    criteria: list[Criterion],
    runs: dict[str, tuple],
    reviewable: np.ndarray,
    run_contestant: np.ndarray,
    prompt_ids: np.ndarray,
) -> tuple[list[tuple[int, int]], list[tuple[np.ndarray, np.ndarray]]]:
    """Per contestant and criterion with answers, (contestant index, criterion index), and the
    answers' sums and counts per prompt, prompts in the order of their first run: what the
    intervals resample."""
    numeric = numeric_answers(criteria)
    keys: list[tuple[int, int]] = []
    samples = []
    for column_index, criterion in enumerate(criteria):
        table = numeric[criterion.key]
        texts, codes = distinct_codes(runs[f"answers:{criterion.key}"])
        # Per distinct answer counts: the sum of the answers' numbers, and how many there are.
        sums, sizes = np.zeros(len(texts)), np.zeros(len(texts))
        for position, text in enumerate(texts):
            for answer, times in (json.loads(text) if text else {}).items():
                if answer in table:
                    sums[position] += table[answer] * times
                    sizes[position] += times
        run_sums, run_sizes = sums[codes], sizes[codes]
        answered = reviewable & (run_sizes > 0)
        for contestant in np.unique(run_contestant[answered]).tolist():
            mine = answered & (run_contestant == contestant)
            keys.append((contestant, column_index))
            samples.append(
                stats.cluster_totals(run_sums[mine], prompt_ids[mine], sizes=run_sizes[mine])
            )
    return keys, samples


def _criterion_means(
    criteria: list[Criterion],
    keys: list[tuple[int, int]],
    samples: list[tuple[np.ndarray, np.ndarray]],
    bounds: list[tuple[float, float]],
) -> dict[int, dict[str, dict]]:
    """contestant index -> criterion key -> {mean, ci, n, text}, from `_criterion_samples`
    and their bootstrap intervals."""
    result: dict[int, dict[str, dict]] = {}
    for (contestant, column_index), (cluster_sums, cluster_sizes), (low, high) in zip(
        keys, samples, bounds, strict=True
    ):
        n = int(cluster_sizes.sum())
        mean = float(cluster_sums.sum()) / n
        result.setdefault(contestant, {})[criteria[column_index].key] = {
            "mean": number(mean, 3),
            "ci": interval((low, high)),
            "n": n,
            "text": f"{mean:.2f} ({low:.2f}–{high:.2f})",
        }
    return result


def _repeat_spread(
    runs: dict[str, tuple],
    judged: np.ndarray,
    value: np.ndarray,
    run_contestant: np.ndarray,
    size: int,
) -> list[dict]:
    """Per contestant: how often repeats of one prompt got different verdicts, and the spread
    (standard deviation) of the merge rate computed separately for each repeat number. Only
    runs a human judged: an errored run says nothing about how repeatable the agent is."""
    contestant = run_contestant[judged]
    campaign = np.fromiter(runs["campaign_id"], np.int64, len(judged))[judged]
    prompt = np.fromiter(runs["prompt_id"], np.int64, len(judged))[judged]
    repeat = np.fromiter(runs["repeat"], np.int64, len(judged))[judged]
    values = value[judged]

    repeated_prompts = np.zeros(size, dtype=int)
    disagreeing = np.zeros(size, dtype=int)
    if values.size:
        order = np.lexsort((prompt, campaign, contestant))
        keys = np.stack([contestant, campaign, prompt])[:, order]
        starts = np.flatnonzero(np.r_[True, np.any(keys[:, 1:] != keys[:, :-1], axis=0)])
        counts = np.diff(np.r_[starts, order.size])
        low = np.minimum.reduceat(values[order], starts)
        high = np.maximum.reduceat(values[order], starts)
        owners = keys[0, starts]
        repeated = counts >= 2
        np.add.at(repeated_prompts, owners[repeated], 1)
        np.add.at(disagreeing, owners[repeated & (low != high)], 1)

    result = []
    for index in range(size):
        mine = contestant == index
        rates = [
            float(np.mean(values[mine & (repeat == number_)]))
            for number_ in np.unique(repeat[mine])
        ]
        prompts = int(repeated_prompts[index])
        share = disagreeing[index] / prompts if prompts else None
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


def _tag_breakdown(
    facts: list[dict],
    codes: np.ndarray,
    run_contestant: np.ndarray,
    value: np.ndarray,
    ordered: list[dict],
    contestants: list[Contestant],
) -> list[dict]:
    """Merge rate per tag and contestant, cells in the order of the board's rows. Runs are
    summed per distinct prompt facts first (`codes`), then per tag."""
    width = len(contestants)
    counted = ~np.isnan(value)
    cell = codes * width + run_contestant
    shape = (len(facts), width)
    sums = np.bincount(cell[counted], value[counted], len(facts) * width).reshape(shape)
    sizes = np.bincount(cell[counted], None, len(facts) * width).reshape(shape)
    by_tag: dict[str, list[int]] = {}
    for position, fact in enumerate(facts):
        for tag in fact["tags"]:  # a tag listed twice counts twice, as it always has
            by_tag.setdefault(tag, []).append(position)
    column_of = {contestant.pk: index for index, contestant in enumerate(contestants)}
    breakdown = []
    for tag in sorted(by_tag):
        cells = []
        for row in ordered:
            k = float(sums[by_tag[tag], column_of[row["contestant_id"]]].sum())
            n = int(sizes[by_tag[tag], column_of[row["contestant_id"]]].sum())
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
        auc = stats.auc(scores, labels) if both_classes else math.nan
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

"""Pairwise mode: which two runs a scorer compares next.

Votes are spread evenly: the contestant pair with the fewest comparisons so far goes first, then
the prompt with the fewest, so Bradley–Terry strengths rest on a balanced design rather than on
whichever pair happens to come up. Left and right are randomized once and stored.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.diffs import strip_control
from runs.models import Run
from scoring.models import Comparison


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def candidate_pairs(campaign_id: int | None = None) -> list[tuple[dict, dict]]:
    """Every two reviewable runs of one prompt by different contestants (each pair once)."""
    runs = Run.objects.reviewable()
    if campaign_id is not None:
        runs = runs.filter(campaign_id=campaign_id)
    by_prompt: dict[int, list[dict]] = {}
    for row in runs.order_by("id").values("id", "prompt_id", "contestant_id"):
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    pairs = []
    for rows in by_prompt.values():
        for first, second in itertools.combinations(rows, 2):
            if first["contestant_id"] != second["contestant_id"]:
                pairs.append((first, second))
    return pairs


def next_comparison_for(
    user, campaign_id: int | None = None, *, rng: random.Random | None = None
) -> Comparison | None:
    """The comparison this user should vote on next, creating it (outcome "") on first show.

    An undecided comparison already shown to the user comes back first, so its left/right order
    is stable across reloads. Never offers a pair of runs the user already has a comparison for.
    """
    rng = rng or random.SystemRandom()
    pending = Comparison.objects.filter(reviewer=user, outcome="")
    if campaign_id is not None:
        pending = pending.filter(run_a__campaign_id=campaign_id)
    existing = pending.order_by("id").first()
    if existing is not None:
        return existing

    seen = {
        _pair(a, b)
        for a, b in Comparison.objects.filter(reviewer=user).values_list("run_a_id", "run_b_id")
    }
    pair_counts: Counter = Counter()
    prompt_counts: Counter = Counter()
    for ca, cb, prompt_id in Comparison.objects.values_list(
        "run_a__contestant_id", "run_b__contestant_id", "prompt_id"
    ):
        pair_counts[_pair(ca, cb)] += 1
        prompt_counts[prompt_id] += 1

    best: tuple | None = None
    best_pairs: list[tuple[dict, dict]] = []
    for first, second in candidate_pairs(campaign_id):
        if _pair(first["id"], second["id"]) in seen:
            continue
        key = (
            pair_counts[_pair(first["contestant_id"], second["contestant_id"])],
            prompt_counts[first["prompt_id"]],
        )
        if best is None or key < best:
            best, best_pairs = key, [(first, second)]
        elif key == best:
            best_pairs.append((first, second))
    if not best_pairs:
        return None
    first, second = rng.choice(best_pairs)
    run_a_id, run_b_id = _pair(first["id"], second["id"])
    try:
        with transaction.atomic():
            return Comparison.objects.create(
                prompt_id=first["prompt_id"],
                run_a_id=run_a_id,
                run_b_id=run_b_id,
                a_shown_left=rng.random() < 0.5,
                reviewer=user,
            )
    except IntegrityError:
        # A second tab created it a moment ago: show that one, with its stored order.
        return Comparison.objects.get(run_a_id=run_a_id, run_b_id=run_b_id, reviewer=user)


def record_vote(comparison: Comparison, choice: str, reason: str = "") -> Comparison:
    """Store a vote given as what the scorer saw: "left", "right", "tie" or "both_bad"."""
    left, right = (
        (Comparison.A, Comparison.B) if comparison.a_shown_left else (Comparison.B, Comparison.A)
    )
    outcomes = {
        "left": left,
        "right": right,
        "tie": Comparison.TIE,
        "both_bad": Comparison.BOTH_BAD,
    }
    if choice not in outcomes:
        raise ValueError("Choose left, right, tie or both bad.")
    comparison.outcome = outcomes[choice]
    comparison.reason = strip_control(reason or "")[:10_000]
    comparison.decided_at = timezone.now()
    comparison.save(update_fields=["outcome", "reason", "decided_at"])
    return comparison


def shown_choice(comparison: Comparison) -> str:
    """The stored outcome as the scorer saw it: "left", "right", "tie", "both_bad" or ""."""
    if comparison.outcome in (Comparison.A, Comparison.B):
        a_won = comparison.outcome == Comparison.A
        return "left" if a_won == comparison.a_shown_left else "right"
    return comparison.outcome

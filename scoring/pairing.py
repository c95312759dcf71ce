"""Pairwise mode: which two runs a scorer compares next, and when enough votes are in.

Votes are spread evenly: the contestant pair with the fewest comparisons so far goes first, then
the prompt with the fewest, so Bradley–Terry strengths rest on a balanced design rather than on
whichever pair happens to come up. Left and right are randomized once and stored.

A campaign wants, for each prompt and each two of its contestants (a "cell"), as many votes as it
wants reviews per run (``reviews_wanted``). A cell with that many votes, decided or being decided
by someone else right now, is not offered again; once every cell is full, pairwise says so.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.diffs import strip_control
from runs.models import Run
from scoring.models import Comparison, ReviewHold

# An undecided comparison keeps its cell's place as long as a review hold does.
PENDING_LAPSES_AFTER = ReviewHold.LAPSES_AFTER


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _cell(campaign_id: int, prompt_id: int, contestant_a: int, contestant_b: int) -> tuple:
    return (campaign_id, prompt_id, *_pair(contestant_a, contestant_b))


def _cell_of(first: dict, second: dict) -> tuple:
    """The cell of two candidate runs (rows of ``candidate_pairs``)."""
    return _cell(
        first["campaign_id"], first["prompt_id"], first["contestant_id"], second["contestant_id"]
    )


def candidate_pairs(campaign_id: int | None = None) -> list[tuple[dict, dict]]:
    """Every two reviewable runs of one prompt in one campaign by different contestants."""
    runs = Run.objects.reviewable()
    if campaign_id is not None:
        runs = runs.filter(campaign_id=campaign_id)
    by_prompt: dict[tuple[int, int], list[dict]] = {}
    rows = runs.order_by("id").values(
        "id", "prompt_id", "contestant_id", "campaign_id", "campaign__reviews_wanted"
    )
    for row in rows:
        by_prompt.setdefault((row["campaign_id"], row["prompt_id"]), []).append(row)
    pairs = []
    for prompt_runs in by_prompt.values():
        for first, second in itertools.combinations(prompt_runs, 2):
            if first["contestant_id"] != second["contestant_id"]:
                pairs.append((first, second))
    return pairs


def _comparisons(campaign_id: int | None):
    comparisons = Comparison.objects.all()
    if campaign_id is not None:
        comparisons = comparisons.filter(run_a__campaign_id=campaign_id)
    return comparisons.values_list(
        "run_a__campaign_id",
        "prompt_id",
        "run_a__contestant_id",
        "run_b__contestant_id",
        "outcome",
        "reviewer_id",
        "created_at",
    )


def _wanted(pairs: list[tuple[dict, dict]]) -> dict[tuple, int]:
    """cell -> votes wanted, for the cells these pairs fall in."""
    return {_cell_of(first, second): first["campaign__reviews_wanted"] for first, second in pairs}


def progress(campaign_id: int | None = None) -> dict:
    """Votes wanted, in and left: {"wanted", "decided", "left"}; decided counts only up to what
    each cell wants, so "left" is what it takes to fill every cell."""
    wanted = _wanted(candidate_pairs(campaign_id))
    decided: Counter = Counter()
    for campaign, prompt, contestant_a, contestant_b, outcome, *_ in _comparisons(campaign_id):
        if outcome:
            decided[_cell(campaign, prompt, contestant_a, contestant_b)] += 1
    total = sum(wanted.values())
    done = sum(min(decided[cell], n) for cell, n in wanted.items())
    return {"wanted": total, "decided": done, "left": total - done}


def next_comparison_for(
    user, campaign_id: int | None = None, *, rng: random.Random | None = None
) -> Comparison | None:
    """The comparison this user should vote on next, creating it (outcome "") on first show.

    An undecided comparison already shown to the user comes back first, so its left/right order
    is stable across reloads. Never offers a pair of runs the user already has a comparison for,
    nor a pair whose cell has the votes it wants. None when nothing is left to offer.
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
    candidates = candidate_pairs(campaign_id)
    wanted = _wanted(candidates)
    since = timezone.now() - PENDING_LAPSES_AFTER
    taken: Counter = Counter()
    pair_counts: Counter = Counter()
    prompt_counts: Counter = Counter()
    for campaign, prompt, ca, cb, outcome, reviewer, created in _comparisons(campaign_id):
        pair_counts[(campaign, _pair(ca, cb))] += 1
        prompt_counts[(campaign, prompt)] += 1
        if outcome or (reviewer != user.pk and created >= since):
            taken[_cell(campaign, prompt, ca, cb)] += 1

    best: tuple | None = None
    best_pairs: list[tuple[dict, dict]] = []
    for first, second in candidates:
        if _pair(first["id"], second["id"]) in seen:
            continue
        cell = _cell_of(first, second)
        if taken[cell] >= wanted[cell]:
            continue
        key = (
            pair_counts[(first["campaign_id"], cell[2:])],
            prompt_counts[(first["campaign_id"], first["prompt_id"])],
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
    """Store a vote given as what the scorer saw: "left", "right", "tie" or "both_bad".

    A vote is final: casting it revealed who made each side, so a changed vote would not be
    blind. Raises ValueError for a second vote or an unknown choice.
    """
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
    with transaction.atomic():
        # Locked, so two tabs voting at once cannot both get their vote in.
        if Comparison.objects.select_for_update().get(pk=comparison.pk).outcome:
            raise ValueError("You have already voted on this pair.")
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

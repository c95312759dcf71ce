"""Campaign workflows: launch, cancel, retry, answer a question. Views and commands call these."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Avg, F
from django.utils import timezone

from runs import enqueue, sandbox
from runs.models import Campaign, Contestant, PromptSet, Run
from runs.workers import machine, worker_name


class LaunchError(ValueError):
    pass


def launch(
    *,
    prompt_set: PromptSet,
    contestants: Sequence[Contestant],
    repeats: int = 1,
    name: str = "",
    created_by=None,
    budget_usd: float | None = None,
    reviews_wanted: int = 2,
) -> Campaign:
    """Create a campaign and one run per prompt × contestant × repeat; enqueue after commit.

    The runs are made in a shuffled order: made in order, their ids would tell anyone who sees
    one (a scorer, say) which contestant made it, from its place in the sequence.
    """
    if prompt_set.archived:
        raise LaunchError(f"Prompt set {prompt_set.name!r} is archived")
    prompts = list(prompt_set.active_prompts())
    if not prompts:
        raise LaunchError(f"Prompt set {prompt_set.name!r} has no prompts")
    if not contestants:
        raise LaunchError("Choose at least one contestant")
    archived = [c.name for c in contestants if c.archived]
    if archived:
        raise LaunchError(f"Archived contestants cannot run: {', '.join(archived)}")
    if repeats < 1 or repeats > 20:
        raise LaunchError("Repeats must be between 1 and 20")
    if budget_usd is not None and budget_usd <= 0:
        raise LaunchError("The budget must be positive")
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name or f"{prompt_set.name} {timezone.now():%Y-%m-%d %H:%M}",
            prompt_set=prompt_set,
            repeats=repeats,
            created_by=created_by,
            budget_usd=budget_usd,
            reviews_wanted=reviews_wanted,
        )
        campaign.contestants.set(contestants)
        cells = [
            (prompt, contestant, repeat)
            for repeat in range(repeats)
            for prompt in prompts
            for contestant in contestants
        ]
        random.SystemRandom().shuffle(cells)
        runs = Run.objects.bulk_create(
            Run(
                campaign=campaign,
                prompt=prompt,
                contestant=contestant,
                repeat=repeat,
                snapshot={"prompt": prompt.snapshot(), "contestant": contestant.snapshot()},
            )
            for prompt, contestant, repeat in cells
        )
        run_ids = [run.pk for run in runs] or list(
            campaign.runs.order_by("id").values_list("id", flat=True)
        )
        enqueue.runs(run_ids)
    return campaign


@dataclass(frozen=True)
class CostEstimate:
    """What a launch would cost: `known_usd` for the contestants whose cost per run is known,
    one line per contestant saying how it was reckoned, and the contestants nothing is known of."""

    known_usd: float
    lines: list[str]
    unknown: list[str]

    def exceeds(self, budget_usd: float | None) -> bool:
        return budget_usd is not None and self.known_usd > budget_usd


def estimate_cost(
    prompt_set: PromptSet, contestants: Sequence[Contestant], repeats: int
) -> CostEstimate:
    """The cost of prompt_set × contestants × repeats runs, reckoned per contestant from its cost
    cap (max_cost_usd) where it has one, else from its mean cost per run so far (runs whose agent
    ran its course: finished, failed or timed out). A contestant with neither is unknown."""
    runs_each = prompt_set.active_prompts().count() * repeats
    uncapped = [c.pk for c in contestants if c.max_cost_usd is None]
    means = dict(
        Run.objects.filter(contestant_id__in=uncapped, status__in=Run.REVIEWABLE_STATUSES)
        .values("contestant_id")
        .annotate(mean=Avg("cost_usd"))
        .values_list("contestant_id", "mean")
    )
    known, lines, unknown = 0.0, [], []
    for contestant in contestants:
        runs = f"{runs_each} run{'s' if runs_each != 1 else ''} of {contestant.name}"
        if contestant.max_cost_usd is not None:
            cost = runs_each * contestant.max_cost_usd
            lines.append(f"{runs} at its cap of ${contestant.max_cost_usd:.2f}: ${cost:.2f}")
        elif contestant.pk in means:
            cost = runs_each * means[contestant.pk]
            lines.append(f"{runs} at its mean so far of ${means[contestant.pk]:.2f}: ${cost:.2f}")
        else:
            unknown.append(contestant.name)
            lines.append(f"{runs}: unknown (no cost cap and no run so far)")
            continue
        known += cost
    return CostEstimate(known_usd=known, lines=lines, unknown=unknown)


def cancel_run(run: Run, reason: str = "Cancelled by a user") -> bool:
    """Queued runs end at once; claimed runs are flagged and their worker kills the process group.

    Returns False when the run had already ended.
    """
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status=Run.QUEUED).update(
        status=Run.CANCELLED, status_reason=reason, finished_at=now
    ):
        return True
    updated = Run.objects.filter(pk=run.pk, status__in=Run.CLAIMED_STATUSES).update(
        cancel_requested=True, status_reason=reason
    )
    if updated:
        _stop_now_if_here(run)
    return bool(updated)


def _stop_now_if_here(run: Run) -> None:
    run.refresh_from_db(fields=["process_group", "worker"])
    # Same machine as the worker: kill now. Elsewhere the worker's heartbeat notices the flag.
    if run.process_group and machine(run.worker) == machine(worker_name()):
        sandbox.kill_process_group(run.process_group)


@dataclass(frozen=True)
class CancelCounts:
    """What cancelling a campaign touched, and what it will touch."""

    cancelled: int  # queued runs, ended at once
    stopping: int  # runs a worker had started, told to stop (their worker ends them)

    @property
    def total(self) -> int:
        return self.cancelled + self.stopping


def cancel_preview(campaign: Campaign) -> CancelCounts:
    """What ``cancel_campaign`` would do now: for the confirmation page."""
    runs = campaign.runs.all()
    return CancelCounts(
        cancelled=runs.filter(status=Run.QUEUED).count(),
        stopping=runs.filter(status__in=Run.CLAIMED_STATUSES, cancel_requested=False).count(),
    )


def cancel_campaign(campaign: Campaign, reason: str = "Campaign cancelled") -> CancelCounts:
    """Cancel the runs of ``campaign`` that have not ended, and say exactly how many.

    Runs that ended (finished, failed, errored, timed out, cancelled) keep their status, and a
    campaign with nothing left to cancel keeps its state: a finished campaign is never
    relabelled cancelled. Runs already told to stop are not counted again.
    """
    now = timezone.now()
    with transaction.atomic():
        cancelled = Run.objects.filter(campaign=campaign, status=Run.QUEUED).update(
            status=Run.CANCELLED, status_reason=reason, finished_at=now
        )
        # One conditional update per started run (there are at most as many as workers): a run
        # that ended meanwhile is neither counted nor signalled.
        stopping = [
            run
            for run in campaign.runs.filter(
                status__in=Run.CLAIMED_STATUSES, cancel_requested=False
            ).only("pk")
            if Run.objects.filter(
                pk=run.pk, status__in=Run.CLAIMED_STATUSES, cancel_requested=False
            ).update(cancel_requested=True, status_reason=reason)
        ]
        if cancelled or stopping:
            Campaign.objects.filter(pk=campaign.pk, state=Campaign.RUNNING).update(
                state=Campaign.CANCELLED
            )
    for run in stopping:
        _stop_now_if_here(run)
    return CancelCounts(cancelled=cancelled, stopping=len(stopping))


def retry_run(run: Run) -> bool:
    """Put an errored (or timed-out) run back in the queue; its history of errors is kept."""
    updated = Run.objects.filter(pk=run.pk, status__in=[Run.ERRORED, Run.TIMED_OUT]).update(
        status=Run.QUEUED,
        status_reason=F("error"),
        attempts=0,
        queued_at=timezone.now(),
        finished_at=None,
        cancel_requested=False,
    )
    if updated:
        Campaign.objects.filter(pk=run.campaign_id).update(state=Campaign.RUNNING)
        enqueue.runs([run.pk])
    return bool(updated)


def answer_question(run: Run, answer: str, user) -> bool:
    """Record a human answer to the run's pending clarifying question; the agent resumes."""
    answer = answer.strip()
    if not answer:
        raise ValueError("The answer cannot be empty")
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        pending = locked.pending_question
        if locked.status != Run.AWAITING_ANSWER or pending is None:
            return False
        pending["answer"] = answer
        pending["source"] = "human"
        pending["answered_by"] = getattr(user, "username", "")
        pending["answered_at"] = timezone.now().isoformat()
        locked.save(update_fields=["questions"])
    return True

"""Series of campaigns: re-running one on a schedule, cloning one with another model, and the
history of a series, per contestant, with intervals.

A scheduled re-run copies the series' template campaign (its prompt set, contestants, repeats,
reviews wanted and budget) into a new campaign of the same series, through `runs.campaigns.launch`
like any other launch. Schedules are django-celery-beat rows that beat's database scheduler reads.
"""

from __future__ import annotations

import json
from datetime import timedelta

from celery.schedules import crontab
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from api.models import Series, SeriesCampaign
from runs import campaigns
from runs.models import Campaign, Contestant, LanguageModel
from scoring import leaderboard

TASK_NAME = "api.tasks.rerun_series"
MAX_WEEKS = 52
# A tick delivered twice (a worker lost mid-task, say) within this long launches one campaign.
DUPLICATE_TICK_WINDOW = timedelta(minutes=10)
# A contestant's fields that make it the same agent: everything but who it is and what it is
# measured by elsewhere.
_NOT_BEHAVIOUR = {"id", "name", "model", "benchmarks", "archived"}


class SeriesError(ValueError):
    """A request about a series that cannot be done; `field` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# -- Schedules -----------------------------------------------------------------------------------


def parse_cron(expression: str) -> dict[str, str]:
    """The five fields of a cron expression (minute hour day-of-month month day-of-week), as
    django-celery-beat stores them. Raises ValueError naming what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            "A cron expression has five fields: minute hour day-of-month month day-of-week "
            f"(e.g. '0 6 * * 1' for Mondays at 06:00), got {len(fields)}."
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        crontab(minute, hour, day_of_week, day_of_month, month_of_year)
    except ValueError as exc:
        raise ValueError(f"Not a valid cron expression: {exc}") from None
    return {
        "minute": minute,
        "hour": hour,
        "day_of_month": day_of_month,
        "month_of_year": month_of_year,
        "day_of_week": day_of_week,
    }


def series_for(campaign: Campaign, *, user=None) -> Series:
    """The series `campaign` belongs to; a new one, with `campaign` as its template, if none."""
    link = SeriesCampaign.objects.select_related("series").filter(campaign=campaign).first()
    if link is not None:
        return link.series
    series = Series.objects.create(name=campaign.name, template=campaign, created_by=user)
    SeriesCampaign.objects.create(series=series, campaign=campaign)
    return series


@transaction.atomic
def schedule(campaign: Campaign, *, every_weeks: int | None = None, cron: str = "", user=None):
    """Put `campaign` on a schedule: every `every_weeks` weeks, or on the `cron` expression (in
    settings.TIME_ZONE). Replaces the series' schedule if it had one. Returns the series."""
    if (every_weeks is None) == (not cron.strip()):
        raise SeriesError("Give either every_weeks or cron (exactly one).", "every_weeks")
    if every_weeks is not None and not 1 <= every_weeks <= MAX_WEEKS:
        raise SeriesError(f"every_weeks must be between 1 and {MAX_WEEKS}.", "every_weeks")
    timing: dict = {"interval": None, "crontab": None}
    if every_weeks is not None:
        timing["interval"], _ = IntervalSchedule.objects.get_or_create(
            every=7 * every_weeks, period=IntervalSchedule.DAYS
        )
    else:
        try:
            fields = parse_cron(cron)
        except ValueError as exc:
            raise SeriesError(str(exc), "cron") from None
        timing["crontab"], _ = CrontabSchedule.objects.get_or_create(
            **fields, timezone=settings.TIME_ZONE
        )
    series = series_for(campaign, user=user)
    task = series.periodic_task
    values = {
        **timing,
        "name": f"Mergeable series {series.pk}",
        "task": TASK_NAME,
        "args": json.dumps([series.pk]),
        # Bookkeeping: taken by the small pool every worker host runs, never behind runs.
        "queue": settings.BOOKKEEPING_QUEUE,
        "enabled": True,
        "description": f"Re-runs {series.template.name} (campaign {series.template_id}).",
    }
    if task is None:
        task = PeriodicTask.objects.create(**values)
        series.periodic_task = task
        series.save(update_fields=["periodic_task"])
    else:
        for name, value in values.items():
            setattr(task, name, value)
        # Counted from now, not from the previous schedule's last tick.
        task.last_run_at = None
        task.save()
    return series


@transaction.atomic
def unschedule(series: Series) -> bool:
    """Stop the series' schedule; its campaigns stay. False if it had none."""
    task = series.periodic_task
    if task is None:
        return False
    series.periodic_task = None
    series.save(update_fields=["periodic_task"])
    task.delete()
    return True


def rerun(series_id: int) -> Campaign | None:
    """What a schedule's tick does: launch the series' template again, as a new campaign of the
    series. Returns it; None when the tick was a duplicate or the launch was refused (the
    reason is kept in `last_error` and shown on the series' page)."""
    now = timezone.now()
    recent = Q(last_rerun_at__gt=now - DUPLICATE_TICK_WINDOW)
    if not Series.objects.filter(pk=series_id).exclude(recent).update(last_rerun_at=now):
        return None  # no such series, or this tick was already handled
    series = Series.objects.select_related("template__prompt_set", "created_by").get(pk=series_id)
    template = series.template
    try:
        with transaction.atomic():
            campaign = campaigns.launch(
                prompt_set=template.prompt_set,
                contestants=list(template.contestants.order_by("name")),
                repeats=template.repeats,
                name=f"{series.name} {now:%Y-%m-%d}"[:200],
                created_by=series.created_by,
                budget_usd=template.budget_usd,
                reviews_wanted=template.reviews_wanted,
            )
            SeriesCampaign.objects.create(series=series, campaign=campaign, scheduled=True)
    except campaigns.LaunchError as exc:
        Series.objects.filter(pk=series_id).update(last_error=f"{now:%Y-%m-%d %H:%M}: {exc}")
        return None
    Series.objects.filter(pk=series_id).update(last_error="")
    return campaign


# -- Re-run with another model -------------------------------------------------------------------


def rerun_with_model(
    campaign: Campaign, *, contestant: Contestant, model: LanguageModel, user=None
) -> Campaign:
    """A new campaign like `campaign` (same prompt set, repeats, reviews wanted, budget), with
    `contestant` replaced by the same agent driving `model`. The clone joins `campaign`'s series.
    """
    members = list(campaign.contestants.select_related("model").order_by("name"))
    if contestant.pk not in {c.pk for c in members}:
        raise SeriesError(f"{contestant.name} is not a contestant of this campaign.", "contestant")
    if model.pk == contestant.model_id:
        raise SeriesError(f"{contestant.name} already drives {model.name}.", "model")
    if model.archived:
        raise SeriesError(f"Model {model.name} is archived.", "model")
    with transaction.atomic():
        swapped = _same_agent_with(contestant, model)
        series = series_for(campaign, user=user)
        try:
            clone = campaigns.launch(
                prompt_set=campaign.prompt_set,
                contestants=[swapped if c.pk == contestant.pk else c for c in members],
                repeats=campaign.repeats,
                name=f"{campaign.name} with {model.name}"[:200],
                created_by=user,
                budget_usd=campaign.budget_usd,
                reviews_wanted=campaign.reviews_wanted,
            )
        except campaigns.LaunchError as exc:
            raise SeriesError(str(exc)) from None
        SeriesCampaign.objects.create(series=series, campaign=clone)
    return clone


def _same_agent_with(contestant: Contestant, model: LanguageModel) -> Contestant:
    """A contestant that is `contestant` (harness, options, limits) driving `model`: an existing
    active one if there is one, else a new one named `<contestant>-<model>`."""
    behaviour = {
        field.attname: getattr(contestant, field.attname)
        for field in Contestant._meta.concrete_fields
        if field.name not in _NOT_BEHAVIOUR
    }
    for candidate in Contestant.objects.filter(model=model, archived=False).select_related("model"):
        if all(getattr(candidate, name) == value for name, value in behaviour.items()):
            return candidate
    base = f"{contestant.name}-{model.name}"[:96]
    name, n = base, 1
    while Contestant.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return Contestant.objects.create(name=name, model=model, **behaviour)


# -- History -------------------------------------------------------------------------------------


def history(series: Series) -> dict:
    """The series over time: its campaigns, oldest first, and for each contestant the merge rate
    in each campaign with its interval (None where the contestant has no counted run there).

    Read from `scoring.leaderboard.history` (cached, the board's default reading), restricted to
    the series' campaigns.
    """
    members = list(
        series.members.select_related("campaign").order_by("campaign__created_at", "campaign_id")
    )
    board = leaderboard.history(leaderboard.Filters(prompt_set_id=series.template.prompt_set_id))
    ids = [member.campaign_id for member in members]
    contestants = []
    for entry in board["contestants"]:
        by_campaign = {point["campaign_id"]: point for point in entry["points"] if point}
        points = [by_campaign.get(campaign_id) for campaign_id in ids]
        if any(points):
            contestants.append({"label": entry["label"], "points": points})
    return {
        "campaigns": [
            {
                "id": member.campaign_id,
                "name": member.campaign.name,
                "created_at": member.campaign.created_at,
                "state": member.campaign.state,
                "scheduled": member.scheduled,
            }
            for member in members
        ],
        "contestants": contestants,
    }

"""Personal API tokens, and series of campaigns that run again."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from runs.models import Campaign


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A personal token: it acts as its user, with the role the user holds at each request.

    Only a SHA-256 digest of the token is stored. The token is 256 random bits, so a fast hash
    is enough (nobody can guess their way to a preimage), and the short public `prefix` finds the
    row without comparing digests across the table. `tokens.create` shows the token once.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Series(models.Model):
    """Campaigns that belong together over time: the re-runs of one campaign (its `template`),
    on a schedule or by hand, and the clones of them with one contestant's model swapped.

    A schedule is a django-celery-beat `PeriodicTask` that sends `api.tasks.rerun_series` with
    the series' id; beat's database scheduler reads it, so a schedule changes without a restart.
    """

    name = models.CharField(max_length=200)
    # What every re-run copies: prompt set, contestants, repeats, reviews wanted, budget.
    template = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="+")
    periodic_task = models.OneToOneField(
        PeriodicTask, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When the schedule last launched a campaign: a tick delivered twice launches once.
    last_rerun_at = models.DateTimeField(null=True, blank=True)
    # Why the last scheduled re-run could not launch (an archived contestant, say); "" if it did.
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "series"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("api:series", args=[self.pk])

    @property
    def schedule_text(self) -> str:
        """The schedule as a lead wrote it: "every 2 weeks", "cron 0 6 * * 1", or ""."""
        task = self.periodic_task
        if task is None or not task.enabled:
            return ""
        if task.interval_id:
            weeks = task.interval.every // 7
            return f"every {weeks} week{'s' if weeks != 1 else ''}"
        if task.crontab_id:
            c = task.crontab
            fields = (c.minute, c.hour, c.day_of_month, c.month_of_year, c.day_of_week)
            return f"cron {' '.join(fields)} ({c.timezone})"
        return ""


class SeriesCampaign(models.Model):
    """A campaign's place in a series (a campaign is in at most one)."""

    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="members")
    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="series_link")
    scheduled = models.BooleanField(default=False)  # launched by the schedule, not by hand

    class Meta:
        ordering = ["campaign__created_at", "campaign_id"]

    def __str__(self) -> str:
        return f"{self.campaign} in {self.series}"

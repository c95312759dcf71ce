"""Caching the leaderboard pages, and knowing when a cached page is out of date.

A cached page is keyed by its filters and by two stamps, so that a change makes the next
request compute afresh rather than wait for the entry to expire:

- Runs: a stamp derived from the runs themselves, read on every request: the newest id, the
  latest queueing and the latest finish among the runs in scope (one campaign or all), each
  one step down an index (`run_campaign_newest` and its siblings), whatever the number of
  runs. Workers write runs with `bulk_create` and `.update()`, which send no signals, and
  every write that changes what a board shows moves one of the three: a new run (launched,
  imported) has the newest id; a run that ends, errors or is cancelled gets a finish time;
  a run put back in the queue (`retry_run`, the reaper) a queueing time. Deleting a run moves
  none, so deletions bump the generation below (`_run_deleted`). The times come from the
  workers' clocks: a run that ends on a worker whose clock is behind the latest finish shows
  when the cached page expires.
- Human judgement (reviews, votes, adjudications) and curation (rubrics, contestants,
  campaigns): a generation number in the cache that `invalidate(campaign_id)` bumps. The
  receivers at the bottom call it whenever one of those is saved or deleted; they are
  connected when this module is imported (`ScoringConfig.ready()`).

Entries still expire after CACHE_SECONDS: with a per-process memory cache, a generation bump
in one process does not reach the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from django.core.cache import cache
from django.db.models import Subquery
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from runs.models import Campaign, Contestant, LanguageModel, Run
from scoring.leaderboard.filters import Filters
from scoring.models import Adjudication, CampaignRubric, Comparison, Criterion, Review, Rubric

CACHE_SECONDS = 60
_PREFIX = "leaderboard"


def _generation_keys(campaign_id: int | None) -> list[str]:
    scope = "all" if campaign_id is None else str(campaign_id)
    return [f"{_PREFIX}:gen:epoch", f"{_PREFIX}:gen:{scope}"]


def _bump(key: str) -> None:
    cache.add(key, 0, timeout=None)
    try:
        cache.incr(key)
    except ValueError:  # evicted between add and incr
        cache.set(key, 1, timeout=None)


def invalidate(campaign_id: int | None = None) -> None:
    """Forget cached pages that may include `campaign_id` (None: forget every page).

    Pages filtered to another campaign stay cached; pages over all campaigns are dropped.
    """
    if campaign_id is None:
        _bump(f"{_PREFIX}:gen:epoch")
        return
    _bump(f"{_PREFIX}:gen:{campaign_id}")
    _bump(f"{_PREFIX}:gen:all")


# What a change to the runs moves (see the module's docstring).
STAMP_FIELDS = ("id", "queued_at", "finished_at")


def runs_stamp(campaign_id: int | None) -> str:
    """The newest id, latest queueing and latest finish of the runs in scope: one query of
    three index lookups, so a warm page costs the same at any number of runs."""
    runs = Run.objects.all() if campaign_id is None else Run.objects.filter(campaign_id=campaign_id)
    newest = {
        f"newest_{field}": Subquery(
            runs.filter(**{f"{field}__isnull": False}).order_by(f"-{field}").values(field)[:1]
        )
        for field in STAMP_FIELDS
    }
    row = runs.order_by().annotate(**newest).values_list(*newest)[:1]
    return "|".join(map(str, next(iter(row), ())))


def cache_key(kind: str, filters: Filters) -> str:
    generations = cache.get_many(_generation_keys(filters.campaign_id))
    stamp = "/".join(
        [
            *(str(generations.get(key, 0)) for key in _generation_keys(filters.campaign_id)),
            runs_stamp(filters.campaign_id),
            filters.key(),
        ]
    )
    # Hashed: a tag filter can make the key too long for memcached.
    return f"{_PREFIX}:{kind}:{hashlib.sha256(stamp.encode()).hexdigest()}"


def cached[T](kind: str, filters: Filters, compute: Callable[[], T]) -> T:
    """`compute()`'s value (the data of a page, or its rendered HTML) for these filters, cached
    until a run, a review, a vote or the curation behind it changes."""
    key = cache_key(kind, filters)
    value = cache.get(key)
    if value is None:
        value = compute()
        cache.set(key, value, CACHE_SECONDS)
    return value


# --- Invalidation ----------------------------------------------------------------------------


@receiver(post_delete, sender=Run, dispatch_uid="leaderboard_run_deleted")
def _run_deleted(sender, instance: Run, **kwargs) -> None:
    # The one change to the runs that the stamp cannot see.
    invalidate(None)


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


@receiver(post_save, sender=Adjudication, dispatch_uid="leaderboard_adjudication_saved")
def _adjudication_saved(sender, instance: Adjudication, **kwargs) -> None:
    invalidate(instance.run.campaign_id)


@receiver(post_delete, sender=Adjudication, dispatch_uid="leaderboard_adjudication_deleted")
def _adjudication_deleted(sender, instance: Adjudication, **kwargs) -> None:
    # Also sent while a run is deleted, when its campaign may no longer be readable.
    invalidate(None)


# What a rubric says "after small changes" is worth, its criteria, which rubric a campaign
# uses, and the names and labels of campaigns, contestants and models all show on the pages.
@receiver(post_save, sender=Rubric, dispatch_uid="leaderboard_rubric_saved")
@receiver(post_delete, sender=Rubric, dispatch_uid="leaderboard_rubric_deleted")
@receiver(post_save, sender=Criterion, dispatch_uid="leaderboard_criterion_saved")
@receiver(post_delete, sender=Criterion, dispatch_uid="leaderboard_criterion_deleted")
@receiver(post_save, sender=CampaignRubric, dispatch_uid="leaderboard_campaign_rubric_saved")
@receiver(post_delete, sender=CampaignRubric, dispatch_uid="leaderboard_campaign_rubric_deleted")
@receiver(post_save, sender=Contestant, dispatch_uid="leaderboard_contestant_saved")
@receiver(post_save, sender=LanguageModel, dispatch_uid="leaderboard_model_saved")
@receiver(post_save, sender=Campaign, dispatch_uid="leaderboard_campaign_saved")
def _curation_changed(sender, **kwargs) -> None:
    invalidate(None)

"""The review queue: which finished run a scorer should review next."""

from __future__ import annotations

from django.db.models import Count, Exists, F, OuterRef, Q

from runs.models import Run
from scoring.models import Review


def needing_review(user, campaign_id: int | None = None):
    mine = Review.objects.filter(run=OuterRef("pk"), reviewer=user)
    runs = (
        Run.objects.reviewable()
        .annotate(
            submitted=Count("reviews", filter=Q(reviews__submitted_at__isnull=False)),
            reviewed_by_me=Exists(mine.filter(submitted_at__isnull=False)),
        )
        .filter(reviewed_by_me=False)
    )
    if campaign_id is not None:
        runs = runs.filter(campaign_id=campaign_id)
    return runs.filter(submitted__lt=F("campaign__reviews_wanted"))


def pending_reviews_for(user, campaign_id: int | None = None) -> int:
    return needing_review(user, campaign_id).count()


def next_run_for(user, campaign_id: int | None = None) -> Run | None:
    """Fewest reviews first, then oldest; never one the user already submitted.

    A run the user has a draft for comes first, so an interrupted review is picked up again.
    """
    drafts = Review.objects.filter(run=OuterRef("pk"), reviewer=user, submitted_at__isnull=True)
    return (
        needing_review(user, campaign_id)
        .annotate(has_draft=Exists(drafts))
        .order_by("-has_draft", "submitted", "id")
        .first()
    )

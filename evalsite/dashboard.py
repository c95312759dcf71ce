"""What the dashboard shows a user: what is running, what waits for their review, the latest
leaderboard. Each app contributes through a small function so `runs` never imports `scoring`."""

from __future__ import annotations


def for_user(user) -> dict:
    from runs.models import Campaign, Run
    from scoring.leaderboard import latest_summary
    from scoring.queue import pending_reviews_for

    active = (
        Run.objects.filter(status__in=Run.ACTIVE_STATUSES)
        .select_related("prompt", "campaign")
        .order_by("-id")[:10]
    )
    return {
        "active_runs": list(active),
        "active_count": Run.objects.filter(status__in=Run.ACTIVE_STATUSES).count(),
        "recent_campaigns": list(Campaign.objects.order_by("-created_at")[:5]),
        "pending_reviews": pending_reviews_for(user),
        "leaderboard": latest_summary(),
    }

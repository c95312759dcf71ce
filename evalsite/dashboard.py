"""What the dashboard shows a user: what is running, what waits for their review, the latest
leaderboard. Each app contributes through a small function so `runs` never imports `scoring`."""

from __future__ import annotations

from evalsite.operations import load
from evalsite.roles import ADMIN, LEAD, has_role
from runs.models import Campaign, Run
from scoring.leaderboard import latest_summary
from scoring.queue import pending_reviews_for


def for_user(user) -> dict:
    """Scorers see no standings: a leaderboard would tell them which contestant tends to do
    well before they judge its runs, and which run is whose from how its numbers move. Admins
    also see the load: workers alive, their busy slots, the queue (`evalsite.operations`)."""
    # What the list shows, not the runs' whole rows (snapshot, transcript summary, usage).
    active = (
        Run.objects.filter(status__in=Run.ACTIVE_STATUSES)
        .select_related("prompt")
        .only("status", "review_key", "prompt__key")
        .order_by("-id")[:10]
    )
    is_lead = has_role(user, LEAD)
    return {
        "active_runs": list(active),
        "active_count": Run.objects.filter(status__in=Run.ACTIVE_STATUSES).count(),
        "recent_campaigns": list(
            Campaign.objects.select_related("prompt_set").order_by("-created_at")[:5]
        ),
        "pending_reviews": pending_reviews_for(user),
        "leaderboard": latest_summary() if is_lead else None,
        "load": load() if has_role(user, ADMIN) else None,
    }

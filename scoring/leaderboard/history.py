"""The merge rate per campaign, oldest first, for each contestant and each model: is an agent
getting better, and does the same model do better under another harness?"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from django.db.models import F

from runs.models import Campaign, Contestant, LanguageModel
from scoring import stats
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import Filters
from scoring.leaderboard.formatting import interval, number, rate_text
from scoring.leaderboard.loading import (
    REVIEWABLE,
    load_adjudications,
    load_reviews,
    load_rubrics,
    load_runs,
)
from scoring.leaderboard.standings import BOOTSTRAP_ROUNDS
from scoring.leaderboard.verdicts import board_value


def history(filters: Filters) -> dict:
    """Merge rate per campaign (oldest first) for each contestant and each model (cached),
    each run's value read as the board reads it (`filters.verdict`, `filters.errored`).

    Keys: campaigns ([{id, name, created_at}]), contestants and models ([{label, points}],
    points aligned with campaigns, None where the campaign has no counted run of it). The
    campaign and tag filters are ignored: history is across campaigns.
    """
    across = Filters(
        prompt_set_id=filters.prompt_set_id,
        date_from=filters.date_from,
        date_to=filters.date_to,
        verdict=filters.verdict,
        errored=filters.errored,
    )
    return cached("history", across, lambda: _compute(across))


def _compute(filters: Filters) -> dict:
    runs = load_runs(filters, "campaign_id", "prompt_id", model_id=F("contestant__model_id"))
    _, small_changes = load_rubrics({run["campaign_id"] for run in runs}, criteria=False)
    reviewable = {run["id"] for run in runs if run["status"] in REVIEWABLE}
    verdicts: dict[int, list[str]] = defaultdict(list)
    for review in load_reviews(filters, reviewable, criteria=[]):
        verdicts[review["run_id"]].append(review["verdict"])
    adjudications = load_adjudications(filters, reviewable)

    # (kind, owner, campaign) -> ([would-merge values], [their prompts])
    cells: dict[tuple[str, int, int], tuple[list[float], list[int]]] = defaultdict(lambda: ([], []))
    for run in runs:
        value = board_value(
            run,
            verdicts.get(run["id"], ()),
            small_changes[run["campaign_id"]],
            filters,
            adjudications.get(run["id"]),
        )
        if value is None:
            continue
        for kind, owner in (("contestant", run["contestant_id"]), ("model", run["model_id"])):
            values, prompts = cells[(kind, owner, run["campaign_id"])]
            values.append(value)
            prompts.append(run["prompt_id"])

    campaign_ids = {key[2] for key in cells}
    campaigns = list(
        Campaign.objects.filter(id__in=campaign_ids)
        .order_by("created_at", "id")
        .values("id", "name", "created_at")
    )
    contestant_ids = {key[1] for key in cells if key[0] == "contestant"}
    model_ids = {key[1] for key in cells if key[0] == "model"}
    contestants = {c.pk: c for c in Contestant.objects.filter(id__in=contestant_ids)
                   .select_related("model")}  # fmt: skip
    models = {m.pk: m for m in LanguageModel.objects.filter(id__in=model_ids)}

    def series(kind: str, owners: dict, label: Callable) -> list[dict]:
        result = []
        for owner_id, owner in owners.items():
            points = []
            for campaign in campaigns:
                values, prompts = cells.get((kind, owner_id, campaign["id"]), ([], []))
                points.append(_point(campaign["id"], values, prompts) if values else None)
            result.append({"label": label(owner), "points": points})
        return sorted(result, key=lambda entry: entry["label"])

    return {
        "campaigns": campaigns,
        "contestants": series("contestant", contestants, lambda c: c.label),
        "models": series(
            "model", models, lambda m: f"{m.name} (scripted)" if m.is_scripted else m.name
        ),
    }


def _point(campaign_id: int, values: list[float], prompts: list[int]) -> dict:
    k, n = math.fsum(values), len(values)
    bounds = stats.rate_interval(values, prompts, rounds=BOOTSTRAP_ROUNDS)
    return {
        "campaign_id": campaign_id,
        "merges": number(k, 3),
        "counted_runs": n,
        "merge_rate": number(k / n, 3),
        "merge_rate_ci": interval(bounds),
        "text": rate_text(k, n, bounds),
    }

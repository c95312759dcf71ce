"""The merge rate per campaign, oldest first, for each contestant and each model: is an agent
getting better, and does the same model do better under another harness?"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from django.db.models import F

from runs.models import Campaign, Contestant, LanguageModel
from scoring import stats
from scoring.leaderboard.cache import cached
from scoring.leaderboard.filters import Filters
from scoring.leaderboard.formatting import interval, number, rate_text
from scoring.leaderboard.loading import load_rubrics, load_runs
from scoring.leaderboard.standings import BOOTSTRAP_ROUNDS
from scoring.leaderboard.verdicts import run_values


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
    runs = load_runs(
        filters,
        campaign_id="campaign_id",
        prompt_id="prompt_id",
        contestant_id="contestant_id",
        model_id=F("contestant__model_id"),
        status="status",
        yes="tally__yes",
        small_changes="tally__small_changes",
        no="tally__no",
        adjudicated="tally__adjudicated",
    )
    _, small_changes = load_rubrics(set(runs["campaign_id"]), criteria=False)
    values = run_values(runs, small_changes, filters)["value"]

    # (kind, owner, campaign) -> positions of its counted runs, in run order
    cells: dict[tuple[str, int, int], list[int]] = defaultdict(list)
    for position in np.flatnonzero(~np.isnan(values)):
        campaign = runs["campaign_id"][position]
        cells[("contestant", runs["contestant_id"][position], campaign)].append(position)
        cells[("model", runs["model_id"][position], campaign)].append(position)

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

    prompts = np.asarray(runs["prompt_id"], dtype=np.int64)
    keys = list(cells)
    samples = [stats.cluster_totals(values[cells[key]], prompts[cells[key]]) for key in keys]
    bounds = dict(
        zip(keys, stats.clustered_rate_intervals(samples, rounds=BOOTSTRAP_ROUNDS), strict=True)
    )
    points = {
        key: _point(key[2], sums, sizes, bounds[key])
        for key, (sums, sizes) in zip(keys, samples, strict=True)
    }

    def series(kind: str, owners: dict, label: Callable) -> list[dict]:
        result = []
        for owner_id, owner in owners.items():
            line = [points.get((kind, owner_id, campaign["id"])) for campaign in campaigns]
            result.append({"label": label(owner), "points": line})
        return sorted(result, key=lambda entry: entry["label"])

    return {
        "campaigns": campaigns,
        "contestants": series("contestant", contestants, lambda c: c.label),
        "models": series(
            "model", models, lambda m: f"{m.name} (scripted)" if m.is_scripted else m.name
        ),
    }


def _point(
    campaign_id: int, sums: np.ndarray, sizes: np.ndarray, bounds: tuple[float, float]
) -> dict:
    k, n = float(sums.sum()), int(sizes.sum())
    return {
        "campaign_id": campaign_id,
        "merges": number(k, 3),
        "counted_runs": n,
        "merge_rate": number(k / n, 3),
        "merge_rate_ci": interval(bounds),
        "text": rate_text(k, n, bounds),
    }

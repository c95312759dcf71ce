"""The queries every leaderboard page is computed from: `values()` rows, a fixed handful per
page however many runs there are."""

from __future__ import annotations

from django.db.models import Q
from django.db.models.fields.json import KeyTextTransform, KeyTransform

from runs.models import Run
from scoring.leaderboard.filters import Filters
from scoring.models import (
    DEFAULT_SMALL_CHANGES_VALUE,
    Adjudication,
    CampaignRubric,
    Criterion,
    Review,
    Rubric,
)

# The rubric's "merge" criterion is the verdict itself, reported as the merge rate.
MERGE_KEY = "merge"
# Runs a human can judge: the agent ended and left something to look at.
REVIEWABLE = (Run.FINISHED, Run.FAILED, Run.TIMED_OUT)
# Runs a board counts: every run that ended, except those a person cancelled.
ON_THE_BOARD = (*REVIEWABLE, Run.ERRORED)


def run_conditions(filters: Filters, prefix: str = "", statuses=REVIEWABLE) -> Q:
    """The filters on runs as a Q, with `prefix` ("run__") to apply them through a relation.

    Reviews and comparisons join to their runs with these rather than `run__in=<subquery>`:
    SQLite plans a pair of IN subqueries on a large table very badly.
    """
    conditions = {f"{prefix}status__in": list(statuses)}
    if filters.campaign_id is not None:
        conditions[f"{prefix}campaign_id"] = filters.campaign_id
    if filters.prompt_set_id is not None:
        conditions[f"{prefix}campaign__prompt_set_id"] = filters.prompt_set_id
    if filters.date_from is not None:
        conditions[f"{prefix}finished_at__date__gte"] = filters.date_from
    if filters.date_to is not None:
        conditions[f"{prefix}finished_at__date__lte"] = filters.date_to
    return Q(**conditions)


def snapshot(key: str) -> KeyTransform:
    return KeyTransform(key, KeyTransform("prompt", "snapshot"))


def load_runs(filters: Filters, *fields: str, statuses=ON_THE_BOARD, **expressions) -> list[dict]:
    """The filtered runs as dicts. Tags live in the run's snapshot (JSON), so the tag filter is
    applied here rather than in SQL, where JSON containment is not portable to SQLite."""
    rows = list(
        Run.objects.filter(run_conditions(filters, statuses=statuses))
        .order_by("id")
        .values("id", "contestant_id", "status", *fields, tags=snapshot("tags"), **expressions)
    )
    for row in rows:
        row["tags"] = [str(tag) for tag in row["tags"] or []]
    if filters.tag:
        rows = [row for row in rows if filters.tag in row["tags"]]
    return rows


def load_reviews(
    filters: Filters, run_ids: set[int], criteria: list[Criterion], *fields: str
) -> list[dict]:
    """Submitted reviews of the runs, each with `answers` holding only the criteria's answers.

    The answers are read as text straight from the JSON column, one column per criterion:
    decoding thousands of whole answer dicts in Python is the slowest part otherwise.
    """
    columns = {
        f"answer_{index}": KeyTextTransform(criterion.key, "answers")
        for index, criterion in enumerate(criteria)
    }
    reviews = []
    for review in (
        Review.objects.submitted()
        .filter(run_conditions(filters, "run__"))
        .order_by("id")
        .values("run_id", "reviewer_id", "verdict", *fields, **columns)
    ):
        if review["run_id"] in run_ids:
            review["answers"] = {
                criterion.key: review.pop(f"answer_{index}")
                for index, criterion in enumerate(criteria)
            }
            reviews.append(review)
    return reviews


def load_rubrics(
    campaign_ids: set[int], *, criteria: bool = True
) -> tuple[list[Criterion], dict[int, float]]:
    """The campaigns' rubrics: their scored criteria (one per key, without the verdict; none
    read when `criteria` is False), and what "after small changes" is worth in each campaign."""
    links = {
        campaign_id: (rubric_id, value)
        for campaign_id, rubric_id, value in CampaignRubric.objects.filter(
            campaign_id__in=campaign_ids
        ).values_list("campaign_id", "rubric_id", "rubric__small_changes_value")
    }
    rubric_ids = {rubric_id for rubric_id, _ in links.values()}
    small_changes = {campaign_id: value for campaign_id, (_, value) in links.items()}
    unlinked = campaign_ids - links.keys()
    if unlinked:
        default = Rubric.default()
        if default is not None:
            rubric_ids.add(default.pk)
        value = default.small_changes_value if default else DEFAULT_SMALL_CHANGES_VALUE
        small_changes.update(dict.fromkeys(unlinked, value))
    seen: dict[str, Criterion] = {}
    if not criteria:
        return [], small_changes
    for criterion in Criterion.objects.filter(rubric_id__in=rubric_ids).order_by(
        "position", "rubric_id", "id"
    ):
        if criterion.key != MERGE_KEY:
            seen.setdefault(criterion.key, criterion)
    return list(seen.values()), small_changes


def load_adjudications(filters: Filters, run_ids: set[int]) -> dict[int, str]:
    """run id -> the lead's final verdict, for the runs that have one."""
    return {
        run_id: verdict
        for run_id, verdict in Adjudication.objects.filter(
            run_conditions(filters, "run__")
        ).values_list("run_id", "verdict")
        if run_id in run_ids
    }


def numeric_answers(criteria: list[Criterion]) -> dict[str, dict[str, float]]:
    """criterion key -> answer -> number, so thousands of answers need no method calls."""
    table: dict[str, dict[str, float]] = {}
    for criterion in criteria:
        table[criterion.key] = {}
        for value, _label in criterion.options():
            number = criterion.numeric(value)
            if number is not None:
                table[criterion.key][value] = number
    return table

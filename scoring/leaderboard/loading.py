"""The queries every leaderboard page is computed from: a fixed handful per page however many
runs there are, each returning one row per run (or fewer), never one per review or vote.

Reviews and votes are read through their tallies (`scoring.models.RunTally`, `VoteTally`), which
are kept up to date where they are saved; runs are read as columns of plain values (no JSON
decoding per run: JSON comes back as text, and each distinct text is decoded once).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, time, timedelta

import numpy as np
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    Exists,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    TextField,
    Value,
    When,
)
from django.db.models.fields.json import KeyTextTransform, KeyTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from runs.models import Campaign, Run
from scoring.leaderboard.filters import Filters
from scoring.models import (
    DEFAULT_SMALL_CHANGES_VALUE,
    VOTE_OUTCOMES,
    CampaignRubric,
    Comparison,
    Criterion,
    Rubric,
    VoteTally,
)

# The rubric's "merge" criterion is the verdict itself, reported as the merge rate.
MERGE_KEY = "merge"
# Runs a human can judge: the agent ended and left something to look at.
REVIEWABLE = (Run.FINISHED, Run.FAILED, Run.TIMED_OUT)
# Runs a board counts: every run that ended, except those a person cancelled.
ON_THE_BOARD = (*REVIEWABLE, Run.ERRORED)
OFF_THE_BOARD = tuple(status for status, _ in Run.STATUSES if status not in ON_THE_BOARD)


def run_conditions(filters: Filters, prefix: str = "", statuses=REVIEWABLE) -> Q:
    """The filters on runs but the tag as a Q, with `prefix` ("run__") to apply them through a
    relation (`tag_condition` adds the tag). Dates compare `finished_at` with the start of a
    day in the current time zone, which an index can serve (`__date` converts every row)."""
    conditions = {f"{prefix}status__in": list(statuses)}
    if filters.campaign_id is not None:
        conditions[f"{prefix}campaign_id"] = filters.campaign_id
    if filters.prompt_set_id is not None:
        conditions[f"{prefix}campaign__prompt_set_id"] = filters.prompt_set_id
    if filters.date_from is not None:
        conditions[f"{prefix}finished_at__gte"] = _start_of(filters.date_from)
    if filters.date_to is not None:
        conditions[f"{prefix}finished_at__lt"] = _start_of(filters.date_to + timedelta(days=1))
    return Q(**conditions)


def _start_of(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def snapshot_text(key: str) -> KeyTextTransform:
    """A key of the run's prompt snapshot as JSON text (lists) or text (strings)."""
    return KeyTextTransform(key, KeyTransform("prompt", "snapshot"))


def tag_list(text: str | None) -> list[str]:
    """A run's tags from their JSON text (`snapshot_text("tags")`)."""
    value = json.loads(text) if text and text[:1] == "[" else None
    return [str(tag) for tag in value] if isinstance(value, list) else []


def tag_condition(filters: Filters, prefix: str = "") -> Q:
    """The tag filter as a Q. Tags live in the run's snapshot (JSON), and JSON containment is
    not portable to SQLite: the runs' distinct tag lists are read (a handful: one per prompt at
    most) and the runs are kept whose list is one of those with the tag."""
    if not filters.tag:
        return Q()
    texts = (
        Run.objects.annotate(tags_text=snapshot_text("tags"))
        .values_list("tags_text", flat=True)
        .distinct()
        .order_by()
    )
    matching = [text for text in texts if filters.tag in tag_list(text)]
    tagged = Run.objects.annotate(tags_text=snapshot_text("tags")).filter(tags_text__in=matching)
    if not prefix:
        return Q(pk__in=tagged.values("pk"))
    return Q(**{f"{prefix}in": tagged.values("pk")})


class DurationMicroseconds(Func):
    """finished_at - started_at in whole microseconds (NULL when either is missing), computed by
    the database: converting tens of thousands of datetimes in Python is slower than the rest
    of a page. SQLite stores UTC text ("2025-03-01 12:00:00[.123456]"), whose date functions
    read milliseconds: there the duration is whole milliseconds."""

    output_field = BigIntegerField()

    def __init__(self, **extra) -> None:
        super().__init__(F("finished_at"), F("started_at"), **extra)

    def as_sql(self, compiler, connection, **extra):
        template = "CAST(EXTRACT(EPOCH FROM (%(expressions)s)) * 1000000 AS BIGINT)"
        return super().as_sql(compiler, connection, template=template, arg_joiner=" - ", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        finished, started = (compiler.compile(expression) for expression in self.source_expressions)
        # julianday() is a day count in a double: about 0.05 ms apart near today's dates, so the
        # difference is exact once rounded to the millisecond. NULL when either time is.
        days = f"(julianday({finished[0]}) - julianday({started[0]}))"
        return f"CAST(round({days} * 86400000) AS INTEGER) * 1000", [*finished[1], *started[1]]


def load_runs(filters: Filters, statuses=ON_THE_BOARD, **columns) -> dict[str, tuple]:
    """The filtered runs, by id, as columns: `columns` maps a name to a field path or an
    expression; the result maps each name (and "id") to a tuple with one value per run.

    Columns read through "tally__" are None for a run without a tally (no submitted review and
    no adjudication)."""
    runs = Run.objects.filter(run_conditions(filters, statuses=statuses), tag_condition(filters))
    names = ["id", *columns]
    # Aliased, so that a column may be named like a field of the run.
    expressions = {
        f"column_{name}": F(column) if isinstance(column, str) else column
        for name, column in columns.items()
    }
    query = runs.annotate(**expressions).order_by("id").values_list("id", *expressions).query
    # Straight from the cursor: Django's per-value converters (int() on every computed integer)
    # cost more than the query itself at tens of thousands of runs. Every column is a plain
    # number or text, which both databases return as such.
    try:
        sql, params = query.sql_with_params()
    except EmptyResultSet:  # no run has the tag
        rows = []
    else:
        with connections[runs.db].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    values = list(zip(*rows, strict=True)) or [() for _ in names]
    return dict(zip(names, values, strict=True))


class AnswerCounts(Func):
    """One criterion's answer counts from a run's tally (`RunTally.answers`) as JSON text:
    '{"3": 2, "4": 1}'. Read per criterion, the texts repeat across runs far more than the
    whole tally does, so a page decodes a few dozen of them rather than thousands."""

    output_field = TextField()

    def __init__(self, key: str, **extra) -> None:
        super().__init__(F("tally__answers"), Value(key), **extra)

    def as_sql(self, compiler, connection, **extra):
        template = "((%(expressions)s)::text)"
        return super().as_sql(compiler, connection, template=template, arg_joiner=" -> ", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        answers, key = self.source_expressions
        sql, params = compiler.compile(answers)
        return f"json_extract({sql}, %s)", [*params, f'$."{key.value}"']  # keys are slugs


# Column expressions the pages share.
DIFF_SIZE = F("additions") + F("deletions")
TOKENS = F("input_tokens") + F("output_tokens")
FILES_CHANGED = Cast("files_changed", TextField())


def flag(condition: Q) -> Func:
    """1 where `condition` holds, else 0: an integer the database computes per run."""
    return Case(When(condition, then=Value(1)), default=Value(0), output_field=IntegerField())


def zero(column: str):
    """A tally column, 0 for runs without a tally."""
    return Coalesce(column, Value(0))


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


def load_votes(filters: Filters) -> Counter[tuple[int, int, str]]:
    """(contestant a, contestant b, outcome) -> decided votes between two runs on the board.

    Filtered by campaign or prompt set only, the votes come from their tallies, less those of
    runs in scope that are not on the board (queued, running, cancelled: a handful). A tag or
    a date filters runs one by one, so then the votes themselves are grouped by the database.
    """
    votes: Counter[tuple[int, int, str]] = Counter()
    valid = Q(decided_at__isnull=False, outcome__in=VOTE_OUTCOMES)
    cell = ("run_a__contestant_id", "run_b__contestant_id", "outcome")
    if filters.tag or filters.date_from or filters.date_to:
        grouped = (
            Comparison.objects.filter(
                valid,
                run_conditions(filters, "run_a__", ON_THE_BOARD),
                run_conditions(filters, "run_b__", ON_THE_BOARD),
                tag_condition(filters, "run_a__"),
                tag_condition(filters, "run_b__"),
            )
            .values_list(*cell)
            .annotate(votes=Count("id"))
            .order_by()
        )
        votes.update({tuple(row[:3]): row[3] for row in grouped})
        return votes

    scope = Q()
    in_scope = Q()
    for side in ("a", "b"):
        if filters.campaign_id is not None:
            scope &= Q(**{f"campaign_{side}_id": filters.campaign_id})
            in_scope &= Q(**{f"run_{side}__campaign_id": filters.campaign_id})
        if filters.prompt_set_id is not None:
            scope &= Q(**{f"campaign_{side}__prompt_set_id": filters.prompt_set_id})
            in_scope &= Q(**{f"run_{side}__campaign__prompt_set_id": filters.prompt_set_id})
    for contestant_a, contestant_b, outcome, count in VoteTally.objects.filter(
        scope, votes__gt=0
    ).values_list("contestant_a_id", "contestant_b_id", "outcome", "votes"):
        votes[(contestant_a, contestant_b, outcome)] += count
    # Runs in scope that are not on the board: a handful, usually none.
    off_board = list(
        Run.objects.filter(
            status__in=OFF_THE_BOARD,
            **{
                name: value
                for name, value in (
                    ("campaign_id", filters.campaign_id),
                    ("campaign__prompt_set_id", filters.prompt_set_id),
                )
                if value is not None
            },
        ).values_list("pk", flat=True)
    )
    if off_board:
        for *key, count in (
            Comparison.objects.filter(valid, in_scope)
            .filter(Q(run_a_id__in=off_board) | Q(run_b_id__in=off_board))
            .values_list(*cell)
            .annotate(votes=Count("id"))
            .order_by()
        ):
            votes[tuple(key)] -= count
    return +votes  # drops cells left at zero


def distinct_codes(texts: tuple[str | None, ...]) -> tuple[list, np.ndarray]:
    """Each distinct text once, and each text's position among them: runs reviewed or tagged
    alike share a text, which is then decoded once rather than once per run."""
    index: dict[str | None, int] = dict.fromkeys(texts)  # first-appearance order
    for position, text in enumerate(index):
        index[text] = position
    codes = np.fromiter(map(index.__getitem__, texts), np.intp, len(texts))
    return list(index), codes


def column(runs: dict[str, tuple], name: str) -> np.ndarray:
    """A `load_runs` column as floats, nan for None."""
    return np.array(runs[name], dtype=float).reshape(len(runs["id"]))


def positions(values: tuple, order: list) -> np.ndarray:
    """Each value's position in `order` (which holds every value), as an index array."""
    distinct, inverse = np.unique(np.array(values, dtype=np.int64), return_inverse=True)
    where = {value: index for index, value in enumerate(order)}
    lookup = np.array([where[value] for value in distinct.tolist()], dtype=np.intp)
    return lookup[inverse.reshape(-1)] if len(values) else np.zeros(0, dtype=np.intp)


def campaigns_in(filters: Filters, statuses=ON_THE_BOARD) -> set[int]:
    """The campaigns with a run on the page, the tag filter aside: whose rubrics it reads.
    At most the campaign filtered by, which needs no query."""
    if filters.campaign_id is not None:
        return {filters.campaign_id}
    runs = Run.objects.filter(run_conditions(filters, statuses=statuses), campaign=OuterRef("pk"))
    return set(Campaign.objects.filter(Exists(runs)).values_list("pk", flat=True))

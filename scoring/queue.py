"""The review queue: which finished run a scorer reviews next, and who holds a place on which run.

A run wants its campaign's ``reviews_wanted`` reviews, plus any a lead asked for since
(``Run.extra_reviews_wanted``). A scorer who opens a run takes one of those places (a
``ReviewHold``) and keeps it while they use it; the place lapses after ``ReviewHold.LAPSES_AFTER``
unused. The queue offers a run only while its submitted reviews and the other scorers' live holds
leave a place, and a review that would go beyond what the run wants is refused.

Each scorer walks the runs in an order of their own (``personal_order``), so that two scorers do
not judge the same runs in the same sequence and no scorer sees one contestant's runs in a row.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import random
from collections import defaultdict

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import F
from django.utils import timezone

from runs.models import Run
from scoring.models import Review, ReviewHold, RunTally


class NoPlaceLeft(Exception):
    """The run has all the reviews it wants (submitted or in progress by others)."""

    def __init__(self, wanted: int) -> None:
        super().__init__(
            f"This run already has the {wanted} review{'s' if wanted != 1 else ''} it wants "
            "(submitted or in progress), so another one is not taken. A lead can ask for "
            "another review of it."
        )
        self.wanted = wanted


def needing_review(user, campaign_id: int | None = None, now=None, related=()) -> list[Run]:
    """Reviewable runs this user may review now: not reviewed or skipped by them, and either
    held by them or with a place left after submitted reviews and others' live holds.

    Each run carries how its places stand, as seen by ``user``: ``held_by_me``, ``has_draft``,
    ``submitted`` (reviews), ``held_by_others`` (live holds of other scorers) and ``wanted``.
    ``related`` is passed to select_related."""
    rows = waiting_rows(user, campaign_id, now)
    runs = Run.objects.select_related(*related).in_bulk([row[0] for row in rows])
    waiting = []
    for row in rows:
        run = runs[row[0]]
        for column, value in zip(QUEUE_COLUMNS[2:], row[2:], strict=True):
            setattr(run, column, value)
        waiting.append(run)
    return waiting


def pending_reviews_for(user, campaign_id: int | None = None) -> int:
    return _run_queue_sql(user, campaign_id, None, "SELECT COUNT(*) FROM ({}) waiting")[0][0]


# --- the queue's SQL -----------------------------------------------------------------------------

# The columns of `waiting_rows`, in order; "review next" sorts by them (`_queue_position`).
QUEUE_COLUMNS = ("pk", "campaign_id", "held_by_me", "has_draft", "submitted", "held_by_others",
                 "wanted", "review_key")  # fmt: skip


def waiting_rows(user, campaign_id: int | None = None, now=None) -> list[tuple]:
    """The runs `needing_review` finds, as rows of QUEUE_COLUMNS (flags as 0 and 1).

    Every "review next", review page and dashboard reads the queue: one statement that joins
    to the runs their tallies, the user's own reviews and the campaign's holds, each grouped by
    run once (`_queue_sql`), rather than five subqueries run again for every run.
    """
    return _run_queue_sql(user, campaign_id, now, "{}")


def _run_queue_sql(user, campaign_id: int | None, now, statement: str) -> list[tuple]:
    """Run `statement` with the queue's SQL in place of its ``{}``, for this call's values."""
    values = {
        "user": user.pk,
        "campaign": campaign_id,
        "live_since": _held_at(ReviewHold.live_since(now)),
    }
    return _run(statement.format(_queue_sql(campaign_id is not None)), values)


def _run(sql: str, values: dict | list) -> list[tuple] | int:
    """The queue's one way to send a written-out statement: its rows for a SELECT, else the rows
    it changed. Runs, reviews and holds live in one database."""
    with connections[router.db_for_write(ReviewHold)].cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchall() if cursor.description else cursor.rowcount


def _held_at(when) -> object:
    """`when` as the database takes a hold's time (`held_at`)."""
    connection = connections[router.db_for_write(ReviewHold)]
    return ReviewHold._meta.get_field("held_at").get_db_prep_value(when, connection)


@functools.cache
def _tables() -> dict[str, str]:
    """The tables the queue's statements name, and how this database locks a run's row."""
    connection = connections[router.db_for_write(Run)]
    if connection.features.has_select_for_update_of:
        for_update = f"FOR UPDATE OF {Run._meta.db_table}"
    else:  # SQLite takes no row locks: a write transaction is alone on the whole database
        for_update = "FOR UPDATE" if connection.features.has_select_for_update else ""
    return {
        "runs": Run._meta.db_table,
        "campaigns": Run._meta.get_field("campaign").related_model._meta.db_table,
        "reviews": Review._meta.db_table,
        "tallies": RunTally._meta.db_table,
        "holds": ReviewHold._meta.db_table,
        "for_update": for_update,
    }


# A hold that keeps its place (ReviewHold.live), as SQL.
_LIVE = "skipped_at IS NULL AND held_at >= %(live_since)s"
# The reviews a run wants (Run.reviews_wanted), as SQL over the `_tables()` names.
_WANTED = "({campaigns}.reviews_wanted + {runs}.extra_reviews_wanted)"
# Run.objects.reviewable()'s statuses, as SQL.
_REVIEWABLE = ", ".join(f"'{status}'" for status in Run.REVIEWABLE_STATUSES)


@functools.cache
def _queue_sql(by_campaign: bool) -> str:
    """The queue's rule in SQL, its values named %(user)s, %(campaign)s and %(live_since)s: a
    live hold is one not skipped and used since `live_since` (ReviewHold.live).

    A run's submitted reviews are its tally's count (RunTally, kept in the transaction that
    submits or deletes a review), and the user's own reviews are read by reviewer: counting
    every review of the campaign grew with each one submitted (at 4,000 reviews of 400 runs the
    statement ran for 4.9 ms; now 0.9 ms). Whether a place is really left is decided under the
    run's lock (`check_place`), from the reviews themselves."""
    tables = _tables()
    runs, campaigns = tables["runs"], tables["campaigns"]
    reviews, tallies, holds = tables["reviews"], tables["tallies"], tables["holds"]
    # Holds of the campaign's runs only, when the queue is one campaign's.
    of_campaign = (
        f"WHERE run_id IN (SELECT id FROM {runs} WHERE campaign_id = %(campaign)s)"
        if by_campaign
        else ""
    )
    mine_live = f"reviewer_id = %(user)s AND {_LIVE}"
    others_live = f"reviewer_id <> %(user)s AND {_LIVE}"
    wanted = _WANTED.format(**tables)
    submitted, held_by_others = "COALESCE(t.reviews, 0)", "COALESCE(h.others, 0)"
    held_by_me, has_draft = "COALESCE(h.mine, 0)", "COALESCE(r.draft, 0)"
    return f"""
        SELECT {runs}.id, {runs}.campaign_id, {held_by_me}, {has_draft}, {submitted},
            {held_by_others}, {wanted}, {runs}.review_key
        FROM {runs}
        INNER JOIN {campaigns} ON {campaigns}.id = {runs}.campaign_id
        LEFT JOIN {tallies} t ON t.run_id = {runs}.id
        LEFT JOIN (
            SELECT run_id,
                MAX(CASE WHEN submitted_at IS NOT NULL THEN 1 ELSE 0 END) AS reviewed,
                MAX(CASE WHEN submitted_at IS NULL THEN 1 ELSE 0 END) AS draft
            FROM {reviews} WHERE reviewer_id = %(user)s GROUP BY run_id
        ) r ON r.run_id = {runs}.id
        LEFT JOIN (
            SELECT run_id,
                SUM(CASE WHEN {others_live} THEN 1 ELSE 0 END) AS others,
                MAX(CASE WHEN {mine_live} THEN 1 ELSE 0 END) AS mine,
                MAX(CASE WHEN reviewer_id = %(user)s AND skipped_at IS NOT NULL
                    THEN 1 ELSE 0 END) AS skipped
            FROM {holds} {of_campaign} GROUP BY run_id
        ) h ON h.run_id = {runs}.id
        WHERE {runs}.status IN ({_REVIEWABLE})
            {"AND " + runs + ".campaign_id = %(campaign)s" if by_campaign else ""}
            AND COALESCE(r.reviewed, 0) = 0 AND COALESCE(h.skipped, 0) = 0
            AND {submitted} < {wanted}
            AND ({held_by_me} = 1 OR {wanted} > {submitted} + {held_by_others})
    """


def _seed(user, campaign_id: int) -> bytes:
    # Keyed with the site's secret: the order cannot be worked out from a user id and run ids.
    message = f"review-order:{user.pk}:{campaign_id}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()


def personal_order(user, campaign_ids) -> dict[int, int]:
    """run id -> position in ``user``'s own order of each campaign's runs.

    Per campaign, each contestant's runs are shuffled, then dealt out in rounds of one run per
    contestant, the contestants in a shuffled order each round. So a scorer who reviews only a
    few runs has seen the contestants about equally often, and never can tell the next run's
    contestant from the last one's. The shuffles are seeded by the user and the campaign: the
    order is the same on every visit, and different for every scorer.
    """
    runs_by_campaign: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    campaign_ids = sorted(set(campaign_ids))
    if not campaign_ids:
        return {}
    # Every run of the campaigns (hundreds, on each "review next"), as plain rows.
    in_campaigns = ", ".join(["%s"] * len(campaign_ids))
    rows = _run(
        f"SELECT id, campaign_id, contestant_id FROM {_tables()['runs']} "
        f"WHERE campaign_id IN ({in_campaigns}) ORDER BY id",
        campaign_ids,
    )
    for run_id, campaign_id, contestant_id in rows:
        runs_by_campaign[campaign_id][contestant_id].append(run_id)
    order: dict[int, int] = {}
    for campaign_id, by_contestant in runs_by_campaign.items():
        rng = random.Random(_seed(user, campaign_id))
        contestants = sorted(by_contestant)
        for contestant_id in contestants:
            rng.shuffle(by_contestant[contestant_id])
        rounds = max(len(run_ids) for run_ids in by_contestant.values())
        position = 0
        for index in range(rounds):
            dealt = [c for c in contestants if index < len(by_contestant[c])]
            rng.shuffle(dealt)
            for contestant_id in dealt:
                order[by_contestant[contestant_id][index]] = position
                position += 1
    return order


def in_order_for(user, runs: list[Run]) -> list[Run]:
    """``runs`` (from ``needing_review``) in the order this user should take them up
    (`_queue_position`)."""
    order = personal_order(user, {run.campaign_id for run in runs})
    return sorted(
        runs,
        key=lambda run: _queue_position(
            order, run.pk, run.held_by_me or run.has_draft, run.submitted + run.held_by_others
        ),
    )


def _queue_position(order: dict[int, int], run_id: int, started: bool, taken: int) -> tuple:
    """Where a run comes in a user's queue. First the runs the user is in the middle of
    (`started`: held, or with a draft); then the runs with the fewest reviews, submitted or
    under way (`taken`), so every run gets its first review before any gets its second; within
    that, the user's own `order` (`personal_order`)."""
    return (not started, taken, order.get(run_id, 0), run_id)


# Runs "review next" tries before it gives up: each failure means another scorer took the
# last place of a run between the query and the hold, which a few tries outrun.
TAKE_NEXT_TRIES = 5


def take_next_run(user, campaign_id: int | None = None) -> Run | None:
    """The run `user` should review next, with their place on it taken (`hold`). Two scorers
    who ask at once may both be offered a run's last place; the one who holds it second is
    given the next run in their order instead of a page they cannot submit. After
    TAKE_NEXT_TRIES lost races, the first run waiting: its page says that it cannot be
    reviewed now, which is true, where "nothing left" would not be."""
    # The runs waiting as plain rows, ordered, and a Run made only of the few tried, from their
    # rows (its other fields load if read): a model instance for each of hundreds of runs
    # waiting costs more than the query.
    rows = waiting_rows(user, campaign_id)
    order = personal_order(user, {row[1] for row in rows})
    rows.sort(key=lambda row: _queue_position(order, row[0], row[2] or row[3], row[4] + row[5]))
    tried = [_run_of_row(row) for row in rows[:TAKE_NEXT_TRIES]]
    for run in tried:
        if hold(run, user):
            return run
    return tried[0] if tried else None


def _run_of_row(row: tuple) -> Run:
    """A Run of a `waiting_rows` row's id, campaign and review key; its other fields deferred."""
    column = QUEUE_COLUMNS.index
    values = {
        "id": row[column("pk")],
        "campaign_id": row[column("campaign_id")],
        "review_key": row[column("review_key")],
    }
    names = [f.attname for f in Run._meta.concrete_fields if f.attname in values]
    return Run.from_db(router.db_for_read(Run), names, [values[name] for name in names])


def progress(user, campaign_id: int) -> dict:
    """For "3 of 12 left": runs of the campaign still waiting for this user's review, of all its
    reviewable runs; one statement, as every review page shows it."""
    both = (
        "SELECT (SELECT COUNT(*) FROM ({}) waiting), (SELECT COUNT(*) FROM "
        f"{Run._meta.db_table} WHERE status IN ({_REVIEWABLE}) AND campaign_id = %(campaign)s)"
    )
    left, total = _run_queue_sql(user, campaign_id, None, both)[0]
    return {"left": left, "total": total}


# --- holds -----------------------------------------------------------------------------------------
#
# Every review cycle takes a place, keeps it and gives it up, so these statements are written
# out: Django's compiling of the same queries cost more CPU than the database spent running them.


def _execute(statement: str, values: dict) -> list[tuple] | int:
    """Run one of the statements below, its tables named by `_tables()`."""
    return _run(statement.format(**_tables()), values)


def _values(run: Run, user, now) -> dict:
    return {
        "run": run.pk,
        "user": user.pk,
        "now": _held_at(now),
        "live_since": _held_at(ReviewHold.live_since(now)),
    }


_KEEP = f"""
    UPDATE {{holds}} SET held_at = %(now)s
    WHERE run_id = %(run)s AND reviewer_id = %(user)s AND {_LIVE}
"""
_LOCK = f"""
    SELECT {_WANTED} FROM {{runs}}
    INNER JOIN {{campaigns}} ON {{campaigns}}.id = {{runs}}.campaign_id
    WHERE {{runs}}.id = %(run)s {{for_update}}
"""
# Submitted reviews by the user and by others; the user's live hold, and others' live holds.
_PLACES = f"""
    SELECT
        (SELECT COUNT(*) FROM {{reviews}} WHERE run_id = %(run)s AND reviewer_id = %(user)s
            AND submitted_at IS NOT NULL),
        (SELECT COUNT(*) FROM {{reviews}} WHERE run_id = %(run)s AND reviewer_id <> %(user)s
            AND submitted_at IS NOT NULL),
        (SELECT COUNT(*) FROM {{holds}} WHERE run_id = %(run)s AND reviewer_id = %(user)s
            AND {_LIVE}),
        (SELECT COUNT(*) FROM {{holds}} WHERE run_id = %(run)s AND reviewer_id <> %(user)s
            AND {_LIVE})
"""
# The user's lapsed or skipped hold on the run becomes live again, else one is made.
_TAKE = """
    INSERT INTO {holds} (run_id, reviewer_id, held_at, skipped_at)
    VALUES (%(run)s, %(user)s, %(now)s, NULL)
    ON CONFLICT (run_id, reviewer_id) DO UPDATE SET held_at = excluded.held_at, skipped_at = NULL
"""
_RELEASE = "DELETE FROM {holds} WHERE run_id = %(run)s AND reviewer_id = %(user)s"


def lock(run: Run) -> int:
    """Lock the run's row until the transaction ends, as every writer of its places and reviews
    does first; the reviews the run wants, read under the lock."""
    rows = _execute(_LOCK, {"run": run.pk})
    if not rows:
        raise Run.DoesNotExist(f"Run {run.pk} no longer exists.")
    return rows[0][0]


def hold(run: Run, user) -> bool:
    """Take up (or keep) a place on ``run`` for ``user``; False when no place is left.

    A submitted reviewer needs no place: they may always come back to their review. Taking a
    place locks the run's row, so two scorers cannot both take its last place.
    """
    values = _values(run, user, timezone.now())
    if _execute(_KEEP, values):
        return True
    with transaction.atomic():
        wanted = lock(run)
        # Counted after the lock, by a statement of their own: one that read the run's row
        # while waiting for it would count from before the holder's transaction ended.
        mine, others, _held, held_by_others = _execute(_PLACES, values)[0]
        if mine:
            return True
        if others + held_by_others >= wanted:
            return False
        _execute(_TAKE, values)
    return True


def check_place(run: Run, user, wanted: int) -> None:
    """Raise NoPlaceLeft unless ``user`` may submit a (first) review of ``run`` now, when it
    wants ``wanted`` reviews.

    Call inside the transaction that saves the review, after locking the run's row (`lock`).
    """
    _mine, taken, held, held_by_others = _execute(_PLACES, _values(run, user, timezone.now()))[0]
    if held:
        # The hold kept this place: others were counted against it when they took theirs.
        if taken < wanted:
            return
        raise NoPlaceLeft(wanted)
    if taken + held_by_others >= wanted:
        raise NoPlaceLeft(wanted)


def release(run: Run, user) -> None:
    """The user submitted: their place is now a review, not a hold."""
    _execute(_RELEASE, {"run": run.pk, "user": user.pk})


def skip(run: Run, user) -> bool:
    """Stop offering ``run`` to ``user`` and free their place; False if they already reviewed it."""
    if Review.objects.filter(run=run, reviewer=user, submitted_at__isnull=False).exists():
        return False
    ReviewHold.objects.update_or_create(
        run=run, reviewer=user, defaults={"skipped_at": timezone.now()}
    )
    return True


def ask_for_another_review(run: Run) -> int:
    """A lead wants one more review of ``run`` than it wants now; returns the new number."""
    Run.objects.filter(pk=run.pk).update(extra_reviews_wanted=F("extra_reviews_wanted") + 1)
    run.refresh_from_db(fields=["extra_reviews_wanted"])
    return run.reviews_wanted

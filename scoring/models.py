"""Human judgement: rubrics, reviews and pairwise comparisons."""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connection, connections, models, router, transaction
from django.db.models import F
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from evalsite.rawsql import Loader, loader
from runs.models import Campaign, Contestant, LanguageModel, Prompt, Run

VERDICT_YES = "yes"
VERDICT_SMALL_CHANGES = "small_changes"
VERDICT_NO = "no"
VERDICTS = [
    (VERDICT_YES, "Yes, merge it"),
    (VERDICT_SMALL_CHANGES, "After small changes"),
    (VERDICT_NO, "No"),
]
# What "after small changes" is worth on the leaderboard when a rubric does not say otherwise:
# half a merge, between yes (1) and no (0).
DEFAULT_SMALL_CHANGES_VALUE = 0.5


class Rubric(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    is_default = models.BooleanField(default=False)
    small_changes_value = models.FloatField(
        default=DEFAULT_SMALL_CHANGES_VALUE,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        verbose_name='"After small changes" counts as',
        help_text="How much of a merge that verdict is worth on the leaderboard, from 0 "
        "(as good as no) to 1 (as good as yes).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default(cls) -> Rubric | None:
        """The rubric marked default (the first by name), else the oldest one."""
        return cls._one(f"id = {_DEFAULT_RUBRIC}", [])

    @classmethod
    def for_campaign(cls, campaign: Campaign) -> Rubric | None:
        """The rubric linked to the campaign, else the default one (`default`)."""
        return cls._one(f"id = {_CAMPAIGN_RUBRIC}", [campaign.pk])

    @classmethod
    def _one(cls, condition: str, params: list) -> Rubric | None:
        rubrics = loader(cls)
        sql = f"SELECT {rubrics.columns} FROM {cls._meta.db_table} WHERE {condition}"
        return rubrics.first(sql, params)

    @classmethod
    def campaign_counts(cls) -> dict[int, int]:
        """How many campaigns use each rubric, as for_campaign reads it: those linked to it, and
        for the default rubric also every campaign linked to none. The rubric list and the
        editor's "in use" warning both count this way."""
        counts = dict(
            Campaign.objects.values("rubric_link__rubric_id")
            .annotate(campaigns=models.Count("id"))
            .values_list("rubric_link__rubric_id", "campaigns")
        )
        unlinked = counts.pop(None, 0)
        default = cls.default() if unlinked else None
        if default is not None:
            counts[default.pk] = counts.get(default.pk, 0) + unlinked
        return counts

    @classmethod
    def criteria_of_campaign(cls, campaign_id: int) -> list[Criterion]:
        """The criteria of the rubric `for_campaign` reads, in their order, in one query rather
        than two or three: the review page and every submit read them. By SQL written once:
        building it with the ORM cost more CPU than the queries it replaced."""
        criteria = loader(Criterion)
        # Criterion's own order (Meta.ordering): by rubric, then position, then id.
        sql = (
            f"SELECT {criteria.columns} FROM {Criterion._meta.db_table} "
            f"WHERE rubric_id = {_CAMPAIGN_RUBRIC} ORDER BY position, id"
        )
        return criteria.all(sql, [campaign_id])


class Criterion(models.Model):
    YES_NO = "yes_no"
    ONE_TO_FIVE = "one_to_five"
    CHOICES = "choices"
    SCALES = [(YES_NO, "yes / no"), (ONE_TO_FIVE, "1 to 5"), (CHOICES, "named choices")]
    AMBIGUOUS_TAG = "ambiguous-spec"
    # The answer to a question that does not apply to this run; stored as itself, never a number.
    NOT_APPLICABLE = "n/a"

    rubric = models.ForeignKey(Rubric, on_delete=models.CASCADE, related_name="criteria")
    key = models.SlugField(max_length=60)
    label = models.CharField(max_length=200)
    help = models.TextField(blank=True, default="")
    scale = models.CharField(max_length=20, choices=SCALES, default=YES_NO)
    choices = models.JSONField(default=list, blank=True)  # [[value, label], ...] for CHOICES
    only_for_tag = models.CharField(max_length=100, blank=True, default="")
    # Reviewers may answer N/A (e.g. "recovered when tests failed" when no test failed).
    may_not_apply = models.BooleanField(default=False)
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rubric", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["rubric", "key"], name="criterion_key_unique")
        ]

    def __str__(self) -> str:
        return self.label

    @staticmethod
    def applying_to(criteria: Iterable[Criterion], prompt_snapshot: dict) -> list[Criterion]:
        """Those of `criteria` that apply to a prompt: tag-limited ones only where the tag is
        present."""
        tags = set(prompt_snapshot.get("tags") or [])
        ambiguous = prompt_snapshot.get("clarification_expected") or False
        return [
            criterion
            for criterion in criteria
            if not criterion.only_for_tag
            or criterion.only_for_tag in tags
            or (criterion.only_for_tag == Criterion.AMBIGUOUS_TAG and ambiguous)
        ]

    def options(self) -> list[tuple[str, str]]:
        """(value, label) of every answer a reviewer may give, N/A last where it is allowed."""
        not_applicable = [(self.NOT_APPLICABLE, "N/A")] if self.may_not_apply else []
        if self.scale == self.YES_NO:
            return [("yes", "Yes"), ("no", "No"), *not_applicable]
        if self.scale == self.ONE_TO_FIVE:
            return [(str(i), str(i)) for i in range(1, 6)] + not_applicable
        return [(str(value), str(label)) for value, label in self.choices] + not_applicable

    def numeric(self, answer: str | None) -> float | None:
        """An answer as a number for means: yes=1, no=0; 1..5; choices by position, 1 first.

        None for no answer and for N/A, so both are left out of means rather than counted as 0.
        """
        if answer in (None, "", self.NOT_APPLICABLE):
            return None
        if self.scale == self.YES_NO:
            return {"yes": 1.0, "no": 0.0}.get(answer)
        if self.scale == self.ONE_TO_FIVE:
            try:
                return float(answer)
            except ValueError:
                return None
        values = [str(v) for v, _ in self.choices]
        if answer not in values or len(values) < 2:
            return None
        return 1.0 - values.index(answer) / (len(values) - 1)


class CampaignRubric(models.Model):
    campaign = models.OneToOneField(Campaign, on_delete=models.CASCADE, related_name="rubric_link")
    rubric = models.ForeignKey(Rubric, on_delete=models.PROTECT)

    def __str__(self) -> str:
        return f"{self.campaign} uses {self.rubric}"


# Which rubric applies, as SQL (Rubric.default, for_campaign and criteria_of_campaign read it):
# the one marked default, first by name, else the oldest; for a campaign (the query's one
# parameter), the one linked to it, else that.
_DEFAULT_RUBRIC = f"""COALESCE(
    (SELECT id FROM {Rubric._meta.db_table} WHERE is_default ORDER BY name LIMIT 1),
    (SELECT id FROM {Rubric._meta.db_table} ORDER BY id LIMIT 1))"""
_CAMPAIGN_RUBRIC = f"""COALESCE(
    (SELECT rubric_id FROM {CampaignRubric._meta.db_table} WHERE campaign_id = %s),
    {_DEFAULT_RUBRIC})"""


class ReviewQuerySet(models.QuerySet):
    def submitted(self):
        return self.filter(submitted_at__isnull=False)


class Review(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="reviews")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    answers = models.JSONField(default=dict, blank=True)
    verdict = models.CharField(max_length=20, choices=VERDICTS, blank=True, default="")
    notes = models.TextField(blank=True, default="")
    line_comments = models.JSONField(default=list, blank=True)
    # The prompt's acceptance criteria (their text, as in the run's snapshot) the reviewer ticked.
    acceptance_met = models.JSONField(default=list, blank=True)
    time_spent_s = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    submitted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ReviewQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "reviewer"], name="one_review_per_reviewer")
        ]

    def __str__(self) -> str:
        return f"Review of run {self.run_id} by {self.reviewer_id}"

    def save(self, *args, **kwargs) -> None:
        """Saves the review and, when it is or was submitted, its run's tally with it."""
        counts = self.submitted_at is not None or getattr(self, "_submitted_when_loaded", False)
        # Within a caller's transaction, no savepoint of its own: an error rolls back the whole.
        with transaction.atomic(savepoint=False):
            super().save(*args, **kwargs)
            if counts:
                RunTally.recount([self.run_id])
        self._submitted_when_loaded = self.submitted_at is not None

    @classmethod
    def from_db(cls, db, field_names, values):
        review = super().from_db(db, field_names, values)
        review._submitted_when_loaded = review.submitted_at is not None
        return review

    @property
    def is_submitted(self) -> bool:
        return self.submitted_at is not None

    # Every review page reads the scorer's own review, and a revealed one the others' reviews:
    # by SQL written once, as the ORM's building of these two queries cost more CPU than the
    # database spent running them.

    @classmethod
    def of(cls, run_id: int, reviewer_id: int) -> Review | None:
        """The reviewer's review of the run, draft or submitted, or None."""
        statement, reviews = _review_statement(others=False)
        return reviews.first(statement, [run_id, reviewer_id])

    @classmethod
    def submitted_by_others(cls, run_id: int, reviewer_id: int) -> list[Review]:
        """The run's submitted reviews but the reviewer's, the first submitted first, each with
        its reviewer's username as ``reviewer_name``."""
        statement, reviews = _review_statement(others=True)
        return reviews.all(statement, [run_id, reviewer_id], extra=["reviewer_name"])


@functools.cache
def _review_statement(*, others: bool) -> tuple[str, Loader]:
    """The statement of `Review.of` or `Review.submitted_by_others`, with the loader of the
    table alias it reads the reviews from."""
    reviews = loader(Review, "r")
    users = get_user_model()
    username = connection.ops.quote_name(users._meta.get_field(users.USERNAME_FIELD).column)
    if not others:
        statement = (
            f"SELECT {reviews.columns} FROM {Review._meta.db_table} r "
            "WHERE r.run_id = %s AND r.reviewer_id = %s"
        )
        return statement, reviews
    statement = f"""
        SELECT {reviews.columns}, u.{username} AS reviewer_name
        FROM {Review._meta.db_table} r INNER JOIN {users._meta.db_table} u ON u.id = r.reviewer_id
        WHERE r.run_id = %s AND r.reviewer_id <> %s AND r.submitted_at IS NOT NULL
        ORDER BY r.submitted_at, r.id"""
    return statement, reviews


class ReviewVersion(models.Model):
    """An earlier submitted state of a review, kept when the reviewer changes it."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="versions")
    answers = models.JSONField(default=dict)
    verdict = models.CharField(max_length=20, blank=True, default="")
    notes = models.TextField(blank=True, default="")
    line_comments = models.JSONField(default=list, blank=True)
    acceptance_met = models.JSONField(default=list, blank=True)
    submitted_at = models.DateTimeField()

    class Meta:
        ordering = ["-submitted_at", "-id"]

    def __str__(self) -> str:
        return f"Version of review {self.review_id} from {self.submitted_at:%Y-%m-%d %H:%M}"


class ReviewHoldQuerySet(models.QuerySet):
    def live(self, now=None):
        """Holds that still keep a place: not skipped, and used within LAPSES_AFTER."""
        return self.filter(skipped_at__isnull=True, held_at__gte=ReviewHold.live_since(now))


class ReviewHold(models.Model):
    """A scorer's place among the reviews a run wants, from opening it until they submit.

    The place lapses when the scorer leaves the run unused for LAPSES_AFTER, so a closed tab
    does not keep others out for long. A skipped run keeps its row (with ``skipped_at``) so the
    queue stops offering it to that scorer; opening the run again takes it up again.
    """

    LAPSES_AFTER = timedelta(minutes=30)

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="holds")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_holds"
    )
    held_at = models.DateTimeField(default=timezone.now)
    skipped_at = models.DateTimeField(null=True, blank=True)

    objects = ReviewHoldQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "reviewer"], name="one_hold_per_reviewer")
        ]
        indexes = [models.Index(fields=["run", "held_at"], name="review_hold_run_held_at")]

    def __str__(self) -> str:
        return f"Hold on run {self.run_id} by {self.reviewer_id}"

    @classmethod
    def live_since(cls, now=None):
        """The oldest use of a place that still keeps it at ``now``."""
        return (now or timezone.now()) - cls.LAPSES_AFTER


class Comparison(models.Model):
    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"
    OUTCOMES = [(A, "A is better"), (B, "B is better"), (TIE, "Tie"), (BOTH_BAD, "Both bad")]

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="comparisons")
    run_a = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    run_b = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    a_shown_left = models.BooleanField(default=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparisons"
    )
    outcome = models.CharField(max_length=20, choices=OUTCOMES, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run_a", "run_b", "reviewer"], name="one_vote_per_pair_per_reviewer"
            )
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"

    def save(self, *args, **kwargs) -> None:
        """Saves the vote and moves it between the vote tallies it is counted in."""
        with transaction.atomic():
            before = None
            if not self._state.adding:
                before = (
                    Comparison.objects.filter(pk=self.pk)
                    .values("run_a_id", "run_b_id", "outcome", "decided_at")
                    .first()
                )
            super().save(*args, **kwargs)
            if before is not None and before["decided_at"] and before["outcome"] in VOTE_OUTCOMES:
                VoteTally.shift(before["run_a_id"], before["run_b_id"], before["outcome"], -1)
            if self.is_counted:
                VoteTally.shift(self.run_a_id, self.run_b_id, self.outcome, +1)

    @property
    def is_counted(self) -> bool:
        """Whether the leaderboard counts this vote: decided, with one of the outcomes."""
        return self.decided_at is not None and self.outcome in VOTE_OUTCOMES


# The outcomes a decided vote can have ("" is a comparison shown but not yet voted on).
VOTE_OUTCOMES = {Comparison.A, Comparison.B, Comparison.TIE, Comparison.BOTH_BAD}


class Adjudication(models.Model):
    """A lead's final verdict on a run whose reviewers disagreed; the leaderboard uses it in
    place of the reviews' verdicts for that run."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="adjudication")
    verdict = models.CharField(max_length=20, choices=VERDICTS)
    note = models.TextField(help_text="Why: the reviewers who disagreed will read it.")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-decided_at", "-id"]

    def __str__(self) -> str:
        return f"Adjudication of run {self.run_id}: {self.verdict}"

    def save(self, *args, **kwargs) -> None:
        with transaction.atomic():
            super().save(*args, **kwargs)
            RunTally.recount([self.run_id])


# --- Aggregates the leaderboards read -------------------------------------------------------------
#
# A leaderboard covers tens of thousands of runs and reviews. Rather than read every review on
# every cold page, it reads one row per run (RunTally) and a few rows per campaign (VoteTally);
# the review queue reads each run's count of submitted reviews from RunTally too.
# Both are kept up to date in the transaction that saves or deletes a review, an adjudication or
# a vote (the `save` methods above and the receivers below); writes that bypass `save` (bulk
# creates, `.update()`) must be followed by `manage.py rebuild_aggregates`, which recounts
# everything. Tests compare the stored tallies with a full recount after varied real writes.


_RECOUNT_BATCH = 2000

# The prompt's acceptance criteria in a run's snapshot, as JSON text, per database.
_ACCEPTANCE_CRITERIA = {
    "postgresql": "run.snapshot #> '{prompt,acceptance_criteria}'",
    "sqlite": "json_extract(run.snapshot, '$.prompt.acceptance_criteria')",
}


def _counted_rows(run_ids: list[int]) -> list[tuple]:
    """What `RunTally.computed` counts, for each of `run_ids`, in one statement: rows of (run id,
    its prompt's acceptance criteria, its adjudication's verdict, then a submitted review's
    reviewer id, verdict, answers and ticked criteria), one per submitted review by run and
    reviewer, or one with the review's fields None for a run with none. Runs that no longer
    exist have no row.

    By SQL written out, as every submitted review recounts its run: the three ORM queries it
    replaced cost more CPU to build than the database spent running them (8% of the web's CPU
    in bench_team_load)."""
    database = connections[router.db_for_write(RunTally)]
    jsonfield = Review._meta.get_field("answers")
    sql = f"""
        SELECT run.id, {_ACCEPTANCE_CRITERIA[database.vendor]}, adjudication.verdict,
            review.reviewer_id, review.verdict, review.answers, review.acceptance_met
        FROM {Run._meta.db_table} run
        LEFT JOIN {Adjudication._meta.db_table} adjudication ON adjudication.run_id = run.id
        LEFT JOIN {Review._meta.db_table} review
            ON review.run_id = run.id AND review.submitted_at IS NOT NULL
        WHERE run.id IN ({", ".join(["%s"] * len(run_ids))})
        ORDER BY run.id, review.reviewer_id"""

    def decoded(text):
        return jsonfield.from_db_value(text, None, database)

    with database.cursor() as cursor:
        cursor.execute(sql, run_ids)
        return [
            (run_id, decoded(criteria), adjudication, *review, decoded(answers), decoded(met))
            for run_id, criteria, adjudication, *review, answers, met in cursor
        ]


class RunTally(models.Model):
    """What a run's submitted reviews and its adjudication add up to.

    A run with no row has no submitted review and no adjudication. Rows are created only where
    a review, adjudication or vote is saved; deletions only update existing rows, so that a run
    being deleted (its reviews go first) never gets a new row pointing at it.
    """

    run = models.OneToOneField(
        Run, on_delete=models.CASCADE, primary_key=True, related_name="tally"
    )
    reviews = models.PositiveIntegerField(default=0)  # submitted, with or without a verdict
    yes = models.PositiveIntegerField(default=0)
    small_changes = models.PositiveIntegerField(default=0)
    no = models.PositiveIntegerField(default=0)
    adjudicated = models.CharField(max_length=20, blank=True, default="")
    # The run's row of the run x reviewer matrix: "reviewer_id:verdict" per submitted review,
    # by reviewer id, space-separated ("7:yes 9:no"). Runs reviewed alike share one string.
    verdicts = models.TextField(blank=True, default="")
    # criterion key -> answer -> how many submitted reviews gave it. Pages read one criterion
    # at a time as JSON text (leaderboard.loading.AnswerCounts) and decode each distinct text
    # once rather than once per run.
    answers = models.JSONField(blank=True, default=dict)
    acceptance_criteria = models.PositiveIntegerField(default=0)  # the run's prompt's, distinct
    acceptance_ticked = models.PositiveIntegerField(default=0)  # of those, summed over reviews

    FIELDS = (
        "reviews",
        "yes",
        "small_changes",
        "no",
        "adjudicated",
        "verdicts",
        "answers",
        "acceptance_criteria",
        "acceptance_ticked",
    )

    def __str__(self) -> str:
        return f"Tally of run {self.run_id}"

    @classmethod
    def computed(cls, run_ids: Iterable[int]) -> dict[int, dict]:
        """run id -> the tally's fields recounted from the reviews and adjudications, for the
        runs among `run_ids` that have a submitted review or an adjudication."""
        run_ids = sorted(run_ids)
        if not run_ids:
            return {}
        if len(run_ids) > _RECOUNT_BATCH:  # bounded IN lists, and memory
            result = {}
            for start in range(0, len(run_ids), _RECOUNT_BATCH):
                result.update(cls.computed(run_ids[start : start + _RECOUNT_BATCH]))
            return result
        by_run: dict[int, list[tuple]] = defaultdict(list)
        adjudicated: dict[int, str] = {}
        wanted: dict[int, set[str]] = {}
        for run_id, criteria, adjudication, reviewer_id, verdict, answers, met in _counted_rows(
            run_ids
        ):
            if reviewer_id is None and adjudication is None:
                continue  # nothing to count: the run gets no row, or an emptied one
            wanted[run_id] = {str(text) for text in criteria or []}
            if adjudication is not None:
                adjudicated[run_id] = adjudication
            if reviewer_id is not None:
                by_run[run_id].append((reviewer_id, verdict, answers, met))
        counted = wanted.keys()
        result = {}
        for run_id in counted:
            reviews = by_run.get(run_id, [])
            verdicts = Counter(verdict for _, verdict, _, _ in reviews)
            answers: dict[str, Counter] = defaultdict(Counter)
            for _, _, given, _ in reviews:
                for key, value in (given or {}).items():
                    if value not in (None, ""):
                        answers[key][str(value)] += 1
            criteria = wanted.get(run_id, set())
            result[run_id] = {
                "reviews": len(reviews),
                "yes": verdicts[VERDICT_YES],
                "small_changes": verdicts[VERDICT_SMALL_CHANGES],
                "no": verdicts[VERDICT_NO],
                "adjudicated": adjudicated.get(run_id, ""),
                "verdicts": " ".join(
                    f"{reviewer}:{verdict}" for reviewer, verdict, _, _ in reviews
                ),
                "answers": {
                    key: dict(sorted(given.items())) for key, given in sorted(answers.items())
                },
                "acceptance_criteria": len(criteria),
                "acceptance_ticked": sum(
                    len(criteria & {str(text) for text in met or []}) for _, _, _, met in reviews
                ),
            }
        return result

    @classmethod
    def recount(cls, run_ids: Iterable[int], *, create: bool = True) -> None:
        """Bring the runs' tallies up to date; rows are created only when `create`."""
        run_ids = list(run_ids)
        fresh = cls.computed(run_ids)
        empty = {field: cls._meta.get_field(field).get_default() for field in cls.FIELDS}
        if create:
            # The runs with something to count: their rows written whether or not they exist,
            # in one statement (an insert that updates on conflict); the others' rows emptied.
            cls.objects.bulk_create(
                [cls(run_id=run_id, **fields) for run_id, fields in fresh.items()],
                update_conflicts=True,
                unique_fields=["run"],
                update_fields=cls.FIELDS,
            )
            uncounted = [run_id for run_id in run_ids if run_id not in fresh]
            if uncounted:
                cls.objects.filter(pk__in=uncounted).update(**empty)
            return
        existing = {tally.pk: tally for tally in cls.objects.filter(pk__in=run_ids)}
        for tally in existing.values():
            for field, value in fresh.get(tally.pk, empty).items():
                setattr(tally, field, value)
        cls.objects.bulk_update(existing.values(), cls.FIELDS)


class VoteTally(models.Model):
    """How many decided votes gave each outcome, by the campaigns and contestants of the two
    runs compared ("a" is the comparison's run_a). Kept up to date by `Comparison.save` and on
    deletion; the leaderboard subtracts the votes of runs that are not on it."""

    campaign_a = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    campaign_b = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="+")
    contestant_a = models.ForeignKey(Contestant, on_delete=models.CASCADE, related_name="+")
    contestant_b = models.ForeignKey(Contestant, on_delete=models.CASCADE, related_name="+")
    outcome = models.CharField(max_length=20, choices=Comparison.OUTCOMES)
    votes = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign_a", "campaign_b", "contestant_a", "contestant_b", "outcome"],
                name="one_vote_tally_per_cell",
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.votes} votes {self.outcome} for {self.contestant_a_id} v {self.contestant_b_id}"
        )

    @classmethod
    def shift(cls, run_a_id: int, run_b_id: int, outcome: str, change: int) -> None:
        """Add `change` (+1 or -1) votes with `outcome` to the cell of runs a and b. A cell is
        created only to add to it, so a vote deleted with its runs never recreates one."""
        runs = {
            pk: (campaign, contestant)
            for pk, campaign, contestant in Run.objects.filter(
                pk__in=[run_a_id, run_b_id]
            ).values_list("pk", "campaign_id", "contestant_id")
        }
        if run_a_id not in runs or run_b_id not in runs:
            return
        cell = {
            "campaign_a_id": runs[run_a_id][0],
            "campaign_b_id": runs[run_b_id][0],
            "contestant_a_id": runs[run_a_id][1],
            "contestant_b_id": runs[run_b_id][1],
            "outcome": outcome,
        }
        if change > 0:
            cls.objects.get_or_create(**cell)
            cls.objects.filter(**cell).update(votes=F("votes") + change)
        else:
            # Never below zero: a tally that drifted (a bulk write without a rebuild) must not
            # stop a vote from being deleted; rebuild_aggregates recounts it.
            cls.objects.filter(**cell, votes__gte=-change).update(votes=F("votes") + change)

    @classmethod
    def computed(cls) -> dict[tuple, int]:
        """(campaign_a, campaign_b, contestant_a, contestant_b, outcome) -> votes, recounted."""
        return {
            tuple(row[:5]): row[5]
            for row in Comparison.objects.filter(
                decided_at__isnull=False, outcome__in=VOTE_OUTCOMES
            )
            .values_list(
                "run_a__campaign_id",
                "run_b__campaign_id",
                "run_a__contestant_id",
                "run_b__contestant_id",
                "outcome",
            )
            .annotate(votes=models.Count("id"))
            .order_by()
        }

    @classmethod
    def stored(cls) -> dict[tuple, int]:
        return {
            tuple(row[:5]): row[5]
            for row in cls.objects.filter(votes__gt=0).values_list(
                "campaign_a_id",
                "campaign_b_id",
                "contestant_a_id",
                "contestant_b_id",
                "outcome",
                "votes",
            )
        }


def rebuild_aggregates() -> dict[str, int]:
    """Recount every RunTally and VoteTally from the reviews, adjudications and votes, in one
    transaction. Returns how many rows of each were written."""
    with transaction.atomic():
        RunTally.objects.all().delete()
        counted = sorted(
            set(Review.objects.submitted().values_list("run_id", flat=True).distinct())
            | set(Adjudication.objects.values_list("run_id", flat=True))
        )
        for start in range(0, len(counted), _RECOUNT_BATCH):
            RunTally.recount(counted[start : start + _RECOUNT_BATCH])
        VoteTally.objects.all().delete()
        cells = VoteTally.computed()
        VoteTally.objects.bulk_create(
            VoteTally(
                campaign_a_id=campaign_a, campaign_b_id=campaign_b, contestant_a_id=contestant_a,
                contestant_b_id=contestant_b, outcome=outcome, votes=votes,
            )
            for (campaign_a, campaign_b, contestant_a, contestant_b, outcome), votes in cells.items()
        )  # fmt: skip
    return {"run_tallies": len(counted), "vote_tallies": len(cells)}


def tally_drift() -> list[str]:
    """What differs between the stored tallies and a full recount: one entry per tally that
    differs ("run 12", "votes (campaign_a, campaign_b, contestant_a, contestant_b, outcome)")."""
    empty = {field: RunTally._meta.get_field(field).get_default() for field in RunTally.FIELDS}
    stored = {row.pop("run_id"): row for row in RunTally.objects.values("run_id", *RunTally.FIELDS)}
    counted = set(Review.objects.submitted().values_list("run_id", flat=True)) | set(
        Adjudication.objects.values_list("run_id", flat=True)
    )
    recounted = RunTally.computed(stored.keys() | counted)
    drifted = [
        f"run {run_id}"
        for run_id in sorted(stored.keys() | recounted.keys())
        if stored.get(run_id, empty) != recounted.get(run_id, empty)
    ]
    votes_stored, votes_recounted = VoteTally.stored(), VoteTally.computed()
    drifted += [
        f"votes {cell}"
        for cell in sorted(votes_stored.keys() | votes_recounted.keys())
        if votes_stored.get(cell, 0) != votes_recounted.get(cell, 0)
    ]
    return drifted


# Deletions, including those that cascade from a run, a user or a campaign: only rows that still
# exist are updated (see RunTally).
@receiver(post_delete, sender=Review, dispatch_uid="tally_review_deleted")
def _review_deleted(sender, instance: Review, **kwargs) -> None:
    if instance.submitted_at is not None:
        RunTally.recount([instance.run_id], create=False)


@receiver(post_delete, sender=Adjudication, dispatch_uid="tally_adjudication_deleted")
def _adjudication_deleted(sender, instance: Adjudication, **kwargs) -> None:
    RunTally.recount([instance.run_id], create=False)


@receiver(post_delete, sender=Comparison, dispatch_uid="tally_comparison_deleted")
def _comparison_deleted(sender, instance: Comparison, **kwargs) -> None:
    if instance.is_counted:
        VoteTally.shift(instance.run_a_id, instance.run_b_id, instance.outcome, -1)


# --- The LLM judge, kept apart from the humans ---------------------------------------------------
#
# A judge's reviews live in their own table: no human-facing query (RunTally, the queue, the
# leaderboards, agreement, exports) reads it, so nothing a model says can reach the human board.


class Judge(models.Model):
    """A model asked to review a campaign's reviewable runs blind, with the campaign's rubric
    rendered as instructions (scoring.judge)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="judges")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="+")
    # What one run's judgement may cost at most, enforced by the run gateway it calls through.
    max_cost_usd = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0)],
        verbose_name="Cost limit per run (USD)",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["campaign", "model"], name="one_judge_per_model")
        ]

    def __str__(self) -> str:
        return f"{self.model} judging {self.campaign}"


class JudgeReview(models.Model):
    """One judge's review of one run: answers and verdict with a rationale each, or the reason
    it failed. A malformed answer from the model is a failure with its reason, never a guess."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    STATUSES = [(PENDING, "pending"), (DONE, "done"), (FAILED, "failed")]

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="reviews")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="judge_reviews")
    status = models.CharField(max_length=20, choices=STATUSES, default=PENDING)
    answers = models.JSONField(default=dict, blank=True)  # criterion key -> answer
    verdict = models.CharField(max_length=20, choices=VERDICTS, blank=True, default="")
    rationales = models.JSONField(default=dict, blank=True)  # criterion key or "verdict" -> text
    error = models.TextField(blank=True, default="")
    reply = models.TextField(blank=True, default="")  # the model's answer as given, capped
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    model_calls = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    judged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["judge", "run"], name="one_judge_review_per_run")
        ]

    def __str__(self) -> str:
        return f"Judge review of run {self.run_id} by judge {self.judge_id}"

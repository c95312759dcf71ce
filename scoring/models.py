"""Human judgement: rubrics, reviews and pairwise comparisons."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from runs.models import Campaign, Prompt, Run

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
    def default(cls) -> Rubric:
        return cls.objects.filter(is_default=True).first() or cls.objects.order_by("id").first()

    @classmethod
    def for_campaign(cls, campaign: Campaign) -> Rubric:
        link = CampaignRubric.objects.filter(campaign=campaign).select_related("rubric").first()
        return link.rubric if link else cls.default()

    def criteria_for(self, prompt_snapshot: dict) -> list[Criterion]:
        """The criteria that apply to a prompt: tag-limited ones only where the tag is present."""
        tags = set(prompt_snapshot.get("tags") or [])
        ambiguous = prompt_snapshot.get("clarification_expected") or False
        result = []
        for criterion in self.criteria.all():
            if criterion.only_for_tag:
                applies = criterion.only_for_tag in tags or (
                    criterion.only_for_tag == Criterion.AMBIGUOUS_TAG and ambiguous
                )
                if not applies:
                    continue
            result.append(criterion)
        return result


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

    @property
    def is_submitted(self) -> bool:
        return self.submitted_at is not None


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
        """Holds that still keep a place: not skipped, and used within HOLD_LAPSES_AFTER."""
        now = now or timezone.now()
        return self.filter(skipped_at__isnull=True, held_at__gte=now - ReviewHold.LAPSES_AFTER)


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

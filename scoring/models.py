"""Human judgement: rubrics, reviews and pairwise comparisons."""

from __future__ import annotations

from django.conf import settings
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


class Rubric(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    is_default = models.BooleanField(default=False)

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

    rubric = models.ForeignKey(Rubric, on_delete=models.CASCADE, related_name="criteria")
    key = models.SlugField(max_length=60)
    label = models.CharField(max_length=200)
    help = models.TextField(blank=True, default="")
    scale = models.CharField(max_length=20, choices=SCALES, default=YES_NO)
    choices = models.JSONField(default=list, blank=True)  # [[value, label], ...] for CHOICES
    only_for_tag = models.CharField(max_length=100, blank=True, default="")
    position = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["rubric", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["rubric", "key"], name="criterion_key_unique")
        ]

    def __str__(self) -> str:
        return self.label

    def options(self) -> list[tuple[str, str]]:
        if self.scale == self.YES_NO:
            return [("yes", "Yes"), ("no", "No")]
        if self.scale == self.ONE_TO_FIVE:
            return [(str(i), str(i)) for i in range(1, 6)]
        return [(str(value), str(label)) for value, label in self.choices]

    def numeric(self, answer: str | None) -> float | None:
        """An answer as a number for means: yes=1, no=0; 1..5; choices by position, 1 first."""
        if answer in (None, ""):
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
    submitted_at = models.DateTimeField()

    class Meta:
        ordering = ["-submitted_at", "-id"]

    def __str__(self) -> str:
        return f"Version of review {self.review_id} from {self.submitted_at:%Y-%m-%d %H:%M}"


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

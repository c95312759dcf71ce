"""Rubrics: the questions a reviewer answers about a run.

Admins curate rubrics. Leads may open the editor too, to mark which questions may not apply to
every run (reviewers may then answer N/A); everything else is read-only for them.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path

from evalsite.roles import ADMIN, LEAD, has_role, role_required
from scoring.models import DEFAULT_SMALL_CHANGES_VALUE, VERDICTS, Criterion, Rubric

VERDICT_VALUES = {value for value, _ in VERDICTS}


class RubricForm(forms.ModelForm):
    class Meta:
        model = Rubric
        fields = ["name", "description", "is_default", "small_changes_value"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Left empty, it keeps the usual half a merge.
        self.fields["small_changes_value"].required = False

    def clean_small_changes_value(self) -> float:
        value = self.cleaned_data.get("small_changes_value")
        return DEFAULT_SMALL_CHANGES_VALUE if value is None else value


class RubricCreateForm(RubricForm):
    copy_default = forms.BooleanField(
        required=False, initial=True, label="Start from the default rubric's questions"
    )


class CriterionForm(forms.ModelForm):
    choices_text = forms.CharField(
        required=False,
        label="Choices",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For named choices: one per line, as value = label (best first).",
    )

    class Meta:
        model = Criterion
        fields = ["key", "label", "help", "scale", "only_for_tag", "may_not_apply", "position"]
        labels = {
            "position": "Order",
            "only_for_tag": "Only for prompts tagged",
            "may_not_apply": "May not apply (reviewers may answer N/A)",
        }
        help_texts = {
            "may_not_apply": "N/A answers are stored as such and left out of means.",
        }
        widgets = {"help": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and self.instance.choices:
            self.initial["choices_text"] = "\n".join(
                f"{value} = {label}" for value, label in self.instance.choices
            )

    def clean(self) -> dict:
        data = super().clean()
        choices = []
        for line in (data.get("choices_text") or "").splitlines():
            if not line.strip():
                continue
            value, _, label = line.partition("=")
            value, label = value.strip(), (label.strip() or value.strip())
            if not value:
                self.add_error("choices_text", f"No value in {line!r}.")
            choices.append([value, label])
        if data.get("scale") == Criterion.CHOICES:
            if len(choices) < 2:
                self.add_error("choices_text", "Named choices need at least two lines.")
            if len({value for value, _ in choices}) != len(choices):
                self.add_error("choices_text", "Each value may appear once.")
        if data.get("key") == "merge" and data.get("may_not_apply"):
            self.add_error("may_not_apply", "Every review needs a verdict: it always applies.")
        if data.get("key") == "merge":
            # The merge answer is the review's verdict, so it must use the verdict values.
            if data.get("scale") != Criterion.CHOICES or not {v for v, _ in choices} <= (
                VERDICT_VALUES
            ):
                self.add_error(
                    "choices_text",
                    "The merge question's values must be among: "
                    + ", ".join(sorted(VERDICT_VALUES)),
                )
        self.cleaned_data["choices"] = choices if data.get("scale") == Criterion.CHOICES else []
        return self.cleaned_data

    def save(self, commit: bool = True) -> Criterion:
        self.instance.choices = self.cleaned_data.get("choices", [])
        return super().save(commit=commit)


CriterionFormSet = forms.inlineformset_factory(
    Rubric, Criterion, form=CriterionForm, extra=1, can_delete=True
)


class MayNotApplyForm(CriterionForm):
    """A lead's view of a question: only "may not apply" can change."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            # Disabled fields keep their stored value whatever is posted.
            field.disabled = name != "may_not_apply"


MayNotApplyFormSet = forms.inlineformset_factory(
    Rubric, Criterion, form=MayNotApplyForm, extra=0, can_delete=False
)


class ReadOnlyRubricForm(RubricForm):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.disabled = True


@role_required(LEAD)
def rubric_list(request: HttpRequest) -> HttpResponse:
    rubrics = list(Rubric.objects.annotate(criteria_count=Count("criteria")))
    campaign_counts = Rubric.campaign_counts()
    for rubric in rubrics:
        rubric.campaign_count = campaign_counts.get(rubric.pk, 0)
    return render(request, "scoring/rubrics.html", {"rubrics": rubrics})


def _save_default_flag(rubric: Rubric) -> None:
    if rubric.is_default:
        Rubric.objects.exclude(pk=rubric.pk).update(is_default=False)


@role_required(ADMIN)
def rubric_create(request: HttpRequest) -> HttpResponse:
    form = RubricCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            rubric = form.save()
            _save_default_flag(rubric)
            source = Rubric.default() if form.cleaned_data["copy_default"] else None
            if source is not None and source.pk != rubric.pk:
                for criterion in source.criteria.all():
                    criterion.pk = None
                    criterion.rubric = rubric
                    criterion.save()
        messages.success(request, f"Rubric {rubric.name} created.")
        return redirect("scoring:rubric_edit", rubric_id=rubric.pk)
    return render(request, "scoring/rubric_form.html", {"form": form, "formset": None})


@role_required(LEAD)
def rubric_edit(request: HttpRequest, rubric_id: int) -> HttpResponse:
    rubric = get_object_or_404(Rubric, pk=rubric_id)
    curator = has_role(request.user, ADMIN)
    form_class, formset_class = (
        (RubricForm, CriterionFormSet) if curator else (ReadOnlyRubricForm, MayNotApplyFormSet)
    )
    form = form_class(request.POST or None, instance=rubric)
    formset = formset_class(request.POST or None, instance=rubric)
    if request.method == "POST" and form.is_valid() and formset.is_valid():
        with transaction.atomic():
            form.save()
            formset.save()
            _save_default_flag(rubric)
        messages.success(request, "Rubric saved.")
        return redirect("scoring:rubric_edit", rubric_id=rubric.pk)
    # Counted as the rubric list counts: campaigns linked to it, and unlinked ones for the default.
    in_use = Rubric.campaign_counts().get(rubric.pk, 0)
    return render(
        request,
        "scoring/rubric_form.html",
        {
            "form": form,
            "formset": formset,
            "rubric": rubric,
            "in_use": in_use,
            "curator": curator,
        },
    )


urlpatterns = [
    path("rubrics/", rubric_list, name="rubrics"),
    path("rubrics/new/", rubric_create, name="rubric_create"),
    path("rubrics/<int:rubric_id>/", rubric_edit, name="rubric_edit"),
]

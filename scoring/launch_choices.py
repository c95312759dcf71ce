"""What scoring adds to a campaign's launch form: the rubric its reviewers answer.

`runs` may not import `scoring`, so the form offers what is registered with it; ScoringConfig.ready
registers this picker.
"""

from __future__ import annotations

from django import forms

from runs.forms import LaunchChoice, register_launch_choice
from runs.models import Campaign
from scoring.models import CampaignRubric, Rubric


def rubric_field() -> forms.ModelChoiceField:
    field = forms.ModelChoiceField(
        queryset=Rubric.objects.all(),
        required=False,
        empty_label="The default rubric, whichever it is when runs are reviewed",
        help_text="The questions reviewers answer about each run",
    )
    field.label_from_instance = lambda r: f"{r.name} (the default now)" if r.is_default else r.name
    return field


def link_rubric(campaign: Campaign, rubric: Rubric | None) -> None:
    # Left empty, the campaign has no link and reads the default rubric (Rubric.for_campaign).
    if rubric is not None:
        CampaignRubric.objects.create(campaign=campaign, rubric=rubric)


def register() -> None:
    register_launch_choice(LaunchChoice(name="rubric", make_field=rubric_field, apply=link_rubric))

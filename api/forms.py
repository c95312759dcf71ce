"""The forms behind the pages and the API alike: a field's rule is written once."""

from __future__ import annotations

from django import forms

from api import series
from runs.models import Campaign, Contestant, LanguageModel


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What uses it, e.g. “CI nightly”: shown in the list below."
    )


class ScheduleForm(forms.Form):
    every_weeks = forms.IntegerField(
        min_value=1,
        max_value=series.MAX_WEEKS,
        required=False,
        label="Every N weeks",
        help_text="e.g. 13 for quarterly",
    )
    cron = forms.CharField(
        max_length=100,
        required=False,
        label="Or a cron expression",
        help_text="minute hour day-of-month month day-of-week, e.g. 0 6 1 */3 * (06:00 on the "
        "first day of every third month)",
    )

    def clean_cron(self) -> str:
        cron = self.cleaned_data["cron"].strip()
        if cron:
            try:
                series.parse_cron(cron)
            except ValueError as exc:
                raise forms.ValidationError(str(exc)) from None
        return cron

    def clean(self) -> dict:
        data = super().clean()
        if "every_weeks" in data and "cron" in data:
            if (data["every_weeks"] is None) == (not data["cron"]):
                self.add_error("every_weeks", "Give either a number of weeks or a cron expression.")
        return data


class RerunForm(forms.Form):
    """Named by name, not id: the API takes the names people script with."""

    contestant = forms.ModelChoiceField(queryset=Contestant.objects.none(), to_field_name="name")
    model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.filter(archived=False), to_field_name="name"
    )

    def __init__(self, *args, campaign: Campaign, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["contestant"].queryset = campaign.contestants.select_related("model")
        self.fields["contestant"].label_from_instance = lambda c: f"{c.label} ({c.model.name})"
        self.fields["model"].label_from_instance = lambda m: (
            f"{m.name} (scripted)" if m.is_scripted else m.name
        )

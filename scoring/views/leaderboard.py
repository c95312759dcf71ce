"""Leaderboard pages for leads: the board, its export, reviewer agreement, history, and the
disputed runs a lead adjudicates.

Every page takes the same GET parameters (LeaderboardFilterForm), shows them in its header,
and carries them into every link it makes to the others and to the exports.
"""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from evalsite.roles import LEAD, role_required
from runs.models import Campaign, PromptSet, Run
from scoring import adjudications, leaderboard
from scoring.leaderboard import Filters, export
from scoring.leaderboard import filters as readings
from scoring.leaderboard.disagreements import side_by_side
from scoring.leaderboard.power import guidance as power_guidance
from scoring.models import Adjudication

EXPORT_FORMATS = ("csv", "json")
# The merge-rate chart: one row per contestant, the x axis from 0% to 100%.
CHART_LEFT = 220
CHART_WIDTH = 560
CHART_ROW = 28
CHART_TOP = 30
HISTOGRAM_BAR = 40
HISTOGRAM_HEIGHT = 120
DISPUTES_PER_PAGE = 20
MAX_ADJUDICATION_NOTE_CHARS = 5_000


class CampaignChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Campaign) -> str:
        return f"{obj.name} ({obj.created_at:%Y-%m-%d})"


class LeaderboardFilterForm(forms.Form):
    campaign = CampaignChoiceField(
        queryset=Campaign.objects.select_related("prompt_set"),
        required=False,
        empty_label="All campaigns",
    )
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.all(), required=False, empty_label="All prompt sets"
    )
    tag = forms.CharField(required=False, max_length=100)
    date_from = forms.DateField(
        required=False, label="Finished from", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="Finished until", widget=forms.DateInput(attrs={"type": "date"})
    )
    verdict = forms.ChoiceField(choices=readings.READINGS, required=False, label="A run's verdict")
    errored = forms.ChoiceField(
        choices=readings.ERRORED_POLICIES, required=False, label="Errored runs"
    )

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            raise forms.ValidationError("The start date is after the end date.")
        return data

    def filters(self) -> Filters:
        data = self.cleaned_data
        return Filters(
            campaign_id=data["campaign"].pk if data.get("campaign") else None,
            prompt_set_id=data["prompt_set"].pk if data.get("prompt_set") else None,
            tag=(data.get("tag") or "").strip(),
            date_from=data.get("date_from"),
            date_to=data.get("date_to"),
            verdict=data.get("verdict") or readings.MEAN,
            errored=data.get("errored") or readings.COUNT,
        )


def _filter_form(request: HttpRequest) -> LeaderboardFilterForm:
    """The filter form bound to the query; with no campaign parameter at all (a plain visit to
    the page), the latest campaign that has reviews, since that is what a lead comes to see."""
    data = request.GET.copy()
    if "campaign" not in data:
        latest = leaderboard.latest_campaign_with_reviews()
        data["campaign"] = str(latest.pk) if latest else ""
    return LeaderboardFilterForm(data)


def _merge_chart(rows: list[dict]) -> dict:
    """Coordinates for the server-rendered SVG: each contestant's merge rate and interval."""
    points = []
    for index, row in enumerate(rows):
        y = CHART_TOP + index * CHART_ROW + CHART_ROW // 2
        entry = {"label": row["label"], "y": y, "text_y": y + 4, "text": row["merge_rate_text"]}
        if row["merge_rate"] is not None:
            low, high = row["merge_rate_ci"]
            entry.update(
                x=round(CHART_LEFT + row["merge_rate"] * CHART_WIDTH, 1),
                low=round(CHART_LEFT + low * CHART_WIDTH, 1),
                high=round(CHART_LEFT + high * CHART_WIDTH, 1),
            )
        points.append(entry)
    height = CHART_TOP + len(rows) * CHART_ROW + 10
    ticks = [
        {"x": CHART_LEFT + CHART_WIDTH * share // 100, "label": f"{share}%"}
        for share in (0, 25, 50, 75, 100)
    ]
    return {
        "width": CHART_LEFT + CHART_WIDTH + 40,
        "height": height,
        "axis_y": height - 10,
        "left": CHART_LEFT,
        "right": CHART_LEFT + CHART_WIDTH,
        "ticks": ticks,
        "points": points,
    }


def _histogram_chart(histogram: list[dict]) -> dict:
    most = max((bucket["runs"] for bucket in histogram), default=0) or 1
    bars = []
    for index, bucket in enumerate(histogram):
        height = round(HISTOGRAM_HEIGHT * bucket["runs"] / most)
        x = 10 + index * (HISTOGRAM_BAR + 10)
        bars.append(
            {
                **bucket,
                "x": x,
                "y": 20 + HISTOGRAM_HEIGHT - height,
                "height": height,
                "label_x": x + HISTOGRAM_BAR // 2,
                "count_y": 20 + HISTOGRAM_HEIGHT - height - 4,
            }
        )
    return {
        "width": 20 + len(histogram) * (HISTOGRAM_BAR + 10),
        "height": HISTOGRAM_HEIGHT + 40,
        "bar": HISTOGRAM_BAR,
        "axis_y": 20 + HISTOGRAM_HEIGHT,
        "label_y": 20 + HISTOGRAM_HEIGHT + 14,
        "bars": bars,
    }


def _describe(form: LeaderboardFilterForm, *, across_campaigns: bool = False) -> list[str]:
    """The active filters and readings in words, for the page header."""
    data, filters = form.cleaned_data, form.filters()
    parts = []
    if not across_campaigns:
        campaign = data.get("campaign")
        parts.append(
            f"Campaign {campaign.name} · prompt set {campaign.prompt_set.name}"
            if campaign
            else "All campaigns"
        )
    if data.get("prompt_set"):
        parts.append(f"Prompt set {data['prompt_set'].name}")
    if filters.tag and not across_campaigns:
        parts.append(f"Tagged {filters.tag}")
    if filters.date_from:
        parts.append(f"Finished from {filters.date_from:%Y-%m-%d}")
    if filters.date_to:
        parts.append(f"Finished until {filters.date_to:%Y-%m-%d}")
    parts.append(
        "A run's verdict: the mean of its reviews"
        if filters.verdict == readings.MEAN
        else "A run's verdict: yes when a strict majority of its reviews said yes"
    )
    parts.append(
        "Errored runs count as would not merge"
        if filters.counts_errored
        else "Errored runs left out"
    )
    return parts


def _page_context(form: LeaderboardFilterForm, *, across_campaigns: bool = False) -> dict:
    filters = form.filters()
    campaign = form.cleaned_data.get("campaign")
    # An explicit empty campaign means "all campaigns"; without it the pages pick the latest.
    query = {"campaign": "", **filters.query()}
    other_reading = readings.MAJORITY if filters.verdict == readings.MEAN else readings.MEAN
    other_policy = readings.EXCLUDE if filters.counts_errored else readings.COUNT
    return {
        "form": form,
        "filters": filters,
        "campaign": campaign,
        "header": _describe(form, across_campaigns=across_campaigns),
        "querystring": urlencode(query),
        "flip_verdict_querystring": urlencode({**query, "verdict": other_reading}),
        "flip_errored_querystring": urlencode({**query, "errored": other_policy}),
    }


def _render_board(context: dict) -> str:
    board = leaderboard.board(context["filters"])
    keys = [criterion["key"] for criterion in board["criteria"]]
    return render_to_string(
        "scoring/leaderboard.html#board",
        {
            **context,
            "board": board,
            "chart": _merge_chart(board["rows"]),
            "power": power_guidance(board),
            "criteria_rows": [
                {"label": row["label"], "cells": [row["criteria"].get(key) for key in keys]}
                for row in board["rows"]
            ],
        },
    )


@role_required(LEAD)
@require_GET
@vary_on_headers("HX-Request")
def leaderboard_page(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    if not form.is_valid():
        return render(request, "scoring/leaderboard.html", {"form": form}, status=400)
    context = _page_context(form)
    # The board's HTML depends on the filters and the data alone (no user, no token): it is
    # cached as rendered, with the same freshness as the data, so a warm page renders none of it.
    context["board_html"] = leaderboard.cached(
        "board-html", context["filters"], lambda: _render_board(context)
    )
    # A filter change swaps the board and the header, whose links carry the filters.
    template = "scoring/leaderboard.html#swap" if request.htmx else "scoring/leaderboard.html"
    return render(request, template, context)


@role_required(LEAD)
@require_GET
def leaderboard_export(request: HttpRequest) -> HttpResponse:
    export_format = request.GET.get("format", "json")
    form = _filter_form(request)
    if export_format not in EXPORT_FORMATS or not form.is_valid():
        errors = dict(form.errors) if form.is_bound and not form.is_valid() else {}
        if export_format not in EXPORT_FORMATS:
            errors["format"] = [f"format must be one of {', '.join(EXPORT_FORMATS)}"]
        return JsonResponse({"errors": errors}, status=400)
    filters = form.filters()
    board = leaderboard.board(filters)
    stem = f"leaderboard-{filters.campaign_id or 'all'}"
    if export_format == "json":
        payload = export.payload(filters, board)
        response = HttpResponse(
            json.dumps(payload, indent=2, default=str), content_type="application/json"
        )
        response["Content-Disposition"] = f'attachment; filename="{stem}.json"'
        return response
    response = HttpResponse(_board_csv(board), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{stem}.csv"'
    return response


_CSV_COLUMNS = [
    "rank", "contestant", "label", "model", "runs", "counted_runs", "reviewed_runs", "reviews",
    "votes", "merges", "merge_rate", "merge_rate_low", "merge_rate_high", "adjudicated_runs",
    "errored_runs", "timed_out_runs", "completed_runs",
    "completion_rate", "completion_rate_low", "completion_rate_high",
    "acceptable", "acceptable_rate", "acceptable_rate_low", "acceptable_rate_high",
    "strength", "strength_low", "strength_high", "win_chance",
    "tests_run", "tests_passed", "tests_pass_rate", "expected_files_recall",
    "clarification_prompts", "clarification_asked", "clarification_rate",
    "median_cost_usd", "median_tokens", "median_duration_s",
    "repeat_prompts", "repeat_disagreement", "repeat_std",
]  # fmt: skip


def _board_csv(board: dict) -> str:
    criteria = [criterion["key"] for criterion in board["criteria"]]
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow(_CSV_COLUMNS + [f"{key}_mean" for key in criteria])
    for row in board["rows"]:
        flat = dict(row)
        for name in ("merge_rate", "completion_rate", "acceptable_rate", "strength"):
            interval = row[f"{name}_ci"] or [None, None]
            flat[f"{name}_low"], flat[f"{name}_high"] = interval
        values = [flat.get(column) for column in _CSV_COLUMNS]
        values += [row["criteria"].get(key, {}).get("mean") for key in criteria]
        writer.writerow(["" if value is None else value for value in values])
    return output.getvalue()


@role_required(LEAD)
@require_GET
def leaderboard_agreement(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    if not form.is_valid():
        return render(request, "scoring/leaderboard_agreement.html", {"form": form}, status=400)
    context = _page_context(form)
    result = leaderboard.agreement(context["filters"])
    context.update(agreement=result, histogram=_histogram_chart(result["histogram"]))
    return render(request, "scoring/leaderboard_agreement.html", context)


@role_required(LEAD)
@require_GET
def leaderboard_history(request: HttpRequest) -> HttpResponse:
    form = LeaderboardFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "scoring/leaderboard_history.html", {"form": form}, status=400)
    context = _page_context(form, across_campaigns=True)
    result = leaderboard.history(context["filters"])
    context.update(
        history=result,
        sections=[("Contestants", result["contestants"]), ("Models", result["models"])],
    )
    return render(request, "scoring/leaderboard_history.html", context)


class DisputePageForm(forms.Form):
    page = forms.IntegerField(min_value=1, required=False)


class AdjudicationForm(forms.ModelForm):
    note = forms.CharField(max_length=MAX_ADJUDICATION_NOTE_CHARS, widget=forms.Textarea)

    class Meta:
        model = Adjudication
        fields = ["verdict", "note"]


@role_required(LEAD)
@require_GET
def leaderboard_disagreements(request: HttpRequest) -> HttpResponse:
    form = _filter_form(request)
    paging = DisputePageForm(request.GET)
    if not form.is_valid() or not paging.is_valid():
        context = {"form": form, "paging_errors": paging.errors}
        return render(request, "scoring/leaderboard_disagreements.html", context, status=400)
    context = _page_context(form)
    result = leaderboard.disagreements(context["filters"])
    page = Paginator(result["runs"], DISPUTES_PER_PAGE).get_page(paging.cleaned_data["page"])
    context.update(
        disagreements=result,
        page=page,
        disputes=side_by_side(list(page.object_list), result["criteria"]),
        adjudication_form=AdjudicationForm(),
    )
    return render(request, "scoring/leaderboard_disagreements.html", context)


def _get_run_for_adjudication(run_id: int) -> Run:
    """A run a lead can adjudicate: one that could be reviewed, or 404."""
    return get_object_or_404(Run.objects.reviewable().select_related("campaign"), pk=run_id)


@role_required(LEAD)
@require_POST
def leaderboard_adjudicate(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run_for_adjudication(run_id)
    # Back to the same page of the same filters; the query is validated like any other.
    back = LeaderboardFilterForm(QueryDict(request.POST.get("query", "")))
    query = {"campaign": "", **back.filters().query()} if back.is_valid() else {}
    paging = DisputePageForm(QueryDict(request.POST.get("query", "")))
    if paging.is_valid() and paging.cleaned_data["page"]:
        query["page"] = paging.cleaned_data["page"]
    form = AdjudicationForm(request.POST)
    if form.is_valid():
        adjudications.adjudicate(
            run, request.user, form.cleaned_data["verdict"], form.cleaned_data["note"]
        )
        messages.success(request, f"Run {run.pk} adjudicated: the leaderboard now uses it.")
    else:
        errors = "; ".join(f"{field}: {' '.join(e)}" for field, e in form.errors.items())
        messages.error(request, f"Run {run.pk} was not adjudicated ({errors}).")
    url = reverse("scoring:leaderboard_disagreements")
    return redirect(f"{url}?{urlencode(query)}#run-{run.pk}")


urlpatterns = [
    path("leaderboard/", leaderboard_page, name="leaderboard"),
    path("leaderboard/export/", leaderboard_export, name="leaderboard_export"),
    path("leaderboard/agreement/", leaderboard_agreement, name="leaderboard_agreement"),
    path("leaderboard/history/", leaderboard_history, name="leaderboard_history"),
    path(
        "leaderboard/disagreements/",
        leaderboard_disagreements,
        name="leaderboard_disagreements",
    ),
    path(
        "leaderboard/disagreements/<int:run_id>/adjudicate/",
        leaderboard_adjudicate,
        name="leaderboard_adjudicate",
    ),
]

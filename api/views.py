"""Pages: your API tokens, the API's docs, a campaign's schedule, "re-run with another model",
and each series over time."""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from api import series as workflows
from api import tokens
from api.endpoints import api
from api.forms import RerunForm, ScheduleForm, TokenForm
from api.models import ApiToken, Series, SeriesCampaign
from evalsite.roles import LEAD, SCORER, role_required
from runs.models import Campaign

# -- Access helpers ------------------------------------------------------------------------------


def _get_token_for_user(token_id: int, user) -> ApiToken:
    """A user's own token; anyone else's is a 404, admins' included."""
    return get_object_or_404(ApiToken, pk=token_id, user=user)


def _get_campaign_for_lead(campaign_id: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("prompt_set"), pk=campaign_id)


def _series_of(campaign: Campaign) -> Series | None:
    link = (
        SeriesCampaign.objects.select_related("series__periodic_task__interval")
        .select_related("series__periodic_task__crontab")
        .filter(campaign=campaign)
        .first()
    )
    return link.series if link else None


# -- Tokens --------------------------------------------------------------------------------------


def _tokens_page(request: HttpRequest, form: TokenForm, new_token: str = "", status: int = 200):
    context = {
        "form": form,
        "tokens": request.user.api_tokens.all(),
        "new_token": new_token,
    }
    return render(request, "api/tokens.html", context, status=status)


@role_required(SCORER)
@require_http_methods(["GET", "POST"])
@never_cache
def token_list(request: HttpRequest) -> HttpResponse:
    """The user's own tokens. A new token is shown in the response to the POST that made it,
    once: not through a redirect and a message, which would keep it in the session."""
    form = TokenForm(request.POST or None)
    if request.method == "POST":
        if not form.is_valid():
            return _tokens_page(request, form, status=400)
        _row, token = tokens.create(request.user, form.cleaned_data["name"])
        return _tokens_page(request, TokenForm(), new_token=token, status=201)
    return _tokens_page(request, form)


@role_required(SCORER)
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    row = _get_token_for_user(token_id, request.user)
    if tokens.revoke(row):
        messages.success(request, f"Revoked {row.name} ({row.prefix}…): it no longer works.")
    else:
        messages.info(request, f"{row.name} was already revoked.")
    return redirect("api:tokens")


# -- Docs ----------------------------------------------------------------------------------------


@role_required(SCORER)
@require_GET
def docs(request: HttpRequest) -> HttpResponse:
    """Every operation of the API, from its OpenAPI schema (no script: the CSP allows none
    from elsewhere, and a list reads well enough)."""
    schema = api.get_openapi_schema(path_prefix="/api/")
    operations = [
        {
            "method": method.upper(),
            "path": route,
            "summary": operation.get("summary", ""),
            "description": operation.get("description", ""),
            "parameters": [p["name"] for p in operation.get("parameters", [])],
            "body": "requestBody" in operation,
        }
        for route, methods in schema["paths"].items()
        for method, operation in methods.items()
    ]
    return render(request, "api/docs.html", {"operations": operations, "info": schema["info"]})


# -- Schedules and re-runs -----------------------------------------------------------------------


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
def campaign_schedule(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign_for_lead(campaign_id)
    series = _series_of(campaign)
    form = ScheduleForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            series = workflows.schedule(
                campaign,
                every_weeks=form.cleaned_data["every_weeks"],
                cron=form.cleaned_data["cron"],
                user=request.user,
            )
        except workflows.SeriesError as exc:
            form.add_error(exc.field, str(exc))
        else:
            messages.success(request, f"{series.name} re-runs {series.schedule_text}.")
            return redirect(series)
    context = {"campaign": campaign, "series": series, "form": form}
    return render(request, "api/schedule.html", context, status=400 if form.errors else 200)


@role_required(LEAD)
@require_POST
def series_unschedule(request: HttpRequest, series_id: int) -> HttpResponse:
    series = get_object_or_404(Series.objects.select_related("periodic_task"), pk=series_id)
    if workflows.unschedule(series):
        messages.success(request, f"{series.name} is no longer scheduled; its campaigns stay.")
    return redirect(series)


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
def campaign_rerun(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign_for_lead(campaign_id)
    form = RerunForm(request.POST or None, campaign=campaign)
    if request.method == "POST" and form.is_valid():
        try:
            clone = workflows.rerun_with_model(
                campaign,
                contestant=form.cleaned_data["contestant"],
                model=form.cleaned_data["model"],
                user=request.user,
            )
        except workflows.SeriesError as exc:
            form.add_error(exc.field, str(exc))
        else:
            messages.success(request, f"Launched {clone.name}: {clone.runs.count()} runs queued.")
            return redirect(clone)
    context = {"campaign": campaign, "form": form}
    return render(request, "api/rerun.html", context, status=400 if form.errors else 200)


# -- Series --------------------------------------------------------------------------------------


@role_required(LEAD)
@require_GET
def series_list(request: HttpRequest) -> HttpResponse:
    rows = (
        Series.objects.select_related(
            "template", "periodic_task__interval", "periodic_task__crontab"
        )
        .annotate(campaign_count=Count("members"))
        .order_by("name", "id")
    )
    return render(request, "api/series_list.html", {"rows": rows})


@role_required(LEAD)
@require_GET
def series_detail(request: HttpRequest, series_id: int) -> HttpResponse:
    series = get_object_or_404(
        Series.objects.select_related(
            "template__prompt_set", "periodic_task__interval", "periodic_task__crontab"
        ),
        pk=series_id,
    )
    context = {"series": series, "history": workflows.history(series)}
    return render(request, "api/series.html", context)


urlpatterns = [
    path("account/tokens/", token_list, name="tokens"),
    path("account/tokens/<int:token_id>/revoke/", token_revoke, name="token_revoke"),
    path("api/docs/", docs, name="docs"),
    path("campaigns/<int:campaign_id>/schedule/", campaign_schedule, name="campaign_schedule"),
    path("campaigns/<int:campaign_id>/rerun/", campaign_rerun, name="campaign_rerun"),
    path("series/", series_list, name="series_list"),
    path("series/<int:series_id>/", series_detail, name="series"),
    path("series/<int:series_id>/unschedule/", series_unschedule, name="series_unschedule"),
]

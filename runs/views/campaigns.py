"""Campaigns and runs: launch, watch live, cancel, retry, answer an agent's question."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from evalsite.roles import LEAD, SCORER, has_role, role_required
from runs import campaigns as workflows
from runs.identity import hide_identity
from runs.models import Campaign, Contestant, PromptSet, Run


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Default: the set and date")
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.active())
    contestants = forms.ModelMultipleChoiceField(
        queryset=Contestant.objects.filter(archived=False).select_related("model"),
        widget=forms.CheckboxSelectMultiple,
    )
    repeats = forms.IntegerField(min_value=1, max_value=20, initial=1)
    reviews_wanted = forms.IntegerField(
        min_value=1, max_value=10, initial=2, help_text="Reviews wanted per run"
    )
    budget_usd = forms.FloatField(
        min_value=0.01,
        required=False,
        label="Budget (USD)",
        help_text="Runs not yet started when it is spent are cancelled",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["contestants"].label_from_instance = lambda c: c.label


def _get_campaign(campaign_id: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("prompt_set"), pk=campaign_id)


def _get_run(run_id: int) -> Run:
    return get_object_or_404(
        Run.objects.select_related("campaign", "prompt", "contestant__model"), pk=run_id
    )


def _get_run_by_review_key(review_key: str) -> Run:
    return get_object_or_404(
        Run.objects.select_related("campaign", "contestant__model"), review_key=review_key
    )


@role_required(LEAD)
def campaign_list(request: HttpRequest) -> HttpResponse:
    campaigns = (
        Campaign.objects.select_related("prompt_set", "created_by")
        .annotate(
            total=Count("runs"),
            ended=Count("runs", filter=Q(runs__status__in=Run.ENDED_STATUSES)),
            errored=Count("runs", filter=Q(runs__status=Run.ERRORED)),
        )
        .order_by("-created_at")
    )
    return render(request, "runs/campaigns.html", {"campaigns": campaigns})


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
def campaign_create(request: HttpRequest) -> HttpResponse:
    form = CampaignForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            campaign = workflows.launch(
                prompt_set=data["prompt_set"],
                contestants=list(data["contestants"]),
                repeats=data["repeats"],
                name=data["name"],
                created_by=request.user,
                budget_usd=data["budget_usd"],
                reviews_wanted=data["reviews_wanted"],
            )
        except workflows.LaunchError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request, f"Launched {campaign.name}: {campaign.runs.count()} runs queued."
            )
            return redirect(campaign)
    return render(request, "runs/campaign_form.html", {"form": form})


@role_required(LEAD)
@vary_on_headers("HX-Request")
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign(campaign_id)
    runs = list(
        campaign.runs.select_related("prompt", "contestant__model").order_by(
            "prompt__position", "prompt_id", "contestant__name", "repeat"
        )
    )
    contestants = sorted({run.contestant for run in runs}, key=lambda c: c.name)
    grid: dict[int, dict] = {}
    for run in runs:
        row = grid.setdefault(run.prompt_id, {"prompt": run.prompt, "cells": {}})
        row["cells"].setdefault(run.contestant_id, []).append(run)
    rows = [
        {"prompt": row["prompt"], "cells": [row["cells"].get(c.pk, []) for c in contestants]}
        for row in grid.values()
    ]
    total = len(runs)
    ended = sum(run.status in Run.ENDED_STATUSES for run in runs)
    context = {
        "campaign": campaign,
        "contestants": contestants,
        "rows": rows,
        "total": total,
        "ended": ended,
        "percent": int(100 * ended / total) if total else 100,
        "live": ended < total,
        "cost": sum(run.cost_usd for run in runs),
        "errored": sum(run.status == Run.ERRORED for run in runs),
    }
    template = "runs/campaign.html#grid" if request.htmx else "runs/campaign.html"
    return render(request, template, context)


def _runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def campaign_cancel(request: HttpRequest, campaign_id: int) -> HttpResponse:
    """GET: what cancelling would do, and a button to confirm (a fragment under the campaign's
    heading with htmx, a page of its own without). POST: cancel, and say what was done."""
    campaign = _get_campaign(campaign_id)
    if request.method == "POST":
        done = workflows.cancel_campaign(campaign)
        if not done.total:
            messages.info(request, "Nothing to cancel: every run of this campaign had ended.")
        else:
            text = f"Cancelled {_runs(done.cancelled)} that had not started"
            if done.stopping:
                verb = "is" if done.stopping == 1 else "are"
                text += f"; {_runs(done.stopping)} under way {verb} being stopped"
            messages.success(request, text + ". Runs that had ended are kept as they were.")
        return redirect(campaign)
    context = {"campaign": campaign, "counts": workflows.cancel_preview(campaign)}
    template = "runs/campaign_cancel.html#confirm" if request.htmx else "runs/campaign_cancel.html"
    return render(request, template, context)


@role_required(LEAD)
@require_POST
def campaign_retry_errored(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign(campaign_id)
    count = sum(workflows.retry_run(run) for run in campaign.runs.filter(status=Run.ERRORED))
    messages.success(request, f"Requeued {count} errored run{'s' if count != 1 else ''}.")
    return redirect(campaign)


@role_required(SCORER)
@vary_on_headers("HX-Request")
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """The live run page, for leads and admins: it names the contestant, the model and the cost.
    A scorer is sent to the run's blind page instead (the review page, or its question)."""
    run = _get_run(run_id)
    if not has_role(request.user, LEAD):
        return redirect(run.blind_url())
    context = {
        "run": run,
        "prompt": run.snapshot.get("prompt", {}),
        "show_identity": True,
        "transcript": run.transcript or {},
        "live": run.is_active,
        "reviewable_statuses": Run.REVIEWABLE_STATUSES,
    }
    template = "runs/run.html#live" if request.htmx else "runs/run.html"
    return render(request, template, context)


def _answer(request: HttpRequest, run: Run) -> None:
    try:
        answered = workflows.answer_question(run, request.POST.get("answer", ""), request.user)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        if answered:
            messages.success(request, "Answer sent: the agent continues.")
        else:
            messages.error(request, "This run is not waiting for an answer any more.")


@role_required(LEAD)
@require_POST
def run_answer(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id)
    _answer(request, run)
    return redirect(run)


@role_required(SCORER)
@require_http_methods(["GET", "POST"])
@vary_on_headers("HX-Request")
def blind_run(request: HttpRequest, review_key: str) -> HttpResponse:
    """A run as a scorer may see it before it can be reviewed: its task, its status and any
    question the agent asks (which any scorer may answer), but not who is running it."""
    run = _get_run_by_review_key(review_key)
    if request.method == "POST":
        _answer(request, run)
        return redirect("runs:blind_run", review_key=run.review_key)
    if run.status in Run.REVIEWABLE_STATUSES:
        if request.htmx:  # the live fragment polled: leave the page rather than nest one
            return HttpResponseClientRedirect(run.blind_url())
        return redirect(run.blind_url())
    pending = run.pending_question if run.status == Run.AWAITING_ANSWER else None
    context = {
        "run": run,
        "prompt": run.snapshot.get("prompt", {}),
        "live": run.is_active,
        # The agent may name itself in its question: hidden like everything else it wrote.
        "question": hide_identity(run, str(pending.get("question") or "")) if pending else None,
    }
    template = "runs/blind_run.html#blind-live" if request.htmx else "runs/blind_run.html"
    return render(request, template, context)


@role_required(LEAD)
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id)
    if workflows.cancel_run(run):
        messages.success(request, "Cancelling the run.")
    else:
        messages.error(request, "The run had already ended.")
    return redirect(run)


@role_required(LEAD)
@require_POST
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id)
    if workflows.retry_run(run):
        messages.success(request, "Run requeued.")
    else:
        messages.error(request, "Only errored or timed-out runs can be retried.")
    return redirect(run)


@role_required(SCORER)
def run_artifact(request: HttpRequest, run_id: int) -> HttpResponse:
    """Raw diff or test output as plain text (never rendered as HTML)."""
    run = _get_run(run_id)
    names = {"diff": "diff.patch", "tests": "test_output.txt", "setup": "setup_output.txt"}
    name = names.get(request.GET.get("name", "diff"))
    if name is None:
        raise Http404("No such artifact")
    response = HttpResponse(run.read_artifact(name), content_type="text/plain; charset=utf-8")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = f'inline; filename="run-{run.pk}-{name}"'
    return response


urlpatterns = [
    path("campaigns/", campaign_list, name="campaigns"),
    path("campaigns/new/", campaign_create, name="campaign_create"),
    path("campaigns/<int:campaign_id>/", campaign_detail, name="campaign"),
    path("campaigns/<int:campaign_id>/cancel/", campaign_cancel, name="campaign_cancel"),
    path("campaigns/<int:campaign_id>/retry/", campaign_retry_errored, name="campaign_retry"),
    path("runs/<int:run_id>/", run_detail, name="run"),
    path("runs/<int:run_id>/answer/", run_answer, name="run_answer"),
    path("runs/<int:run_id>/cancel/", run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/retry/", run_retry, name="run_retry"),
    path("runs/<int:run_id>/artifact/", run_artifact, name="run_artifact"),
    path("runs/blind/<slug:review_key>/", blind_run, name="blind_run"),
]

"""Campaigns and runs: launch, watch live, cancel, retry, answer an agent's question."""

from __future__ import annotations

import json

from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from evalsite import storage as artifact_storage
from evalsite.roles import LEAD, SCORER, has_role, role_required
from runs import campaigns as workflows
from runs import sizing
from runs.forms import CampaignForm
from runs.identity import hide_identity
from runs.models import Campaign, Contestant, PromptSet, Run


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
    estimate = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        contestants = list(data["contestants"])
        estimate = workflows.estimate_cost(data["prompt_set"], contestants, data["repeats"])
        try:
            if form.over_budget_unconfirmed(estimate):
                raise workflows.LaunchError(
                    "The estimated cost exceeds the budget: confirm below to launch anyway."
                )
            # One transaction: what other apps attach (the rubric) exists before any run is
            # enqueued, and nothing is left behind if they refuse.
            with transaction.atomic():
                campaign = workflows.launch(
                    prompt_set=data["prompt_set"],
                    contestants=contestants,
                    repeats=data["repeats"],
                    name=data["name"],
                    created_by=request.user,
                    budget_usd=data["budget_usd"],
                    reviews_wanted=data["reviews_wanted"],
                )
                form.apply_launch_choices(campaign)
        except workflows.LaunchError as exc:
            form.add_error(None, str(exc))
        else:
            size = sizing.size_sentence(len(data["prompt_set"].active_prompts()), data["repeats"])
            messages.success(
                request, f"Launched {campaign.name}: {campaign.runs.count()} runs queued. {size}"
            )
            return redirect(campaign)
    # What each prompt set's size could detect, so a lead picks repeats knowingly.
    sizes = [
        {
            "prompt_set": prompt_set.name,
            "prompts": prompt_set.prompts_count,
            "sentences": [sizing.size_sentence(prompt_set.prompts_count, r) for r in (1, 2, 3)],
        }
        for prompt_set in PromptSet.objects.filter(archived=False)
        .annotate(prompts_count=Count("prompts", filter=Q(prompts__archived=False)))
        .filter(prompts_count__gt=0)
    ]
    over_budget = (
        estimate if estimate and estimate.exceeds(form.cleaned_data["budget_usd"]) else None
    )
    context = {"form": form, "sizes": sizes, "over_budget": over_budget}
    return render(request, "runs/campaign_form.html", context)


def _run_urls():
    """The run page's URL for a run id, reversed once for a page that links hundreds of runs."""
    marker = str(2**31 - 1)
    url = reverse("runs:run", args=[marker])
    return lambda run_id: url.replace(marker, str(run_id))


@role_required(LEAD)
@vary_on_headers("HX-Request")
def campaign_detail(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign(campaign_id)
    # The grid as plain rows with its links made once: for 400 runs, a model instance each (and
    # their prompts, contestants and models) and a URL reversed each cost four fifths of the
    # page's CPU, and the lead's page polls every 2 s.
    runs = list(
        campaign.runs.order_by("prompt__position", "prompt_id", "contestant__name", "repeat")
        .values_list("pk", "status", "repeat", "cost_usd", "prompt_id", "prompt__key",
                     "contestant_id", named=True)
    )  # fmt: skip
    contestants = sorted(
        Contestant.objects.select_related("model").filter(pk__in={r.contestant_id for r in runs}),
        key=lambda c: c.name,
    )
    labels, run_url = dict(Run.STATUSES), _run_urls()
    grid: dict[int, dict] = {}
    for run in runs:
        row = grid.setdefault(run.prompt_id, {"prompt_key": run.prompt__key, "cells": {}})
        row["cells"].setdefault(run.contestant_id, []).append(
            {
                "id": str(run.pk),
                "url": run_url(run.pk),
                "status": run.status,
                "label": labels.get(run.status, run.status),
                "repeat": str(run.repeat),
            }
        )
    rows = [
        {
            "prompt_key": row["prompt_key"],
            "cells": [row["cells"].get(c.pk, []) for c in contestants],
        }
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
        "size_sentence": sizing.size_sentence(
            len(rows) or campaign.prompt_set.active_prompts().count(), campaign.repeats
        ),
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
    # The live fragment polls the status and the transcript; a boosted form (retry, cancel)
    # lands here after its redirect and wants the whole page.
    fragment = bool(request.htmx) and not request.htmx.boosted
    if not fragment:
        context.update(
            {
                "setup_output": _cut_output(run.read_artifact("setup_output.txt")),
                "test_output": _cut_output(run.read_artifact("test_output.txt")),
                "gateway_calls": gateway_calls(run.read_artifact("raw/gateway.jsonl")),
            }
        )
    template = "runs/run.html#live" if fragment else "runs/run.html"
    return render(request, template, context)


# Outputs and gateway bodies longer than this are cut on the page; the raw artifact has them all.
MAX_OUTPUT_CHARS = 50_000
MAX_GATEWAY_CALLS = 500
MAX_GATEWAY_BODY_CHARS = 4_000


def _cut_output(text: str, limit: int = MAX_OUTPUT_CHARS) -> dict:
    """The tail of a long output (where failures are), and how much was left out."""
    if len(text) <= limit:
        return {"text": text, "cut": 0}
    return {"text": text[-limit:], "cut": len(text) - limit}


def gateway_calls(log: str) -> dict:
    """The run's model-call log (the gateway's JSON lines) as rows for the page.

    A line that is not a JSON object is counted, not shown: the log is the site's own, but a run
    cut short can leave a half-written last line.
    """
    rows, unreadable = [], 0
    lines = [line for line in log.splitlines() if line.strip()]
    for line in lines[:MAX_GATEWAY_CALLS]:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            unreadable += 1
            continue
        rows.append(
            {
                "index": record.get("index"),
                "method": str(record.get("method") or ""),
                "path": str(record.get("path") or ""),
                "status": record.get("status"),
                "latency_s": record.get("latency_s"),
                "stream": bool(record.get("stream")),
                "input_tokens": record.get("input_tokens"),
                "output_tokens": record.get("output_tokens"),
                "cost_usd": record.get("cost_usd"),
                "error": str(record.get("error") or ""),
                "request": _cut_output(str(record.get("request") or ""), MAX_GATEWAY_BODY_CHARS),
                "response": _cut_output(str(record.get("response") or ""), MAX_GATEWAY_BODY_CHARS),
            }
        )
    return {
        "rows": rows,
        "unreadable": unreadable,
        "left_out": max(0, len(lines) - MAX_GATEWAY_CALLS),
    }


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
    names = {
        "diff": "diff.patch",
        "tests": "test_output.txt",
        "setup": "setup_output.txt",
        "gateway": "raw/gateway.jsonl",
    }
    wanted = request.GET.get("name", "diff")
    name = names.get(wanted)
    if name is None:
        raise Http404("No such artifact")
    if wanted == "gateway" and not has_role(request.user, LEAD):
        # The model calls name the model: a scorer reviewing blind must not read them.
        raise Http404("No such artifact")
    # Streamed from storage (or a signed link to the bucket), never from a worker's disk.
    return artifact_storage.download_response(
        run.artifact_name(name), filename=f"run-{run.pk}-{name.replace('/', '-')}"
    )


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

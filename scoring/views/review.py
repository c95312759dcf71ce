"""The review queue, the blind review page and its fragments, and the lead's review history."""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from evalsite.roles import LEAD, SCORER, role_required
from runs.models import Campaign, Run
from scoring import reviews
from scoring.models import Comparison, Review, ReviewVersion
from scoring.queue import needing_review, next_run_for

VIEWS = ("split", "unified")
MAX_CONTEXT_LINES = 5_000


class CampaignFilter(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all(), required=False)


class ContextQuery(forms.Form):
    file = forms.IntegerField(min_value=1)
    start = forms.IntegerField(min_value=1)
    end = forms.IntegerField(min_value=1)
    delta = forms.IntegerField(required=False)
    pane = forms.ChoiceField(choices=[("", ""), ("l-", "l-"), ("r-", "r-")], required=False)
    view = forms.ChoiceField(choices=[(v, v) for v in VIEWS], required=False)


class FileQuery(forms.Form):
    file = forms.IntegerField(min_value=1)
    pane = forms.ChoiceField(choices=[("", ""), ("l-", "l-"), ("r-", "r-")], required=False)
    view = forms.ChoiceField(choices=[(v, v) for v in VIEWS], required=False)


def _get_run_for_review(run_id: int) -> Run:
    """A run that can be reviewed, or 404: nobody reviews a run that is still going or errored."""
    return get_object_or_404(
        Run.objects.reviewable().select_related("campaign", "prompt", "contestant__model"),
        pk=run_id,
    )


def _campaign_id(request: HttpRequest) -> int | None:
    form = CampaignFilter(request.GET)
    if form.is_valid() and form.cleaned_data["campaign"]:
        return form.cleaned_data["campaign"].pk
    return None


def _diff_view(request: HttpRequest) -> str:
    """Split or unified, remembered for the session so the reviewer chooses once."""
    wanted = request.GET.get("view")
    if wanted in VIEWS:
        if request.session.get("diff_view") != wanted:
            request.session["diff_view"] = wanted
        return wanted
    return request.session.get("diff_view", "split")


def _posted_review(request: HttpRequest) -> dict:
    answers = {
        key.removeprefix("answer-"): value
        for key, value in request.POST.items()
        if key.startswith("answer-") and value != ""
    }
    return {
        "answers": answers,
        "verdict": request.POST.get("verdict", ""),
        "notes": request.POST.get("notes", ""),
        "line_comments": request.POST.get("line_comments", "[]"),
        "time_spent_s": request.POST.get("time_spent_s", "0"),
    }


# --- the queue -----------------------------------------------------------------------------------


@role_required(SCORER)
def queue(request: HttpRequest) -> HttpResponse:
    campaign_id = _campaign_id(request)
    pending_by_campaign = Counter(
        needing_review(request.user).values_list("campaign_id", flat=True).order_by()
    )
    campaigns = [
        {"campaign": c, "pending": pending_by_campaign.get(c.pk, 0)}
        for c in Campaign.objects.filter(runs__in=Run.objects.reviewable()).distinct()
    ]
    waiting = list(
        needing_review(request.user, campaign_id)
        .select_related("campaign", "prompt")
        .order_by("submitted", "id")[:50]
    )
    drafts = set(
        Review.objects.filter(
            reviewer=request.user, submitted_at__isnull=True, run__in=[r.pk for r in waiting]
        ).values_list("run_id", flat=True)
    )
    mine = Review.objects.filter(reviewer=request.user, submitted_at__isnull=False).select_related(
        "run__prompt", "run__campaign", "run__contestant__model"
    )
    if campaign_id is not None:
        mine = mine.filter(run__campaign_id=campaign_id)
    context = {
        "campaigns": campaigns,
        "campaign_id": campaign_id,
        "pending": sum(pending_by_campaign.values())
        if campaign_id is None
        else pending_by_campaign.get(campaign_id, 0),
        "waiting": [{"run": r, "has_draft": r.pk in drafts} for r in waiting],
        "mine": list(mine.order_by("-submitted_at")[:20]),
        "submitted_count": mine.count(),
    }
    return render(request, "scoring/queue.html", context)


@role_required(SCORER)
def review_next(request: HttpRequest) -> HttpResponse:
    campaign_id = _campaign_id(request)
    run = next_run_for(request.user, campaign_id)
    if run is None:
        messages.info(request, "Nothing left to review here. Thank you!")
        url = reverse("scoring:queue")
        return redirect(f"{url}?{urlencode({'campaign': campaign_id})}" if campaign_id else url)
    url = reverse("scoring:review", kwargs={"run_id": run.pk})
    return redirect(f"{url}?{urlencode({'campaign': campaign_id})}" if campaign_id else url)


# --- the review page -----------------------------------------------------------------------------


def _render_review(request: HttpRequest, run: Run, errors: dict | None = None, posted=None):
    data = reviews.review_page_data(run, request.user)
    if posted is not None:  # show what the reviewer entered, not the stored state
        answers = dict(posted["answers"])
        for row in data["criteria"]:
            row["answer"] = str(answers.get(row["key"], ""))
        data["notes"] = posted["notes"]
        data["verdict"] = posted["verdict"] or answers.get(reviews.MERGE_KEY, "")
    for row in data["criteria"]:
        row["error"] = (errors or {}).get(row["key"], "")
    data["line_comments_json"] = json.dumps(data["line_comments"])
    expand = set()
    for value in request.GET.getlist("expand"):
        if value.isdigit():
            expand.add(int(value))
    data.update(
        {
            "view": _diff_view(request),
            "expand": expand,
            "errors": errors or {},
            "campaign_filter": request.GET.get("campaign", ""),
        }
    )
    return render(request, "scoring/review.html", data, status=400 if errors else 200)


@role_required(SCORER)
def review_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run_for_review(run_id)
    return _render_review(request, run)


@role_required(SCORER)
@vary_on_headers("HX-Request")
def review_file(request: HttpRequest, run_id: int) -> HttpResponse:
    """One collapsed file's diff, loaded on demand; without htmx, the page with it expanded."""
    run = _get_run_for_review(run_id)
    form = FileQuery(request.GET)
    if not form.is_valid():
        return redirect("scoring:review", run_id=run.pk)
    index = form.cleaned_data["file"]
    files = reviews.rendered_diff(run)["files"]
    if index > len(files):
        raise Http404("No such file")
    if not request.htmx:
        url = reverse("scoring:review", kwargs={"run_id": run.pk})
        return redirect(f"{url}?expand={index}#{files[index - 1]['anchor']}")
    context = {
        "file": files[index - 1],
        "index": index,
        "run_id": run.pk,
        "pane": form.cleaned_data["pane"] or "",
        "view": form.cleaned_data["view"] or _diff_view(request),
        "expand": {index},
        "commentable": not form.cleaned_data["pane"],
    }
    return render(request, "scoring/_diff_file_body.html", context)


@role_required(SCORER)
@vary_on_headers("HX-Request")
def review_context(request: HttpRequest, run_id: int) -> HttpResponse:
    """Unchanged lines around a hunk, from the stored before/after text of the file."""
    run = _get_run_for_review(run_id)
    form = ContextQuery(request.GET)
    if not form.is_valid():
        return redirect("scoring:review", run_id=run.pk)
    data = form.cleaned_data
    start, end = data["start"], min(data["end"], data["start"] + MAX_CONTEXT_LINES - 1)
    rows = reviews.context_for_range(run, data["file"], start, end, data["delta"] or 0)
    context = {"rows": rows, "view": data["view"] or _diff_view(request), "run": run}
    if request.htmx:
        return render(request, "scoring/_context_rows.html", context)
    return render(request, "scoring/_context_page.html", context)


@role_required(SCORER)
@require_POST
def review_draft(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run_for_review(run_id)
    review = reviews.save_draft(run, request.user, _posted_review(request))
    if request.headers.get("X-Mergeable-Autosave") or request.htmx:
        return JsonResponse(
            {"saved": not review.is_submitted, "updated_at": review.updated_at.isoformat()}
        )
    messages.success(request, "Draft saved.")
    return redirect("scoring:review", run_id=run.pk)


@role_required(SCORER)
@require_POST
def review_submit(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run_for_review(run_id)
    posted = _posted_review(request)
    try:
        reviews.submit_review(run, request.user, **posted)
    except reviews.ReviewInvalid as exc:
        messages.error(request, "The review is not complete: see the marked questions.")
        return _render_review(request, run, errors=exc.errors, posted=posted)
    messages.success(request, f"Review submitted. That run was by {run.contestant.label}.")
    if request.POST.get("then") == "next":
        url = reverse("scoring:review_next")
        campaign = request.POST.get("campaign", "")
        return redirect(f"{url}?{urlencode({'campaign': campaign})}" if campaign.isdigit() else url)
    return redirect("scoring:review", run_id=run.pk)


# --- history (leads) -----------------------------------------------------------------------------


@role_required(LEAD)
def review_history(request: HttpRequest) -> HttpResponse:
    """Every submitted review with its earlier versions, and every pairwise vote."""
    campaign_id = _campaign_id(request)
    review_rows = (
        Review.objects.submitted()
        .select_related("reviewer", "run__prompt", "run__campaign", "run__contestant__model")
        .prefetch_related(Prefetch("versions", queryset=ReviewVersion.objects.order_by("-id")))
        .order_by("-submitted_at", "-id")
    )
    votes = (
        Comparison.objects.exclude(outcome="")
        .select_related(
            "reviewer", "prompt", "run_a__contestant__model", "run_b__contestant__model"
        )
        .order_by("-decided_at", "-id")
    )
    if campaign_id is not None:
        review_rows = review_rows.filter(run__campaign_id=campaign_id)
        votes = votes.filter(run_a__campaign_id=campaign_id)
    context = {
        "reviews": Paginator(review_rows, 50).get_page(request.GET.get("page")),
        "votes": Paginator(votes, 50).get_page(request.GET.get("vpage")),
        "campaigns": Campaign.objects.all(),
        "campaign_id": campaign_id,
    }
    return render(request, "scoring/review_history.html", context)


urlpatterns = [
    path("review/", queue, name="queue"),
    path("review/next/", review_next, name="review_next"),
    path("review/history/", review_history, name="review_history"),
    path("review/runs/<int:run_id>/", review_page, name="review"),
    path("review/runs/<int:run_id>/file/", review_file, name="review_file"),
    path("review/runs/<int:run_id>/context/", review_context, name="review_context"),
    path("review/runs/<int:run_id>/draft/", review_draft, name="review_draft"),
    path("review/runs/<int:run_id>/submit/", review_submit, name="review_submit"),
]

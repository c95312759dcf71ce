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
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from evalsite.roles import LEAD, SCORER, role_required
from runs.models import Campaign, Run
from scoring import queue as review_queue
from scoring import reviews
from scoring.models import Comparison, Review, ReviewHold, ReviewVersion
from scoring.review_page import (
    MERGE_KEY,
    context_for_range,
    page_run,
    rendered_diff,
    review_page_data,
    run_judgement_data,
)

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


def _get_run_for_review(review_key: str, *, page: bool = False) -> Run:
    """A run that can be reviewed, or 404: nobody reviews a run that is still going or errored.

    Runs are named by their opaque review key, never their id: ids follow the order runs were
    made in, which could tell a blind reviewer who made one. For the `page`, with who made it
    (`page_run`): the blind page hides their names, and the revealed one shows them.
    """
    if page:
        if run := page_run(review_key):
            return run
        raise Http404("No reviewable run has this key.")
    runs = Run.objects.reviewable().select_related("campaign")
    return get_object_or_404(runs, review_key=review_key)


def _get_run_to_write(review_key: str) -> Run:
    """The run, as `_get_run_for_review` finds it, with only what saving a draft or a review
    reads of it (its rubric and acceptance criteria come from its campaign and snapshot); a
    page shown after a failed save reads the run again, whole."""
    runs = Run.objects.reviewable().only("id", "campaign_id", "review_key", "snapshot")
    return get_object_or_404(runs, review_key=review_key)


def _review_url(run: Run, campaign: str | int | None = None) -> str:
    url = reverse("scoring:review", kwargs={"review_key": run.review_key})
    return f"{url}?{urlencode({'campaign': campaign})}" if str(campaign or "").isdigit() else url


def _next_url(campaign: str | int | None = None) -> str:
    url = reverse("scoring:review_next")
    return f"{url}?{urlencode({'campaign': campaign})}" if str(campaign or "").isdigit() else url


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
        "acceptance": request.POST.getlist("acceptance"),
    }


# --- the queue -----------------------------------------------------------------------------------


@role_required(SCORER)
def queue(request: HttpRequest) -> HttpResponse:
    campaign_id = _campaign_id(request)
    user = request.user
    # Every run waiting for this user, once: the counts per campaign come from the same rows.
    available = review_queue.in_order_for(
        user, review_queue.needing_review(user, related=("campaign", "prompt"))
    )
    pending_by_campaign = Counter(run.campaign_id for run in available)
    campaigns = [
        {"campaign": c, "pending": pending_by_campaign.get(c.pk, 0)}
        for c in Campaign.objects.filter(runs__in=Run.objects.reviewable()).distinct()
    ]
    waiting = [r for r in available if campaign_id is None or r.campaign_id == campaign_id]
    skipped = (
        ReviewHold.objects.filter(reviewer=user, skipped_at__isnull=False)
        .select_related("run__prompt", "run__campaign")
        .order_by("-skipped_at")
    )
    mine = Review.objects.filter(reviewer=user, submitted_at__isnull=False).select_related(
        "run__prompt", "run__campaign", "run__contestant__model"
    )
    if campaign_id is not None:
        skipped = skipped.filter(run__campaign_id=campaign_id)
        mine = mine.filter(run__campaign_id=campaign_id)
    context = {
        "campaigns": campaigns,
        "campaign_id": campaign_id,
        "pending": len(waiting),
        "waiting": Paginator(waiting, 50).get_page(request.GET.get("page")),
        "skipped": list(skipped[:50]),
        "mine": Paginator(mine.order_by("-submitted_at", "-id"), 20).get_page(
            request.GET.get("mpage")
        ),
    }
    return render(request, "scoring/queue.html", context)


@role_required(SCORER)
def review_next(request: HttpRequest) -> HttpResponse:
    campaign_id = _campaign_id(request)
    run = review_queue.take_next_run(request.user, campaign_id)
    if run is None:
        messages.info(request, "Nothing left to review here. Thank you!")
        url = reverse("scoring:queue")
        return redirect(f"{url}?{urlencode({'campaign': campaign_id})}" if campaign_id else url)
    return redirect(_review_url(run, campaign_id))


# --- the review page -----------------------------------------------------------------------------


def _render_review(
    request: HttpRequest,
    run: Run,
    errors: dict | None = None,
    posted=None,
    *,
    has_place: bool | None = None,
    status: int | None = None,
):
    data = review_page_data(run, request.user)
    if has_place is None:
        # Opening a run to review it takes a place on it; a submitted reviewer needs none.
        has_place = not data["blind"] or review_queue.hold(run, request.user)
    if posted is not None:  # show what the reviewer entered, not the stored state
        answers = dict(posted["answers"])
        for row in data["criteria"]:
            row["answer"] = str(answers.get(row["key"], ""))
        data["notes"] = posted["notes"]
        data["verdict"] = posted["verdict"] or answers.get(MERGE_KEY, "")
        ticked = set(posted["acceptance"])
        for item in data["prompt"]["acceptance_criteria"]:
            item["met"] = str(item["index"]) in ticked
    for row in data["criteria"]:
        row["error"] = (errors or {}).get(row["key"], "")
    data["line_comments_json"] = json.dumps(data["line_comments"])
    expand = set()
    for value in request.GET.getlist("expand"):
        if value.isdigit():
            expand.add(int(value))
    campaign = request.POST.get("campaign") or request.GET.get("campaign", "")
    data.update(
        {
            "view": _diff_view(request),
            "expand": expand,
            "errors": errors or {},
            "campaign_filter": campaign if campaign.isdigit() else "",
            "next_url": _next_url(campaign),
            "progress": review_queue.progress(request.user, run.campaign_id),
            # A blind reviewer who could not take a place may read the run, not review it.
            "has_place": has_place,
            "reviews_wanted": run.reviews_wanted,
        }
    )
    if status is None:
        status = 400 if errors else 200
    return render(request, "scoring/review.html", data, status=status)


@role_required(SCORER)
def review_page(request: HttpRequest, review_key: str) -> HttpResponse:
    return _render_review(request, _get_run_for_review(review_key, page=True))


@role_required(SCORER)
@vary_on_headers("HX-Request")
def review_file(request: HttpRequest, review_key: str) -> HttpResponse:
    """One collapsed file's diff, loaded on demand; without htmx, the page with it expanded."""
    run = _get_run_for_review(review_key)
    form = FileQuery(request.GET)
    if not form.is_valid():
        return redirect(_review_url(run))
    index = form.cleaned_data["file"]
    files = rendered_diff(run)["files"]
    if index > len(files):
        raise Http404("No such file")
    if not request.htmx:
        return redirect(f"{_review_url(run)}?expand={index}#{files[index - 1]['anchor']}")
    context = {
        "file": files[index - 1],
        "index": index,
        "run_key": run.review_key,
        "pane": form.cleaned_data["pane"] or "",
        "view": form.cleaned_data["view"] or _diff_view(request),
        "expand": {index},
        "commentable": not form.cleaned_data["pane"],
    }
    return render(request, "scoring/_diff_file_body.html", context)


@role_required(SCORER)
@vary_on_headers("HX-Request")
def review_context(request: HttpRequest, review_key: str) -> HttpResponse:
    """Unchanged lines around a hunk, from the stored before/after text of the file."""
    run = _get_run_for_review(review_key)
    form = ContextQuery(request.GET)
    if not form.is_valid():
        return redirect(_review_url(run))
    data = form.cleaned_data
    start, end = data["start"], min(data["end"], data["start"] + MAX_CONTEXT_LINES - 1)
    rows = context_for_range(run, data["file"], start, end, data["delta"] or 0)
    context = {"rows": rows, "view": data["view"] or _diff_view(request), "run": run}
    if request.htmx:
        return render(request, "scoring/_context_rows.html", context)
    return render(request, "scoring/_context_page.html", context)


@role_required(SCORER)
@require_POST
def review_draft(request: HttpRequest, review_key: str) -> HttpResponse:
    run = _get_run_to_write(review_key)
    review_queue.hold(run, request.user)  # working on it keeps the place
    review = reviews.save_draft(run, request.user, _posted_review(request))
    if request.headers.get("X-Mergeable-Autosave") or request.htmx:
        return JsonResponse(
            {"saved": not review.is_submitted, "updated_at": review.updated_at.isoformat()}
        )
    messages.success(request, "Draft saved.")
    return redirect(_review_url(run, request.POST.get("campaign")))


@role_required(SCORER)
@require_POST
def review_submit(request: HttpRequest, review_key: str) -> HttpResponse:
    """Submit, then show the same run again, now revealed: who made it appears on the page of
    the run just judged, never on the next blind page."""
    run = _get_run_to_write(review_key)
    posted = _posted_review(request)
    try:
        reviews.submit_review(run, request.user, **posted)
    except reviews.ReviewInvalid as exc:
        messages.error(request, "The review is not complete: see the marked questions.")
        run = _get_run_for_review(review_key, page=True)
        return _render_review(request, run, errors=exc.errors, posted=posted)
    except review_queue.NoPlaceLeft as exc:
        messages.error(request, str(exc))
        run = _get_run_for_review(review_key, page=True)
        return _render_review(request, run, posted=posted, has_place=False, status=409)
    messages.success(request, "Review submitted.")
    return redirect(_review_url(run, request.POST.get("campaign")))


@role_required(SCORER)
@require_POST
def review_skip(request: HttpRequest, review_key: str) -> HttpResponse:
    run = _get_run_to_write(review_key)
    if review_queue.skip(run, request.user):
        messages.info(request, "Skipped: the queue will not offer you that run again.")
    return redirect(_next_url(request.POST.get("campaign")))


@role_required(LEAD)
@require_POST
def review_ask_another(request: HttpRequest, review_key: str) -> HttpResponse:
    """A lead wants one more review of this run than it wants now (a disputed run, say)."""
    run = _get_run_for_review(review_key)
    wanted = review_queue.ask_for_another_review(run)
    messages.success(request, f"This run now wants {wanted} reviews.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = _review_url(run)
    return redirect(target)


@role_required(LEAD)
@vary_on_headers("HX-Request")
def run_judgement(request: HttpRequest, run_id: int) -> HttpResponse:
    """The diff, reviews and votes of one run, named, for its lead's run page (which loads this
    fragment; `runs` knows nothing of scoring). Without htmx, a page of its own."""
    run = get_object_or_404(
        Run.objects.select_related("campaign", "prompt", "contestant__model"), pk=run_id
    )
    data = run_judgement_data(run)
    data.update(
        {
            "view": _diff_view(request),
            "expand": set(),
            # Collapsed files load through the review page's routes, which serve ended runs only.
            "expand_all": run.status not in Run.REVIEWABLE_STATUSES,
        }
    )
    template = (
        "scoring/run_judgement.html#judgement" if request.htmx else "scoring/run_judgement.html"
    )
    return render(request, template, data)


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
    path("review/run/<int:run_id>/", run_judgement, name="run_judgement"),
    path("review/runs/<slug:review_key>/", review_page, name="review"),
    path("review/runs/<slug:review_key>/file/", review_file, name="review_file"),
    path("review/runs/<slug:review_key>/context/", review_context, name="review_context"),
    path("review/runs/<slug:review_key>/draft/", review_draft, name="review_draft"),
    path("review/runs/<slug:review_key>/submit/", review_submit, name="review_submit"),
    path("review/runs/<slug:review_key>/skip/", review_skip, name="review_skip"),
    path(
        "review/runs/<slug:review_key>/ask-another/",
        review_ask_another,
        name="review_ask_another",
    ),
]

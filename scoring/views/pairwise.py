"""Pairwise mode: two contestants' diffs for one prompt, and which one you would merge."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from evalsite.roles import LEAD, SCORER, has_role, role_required
from runs.diffs import strip_control
from runs.identity import identity_terms
from runs.models import Campaign
from runs.templatetags.runs_tags import render_markdown
from scoring import pairing, review_page
from scoring.models import Comparison


class CampaignFilter(forms.Form):
    campaign = forms.ModelChoiceField(queryset=Campaign.objects.all(), required=False)


def _get_comparison_for_user(comparison_id: int, user, *, to_vote: bool = False) -> Comparison:
    """A scorer sees only their own comparisons (others: 404); leads and admins may look at any,
    read-only. Only the comparison's reviewer may vote on it."""
    comparison = get_object_or_404(
        Comparison.objects.select_related(
            "prompt", "reviewer", "run_a__contestant__model", "run_b__contestant__model"
        ),
        pk=comparison_id,
    )
    own = comparison.reviewer_id == user.pk
    if not own and (to_vote or not has_role(user, LEAD)):
        raise Http404("No such comparison")
    return comparison


def _side(run, reveal: bool) -> dict:
    return {
        "run": run,
        "diff": review_page.rendered_diff(run),
        "tests": {
            "exit_code": run.test_exit_code,
            "ok": run.tests_ok,
            "passed": run.tests_passed,
            "failed": run.tests_failed,
            "output_tail": strip_control(run.test_output_tail),
        },
        "label": run.contestant.label if reveal else None,
        "cost_usd": run.cost_usd if reveal else None,
        # Blind until the vote is in: the agent's own words may name it.
        "transcript": review_page.transcript_timeline(
            run.transcript, blind=not reveal, terms=None if reveal else identity_terms(run)
        ),
    }


@role_required(SCORER)
def pairwise_next(request: HttpRequest) -> HttpResponse:
    form = CampaignFilter(request.GET)
    campaign = form.cleaned_data["campaign"] if form.is_valid() else None
    comparison = pairing.next_comparison_for(request.user, campaign.pk if campaign else None)
    if comparison is None:
        context = {
            "comparison": None,
            "campaign": campaign,
            "progress": pairing.progress(campaign.pk if campaign else None),
        }
        return render(request, "scoring/pairwise.html", context)
    url = reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk})
    return redirect(f"{url}?{urlencode({'campaign': campaign.pk})}" if campaign else url)


@role_required(SCORER)
def pairwise(request: HttpRequest, comparison_id: int) -> HttpResponse:
    comparison = _get_comparison_for_user(comparison_id, request.user)
    own = comparison.reviewer_id == request.user.pk
    # The voter sees who made what only after voting; a lead looking on is not voting.
    reveal = bool(comparison.outcome) or not own
    a = _side(comparison.run_a, reveal)
    b = _side(comparison.run_b, reveal)
    left, right = (a, b) if comparison.a_shown_left else (b, a)
    prompt = comparison.run_a.snapshot.get("prompt") or {}
    campaign = request.GET.get("campaign", "")
    next_url = reverse("scoring:pairwise_next")
    context = {
        "comparison": comparison,
        "own": own,
        "reveal": reveal,
        "left": left,
        "right": right,
        "choice": pairing.shown_choice(comparison),
        "prompt": {
            "title": prompt.get("title", comparison.prompt.title),
            "instructions_html": render_markdown(prompt.get("instructions", "")),
            "acceptance_criteria": prompt.get("acceptance_criteria") or [],
        },
        "campaign_filter": campaign if campaign.isdigit() else "",
        "next_url": f"{next_url}?{urlencode({'campaign': campaign})}"
        if campaign.isdigit()
        else next_url,
        "progress": pairing.progress(comparison.run_a.campaign_id),
        "view": "unified",
        "expand": set(),
    }
    return render(request, "scoring/pairwise.html", context)


@role_required(SCORER)
@require_POST
def pairwise_vote(request: HttpRequest, comparison_id: int) -> HttpResponse:
    comparison = _get_comparison_for_user(comparison_id, request.user, to_vote=True)
    try:
        pairing.record_vote(
            comparison, request.POST.get("choice", ""), request.POST.get("reason", "")
        )
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("scoring:pairwise", comparison_id=comparison.pk)
    # Who made which is revealed on this pair's own page, never on the next (blind) one.
    messages.success(request, "Vote saved.")
    url = reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk})
    campaign = request.POST.get("campaign", "")
    return redirect(f"{url}?{urlencode({'campaign': campaign})}" if campaign.isdigit() else url)


urlpatterns = [
    path("compare/", pairwise_next, name="pairwise_next"),
    path("compare/<int:comparison_id>/", pairwise, name="pairwise"),
    path("compare/<int:comparison_id>/vote/", pairwise_vote, name="pairwise_vote"),
]

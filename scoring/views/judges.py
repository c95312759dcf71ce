"""The LLM judge's pages, for leads: appoint a judge for a campaign, follow its reviews and cost,
its calibration against the team's reviewers, and its own board, labelled as the judge's."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_http_methods, require_POST

from evalsite.roles import LEAD, role_required
from runs.models import Campaign, LanguageModel
from scoring import calibration
from scoring import judge as judging
from scoring.models import Judge, JudgeReview

REVIEWS_SHOWN = 200


class AppointJudgeForm(forms.Form):
    model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.filter(archived=False).exclude(
            provider=LanguageModel.SCRIPTED
        ),
        help_text="A real model (scripted ones cannot judge). It sees each run blind, as a "
        "scorer does.",
    )
    max_cost_usd = forms.FloatField(
        min_value=0.0,
        required=False,
        label="Cost limit per run (USD)",
        help_text="The run gateway refuses the judge's call once this is spent. Empty: none.",
    )


def _get_campaign(campaign_id: int) -> Campaign:
    return get_object_or_404(Campaign.objects.select_related("prompt_set"), pk=campaign_id)


def _get_judge(judge_id: int) -> Judge:
    return get_object_or_404(Judge.objects.select_related("campaign", "model"), pk=judge_id)


def _with_totals(judges):
    return judges.annotate(
        done=Count("reviews", filter=Q(reviews__status=JudgeReview.DONE)),
        failed=Count("reviews", filter=Q(reviews__status=JudgeReview.FAILED)),
        pending=Count("reviews", filter=Q(reviews__status=JudgeReview.PENDING)),
        cost=Sum("reviews__cost_usd", default=0.0),
    )


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
def judge_campaign(request: HttpRequest, campaign_id: int) -> HttpResponse:
    campaign = _get_campaign(campaign_id)
    form = AppointJudgeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            appointed, queued = judging.appoint(
                campaign,
                form.cleaned_data["model"],
                request.user,
                form.cleaned_data["max_cost_usd"],
            )
        except judging.JudgeError as exc:
            form.add_error("model", str(exc))
        else:
            messages.success(
                request, f"{appointed.model} judges {campaign.name}: {queued} runs queued."
            )
            return redirect("scoring:judge", judge_id=appointed.pk)
    judges = _with_totals(Judge.objects.filter(campaign=campaign).select_related("model"))
    context = {"campaign": campaign, "form": form, "judges": judges}
    return render(request, "scoring/judges.html", context, status=400 if form.errors else 200)


@role_required(LEAD)
def judge_detail(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = _get_judge(judge_id)
    totals = _with_totals(Judge.objects.filter(pk=judge.pk)).values(
        "done", "failed", "pending", "cost"
    )[0]
    reviews = list(
        JudgeReview.objects.filter(judge=judge)
        .select_related("run__contestant__model", "run__prompt")
        .order_by("status", "run__prompt__key", "run_id")[:REVIEWS_SHOWN]
    )
    context = {"judge": judge, "totals": totals, "reviews": reviews, "shown": REVIEWS_SHOWN}
    return render(request, "scoring/judge.html", context)


@role_required(LEAD)
@require_POST
def judge_queue(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = _get_judge(judge_id)
    queued = judging.queue_unjudged(judge)
    messages.success(request, f"{queued} runs queued for {judge.model}.")
    return redirect("scoring:judge", judge_id=judge.pk)


@role_required(LEAD)
def judge_calibration(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = _get_judge(judge_id)
    result = calibration.calibration(judge)
    items = [result["verdict"], *result["criteria"]]
    return render(
        request,
        "scoring/judge_calibration.html",
        {"judge": judge, "result": result, "items": items},
    )


@role_required(LEAD)
def judge_board(request: HttpRequest, judge_id: int) -> HttpResponse:
    judge = _get_judge(judge_id)
    rows = calibration.judge_board(judge)
    return render(request, "scoring/judge_board.html", {"judge": judge, "rows": rows})


urlpatterns = [
    path("campaigns/<int:campaign_id>/judges/", judge_campaign, name="judge_campaign"),
    path("judges/<int:judge_id>/", judge_detail, name="judge"),
    path("judges/<int:judge_id>/queue/", judge_queue, name="judge_queue"),
    path("judges/<int:judge_id>/calibration/", judge_calibration, name="judge_calibration"),
    path("judges/<int:judge_id>/board/", judge_board, name="judge_board"),
]

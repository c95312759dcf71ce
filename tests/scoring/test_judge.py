"""The LLM judge: blind reviews through a run gateway with a cost limit, stored apart from the
humans, its calibration against them, and its own clearly labelled board. The judge's model is
the scripted FakeLLM endpoint."""

from __future__ import annotations

import json
import math

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from runs.models import LanguageModel, Run
from scoring import calibration, leaderboard, stats
from scoring import judge as judging
from scoring.leaderboard import Filters
from scoring.models import Adjudication, Judge, JudgeReview, Review, RunTally
from tests.fake_llm import FakeLLM
from tests.scoring.test_leaderboard import Builder

JUDGE_KEY = "sk-judge-secret-0123456789"
CRITERIA = ("right_files", "conventions", "recovered")


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def llm():
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def build(db):
    return Builder()


@pytest.fixture
def judge_model(llm):
    return LanguageModel.objects.create(
        name="judge-model",
        provider="openai",
        base_url=llm.base_url_openai,
        model_id="judge-1",
        api_key=JUDGE_KEY,
        input_per_mtok=1_000.0,
        output_per_mtok=2_000.0,
    )


@pytest.fixture
def queued(monkeypatch):
    """The judge tasks that would be sent to the broker, by judge review id."""
    from scoring import tasks

    sent: list[int] = []
    monkeypatch.setattr(tasks.judge_run, "apply_async", lambda args, **_: sent.extend(args))
    return sent


def answer(verdict="yes", **overrides) -> dict:
    reply = {
        "criteria": {
            "right_files": {"answer": "yes", "rationale": "It edits the refunds module."},
            "conventions": {"answer": "4", "rationale": "Reads like the rest."},
            "recovered": {"answer": "yes", "rationale": "Fixed the failing test."},
        },
        "verdict": {"answer": verdict, "rationale": "Small, tested and correct."},
    }
    reply["criteria"].update(overrides)
    return {"text": json.dumps(reply), "usage": {"input_tokens": 1000, "output_tokens": 100}}


def a_run(build, contestant="alpha-agent", prompt="p0", verdicts=()) -> Run:
    if not hasattr(build, "march"):
        build.march = build.campaign()
    run = build.run(build.march, build.prompt(prompt), build.contestant(contestant), verdicts)
    run.save_artifact("diff.patch", "--- a/refunds.py\n+++ b/refunds.py\n+# by alpha-agent\n")
    return run


def a_judge(run: Run, model: LanguageModel, max_cost_usd=None) -> Judge:
    return Judge.objects.create(campaign=run.campaign, model=model, max_cost_usd=max_cost_usd)


def judged(run: Run, judge: Judge) -> JudgeReview:
    review = JudgeReview.objects.create(judge=judge, run=run)
    judging.judge_run(review.pk)
    review.refresh_from_db()
    return review


def test_it_reviews_a_run_blind_through_the_gateway_and_meters_it(build, llm, judge_model):
    run = a_run(build)
    llm.queue(answer("small_changes"))

    review = judged(run, a_judge(run, judge_model))

    assert review.status == JudgeReview.DONE, review.error
    assert review.verdict == "small_changes"
    assert review.answers == {"right_files": "yes", "conventions": "4", "recovered": "yes"}
    assert review.rationales["verdict"] == "Small, tested and correct."
    assert review.rationales["conventions"] == "Reads like the rest."
    assert review.cost_usd == pytest.approx(1000 * 1_000 / 1e6 + 100 * 2_000 / 1e6)
    assert review.model_calls == 1
    [request] = llm.requests
    # The gateway put the real key in place of the run's token and forced the model.
    assert request["headers"]["authorization"] == f"Bearer {JUDGE_KEY}"
    assert request["body"]["model"] == "judge-1"
    sent = json.dumps(request["body"]["messages"])
    assert "Followed the codebase's conventions" in sent  # the rubric as instructions
    assert "refunds.py" in sent  # the diff
    assert "alpha-agent" not in sent and "[hidden]" in sent  # blind, as for humans


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"text": "I would merge it."}, "the reply is not JSON"),
        (
            answer(right_files={"answer": "maybe", "rationale": "Unsure."}),
            "criteria.right_files.answer must be one of ['yes', 'no']",
        ),
        (answer(verdict="definitely"), "verdict.answer must be one of"),
        (
            answer(conventions={"answer": "3", "rationale": ""}),
            "criteria.conventions.rationale must be a non-empty string",
        ),
        (
            {"text": json.dumps({"verdict": {"answer": "yes", "rationale": "ok"}})},
            'criterion "right_files" is not answered',
        ),
    ],
)
def test_it_records_a_malformed_answer_as_a_failure_with_its_reason(
    build, llm, judge_model, reply, reason
):
    run = a_run(build)
    llm.queue(reply)

    review = judged(run, a_judge(run, judge_model))

    assert review.status == JudgeReview.FAILED
    assert reason in review.error
    assert review.verdict == "" and review.answers == {}
    assert review.reply == reply["text"]


def test_it_stops_at_the_cost_limit(build, llm, judge_model):
    run = a_run(build)
    llm.queue(answer())

    review = judged(run, a_judge(run, judge_model, max_cost_usd=0.0))

    assert review.status == JudgeReview.FAILED
    assert "cost" in review.error.lower()
    assert llm.requests == []


def test_it_never_changes_the_human_board(build, llm, judge_model, client_for, lead):
    runs = [
        a_run(build, contestant, f"p{index}", [verdict])
        for index, (contestant, verdict) in enumerate(
            [("alpha-agent", "no"), ("alpha-agent", "no"), ("beta-agent", "yes")]
        )
    ]
    filters = Filters(campaign_id=runs[0].campaign_id)
    before = leaderboard.board(filters)
    tallies = list(RunTally.objects.order_by("pk").values())
    export = reverse("scoring:leaderboard_export")
    exported_before = client_for(lead).get(export, {"campaign": filters.campaign_id}).content
    judge = a_judge(runs[0], judge_model)
    for run in runs:
        llm.queue(answer("yes"))
        assert judged(run, judge).status == JudgeReview.DONE
    cache.clear()

    assert leaderboard.board(filters) == before
    assert list(RunTally.objects.order_by("pk").values()) == tallies
    assert (
        client_for(lead).get(export, {"campaign": filters.campaign_id}).content == exported_before
    )
    assert Review.objects.count() == 3  # the judge's are not reviews


def test_it_calibrates_the_judge_against_the_humans(build, judge_model):
    # run: (human verdicts, judge verdict, adjudication)
    cases = [
        (["yes", "yes"], "yes", None),
        (["no", "no"], "no", None),
        (["yes", "no"], "yes", None),  # tie: no majority
        (["no"], "yes", None),
        (["yes", "no"], "no", "no"),  # the adjudication is the reference
        (["yes"], "small_changes", None),
    ]
    judge = None
    for index, (humans, verdict, adjudicated) in enumerate(cases):
        run = a_run(build, "alpha-agent", f"p{index}", humans)
        judge = judge or a_judge(run, judge_model)
        if adjudicated:
            Adjudication.objects.create(run=run, verdict=adjudicated, note="settled")
        JudgeReview.objects.create(
            judge=judge, run=run, status=JudgeReview.DONE, verdict=verdict, judged_at=timezone.now()
        )

    result = calibration.calibration(judge)["verdict"]

    # References: yes, no, (tie), no, no, yes; pairs (judge, reference): (yes, yes), (no, no),
    # (yes, no), (no, no), (small_changes, yes).
    assert result["n"] == 5 and result["no_reference"] == 1
    # Cohen's kappa by hand: observed 3/5; judge yes 2, no 2, small 1; reference yes 2, no 3.
    expected = (3 / 5 - (2 * 2 + 2 * 3) / 25) / (1 - (2 * 2 + 2 * 3) / 25)
    assert result["kappa"] == pytest.approx(expected, abs=1e-3)
    confusion = {row["answer"]: row["counts"] for row in result["confusion"]}
    assert confusion == {"yes": [1, 0, 1], "small_changes": [1, 0, 0], "no": [0, 0, 2]}
    # Alpha: each human review is paired with the judge's verdict.
    judge_row = ["yes", "yes", "no", "no", "yes", "yes", "yes", "no", "no", "small_changes"]
    human_row = ["yes", "yes", "no", "no", "yes", "no", "no", "yes", "no", "yes"]
    alpha = stats.krippendorff_alpha(
        [judge_row, human_row], "ordinal", value_order=["no", "small_changes", "yes"]
    )
    assert result["alpha_pairs"] == 10
    assert result["alpha"] == pytest.approx(alpha, abs=1e-3)


def test_it_calibrates_each_criterion(build, judge_model):
    run = a_run(build, verdicts=["yes", "yes"])
    Review.objects.filter(run=run).update(answers={"right_files": "no", "conventions": "4"})
    judge = a_judge(run, judge_model)
    JudgeReview.objects.create(
        judge=judge, run=run, status=JudgeReview.DONE, verdict="yes",
        answers={"right_files": "yes", "conventions": "4", "recovered": "yes"},
    )  # fmt: skip

    items = {item["key"]: item for item in calibration.calibration(judge)["criteria"]}

    assert items["right_files"]["n"] == 1 and items["right_files"]["agreement"] == 0.0
    rows = {row["answer"]: row["counts"] for row in items["right_files"]["confusion"]}
    assert rows["yes"] == [0, 1]  # judge yes, humans no
    assert items["conventions"]["agreement"] == 1.0
    assert items["recovered"]["n"] == 0  # no human answered it
    assert math.isnan(calibration.cohen_kappa([], ["yes"]))


def test_it_shows_calibration_cost_and_a_labelled_judge_only_board(
    build, judge_model, client_for, lead, scorer
):
    run = a_run(build, verdicts=["yes"])
    judge = a_judge(run, judge_model)
    JudgeReview.objects.create(
        judge=judge, run=run, status=JudgeReview.DONE, verdict="no", cost_usd=0.125,
        rationales={"verdict": "<b>Breaks refunds</b>"},
    )  # fmt: skip
    client = client_for(lead)

    detail = client.get(reverse("scoring:judge", args=[judge.pk])).content.decode()
    board = client.get(reverse("scoring:judge_board", args=[judge.pk])).content.decode()
    page = client.get(reverse("scoring:judge_calibration", args=[judge.pk])).content.decode()
    listing = client.get(reverse("scoring:judge_campaign", args=[run.campaign_id])).content

    assert "$0.1250" in detail and "$0.1250" in listing.decode()
    assert "&lt;b&gt;Breaks refunds&lt;/b&gt;" in detail  # a model's text is escaped
    assert "Judge-only board" in board and "not your reviewers" in board
    assert "No human review is in it" in board
    assert "0% (0%–79%, 0 of 1)" in board  # the judge said no to the one run
    assert 'id="calibration-verdict"' in page and "Kappa" in page
    client_for(scorer)
    for url in (
        reverse("scoring:judge", args=[judge.pk]),
        reverse("scoring:judge_board", args=[judge.pk]),
        reverse("scoring:judge_calibration", args=[judge.pk]),
        reverse("scoring:judge_campaign", args=[run.campaign_id]),
    ):
        assert client.get(url).status_code == 403


def test_a_lead_appoints_a_judge_and_each_finished_run_is_queued(
    build, judge_model, client_for, lead, queued, django_capture_on_commit_callbacks
):
    finished = a_run(build, "alpha-agent", "p0")
    a_run(build, "beta-agent", "p1")
    Run.objects.filter(pk=finished.pk).update(status=Run.FAILED)
    running = build.run(finished.campaign, build.prompt("p2"), build.contestant("gamma"))
    Run.objects.filter(pk=running.pk).update(status=Run.RUNNING)
    client = client_for(lead)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("scoring:judge_campaign", args=[finished.campaign_id]),
            {"model": judge_model.pk, "max_cost_usd": "0.05"},
        )

    judge = Judge.objects.get()
    assert response.status_code == 302 and judge.max_cost_usd == 0.05
    reviews = JudgeReview.objects.filter(judge=judge)
    assert sorted(queued) == sorted(reviews.values_list("pk", flat=True))
    assert running.pk not in reviews.values_list("run_id", flat=True)
    assert reviews.count() == 2


def test_it_refuses_a_scripted_model_as_judge(build, client_for, lead, queued):
    run = a_run(build)
    response = client_for(lead).post(
        reverse("scoring:judge_campaign", args=[run.campaign_id]),
        {"model": build.scripted_model.pk},
    )

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Judge.objects.exists()
    with pytest.raises(judging.JudgeError, match="is scripted"):
        judging.appoint(run.campaign, build.scripted_model, None, None)


def test_beats_sweep_queues_runs_that_finished_after_the_judge_was_appointed(
    build, judge_model, queued, django_capture_on_commit_callbacks
):
    first = a_run(build, "alpha-agent", "p0")
    with django_capture_on_commit_callbacks(execute=True):
        judge, _ = judging.appoint(first.campaign, judge_model, None, None)
    assert len(queued) == 1
    later = build.run(first.campaign, build.prompt("p1"), build.contestant("beta-agent"))
    Run.objects.filter(pk=later.pk).update(status=Run.RUNNING)  # not reviewable yet

    with django_capture_on_commit_callbacks(execute=True):
        assert judging.queue_new_runs() == 0
    Run.objects.filter(pk=later.pk).update(status=Run.FINISHED)
    with django_capture_on_commit_callbacks(execute=True):
        assert judging.queue_new_runs() == 1
        assert judging.queue_new_runs() == 0  # each run once

    new = JudgeReview.objects.get(judge=judge, run=later)
    assert queued == [JudgeReview.objects.get(judge=judge, run=first).pk, new.pk]

"""The results export: what `export_results` prints for a campaign, as JSON and as CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone

from runs.models import Run
from scoring import adjudications, exports, stats
from scoring.models import CampaignRubric, Comparison, Review, Rubric
from tests.scoring.test_leaderboard import Builder


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def exported(db):
    build = Builder()
    campaign = build.campaign("March")
    prompt = build.prompt("partial-refunds", tags=["payments"], expected_files=["refunds.py"],
                          test_command="pytest -q tests/payments")  # fmt: skip
    qwen, demo = build.contestant("qwen"), build.contestant("demo", scripted=True)
    good = build.run(
        campaign, prompt, qwen, ["yes", "small_changes"], answers={"right_files": "yes"},
        test_exit_code=0, tests_passed=12, tests_failed=0, input_tokens=51234, output_tokens=3120, cost_usd=0.41, steps=23,
        agent_status="finished", files_changed=["refunds.py", "models.py"], additions=40,
        deletions=2, questions=[{"question": "Do partial refunds apply to PayPal?", "answer": "No"}],
    )  # fmt: skip
    good.save_artifact("diff.patch", "diff --git a/refunds.py b/refunds.py\n")
    good.save_artifact("transcript.json", json.dumps({"schema_version": "ATIF-v1.4", "steps": []}))
    bad = build.run(campaign, prompt, demo, ["no"], test_files_modified=["tests/test_refunds.py"])
    Review.objects.create(run=bad, reviewer=build.reviewer(1), verdict="yes", notes="draft")
    build.run(campaign, build.prompt("other"), demo, status=Run.ERRORED)
    Comparison.objects.create(
        prompt=prompt, run_a=good, run_b=bad, reviewer=build.reviewer(0), outcome="a",
        decided_at=timezone.now(), reason="Cleaner",
    )  # fmt: skip
    Comparison.objects.create(prompt=prompt, run_a=good, run_b=bad, reviewer=build.reviewer(1))
    return {"campaign": campaign, "good": good, "bad": bad}


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("export_results", *args, stdout=out)
    return out.getvalue()


def test_it_exports_the_formats_md_shape(exported):
    campaign = exported["campaign"]

    data = json.loads(run_command(str(campaign.pk)))

    assert set(data) >= {"campaign", "runs", "comparisons", "leaderboard"}
    assert data["campaign"] == {
        "id": campaign.pk, "name": "March", "prompt_set": "backend",
        "created_at": campaign.created_at.isoformat(),
    }  # fmt: skip
    run = next(r for r in data["runs"] if r["id"] == exported["good"].pk)
    assert set(run) >= {
        "id", "prompt", "contestant", "repeat", "status", "agent_status", "duration_s", "usage",
        "steps", "clarifying_questions", "diff", "files_changed", "tests", "reviews",
    }  # fmt: skip
    assert (run["prompt"], run["contestant"], run["repeat"]) == ("partial-refunds", "qwen", 0)
    assert run["usage"] == {"input_tokens": 51234, "output_tokens": 3120, "cost_usd": 0.41}
    assert run["duration_s"] == pytest.approx(60.0)
    assert run["clarifying_questions"] == ["Do partial refunds apply to PayPal?"]
    assert run["diff"].startswith("diff --git a/refunds.py")
    assert run["tests"] == {
        "command": "pytest -q tests/payments", "exit_code": 0, "passed": True,
        "passed_count": 12, "failed_count": 0,
    }  # fmt: skip
    assert [(r["reviewer"], r["verdict"]) for r in run["reviews"]] == [
        ("rev0", "yes"),
        ("rev1", "small_changes"),
    ]
    assert run["reviews"][0]["answers"]["right_files"] == "yes"
    assert "transcript" not in run
    assert run["test_files_modified"] == []
    bad = next(r for r in data["runs"] if r["id"] == exported["bad"].pk)
    assert bad["test_files_modified"] == ["tests/test_refunds.py"]


def test_it_leaves_out_drafts_and_undecided_comparisons(exported):
    data = exports.results(exported["campaign"])

    bad = next(r for r in data["runs"] if r["id"] == exported["bad"].pk)
    assert [r["verdict"] for r in bad["reviews"]] == ["no"]
    assert data["comparisons"] == [
        {"prompt": "partial-refunds", "a": exported["good"].pk, "b": exported["bad"].pk,
         "outcome": "a", "reviewer": "rev0", "reason": "Cleaner"},
    ]  # fmt: skip
    errored = next(r for r in data["runs"] if r["status"] == Run.ERRORED)
    assert errored["tests"] == {
        "command": "", "exit_code": None, "passed": None, "passed_count": None, "failed_count": None,
    }  # fmt: skip


def test_it_includes_the_leaderboard_rows(exported):
    data = exports.results(exported["campaign"])

    board = {row["contestant"]: row for row in data["leaderboard"]}
    assert board["qwen"]["runs"] == 1 and board["qwen"]["merge_rate"] == 0.75  # yes, small
    assert board["demo"]["label"] == "demo (scripted)"
    # The errored run is on the board, counted as would not merge.
    assert (board["demo"]["runs"], board["demo"]["errored_runs"]) == (2, 1)
    assert (board["demo"]["merge_rate"], board["demo"]["completion_rate"]) == (0.0, 0.5)
    low, high = stats.wilson_interval(1, 2)
    assert board["demo"]["completion_rate_ci"] == [round(low, 3), round(high, 3)]
    low, high = stats.rate_interval([0.75], [exported["good"].prompt_id])
    assert board["qwen"]["merge_rate_ci"] == [round(low, 3), round(high, 3)]


def test_it_gives_each_run_its_would_merge_value_and_adjudication(exported, lead):
    good, bad = exported["good"], exported["bad"]
    strict = Rubric.objects.create(name="Strict", small_changes_value=0.2)
    CampaignRubric.objects.create(campaign=exported["campaign"], rubric=strict)
    adjudications.adjudicate(bad, lead, "small_changes", "Close: rename one function.")

    data = exports.results(exported["campaign"])

    runs = {run["id"]: run for run in data["runs"]}
    assert (runs[good.pk]["would_merge"], runs[good.pk]["adjudicated"]) == (0.6, None)
    assert runs[good.pk]["adjudication"] is None
    assert (runs[bad.pk]["would_merge"], runs[bad.pk]["adjudicated"]) == (0.2, "small_changes")
    assert runs[bad.pk]["adjudication"]["note"] == "Close: rename one function."
    assert runs[bad.pk]["adjudication"]["by"] == "lena"
    errored = next(run for run in data["runs"] if run["status"] == Run.ERRORED)
    assert (errored["would_merge"], errored["adjudicated"]) == (None, None)

    rows = {
        int(row["run_id"]): row
        for row in csv.DictReader(io.StringIO(exports.results_csv(exported["campaign"])))
    }
    assert (rows[good.pk]["would_merge"], rows[good.pk]["adjudicated"]) == ("0.6", "")
    assert (rows[bad.pk]["would_merge"], rows[bad.pk]["adjudicated"]) == ("0.2", "small_changes")


def test_it_adds_transcripts_only_when_asked(exported):
    data = json.loads(run_command(str(exported["campaign"].pk), "--transcripts"))

    run = next(r for r in data["runs"] if r["id"] == exported["good"].pk)
    assert run["transcript"]["schema_version"] == "ATIF-v1.4"


def test_it_writes_one_csv_row_per_run_with_verdict_counts(exported):
    text = run_command(str(exported["campaign"].pk), "--format", "csv")

    rows = {int(row["run_id"]): row for row in csv.DictReader(io.StringIO(text))}
    assert len(rows) == 3
    good = rows[exported["good"].pk]
    assert (good["prompt"], good["contestant"], good["cost_usd"]) == (
        "partial-refunds",
        "qwen",
        "0.41",
    )
    assert (good["tests_command"], good["tests_passed"]) == ("pytest -q tests/payments", "True")
    assert (good["tests_passed_count"], good["tests_failed_count"]) == ("12", "0")
    assert (good["verdict_yes"], good["verdict_small_changes"], good["verdict_no"]) == (
        "1",
        "1",
        "0",
    )
    assert (good["files_changed"], good["clarifying_questions"]) == ("2", "1")
    assert rows[exported["bad"].pk]["reviews"] == "1"
    assert (good["test_files_modified"], rows[exported["bad"].pk]["test_files_modified"]) == (
        "0",
        "1",
    )


def test_it_rejects_an_unknown_campaign(db):
    with pytest.raises(CommandError, match="No campaign with id 999"):
        run_command("999")


def test_it_reports_duration_from_the_run_times(exported):
    run = exported["good"]
    Run.objects.filter(pk=run.pk).update(finished_at=run.started_at + timedelta(seconds=812.4))

    data = exports.results(exported["campaign"])

    assert next(r for r in data["runs"] if r["id"] == run.pk)["duration_s"] == 812.4


def test_it_exports_the_acceptance_criteria_each_reviewer_ticked(exported):
    good = exported["good"]
    review = good.reviews.order_by("reviewer__username").first()
    review.acceptance_met = ["A refund can never exceed the captured amount"]
    review.save()

    data = json.loads(run_command(str(exported["campaign"].pk)))

    run = next(r for r in data["runs"] if r["id"] == good.pk)
    assert [r["acceptance_met"] for r in run["reviews"]] == [
        ["A refund can never exceed the captured amount"],
        [],
    ]

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
from scoring import exports, stats
from scoring.models import Comparison, Review
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
    bad = build.run(campaign, prompt, demo, ["no"])
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
    assert board["qwen"]["runs"] == 1 and board["qwen"]["merge_rate"] == 0.0  # 1 yes of 2
    assert board["demo"]["label"] == "demo (scripted)"
    assert board["demo"]["runs"] == 1  # the errored run is not reviewable
    low, high = stats.wilson_interval(0, 1)
    assert board["qwen"]["merge_rate_ci"] == [round(low, 3), round(high, 3)]


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


def test_it_rejects_an_unknown_campaign(db):
    with pytest.raises(CommandError, match="No campaign with id 999"):
        run_command("999")


def test_it_reports_duration_from_the_run_times(exported):
    run = exported["good"]
    Run.objects.filter(pk=run.pk).update(finished_at=run.started_at + timedelta(seconds=812.4))

    data = exports.results(exported["campaign"])

    assert next(r for r in data["runs"] if r["id"] == run.pk)["duration_s"] == 812.4

"""A campaign's results as data: the JSON of FORMATS.md "Results export", and a CSV of runs."""

from __future__ import annotations

import csv
import io
from collections import Counter

from django.db.models import Prefetch

from runs import redaction
from runs.models import Campaign, Run
from scoring import leaderboard
from scoring.models import DEFAULT_SMALL_CHANGES_VALUE, VERDICTS, Comparison, Review, Rubric

CSV_COLUMNS = [
    "run_id", "prompt", "contestant", "repeat", "status", "agent_status", "duration_s",
    "input_tokens", "output_tokens", "cost_usd", "steps", "clarifying_questions",
    "files_changed", "additions", "deletions", "expected_files_recall", "tests_command",
    "tests_exit_code", "tests_passed", "tests_passed_count", "tests_failed_count",
    "test_files_modified", "reviews",
    *(f"verdict_{value}" for value, _ in VERDICTS), "would_merge", "adjudicated",
]  # fmt: skip


def _runs(campaign: Campaign):
    submitted = Review.objects.submitted().select_related("reviewer").order_by("id")
    return (
        campaign.runs.select_related("prompt", "contestant__model", "adjudication__decided_by")
        .prefetch_related(Prefetch("reviews", queryset=submitted, to_attr="submitted_reviews"))
        .order_by("id")
    )


def _prompt_key(run: Run) -> str:
    return run.snapshot.get("prompt", {}).get("key") or run.prompt.key


def _tests(run: Run) -> dict:
    command = run.snapshot.get("prompt", {}).get("test") or ""
    return {
        "command": command,
        "exit_code": run.test_exit_code,
        "passed": None if run.test_exit_code is None else run.test_exit_code == 0,
        # From the JUnit XML the command wrote, if it wrote one; else null.
        "passed_count": run.tests_passed,
        "failed_count": run.tests_failed,
    }


def _clarifying_questions(run: Run) -> list[str]:
    return [entry["question"] for entry in run.questions if isinstance(entry, dict)]


def _small_changes_value(campaign: Campaign) -> float:
    rubric = Rubric.for_campaign(campaign)
    return rubric.small_changes_value if rubric else DEFAULT_SMALL_CHANGES_VALUE


def _adjudication(run: Run):
    return getattr(run, "adjudication", None)


def _would_merge(run: Run, small_changes_value: float) -> float | None:
    """The run's value as the leaderboard reads it by default: the mean of its reviews'
    verdicts, or the lead's verdict where one adjudicated it; null when neither exists."""
    adjudication = _adjudication(run)
    value = leaderboard.would_merge(
        [review.verdict for review in run.submitted_reviews],
        small_changes_value,
        adjudicated=adjudication.verdict if adjudication else None,
    )
    return None if value is None else round(value, 3)


def _run_entry(run: Run, *, transcripts: bool, small_changes_value: float) -> dict:
    adjudication = _adjudication(run)
    entry = {
        "id": run.pk,
        "prompt": _prompt_key(run),
        "contestant": run.contestant.name,
        "scripted": run.contestant.is_scripted,
        "repeat": run.repeat,
        "status": run.status,
        "agent_status": run.agent_status,
        "duration_s": run.duration_s,
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cost_usd": run.cost_usd,
        },
        "steps": run.steps,
        "clarifying_questions": _clarifying_questions(run),
        "diff": run.diff,
        "files_changed": list(run.files_changed),
        "additions": run.additions,
        "deletions": run.deletions,
        "expected_files_recall": run.expected_files_recall,
        "tests": _tests(run),
        # Protected test files the agent changed (put back before its tests ran).
        "test_files_modified": list(run.test_files_modified),
        "reviews": [
            {
                "reviewer": review.reviewer.username,
                "verdict": review.verdict,
                "answers": review.answers,
                "notes": review.notes,
                "acceptance_met": list(review.acceptance_met),
            }
            for review in run.submitted_reviews
        ],
        "would_merge": _would_merge(run, small_changes_value),
        "adjudicated": adjudication.verdict if adjudication else None,
        "adjudication": {
            "verdict": adjudication.verdict,
            "note": adjudication.note,
            "by": adjudication.decided_by.username if adjudication.decided_by else None,
            "at": adjudication.decided_at.isoformat(),
        }
        if adjudication
        else None,
    }
    if transcripts:
        entry["transcript"] = run.transcript
    return entry


def results(campaign: Campaign, *, transcripts: bool = False) -> dict:
    """The campaign, every run with its submitted reviews, decided comparisons, leaderboard.

    Runs of every status are listed (a reader may want the errored ones too), each with its
    `would_merge` value and the lead's `adjudicated` verdict (null where there is none); the
    leaderboard is the page's default reading (the mean of the verdicts, errored runs counted as
    would not merge, cancelled runs left out). Transcripts can be large, so they
    are included only when asked for. Every string is scrubbed of secrets, so runs stored before
    artifacts were scrubbed export clean too.
    """
    small_changes_value = _small_changes_value(campaign)
    comparisons = (
        Comparison.objects.filter(run_a__campaign=campaign, decided_at__isnull=False)
        .exclude(outcome="")
        .select_related("prompt", "reviewer")
        .order_by("id")
    )
    document = {
        "campaign": {
            "id": campaign.pk,
            "name": campaign.name,
            "prompt_set": campaign.prompt_set.name,
            "created_at": campaign.created_at.isoformat(),
        },
        "runs": [
            _run_entry(run, transcripts=transcripts, small_changes_value=small_changes_value)
            for run in _runs(campaign)
        ],
        "comparisons": [
            {
                "prompt": comparison.prompt.key,
                "a": comparison.run_a_id,
                "b": comparison.run_b_id,
                "outcome": comparison.outcome,
                "reviewer": comparison.reviewer.username,
                "reason": comparison.reason,
            }
            for comparison in comparisons
        ],
        "leaderboard": leaderboard.rows(leaderboard.Filters(campaign_id=campaign.pk)),
    }
    return redaction.scrub_data(document)


def results_csv(campaign: Campaign) -> str:
    """One row per run: the scalar fields of `results`, with verdict counts instead of reviews."""
    output = io.StringIO()
    writer = csv.writer(output)
    writer.writerow(CSV_COLUMNS)
    small_changes_value = _small_changes_value(campaign)
    for run in _runs(campaign):
        tests = _tests(run)
        verdicts = Counter(review.verdict for review in run.submitted_reviews)
        values = [
            run.pk,
            _prompt_key(run),
            run.contestant.name,
            run.repeat,
            run.status,
            run.agent_status,
            run.duration_s,
            run.input_tokens,
            run.output_tokens,
            run.cost_usd,
            run.steps,
            len(_clarifying_questions(run)),
            len(run.files_changed),
            run.additions,
            run.deletions,
            run.expected_files_recall,
            tests["command"],
            tests["exit_code"],
            tests["passed"],
            tests["passed_count"],
            tests["failed_count"],
            len(run.test_files_modified),
            len(run.submitted_reviews),
            *(verdicts.get(value, 0) for value, _ in VERDICTS),
            _would_merge(run, small_changes_value),
            run.adjudication.verdict if _adjudication(run) else None,
        ]
        writer.writerow(["" if value is None else redaction.scrub_data(value) for value in values])
    return output.getvalue()

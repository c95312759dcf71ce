"""docs/ci.md's gate script, run as written against a live server: it launches a campaign and
fails once the new contestant's whole interval lies below the baseline's merge rate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from api import tokens
from runs.models import Campaign, Run
from scoring.models import Review

DOC = Path(settings.BASE_DIR) / "docs" / "ci.md"


def _review(campaign: Campaign, reviewer, verdicts: dict[str, str]) -> None:
    now = timezone.now()
    campaign.runs.update(status=Run.FINISHED, started_at=now, finished_at=now)
    Review.objects.filter(run__campaign=campaign).delete()
    for run in campaign.runs.select_related("contestant"):
        Review.objects.create(
            run=run, reviewer=reviewer, verdict=verdicts[run.contestant.name], submitted_at=now
        )


@pytest.mark.django_db(transaction=True)
def test_the_documented_gate_launches_and_fails_a_worse_model(
    live_server, curated, lead, scorer, tmp_path
):
    [script] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    gate = tmp_path / "mergeable_gate.py"
    gate.write_text(script)
    _row, token = tokens.create(lead, "ci")
    env = {
        "PATH": os.environ["PATH"],
        "MERGEABLE_URL": live_server.url,
        "MERGEABLE_TOKEN": token,
        "PROMPT_SET": "backend",
        "NEW_CONTESTANT": "alpha",
        "BASELINE_CONTESTANT": "beta",
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(gate), *args], env=env, capture_output=True, text=True, timeout=60
        )

    launched = run("launch")
    assert launched.returncode == 0, launched.stderr
    campaign = Campaign.objects.get(pk=int(launched.stdout))
    assert campaign.runs.count() == 2 * 2 * 2 and campaign.name == "CI: alpha"

    assert run("check", str(campaign.pk)).returncode == 2  # nothing reviewed yet

    _review(campaign, scorer, {"alpha": "no", "beta": "yes"})
    worse = run("check", str(campaign.pk))
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "FAIL" in worse.stderr and "alpha: merge rate 0%" in worse.stdout

    _review(campaign, scorer, {"alpha": "yes", "beta": "yes"})
    same = run("check", str(campaign.pk))
    assert same.returncode == 0, same.stdout + same.stderr

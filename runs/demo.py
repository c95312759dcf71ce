"""Demo data for `make run`: a real git repository, five prompts, two scripted contestants and a
campaign that has already gone through the real engine (checkout, agent, diff, tests).

Idempotent: every step checks what exists. Everything scripted is labelled as such.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from django.conf import settings

from runs import campaigns, execution
from runs.files import contestants, prompt_sets
from runs.models import Campaign, Contestant, PromptSet, Run

DEMO_DIR = Path(settings.BASE_DIR) / "demo"
PROMPT_SET_NAME = "demo-tinyshop"
CAMPAIGN_NAME = "Demo campaign (scripted contestants)"
CONTESTANTS = ("careful-agent", "hasty-agent")


def _git(cwd: Path, *args: str) -> str:
    # A fixed identity and date make the demo commit's sha the same on every machine.
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Mergeable Demo",
        "GIT_AUTHOR_EMAIL": "demo@mergeable.invalid",
        "GIT_COMMITTER_NAME": "Mergeable Demo",
        "GIT_COMMITTER_EMAIL": "demo@mergeable.invalid",
        "GIT_AUTHOR_DATE": "2026-01-01T12:00:00Z",
        "GIT_COMMITTER_DATE": "2026-01-01T12:00:00Z",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def ensure_repository(root: Path | None = None) -> tuple[Path, str]:
    """Create the demo git repository from demo/repo once; return its path and head commit."""
    root = root or Path(settings.MERGEABLE_LOCAL_REPO_ROOTS[0])
    path = root / "tinyshop"
    if not (path / ".git").is_dir():
        if path.exists():
            shutil.rmtree(path)
        shutil.copytree(DEMO_DIR / "repo", path)
        _git(path, "init", "-q")
        _git(path, "add", "-A")
        _git(path, "commit", "-q", "-m", "tinyshop: carts, prices and discounts")
    return path, _git(path, "rev-parse", "HEAD")


def load(*, run_campaign: bool = True) -> list[str]:
    lines = []
    repo_path, commit = ensure_repository()
    text = (DEMO_DIR / "prompt-set.yaml").read_text()
    text = text.replace("{repo_url}", str(repo_path)).replace("{commit}", commit)
    report = prompt_sets.import_prompt_set(text, filename="demo/prompt-set.yaml")
    lines.append(f"Demo prompt set {PROMPT_SET_NAME}: {_summary(report)}")
    report = contestants.import_contestants(
        (DEMO_DIR / "contestants.yaml").read_text(),
        filename="demo/contestants.yaml",
        base_dir=Path(settings.BASE_DIR),
    )
    lines.append(f"Demo contestants (scripted): {_summary(report)}")

    if run_campaign and not Campaign.objects.filter(name=CAMPAIGN_NAME).exists():
        campaign = campaigns.launch(
            prompt_set=PromptSet.objects.get(name=PROMPT_SET_NAME),
            contestants=list(Contestant.objects.filter(name__in=CONTESTANTS).order_by("name")),
            name=CAMPAIGN_NAME,
        )
        # Run it here, through the real engine, so a newcomer has runs to review at once.
        for run_id in campaign.runs.filter(status=Run.QUEUED).values_list("id", flat=True):
            execution.execute(run_id)
        progress = campaign.progress()
        counts = ", ".join(f"{n} {status}" for status, n in sorted(progress["counts"].items()))
        lines.append(f"Demo campaign ran: {counts or 'no runs'}.")
    return lines


def _summary(report) -> str:
    return (
        f"{len(report.created)} created, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged"
    )

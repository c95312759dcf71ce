"""Benchmark: the review page for a large diff (50 files, 10,000 changed lines).

Builds a finished run whose diff is made by real git, with before/after texts and a transcript
stored as artifacts the way the executor stores them, and renders the diff as the worker does
when a run ends (worker_render_s). Then GETs the review page as a scorer with Django's test
client: the first request (which reads the stored rendering, never renders), then 20 warm
requests. The floor is reading the stored artifacts the page needs (the rendered diff) in the same
process. Target: warm request <= 150 ms.

--bucket keeps the artifacts in an S3 bucket instead of MEDIA_ROOT: the one MERGEABLE_STORAGE_URL
names, or one on a local S3 server (moto) started for the run. Its floor is reading them from the
bucket.

If the review page's URL ("scoring:review") does not exist, prints {"skipped": ...} and exits 0.

    DEBUG=true .venv/bin/python bench/bench_review_page.py [--bucket]
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

from _common import (
    emit,
    git,
    log,
    make_repo,
    make_var_dir,
    median,
    percentile,
    profile,
    r,
    setup_django,
    timed,
)

FILES = 50
CHANGED_LINES = 10_000  # additions + deletions
LINES_PER_FILE = 600
HUNKS_PER_FILE = 10
WARM_REQUESTS = 20
TARGET_S = 0.150


# --- the diff ------------------------------------------------------------------------------


def before_text(index: int, rng: random.Random) -> str:
    lines = [f'"""Module {index}: generated for the review-page benchmark."""', ""]
    while len(lines) < LINES_PER_FILE:
        n = len(lines)
        lines += [
            f"def function_{n}(value: int, scale: float = {rng.random():.3f}) -> float:",
            f'    """Scale value {n} and offset it."""',
            f"    result = value * scale + {rng.randint(0, 999)}",
            "    return result",
            "",
        ]
    return "\n".join(lines[:LINES_PER_FILE]) + "\n"


def after_text(text: str) -> str:
    """Change CHANGED_LINES / 2 / FILES lines per file, in HUNKS_PER_FILE separate blocks."""
    lines = text.splitlines()
    per_file = CHANGED_LINES // 2 // FILES  # each changed line is one deletion and one addition
    per_hunk = per_file // HUNKS_PER_FILE
    spacing = len(lines) // HUNKS_PER_FILE
    for hunk in range(HUNKS_PER_FILE):
        start = hunk * spacing + 5
        for offset in range(per_hunk):
            number = start + offset
            lines[number] = f"{lines[number]}  # changed: line {number} now does something else"
    return "\n".join(lines) + "\n"


def make_diff(scratch: Path) -> tuple[str, dict[str, str], dict[str, str]]:
    """(patch, before texts, after texts) for FILES Python files, diffed by real git."""
    rng = random.Random(7)
    repo = scratch / "diff-repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    before = {f"src/pkg{i % 5}/module_{i}.py": before_text(i, rng) for i in range(FILES)}
    for path, text in before.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "before")
    after = {path: after_text(text) for path, text in before.items()}
    for path, text in after.items():
        (repo / path).write_text(text)
    patch = git(
        repo, "diff", "--binary", "--no-color", "--src-prefix=a/", "--dst-prefix=b/", "HEAD"
    )
    return patch + "\n", before, after


def transcript_json() -> str:
    """A modest transcript, as the builtin agent writes one."""
    from runs.transcript import TranscriptWriter, dumps

    saved: list[dict] = []
    writer = TranscriptWriter(
        agent_name="builtin", agent_version="1", model_name="bench-model", save=saved.append
    )
    writer.add_step("system", "You are a coding agent.")
    writer.add_step("user", "# Task: Change many modules\n\nMark every changed line.")
    for i in range(20):
        call = {"id": f"call_{i}", "name": "read_file", "arguments": {"path": f"src/m{i}.py"}}
        step = writer.add_step(
            "agent",
            f"Reading module {i}.",
            tool_calls=[call],
            metrics={"prompt_tokens": 1000, "completion_tokens": 50, "cost_usd": 0.001},
        )
        writer.add_observations(step, [(call["id"], "def f():\n    return 1\n" * 40)])
    writer.finish(
        prompt_tokens=20_000,
        completion_tokens=1_000,
        cost_usd=0.02,
        end_status="finished",
        summary="Changed the modules.",
        scripted=False,
    )
    return dumps(saved[-1])


# --- the world -----------------------------------------------------------------------------


def build_run(var_dir: Path):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from evalsite.roles import SCORER, set_role
    from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run

    log(f"making a diff of {FILES} files, {CHANGED_LINES} changed lines, with git")
    patch, before, after = make_diff(var_dir)
    origin = var_dir / "repos" / "origin"
    sha = make_repo(origin, {"README.md": "# origin\n"})
    repo = Repository.objects.create(name="origin", url=str(origin))
    prompt_set = PromptSet.objects.create(name="review-bench")
    prompt = Prompt.objects.create(
        prompt_set=prompt_set,
        key="many-modules",
        title="Change many modules",
        instructions="Mark every **changed** line.\n\n- one\n- two\n",
        repository=repo,
        commit=sha,
        acceptance_criteria=["Every module is marked"],
        expected_files=list(before)[:5],
    )
    model = LanguageModel.objects.create(name="bench-model", provider="openai", base_url="http://x")
    contestant = Contestant.objects.create(name="bench-agent", model=model)
    campaign = Campaign.objects.create(name="review-bench", prompt_set=prompt_set)
    campaign.contestants.set([contestant])
    now = timezone.now()
    run = Run.objects.create(
        campaign=campaign,
        prompt=prompt,
        contestant=contestant,
        snapshot={"prompt": prompt.snapshot(), "contestant": contestant.snapshot()},
        status=Run.FINISHED,
        agent_status="finished",
        started_at=now - timezone.timedelta(minutes=3),
        finished_at=now,
        steps=20,
        files_changed=sorted(after),
        additions=CHANGED_LINES // 2,
        deletions=CHANGED_LINES // 2,
    )
    run.save_artifact("diff.patch", patch)
    run.save_artifact("before.json", json.dumps(before))
    run.save_artifact("after.json", json.dumps(after))
    run.save_artifact("transcript.json", transcript_json())

    scorer = get_user_model().objects.create_user(username="bench-scorer", password="x" * 20)
    set_role(scorer, SCORER)
    return run, scorer


def read_artifacts(run) -> int:
    """The floor: what the page must at least read. Returns the bytes read."""
    from runs.models import Run

    run = Run.objects.get(pk=run.pk)
    cached = run.read_artifact("rendered_diff.json")
    if cached:
        json.loads(cached)
        return len(cached)
    texts = [run.read_artifact(name) for name in ("diff.patch", "before.json", "after.json")]
    json.loads(texts[1])
    json.loads(texts[2])
    return sum(len(text) for text in texts)


def start_bucket(var_dir: Path):
    """MERGEABLE_STORAGE_URL as given, or a bucket on a local S3 server; returns the server."""
    from tests.s3_server import TEST_KEYS, S3Server

    if os.environ.get("MERGEABLE_STORAGE_URL"):
        return None
    for name, value in TEST_KEYS.items():
        os.environ.setdefault(name, value)
    server = S3Server(var_dir / "s3-server.log")
    os.environ["MERGEABLE_STORAGE_URL"] = server.url("mergeable-bench", "review-page")
    log(f"artifacts in {os.environ['MERGEABLE_STORAGE_URL']}")
    return server


def main() -> None:
    var_dir = make_var_dir("bench-review")
    bucket = "--bucket" in sys.argv[1:]
    server = start_bucket(var_dir) if bucket else None
    try:
        extra = {"MERGEABLE_STORAGE_URL": os.environ["MERGEABLE_STORAGE_URL"]} if bucket else {}
        setup_django(var_dir, **extra)
        if bucket:
            from django.conf import settings

            from tests.s3_server import ensure_bucket

            ensure_bucket(settings.STORAGES["default"]["OPTIONS"])
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext
        from django.urls import NoReverseMatch, reverse

        from runs import rendered_diffs

        run, scorer = build_run(var_dir)
        # What the worker does when the run ends, so the first scorer never waits for pygments.
        worker_render_s, _ = timed(lambda: rendered_diffs.prerender(run))
        try:
            url = reverse("scoring:review", kwargs={"review_key": run.review_key})
        except NoReverseMatch:
            emit({"benchmark": "review_page", "skipped": "review page not found"})
            return
        client = Client()
        client.force_login(scorer)

        def get():
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"GET {url} answered {response.status_code}")
            return response

        log("cold request")
        cold_s, response = timed(get)
        if "module_49.py" not in response.content.decode():
            raise SystemExit("the review page does not show the diff's files")
        warm = []
        with CaptureQueriesContext(connection) as queries:
            for _ in range(WARM_REQUESTS):
                seconds, response = timed(get)
                warm.append(seconds)
        floor = [timed(lambda: read_artifacts(run))[0] for _ in range(WARM_REQUESTS)]
        warm_median = median(warm)
        log(f"cold {cold_s:.3f} s, warm median {warm_median:.3f} s")
        emit(
            {
                "benchmark": "review_page",
                "storage": "bucket" if bucket else "local",
                "files": FILES,
                "worker_render_s": r(worker_render_s),
                "changed_lines": CHANGED_LINES,
                "cold_s": r(cold_s),
                "warm_s_median": r(warm_median),
                "warm_s_p95": r(percentile(warm, 0.95)),
                "warm_s_max": r(max(warm)),
                "floor_s_median": r(median(floor)),
                "floor_bytes": read_artifacts(run),
                "response_bytes": len(response.content),
                "queries_per_warm_request": len(queries) / WARM_REQUESTS,
                "rendered_diff_cached": bool(run.read_artifact("rendered_diff.json")),
                "target_s": TARGET_S,
                "met": warm_median <= TARGET_S,
                "load_average_1m": r(os.getloadavg()[0], 2),
                **(profile(get, skip=("wrapper",)) if warm_median > TARGET_S else {}),
            }
        )
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

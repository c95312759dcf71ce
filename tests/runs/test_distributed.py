"""Real Celery workers and a real broker: the embedded filesystem queue on SQLite, or Redis and
PostgreSQL when `make test` runs the second suite. Workers are separate processes with their own
workspace roots, sharing only the database, the broker and Django storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from runs import campaigns, execution
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SCRIPT = """\
- tool_calls: [{name: run_command, arguments: {command: "sleep %(sleep)s"}}]
- tool_calls: [{name: write_file, arguments: {path: done.txt, content: "done\\n"}}]
- tool_calls: [{name: finish, arguments: {summary: done}}]
"""


def _database_env() -> dict[str, str]:
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return {"MERGEABLE_SQLITE_PATH": str(db["NAME"])}
    user = db.get("USER") or "postgres"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return {"DATABASE_URL": f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"}


class Worker:
    def __init__(
        self, name: str, workspace_root: Path, media_root: Path, env: dict | None = None
    ) -> None:
        self.name = name
        self.log = workspace_root.parent / f"{name}.log"
        env = {
            **os.environ,
            **_database_env(),
            "DEBUG": "true",
            "MERGEABLE_WORKSPACE_ROOT": str(workspace_root),
            "MEDIA_ROOT": str(media_root),
            # The test's own prefix in the bucket when storage is S3 (tests/conftest.py).
            "MERGEABLE_STORAGE_URL": settings.MERGEABLE_STORAGE_URL,
            "MERGEABLE_HEARTBEAT_SECONDS": "1",
            "MERGEABLE_LOCAL_REPO_ROOTS": ",".join(map(str, settings.MERGEABLE_LOCAL_REPO_ROOTS)),
            **(env or {}),
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "evalsite",
                "worker",
                "--pool=threads",
                "--concurrency=1",
                "--loglevel=INFO",
                f"--hostname={name}@%h",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        """Celery's cold shutdown (SIGQUIT): the test is over, so nothing is worth waiting for,
        unlike SIGTERM's warm shutdown, which waits for its consumer to wind down."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGQUIT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def workers(tmp_path, settings):
    _purge_broker()
    started: list[Worker] = []

    def start(name: str) -> Worker:
        worker = Worker(name, tmp_path / f"ws-{name}", settings.MEDIA_ROOT)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _purge_broker() -> None:
    from evalsite.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("celery")


def _campaign(make_repo, runs: int, sleep: float):
    path, sha = make_repo({"README.md": "hello\n"})
    repo = Repository.objects.create(name="r", url=str(path))
    prompt_set = PromptSet.objects.create(name="dist")
    for i in range(runs):
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=f"p{i}",
            title=f"P{i}",
            instructions="go",
            repository=repo,
            commit=sha,
            position=i,
        )
    model = LanguageModel.objects.create(
        name="s", provider="scripted", script=SCRIPT % {"sleep": sleep}
    )
    contestant = Contestant.objects.create(name="c", model=model)
    return campaigns.launch(prompt_set=prompt_set, contestants=[contestant])


def _wait_until(predicate, timeout: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            details = "\n".join(f"--- {w.name}\n{w.log.read_text()[-3000:]}" for w in logs)
            statuses = list(Run.objects.values_list("id", "status", "worker", "status_reason"))
            pytest.fail(f"timed out waiting for {what}: {statuses}\n{details}")
        time.sleep(0.3)
        connection.close()  # see other processes' commits with a fresh connection


def test_it_spreads_runs_over_two_workers_and_runs_nothing_twice(workers, make_repo):
    w1, w2 = workers("w1"), workers("w2")
    campaign = _campaign(make_repo, runs=6, sleep=1)
    _wait_until(lambda: not campaign.runs.active().exists(), 180, "all runs to end", [w1, w2])
    runs = list(campaign.runs.all())
    assert [r.status for r in runs] == [Run.FINISHED] * 6, [r.status_reason for r in runs]
    assert all(r.attempts == 1 for r in runs)
    assert {r.worker.split("@")[0] for r in runs} == {"w1", "w2"}
    assert all(r.files_changed == ["done.txt"] for r in runs)


def test_it_requeues_a_run_whose_worker_was_killed_and_finishes_it(workers, make_repo, settings):
    settings.MERGEABLE_STALE_AFTER_SECONDS = 3
    first = workers("doomed")
    campaign = _campaign(make_repo, runs=1, sleep=30)
    run = campaign.runs.get()
    _wait_until(
        lambda: Run.objects.filter(pk=run.pk, process_group__isnull=False).exists(),
        120,
        "the agent's command to start",
        [first],
    )
    first.kill()
    time.sleep(settings.MERGEABLE_STALE_AFTER_SECONDS + 1)
    assert execution.reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.QUEUED and "stopped responding" in run.status_reason
    # Shorten the script's sleep so the rescued attempt does not take 30 s.
    LanguageModel.objects.update(script=SCRIPT % {"sleep": 0})
    second = workers("rescuer")
    _wait_until(
        lambda: Run.objects.get(pk=run.pk).status in Run.ENDED_STATUSES,
        120,
        "the requeued run to finish",
        [second],
    )
    run.refresh_from_db()
    assert run.status == Run.FINISHED, run.status_reason
    assert run.attempts == 2
    assert run.worker.startswith("rescuer@")

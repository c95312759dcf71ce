"""Recovery does not wait behind the backlog: a worker started as bin/serve and docker-compose start
it (bin/worker) reaps lost runs while every run slot is busy. A real worker and the real broker."""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from evalsite.celery import app
from evalsite.operations import load
from runs import execution
from runs.models import Run
from tests.runs.test_distributed import _campaign, _database_env, _wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


class _Log:
    """What `_wait_until` prints when it gives up: the worker's log."""

    def __init__(self, name, path) -> None:
        self.name, self.log = name, path


@pytest.fixture
def bin_worker(tmp_path):
    with app.connection_for_write() as conn:
        for queue in ("celery", "bookkeeping"):
            conn.default_channel.queue_purge(queue)
    log = tmp_path / "worker.log"
    env = {
        **os.environ,
        **_database_env(),
        "DEBUG": "true",
        "MERGEABLE_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "MERGEABLE_STORAGE_URL": settings.MERGEABLE_STORAGE_URL,
        "MERGEABLE_HEARTBEAT_SECONDS": "1",
        "MERGEABLE_LOCAL_REPO_ROOTS": ",".join(map(str, settings.MERGEABLE_LOCAL_REPO_ROOTS)),
    }
    process = subprocess.Popen(
        [str(settings.BASE_DIR / "bin" / "worker"), "--concurrency=1", "--hostname=ops@%h"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield _Log("bin/worker", log)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_it_requeues_a_lost_run_while_every_run_slot_is_busy(bin_worker, make_repo):
    campaign = _campaign(make_repo, runs=2, sleep=120)
    started = campaign.runs.filter(process_group__isnull=False)
    # Whichever run the queue hands over first takes the only slot; the other one waits.
    _wait_until(started.exists, 120, "a run to take the only run slot", [bin_worker])
    busy = started.get()
    lost = campaign.runs.exclude(pk=busy.pk).get()
    # The second run's worker died mid-run: it holds the run, and has stopped beating.
    assert execution.claim(lost.pk, "gone@elsewhere:1")
    Run.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    app.tasks["runs.tasks.reap_stale_runs"].delay()  # what beat sends every few seconds

    _wait_until(
        lambda: Run.objects.get(pk=lost.pk).status == Run.QUEUED,
        30,
        "the bookkeeping pool to requeue the lost run",
        [bin_worker],
    )
    lost.refresh_from_db()
    assert "gone@elsewhere:1 stopped responding; requeued" in lost.status_reason
    assert Run.objects.get(pk=busy.pk).status == Run.RUNNING  # the slot was busy all along

    # The run pool heartbeats for the dashboard: one worker, its one slot in use, one run queued.
    _wait_until(lambda: load().workers, 30, "the worker's heartbeat", [bin_worker])
    measured = load()
    [worker] = measured.workers
    assert worker.name.startswith("ops@") and (worker.busy, worker.slots) == (1, 1)
    assert Run.objects.get(pk=busy.pk).worker == worker.name
    assert measured.queued == 1

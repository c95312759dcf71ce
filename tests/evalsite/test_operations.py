"""Operations: a lost run is requeued within a minute (settings, queues, priorities), and admins see
the load on the dashboard: workers alive, their busy slots, the queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from celery.signals import before_task_publish
from django.conf import settings as django_settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evalsite.celery import app
from evalsite.models import WorkerHeartbeat
from evalsite.operations import WorkerBeat, load
from runs import enqueue, execution
from runs.models import Run
from tests.scoring.test_review import make_run


def _queue_of(task: str) -> str:
    return app.amqp.router.route({}, task)["queue"].name


def _settings_with(**env: str) -> subprocess.CompletedProcess:
    """Load the settings in a fresh process, with no MERGEABLE_ variable but `env` (the test
    run's own settings are changed by fixtures)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MERGEABLE_")}
    script = (
        "import json; from django.conf import settings as s; print(json.dumps(["
        "s.MERGEABLE_HEARTBEAT_SECONDS, s.MERGEABLE_STALE_AFTER_SECONDS, "
        "s.MERGEABLE_REAP_SECONDS, s.CELERY_BEAT_SCHEDULE]))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=django_settings.BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "evalsite.settings", "DEBUG": "true", **env},
        capture_output=True,
        text=True,
    )


def test_it_detects_and_requeues_a_lost_run_within_a_minute_by_default(tmp_path):
    loaded = _settings_with(MERGEABLE_VAR_DIR=str(tmp_path))
    assert loaded.returncode == 0, loaded.stderr
    heartbeat, stale, reap, schedule = json.loads(loaded.stdout)
    # Killed just after a heartbeat: stale `stale` seconds later, requeued by the next tick.
    assert stale + reap <= 60
    # A run is stale only after several missed heartbeats, not one late one.
    assert stale >= 3 * heartbeat
    [entry] = [e for e in schedule.values() if e["task"] == "runs.tasks.reap_stale_runs"]
    assert entry["schedule"] == reap
    assert entry["options"]["expire_seconds"] <= reap  # a missed tick is dropped, never run late


def test_it_refuses_a_staleness_window_shorter_than_two_heartbeats(tmp_path):
    loaded = _settings_with(
        MERGEABLE_VAR_DIR=str(tmp_path),
        MERGEABLE_HEARTBEAT_SECONDS="20",
        MERGEABLE_STALE_AFTER_SECONDS="30",
    )
    assert loaded.returncode != 0
    assert "MERGEABLE_STALE_AFTER_SECONDS must be at least twice" in loaded.stderr


def test_it_sends_the_reaper_to_the_bookkeeping_queue_and_runs_to_the_run_queue():
    assert _queue_of("runs.tasks.reap_stale_runs") == "bookkeeping"
    for task in ("execute_run", "import_run", "check_repository", "check_model_connection"):
        assert _queue_of(f"runs.tasks.{task}") == "celery", task


@pytest.fixture
def published():
    """The queue and priority of every task message sent (to the real embedded broker)."""
    sent: list[tuple[str, str, int | None]] = []

    def record(sender=None, headers=None, properties=None, routing_key=None, **_kwargs):
        sent.append((sender, routing_key, (properties or {}).get("priority")))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_requeued_run_ahead_of_the_queued_ones(published):
    queued = make_run(status=Run.QUEUED)
    lost = make_run(queued.prompt, queued.contestant, status=Run.QUEUED, campaign=queued.campaign)

    enqueue.runs([queued.pk])
    assert execution.claim(lost.pk, "gone@elsewhere:1")
    Run.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert execution.reap_stale_runs() == [lost.pk]

    # Redis serves priority 0 before 6: the lost run takes the next free slot.
    assert published == [
        ("runs.tasks.execute_run", "celery", 6),
        ("runs.tasks.execute_run", "celery", 0),
    ]


# -- The dashboard's Workers panel ----------------------------------------------------------------


def _beat(name: str, slots: int, seen_seconds_ago: float = 1) -> WorkerHeartbeat:
    now = timezone.now()
    return WorkerHeartbeat.objects.create(
        name=name,
        slots=slots,
        started_at=now - timedelta(hours=2),
        seen_at=now - timedelta(seconds=seen_seconds_ago),
    )


def test_it_shows_admins_workers_alive_their_busy_slots_and_the_queue(client_for, admin_user):
    _beat("alpha@box-1:101", slots=8)
    _beat("beta@box-2:202", slots=4)
    _beat("dead@box-3:303", slots=8, seen_seconds_ago=600)  # killed: stale, not shown
    running = make_run(status=Run.RUNNING, worker="alpha@box-1:101")
    prompt, contestant, campaign = running.prompt, running.contestant, running.campaign
    make_run(prompt, contestant, status=Run.TESTING, campaign=campaign, worker="alpha@box-1:101")
    make_run(prompt, contestant, status=Run.RUNNING, campaign=campaign, worker="dead@box-3:303")
    make_run(prompt, contestant, status=Run.QUEUED, campaign=campaign, queued_at=timezone.now())
    make_run(
        prompt,
        contestant,
        status=Run.QUEUED,
        campaign=campaign,
        queued_at=timezone.now() - timedelta(minutes=25),
    )

    page = client_for(admin_user).get(reverse("dashboard")).content.decode()

    panel = page[page.index('id="load"') :]
    assert "<strong>2 of 12</strong> run slots in use on 2 workers alive" in panel
    assert 'alpha@box-1:101</td><td class="num">2 / 8' in panel
    assert 'beta@box-2:202</td><td class="num">0 / 4' in panel
    assert "dead@box-3:303" not in panel
    assert "1 run held by workers that stopped responding" in panel
    assert "<strong>2</strong> runs queued; the oldest has waited 25" in panel


def test_it_says_so_when_no_worker_is_alive(client_for, admin_user):
    _beat("dead@box-3:303", slots=8, seen_seconds_ago=600)
    make_run(status=Run.QUEUED)

    page = client_for(admin_user).get(reverse("dashboard")).content.decode()

    assert "<strong>0 of 0</strong> run slots in use on 0 workers alive" in page
    assert "No worker is alive" in page


def test_it_shows_the_load_to_admins_only(client_for, lead, scorer):
    _beat("alpha@box-1:101", slots=8)
    make_run(status=Run.QUEUED)

    for user in (lead, scorer):
        page = client_for(user).get(reverse("dashboard")).content.decode()
        assert page.count("<h1>Dashboard</h1>") == 1  # the page itself is shown
        assert 'id="load"' not in page and "alpha@box-1" not in page and "slots" not in page


def test_it_measures_the_load_in_three_queries_however_many_workers(db):
    first = make_run(status=Run.QUEUED)
    shared = {"prompt": first.prompt, "contestant": first.contestant, "campaign": first.campaign}
    for index in range(6):
        _beat(f"w{index}@box:{index}", slots=4)
        make_run(status=Run.RUNNING, worker=f"w{index}@box:{index}", **shared)

    with CaptureQueriesContext(connection) as queries:
        measured = load()

    assert len(queries) == 3
    assert (measured.busy, measured.slots, len(measured.workers)) == (6, 24, 6)


@pytest.mark.django_db(transaction=True)
def test_a_worker_heartbeats_until_it_stops_then_leaves(settings):
    settings.MERGEABLE_HEARTBEAT_SECONDS = 0.05
    _beat("forgotten@box:1", slots=2, seen_seconds_ago=2 * 86400)

    beat = WorkerBeat("mergeable@box:42", slots=8).start()
    first = _wait_for_row("mergeable@box:42").seen_at
    assert not WorkerHeartbeat.objects.filter(name="forgotten@box:1").exists()
    later = _wait_for_row("mergeable@box:42", after=first)
    assert later.slots == 8 and [w.name for w in load().workers] == ["mergeable@box:42"]

    beat.stop()
    assert not WorkerHeartbeat.objects.exists()


def _wait_for_row(name: str, after=None) -> WorkerHeartbeat:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = WorkerHeartbeat.objects.filter(name=name).first()
        if row is not None and (after is None or row.seen_at > after):
            return row
        time.sleep(0.02)
    raise AssertionError(f"no heartbeat from {name}")

"""bin/serve (what `make run` starts after its setup): a worker, beat and the web server that live
and die together, for real: the processes are started, killed and looked for in /proc."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(settings.BASE_DIR)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _processes_of(var_dir: Path) -> dict[int, str]:
    """pid -> command line of every live process started with MERGEABLE_VAR_DIR=`var_dir`:
    everything bin/serve started, wherever it was re-parented to."""
    marker = f"MERGEABLE_VAR_DIR={var_dir}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if marker in environ and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def _celery(processes: dict[int, str], command: str) -> list[int]:
    return [pid for pid, line in processes.items() if "celery" in line and f" {command}" in line]


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def served(tmp_path):
    """bin/serve running on a free port with its own var directory, fully up."""
    if sys.platform != "linux":
        pytest.skip("reads /proc")
    var_dir = tmp_path / "var"
    port = _free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DEBUG": "true",
        "MERGEABLE_VAR_DIR": str(var_dir),
        "MERGEABLE_SANDBOX": "none",
        "PORT": str(port),
    }
    migrate = [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True)
    # Its own session, so that whatever happens the test can clean up after it.
    serve = subprocess.Popen(
        [str(ROOT / "bin" / "serve")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: _answers(port), 60, "the web server")
        _wait_for(lambda: _celery(_processes_of(var_dir), "worker"), 30, "the worker")
        _wait_for(lambda: _celery(_processes_of(var_dir), "beat"), 30, "beat")
        yield serve, var_dir, port
    finally:
        for pid in _processes_of(var_dir):
            os.kill(pid, signal.SIGKILL)
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(10)


def _pool(processes: dict[int, str], queue: str) -> list[int]:
    return [pid for pid in _celery(processes, "worker") if f"--queues={queue}" in processes[pid]]


def test_it_runs_beat_as_its_own_process(served):
    _serve, var_dir, _port = served
    # bin/worker: the run pool, and the bookkeeping pool the reaper runs in.
    _wait_for(lambda: len(_celery(_processes_of(var_dir), "worker")) == 2, 30, "both pools")
    processes = _processes_of(var_dir)
    assert len(_pool(processes, "celery")) == 1 and len(_pool(processes, "bookkeeping")) == 1
    assert not any(" -B" in line for line in processes.values())
    _wait_for(lambda: "beat: Starting..." in (var_dir / "beat.log").read_text(), 30, "beat")
    # Its schedule is in the database (django-celery-beat), where leads' schedules are too.
    log = var_dir / "beat.log"
    _wait_for(lambda: "DatabaseScheduler" in log.read_text(), 10, "beat's database scheduler")


@pytest.mark.parametrize("queue", ["celery", "bookkeeping"])
def test_it_leaves_nothing_behind_when_a_worker_pool_is_killed(served, queue):
    serve, var_dir, port = served
    _wait_for(lambda: _pool(_processes_of(var_dir), queue), 30, f"the {queue} pool")
    [worker] = _pool(_processes_of(var_dir), queue)

    os.kill(worker, signal.SIGKILL)

    _wait_for(lambda: not _processes_of(var_dir), 15, "every process to stop")
    assert serve.wait(5) is not None
    assert not _answers(port)


def test_it_leaves_nothing_behind_when_beat_is_killed(served):
    serve, var_dir, port = served
    [beat] = _celery(_processes_of(var_dir), "beat")

    os.kill(beat, signal.SIGKILL)

    _wait_for(lambda: not _processes_of(var_dir), 15, "every process to stop")
    assert serve.wait(5) is not None
    assert not _answers(port)


def test_it_stops_everything_on_ctrl_c(served):
    serve, var_dir, _port = served

    os.kill(serve.pid, signal.SIGINT)

    _wait_for(lambda: not _processes_of(var_dir), 20, "every process to stop")
    assert serve.wait(5) == 130
    assert b"A Mergeable process ended" not in serve.stdout.read()

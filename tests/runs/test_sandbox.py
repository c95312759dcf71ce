"""The sandbox: what a command can and cannot touch, and how it is stopped.

Isolation tests run under bubblewrap and, where it makes sense, again under `none` to show that
the same test fails when there is no sandbox (so the isolation assertions can fail at all).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from runs import sandbox
from runs.caps import CGROUP_PARENT, CapLimits, RunCaps, cpu_shares, cpu_weight
from runs.sandbox import Limits, SandboxError, kill_process_group, run
from tests.conftest import needs

needs_bwrap = needs(
    shutil.which("bwrap") is not None,
    "bubblewrap (bwrap) is not installed, so the sandbox's isolation cannot be checked",
)
BUBBLEWRAP = pytest.param("bubblewrap", marks=needs_bwrap)
BOTH_BACKENDS = pytest.mark.parametrize("backend", ["none", BUBBLEWRAP])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    if os.geteuid() == 0:  # as execution does: a root worker's commands run as the owner
        os.chown(path, sandbox.NOBODY_UID, sandbox.NOBODY_UID)
    return path


def _processes_running(token: str) -> list[int]:
    """Host pids of live (non-zombie) processes whose command line contains `token`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if token.encode() in cmdline and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def _unique_sleep_seconds() -> str:
    # A sleep duration no other process on the host uses, so /proc can find exactly ours.
    return str(10_000 + uuid.uuid4().int % 1_000_000)


class _SleepWatcher(threading.Thread):
    """Waits until a `sleep TOKEN` is running, then calls `then()`; records that it saw it."""

    def __init__(self, token: str, then=lambda: None) -> None:
        super().__init__(daemon=True)
        self.token, self.then, self.seen = f"sleep\0{token}", then, threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _processes_running(self.token):
                self.seen.set()
                time.sleep(0.5)  # let the command settle before acting on it
                self.then()
                return
            time.sleep(0.02)


# --- Writing -------------------------------------------------------------------------------


@needs_bwrap
def test_it_lets_the_command_write_inside_the_workspace(workspace):
    result = run(
        "mkdir -p sub && echo hello > sub/f.txt", workspace, timeout=30, backend="bubblewrap"
    )

    assert result.exit_code == 0, result.output
    assert (workspace / "sub" / "f.txt").read_text() == "hello\n"


@needs_bwrap
@pytest.mark.parametrize("target", ["/etc/mergeable-sandbox-test", "HOME", "/usr/mergeable-x"])
def test_it_refuses_writes_to_the_system_and_home(workspace, target):
    if target == "HOME":
        target = str(Path.home() / f"mergeable-sandbox-test-{uuid.uuid4().hex}")
    try:
        result = run(f"echo x > {target}", workspace, timeout=30, backend="bubblewrap")

        assert result.exit_code != 0
        assert not Path(target).exists()
    finally:
        Path(target).unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("backend", "should_land"),
    [("none", True), pytest.param("bubblewrap", False, marks=needs_bwrap)],
)
def test_it_keeps_writes_to_a_directory_outside_the_workspace_off_the_host(
    tmp_path, workspace, backend, should_land
):
    outside = tmp_path / "outside"
    outside.mkdir()

    run(f"mkdir -p {outside} && echo x > {outside}/f.txt", workspace, timeout=30, backend=backend)

    assert (outside / "f.txt").exists() is should_land


@needs_bwrap
def test_it_mounts_extra_read_only_paths_readable_but_not_writable(tmp_path, workspace):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "hello.txt").write_text("from the host\n")
    (workspace / ".git").mkdir()

    result = run(
        f"cat {tools}/hello.txt; echo x > {tools}/new.txt; echo x > .git/new; echo x > ok.txt",
        workspace,
        timeout=30,
        backend="bubblewrap",
        extra_ro_paths=[tools, workspace / ".git"],
    )

    assert "from the host" in result.output
    assert not (tools / "new.txt").exists()
    assert not (workspace / ".git" / "new").exists()  # a read-only path inside the workspace
    assert (workspace / "ok.txt").exists()


@BOTH_BACKENDS
def test_it_stops_writes_past_the_file_size_limit(workspace, backend):
    result = run(
        "head -c 200000 /dev/zero > big.bin",
        workspace,
        timeout=30,
        backend=backend,
        limits=Limits(file_size_bytes=100_000),
    )

    assert result.exit_code != 0
    assert (workspace / "big.bin").stat().st_size == 100_000


# --- Network and home ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "reachable"), [("none", True), pytest.param("bubblewrap", False, marks=needs_bwrap)]
)
def test_it_cuts_the_command_off_from_the_hosts_network(workspace, backend, reachable):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        probe = (
            f'{sys.executable} -c "import socket; '
            f"socket.create_connection(('127.0.0.1', {port}), timeout=5); print('connected')\""
        )

        result = run(probe, workspace, timeout=30, backend=backend)

    assert ("connected" in result.output) is reachable, result.output
    if not reachable:
        assert "Errno" in result.output  # Python ran and the connection itself failed


@pytest.mark.parametrize(
    ("backend", "protected"), [("none", False), pytest.param("bubblewrap", True, marks=needs_bwrap)]
)
def test_it_keeps_the_hosts_git_config_out_of_reach(
    tmp_path, workspace, monkeypatch, backend, protected
):
    home = tmp_path / "home"
    home.mkdir()
    gitconfig = home / ".gitconfig"
    gitconfig.write_text("[user]\n\tname = Host Person\n")
    monkeypatch.setenv("HOME", str(home))  # never the real ~/.gitconfig, even if this test fails

    seen = run("git config --global user.name", workspace, timeout=30, backend=backend)
    changed = run("git config --global user.name Agent", workspace, timeout=30, backend=backend)

    assert ("Host Person" in seen.output) is not protected
    assert changed.exit_code == 0, changed.output  # git wrote a global config somewhere
    assert ("Host Person" in gitconfig.read_text()) is protected


@BOTH_BACKENDS
def test_it_passes_only_a_minimal_environment_plus_the_callers(workspace, monkeypatch, backend):
    monkeypatch.setenv("MERGEABLE_TEST_SECRET", "do-not-leak")

    result = run(
        "env", workspace, timeout=30, backend=backend, env={"MERGEABLE_GIVEN": "given-value"}
    )

    assert "MERGEABLE_GIVEN=given-value" in result.output
    assert "do-not-leak" not in result.output
    assert "HOME=" in result.output and "PATH=" in result.output


@BOTH_BACKENDS
def test_it_runs_commands_below_the_workers_cpu_priority(workspace, settings, backend):
    settings.MERGEABLE_SANDBOX_NICE = 7
    mine = os.getpriority(os.PRIO_PROCESS, 0)

    result = run("cut -d' ' -f19 /proc/self/stat", workspace, timeout=30, backend=backend)

    assert result.output.split() == [str(min(19, mine + 7))]


@BOTH_BACKENDS
def test_its_session_shares_the_cpu_at_that_priority_where_the_kernel_groups_sessions(
    workspace, settings, backend
):
    """With autogroup, niceness only ranks processes within a session's group and groups share
    the CPU equally: the command's own group must be lowered too, or eight busy sandboxes
    would each get as much CPU as the whole web server. Where the kernel does not group the
    command's session (no autogroup, or a CPU cgroup of its own, where the file reads empty)
    there is none to lower, and the command must still start."""
    settings.MERGEABLE_SANDBOX_NICE = 7
    mine = os.getpriority(os.PRIO_PROCESS, 0)

    result = run(
        "cat /proc/self/autogroup 2>/dev/null || echo no-groups", workspace, timeout=30,
        backend=backend,
    )  # fmt: skip

    assert result.exit_code == 0
    grouped = re.fullmatch(r"/autogroup-(\d+) nice (-?\d+)", result.output.strip())
    if grouped is None:
        assert result.output.strip() in ("", "no-groups")
        return
    own = Path("/proc/self/autogroup")
    worker = re.match(r"/autogroup-(\d+)", own.read_text() if own.exists() else "")
    assert worker is None or worker[1] != grouped[1]  # a session group of its own
    assert grouped[2] == str(min(19, mine + 7))


@BOTH_BACKENDS
def test_all_runs_together_weigh_on_the_cpu_as_one_process_at_their_commands_priority(
    workspace, settings, backend, request
):
    """Inside a CPU cgroup, a command's niceness and its session's group rank it only against
    the other processes of its group: the parent group of every run carries the weight of the
    commands' niceness, so that eight busy runs take no more CPU than one such process."""
    settings.MERGEABLE_SANDBOX_NICE = 7
    nice = sandbox.command_niceness()
    assert nice == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 7)
    # A parent of this test's own: runs of other tests, at other priorities, weigh the
    # site's parent meanwhile.
    parent = f"{CGROUP_PARENT}-test-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: _remove_parents(parent))

    with RunCaps(f"weight-{uuid.uuid4().hex[:8]}", CapLimits(), nice=nice, parent=parent) as caps:
        assert caps.version, "the suite runs as root, where the worker makes its cgroups"
        result = run("cat /proc/self/cgroup", workspace, timeout=30, backend=backend, caps=caps)

        lines = [line.split(":", 2) for line in result.output.splitlines()]
        if caps.version == 1:
            assert "cpu" in caps.groups  # this host has a cpu hierarchy, as most v1 hosts do
            weight, expected = caps.groups["cpu"].parent / "cpu.shares", cpu_shares(nice)
            [cpu_group] = [path for _, names, path in lines if "cpu" in names.split(",")]
        else:
            parent = caps.groups["pids"].parent
            if "cpu" not in (parent / "cgroup.controllers").read_text().split():
                return  # no CPU controller here: niceness and session groups rank the command
            weight, expected = parent / "cpu.weight", cpu_weight(nice)
            [cpu_group] = [path for number, _, path in lines if number == "0"]
        assert cpu_group.strip().endswith(f"/{parent}/{caps.name}")
        assert int(weight.read_text()) == expected < 1024


def _remove_parents(name: str) -> None:
    for parent in Path("/sys/fs/cgroup").glob(f"*/{name}"):
        parent.rmdir()
    if (Path("/sys/fs/cgroup") / name).is_dir():
        (Path("/sys/fs/cgroup") / name).rmdir()


def test_a_cpu_weight_the_host_refuses_leaves_the_caps_in_force(tmp_path):
    """The weight is a courtesy to the web server; the process and memory caps are not."""
    for controller in ("pids", "memory", "cpuacct", "cpu"):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / "cgroup.procs").write_text("")
    (tmp_path / "cpu" / CGROUP_PARENT / "cpu.shares").mkdir(parents=True)  # cannot be written

    # Opened only: a plain directory, unlike a cgroup, cannot be removed with its files in it.
    caps = RunCaps("refused-weight", CapLimits(), nice=19, cgroup_root=tmp_path).open()

    assert caps.version == 1 and "cpu" not in caps.groups
    assert caps.enforcement["processes"]["how"] == "cgroup v1 pids"
    assert caps.enforcement["memory"]["how"] == "cgroup v1 memory"
    assert not caps.unenforced()
    assert not (tmp_path / "cpu" / CGROUP_PARENT / "refused-weight").exists()


@BOTH_BACKENDS
def test_it_gives_every_command_the_operators_variables_and_the_callers_win(
    workspace, settings, backend
):
    settings.MERGEABLE_SANDBOX_ENV = {
        "PIP_INDEX_URL": "http://pypi.internal/",
        "SHARED": "operator",
    }

    result = run("env", workspace, timeout=30, backend=backend, env={"SHARED": "caller"})

    assert "PIP_INDEX_URL=http://pypi.internal/" in result.output
    assert "SHARED=caller" in result.output and "SHARED=operator" not in result.output


# --- Stopping ------------------------------------------------------------------------------


@BOTH_BACKENDS
def test_it_kills_children_and_grandchildren_on_timeout(workspace, backend):
    token = _unique_sleep_seconds()
    watcher = _SleepWatcher(token)
    watcher.start()

    result = run(
        f"setsid sleep {token} >/dev/null 2>&1 & echo $! > bg.pid; echo started; sleep {token}",
        workspace,
        timeout=2,
        backend=backend,
    )

    assert result.timed_out and not result.cancelled
    assert result.exit_code == 124
    assert "started" in result.output
    assert watcher.seen.is_set()  # the /proc scan below does find these sleeps while they run
    assert _processes_running(f"sleep\0{token}") == []
    if backend == "none":  # inside bubblewrap the pid in the file is a namespace pid
        background_pid = int((workspace / "bg.pid").read_text())
        assert background_pid not in _processes_running(token)


def test_it_finds_every_process_below_a_command_including_those_a_thread_started():
    """What the sandbox stops when a command ends: every process below it, found by walking
    down through each thread's children, as the table of every process on the host finds them.
    Here a thread, not the main one, starts a shell, which starts two sleeps."""
    import subprocess

    token = _unique_sleep_seconds()
    script = (
        "import subprocess, threading, time\n"
        "started = threading.Event()\n"
        "def spawn():\n"
        f"    subprocess.Popen(['sh', '-c', 'sleep {token} & sleep {token}; true'])\n"
        "    started.set()\n"
        "    time.sleep(60)\n"
        "threading.Thread(target=spawn, daemon=True).start()\n"
        "started.wait()\n"
        "time.sleep(60)\n"
    )
    leader = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(_processes_running(f"sleep\0{token}")) < 2:
            assert time.monotonic() < deadline, "the sleeps did not start"
            time.sleep(0.02)
        found = sandbox._descendants(leader.pid)
        names = sorted(Path(f"/proc/{pid}/comm").read_text().strip() for pid in found)
        assert names == ["sh", "sleep", "sleep"]
        assert set(_processes_running(f"sleep\0{token}")) <= set(found)
        assert found == sandbox._descendants_from_table(leader.pid)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
        for pid in _processes_running(f"sleep\0{token}"):
            os.kill(pid, signal.SIGKILL)


@BOTH_BACKENDS
def test_it_stops_the_command_when_cancelled(workspace, backend):
    token = _unique_sleep_seconds()
    cancel = threading.Event()
    _SleepWatcher(token, then=cancel.set).start()

    result = run(
        f"setsid sleep {token} >/dev/null 2>&1 & sleep {token}; echo finished",
        workspace,
        timeout=120,
        backend=backend,
        cancel=cancel,
    )

    assert result.cancelled and not result.timed_out
    assert result.exit_code == 130
    assert "finished" not in result.output
    assert _processes_running(f"sleep\0{token}") == []


@BOTH_BACKENDS
def test_it_can_be_killed_by_the_process_group_it_reports(workspace, backend):
    token = _unique_sleep_seconds()
    groups: list[int] = []
    _SleepWatcher(token, then=lambda: kill_process_group(groups[0])).start()

    result = run(
        f"setsid sleep {token} >/dev/null 2>&1 & sleep {token}",
        workspace,
        timeout=120,
        backend=backend,
        on_start=groups.append,
    )

    assert not result.timed_out and not result.cancelled
    assert result.exit_code == -signal.SIGKILL
    assert _processes_running(f"sleep\0{token}") == []
    kill_process_group(groups[0])  # the group is gone now; that must not raise


# --- Output and exit codes -----------------------------------------------------------------


@BOTH_BACKENDS
def test_it_merges_stdout_and_stderr(workspace, backend):
    result = run("echo to-out; echo to-err >&2", workspace, timeout=30, backend=backend)

    assert "to-out" in result.output and "to-err" in result.output
    assert not result.truncated


@BOTH_BACKENDS
def test_it_keeps_only_the_tail_of_long_output(workspace, backend):
    result = run(
        "head -c 3000000 /dev/zero | tr '\\0' a; echo; echo THE-END",
        workspace,
        timeout=60,
        backend=backend,
        output_cap=1000,
    )

    assert result.exit_code == 0
    assert result.truncated
    assert result.output.endswith("aaa\nTHE-END\n")
    assert len(result.output.encode()) == 1000


@pytest.mark.parametrize(
    ("backend", "command", "expected"),
    [
        ("none", "exit 3", 3),
        ("none", "kill -9 $$", -signal.SIGKILL),
        pytest.param("bubblewrap", "exit 3", 3, marks=needs_bwrap),
        # bwrap reports a signal death the way a shell does
        pytest.param("bubblewrap", "kill -9 $$", 128 + signal.SIGKILL, marks=needs_bwrap),
    ],
)
def test_it_reports_the_commands_exit_code(workspace, backend, command, expected):

    result = run(command, workspace, timeout=30, backend=backend)

    assert result.exit_code == expected
    assert not result.timed_out and not result.cancelled


@BOTH_BACKENDS
def test_it_runs_in_the_workspace_with_the_current_interpreter_mounted(workspace, backend):
    command = f"pwd; {sys.executable} -c 'import sys, django; print(sys.prefix)'"

    result = run(command, workspace, timeout=30, backend=backend)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(workspace.resolve()), sys.prefix]


def test_it_warns_once_per_process_that_commands_are_unsandboxed(workspace, monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "_warned_unsandboxed_pid", None)

    with caplog.at_level(logging.WARNING, logger="runs.sandbox"):
        run("true", workspace, timeout=30, backend="none")
        run("true", workspace, timeout=30, backend="none")

    assert [r.levelno for r in caplog.records if "UNSANDBOXED" in r.message] == [logging.WARNING]


# --- When the sandbox cannot start ---------------------------------------------------------


def test_it_refuses_a_missing_workspace(tmp_path):
    with pytest.raises(SandboxError, match="does not exist"):
        run("true", tmp_path / "missing", timeout=30, backend="none")


def test_it_refuses_an_unknown_backend(workspace):
    with pytest.raises(SandboxError, match="unknown sandbox backend"):
        run("true", workspace, timeout=30, backend="docker-someday")


def test_it_refuses_bubblewrap_when_bwrap_is_missing(tmp_path, workspace, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(SandboxError, match="bwrap"):
        run("true", workspace, timeout=30, backend="bubblewrap")


@needs_bwrap
def test_it_raises_when_bubblewrap_cannot_set_up(workspace, monkeypatch):
    build_argv = sandbox._bwrap_argv

    def broken_argv(*args, **kwargs):
        bwrap, *rest = build_argv(*args, **kwargs)
        return [bwrap, "--ro-bind", "/no/such/mergeable/path", "/x", *rest]

    monkeypatch.setattr(sandbox, "_bwrap_argv", broken_argv)

    with pytest.raises(SandboxError, match="/no/such/mergeable/path"):
        run("true", workspace, timeout=30, backend="bubblewrap")


def test_it_defaults_to_bubblewrap_only_where_bwrap_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_django_setting", lambda name, default: default)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    monkeypatch.setenv("PATH", str(fake_bin))
    assert sandbox.default_backend() == "none"

    (fake_bin / "bwrap").write_text("#!/bin/sh\n")
    (fake_bin / "bwrap").chmod(0o755)
    assert sandbox.default_backend() == "bubblewrap"


def test_it_prefers_the_configured_backend(monkeypatch):
    settings = {"MERGEABLE_SANDBOX": "none"}
    monkeypatch.setattr(
        sandbox, "_django_setting", lambda name, default: settings.get(name, default)
    )

    assert sandbox.default_backend() == "none"

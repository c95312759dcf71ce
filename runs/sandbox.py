"""Run a shell command inside a workspace, sandboxed where possible.

Every command an agent runs, and every setup or test command of a prompt, goes through `run`.
Two backends:

- ``bubblewrap``: no network, a read-only system, only the workspace writable, a fresh tmpfs
  ``/tmp`` (HOME lives there), all capabilities dropped, a new session, a private pid namespace,
  killed with its parent. The host's home directory is not mounted at all.
- ``none``: runs the command directly. For development only; logged loudly.

Both backends run ``/bin/sh -c COMMAND`` with cwd = workspace, a minimal environment (PATH, HOME,
LANG plus the caller's ``env``; nothing else of the worker's environment, so API keys never leak),
rlimits from `Limits`, stdin from /dev/null, and stdout and stderr merged. When the shell exits,
anything it left running in the background is killed too.
"""

from __future__ import annotations

import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

BACKENDS = ("none", "bubblewrap")
TIMEOUT_EXIT_CODE = 124  # what coreutils' `timeout` reports, so it reads familiar
CANCELLED_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports after Ctrl-C

# HOME inside bubblewrap: on the tmpfs, so `git config --global` and friends write somewhere
# harmless that vanishes with the command, and nothing lands in the workspace's diff.
SANDBOX_HOME = "/tmp/home"
_SYSTEM_DIRS = ("/usr", "/bin", "/lib", "/lib64", "/sbin", "/etc")
_TERM_GRACE_S = 2.0
_REAP_WAIT_S = 5.0
_READ_CHUNK = 65536
_SNAPSHOT_EVERY_S = 0.25

_warned_unsandboxed_pid: int | None = None


class SandboxError(Exception):
    """The sandbox itself could not start (never raised for the command's own failure)."""


@dataclass(frozen=True)
class Limits:
    """Per-process rlimits, inherited by everything the command starts.

    `cpu_seconds` is CPU time (not wall clock) per process. `processes` (RLIMIT_NPROC) counts
    every process of the same user on the host, not only the sandbox's; None leaves it alone.
    """

    cpu_seconds: int = 600
    file_size_bytes: int = 1 << 30
    open_files: int = 1024
    processes: int | None = None


@dataclass
class Result:
    exit_code: int  # bubblewrap reports a command killed by signal N as 128+N, `none` as -N
    output: str  # stdout+stderr, the last `output_cap` bytes, decoded with errors="replace"
    truncated: bool  # the output exceeded output_cap and its beginning was dropped
    timed_out: bool  # exit_code is then 124
    cancelled: bool  # exit_code is then 130
    duration_s: float


def default_backend() -> str:
    """settings.MERGEABLE_SANDBOX if Django is configured and sets it, else detect bwrap."""
    configured = _django_setting("MERGEABLE_SANDBOX", None)
    if configured:
        return str(configured)
    return "bubblewrap" if shutil.which("bwrap") else "none"


def kill_process_group(pgid: int) -> None:
    """SIGKILL a process group recorded from `on_start`; a group already gone is fine.

    Under bubblewrap this kills bwrap, and with it the whole pid namespace.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(
    command: str,
    workspace: Path,
    *,
    timeout: float,
    backend: str | None = None,
    env: dict[str, str] | None = None,
    output_cap: int = 64_000,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so sharing the default is safe
    cancel: threading.Event | None = None,
    on_start: Callable[[int], None] | None = None,
    extra_ro_paths: Sequence[Path] = (),
    network: bool = False,
    extra_rw_paths: Sequence[Path] = (),
) -> Result:
    """Run `command` with /bin/sh -c in `workspace` and return what happened.

    `timeout` is wall-clock seconds; on timeout, or when `cancel` is set, the whole process group
    gets SIGTERM, then SIGKILL after a short grace. `on_start(pgid)` is called once the process
    exists, so another process can stop it with `kill_process_group(pgid)`. `network=True`
    keeps the host's network (for CLI harnesses that must reach their model endpoint); everything
    else about the sandbox stays. `extra_rw_paths` are writable besides the workspace (a CLI
    harness's history files, kept outside the workspace so they never enter the diff). Raises SandboxError
    only when the sandbox cannot start: unknown backend, missing workspace, bwrap missing or
    failing to set up.
    """
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise SandboxError(f"unknown sandbox backend {backend!r}; expected one of {BACKENDS}")
    if not Path(workspace).is_dir():
        raise SandboxError(f"workspace {workspace} does not exist or is not a directory")
    workspace = Path(workspace).resolve()

    status_read = status_write = None
    if backend == "bubblewrap":
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError(
                "backend 'bubblewrap' needs the bwrap executable on PATH: install bubblewrap, "
                "or set MERGEABLE_SANDBOX = 'none' to run commands unsandboxed"
            )
        # bwrap writes {"exit-code": N} here only if the command really ran; that is how a
        # setup failure is told apart from a command that exits 1.
        status_read, status_write = os.pipe()
        ro_paths = [
            *_python_paths(),
            *extra_ro_paths,
            *_django_setting("MERGEABLE_SANDBOX_RO_PATHS", ()),
        ]
        argv = _bwrap_argv(
            bwrap,
            command,
            workspace,
            ro_paths,
            status_fd=status_write,
            network=network,
            rw_paths=extra_rw_paths,
        )
        child_env = _bwrap_env(env)
    else:
        _warn_unsandboxed()
        argv = ["/bin/sh", "-c", command]
        child_env = _direct_env(env)

    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=workspace,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(status_write,) if status_write is not None else (),
            preexec_fn=_rlimit_setter(limits),
        )
    except OSError as exc:
        if status_read is not None:
            os.close(status_read)
        raise SandboxError(f"could not start {argv[0]}: {exc}") from exc
    finally:
        if status_write is not None:
            os.close(status_write)

    try:
        if on_start is not None:
            on_start(proc.pid)
        tail, outcome = _collect(proc, started + timeout, output_cap, cancel)
    except BaseException:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()
        status = _read_all(status_read) if status_read is not None else b""

    if backend == "bubblewrap" and outcome == "exited" and proc.returncode >= 0:
        if b'"exit-code"' not in status:
            raise SandboxError(f"bubblewrap could not set up the sandbox: {tail.text().strip()}")

    exit_code = {"timed_out": TIMEOUT_EXIT_CODE, "cancelled": CANCELLED_EXIT_CODE}.get(
        outcome, proc.returncode
    )
    return Result(
        exit_code=exit_code,
        output=tail.text(),
        truncated=tail.truncated,
        timed_out=outcome == "timed_out",
        cancelled=outcome == "cancelled",
        duration_s=time.monotonic() - started,
    )


# --- Building the command line -------------------------------------------------------------


def _bwrap_argv(
    bwrap: str,
    command: str,
    workspace: Path,
    ro_paths: Sequence[Path],
    *,
    status_fd: int,
    network: bool = False,
    rw_paths: Sequence[Path] = (),
) -> list[str]:
    argv = [bwrap]
    for system_dir in _SYSTEM_DIRS:
        path = Path(system_dir)
        if path.is_symlink():  # merged-/usr systems: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), system_dir]
        elif path.is_dir():
            argv += ["--ro-bind", system_dir, system_dir]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    argv += ["--tmpfs", "/tmp", "--dir", SANDBOX_HOME]

    # Parents before children, so the more specific path wins: a workspace under a read-only
    # path stays writable, a read-only path inside the workspace (say its .git) stays read-only.
    binds = {str(Path(p).absolute()): "--ro-bind-try" for p in ro_paths}
    binds[str(workspace)] = "--bind"
    for path in rw_paths:
        binds[str(Path(path).absolute())] = "--bind"
    for path in sorted(binds, key=lambda p: len(Path(p).parts)):
        argv += [binds[path], path, path]

    argv += [
        "--remount-ro", "/",  # the root itself, so creating /root/x or /x fails too
        "--chdir", str(workspace),
        *([] if network else ["--unshare-net"]),
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        "--cap-drop", "ALL",
        "--new-session",
        "--die-with-parent",
        "--json-status-fd", str(status_fd),
        "--", "/bin/sh", "-c", command,
    ]  # fmt: skip
    return argv


def _python_paths() -> list[Path]:
    """The running interpreter and its virtualenv, so commands can use the same Python."""
    return [Path(sys.base_prefix), Path(sys.prefix)]


def _bwrap_env(env: dict[str, str] | None) -> dict[str, str]:
    # Passed to bwrap through its environment rather than --setenv, so values (tokens the caller
    # chose to pass) do not show up in `ps` on the host; bwrap hands its environment on as is.
    interpreter_bin = str(Path(sys.executable).parent)
    path = f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:{interpreter_bin}:/sbin:/bin"
    return {"PATH": path, "HOME": SANDBOX_HOME, "LANG": "C.UTF-8", **(env or {})}


def _direct_env(env: dict[str, str] | None) -> dict[str, str]:
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    interpreter_bin = str(Path(sys.executable).parent)
    if interpreter_bin not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{interpreter_bin}"
    home = os.environ.get("HOME", "/")
    return {"PATH": path, "HOME": home, "LANG": "C.UTF-8", **(env or {})}


def _rlimit_setter(limits: Limits) -> Callable[[], None]:
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ]
    if limits.processes is not None:
        wanted.append((resource.RLIMIT_NPROC, limits.processes))

    def set_limits() -> None:
        # Runs in the child between fork and exec: keep it to plain system calls.
        for which, value in wanted:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)  # an unprivileged worker cannot raise a hard limit
            resource.setrlimit(which, (value, value))

    return set_limits


def _warn_unsandboxed() -> None:
    global _warned_unsandboxed_pid
    if _warned_unsandboxed_pid != os.getpid():  # once per process, forked workers included
        _warned_unsandboxed_pid = os.getpid()
        logger.warning(
            "Sandbox backend 'none': commands run UNSANDBOXED, with this worker's user, files "
            "and network. Use it for development only; install bubblewrap for real runs."
        )


def _django_setting(name: str, default):
    try:
        from django.conf import settings
    except ImportError:
        return default
    if not settings.configured:
        return default
    return getattr(settings, name, default)


# --- Watching the process ------------------------------------------------------------------


class _Tail:
    """The last `cap` bytes written, in bounded memory however much output there is."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 0)
        self.buffer = bytearray()
        self.truncated = False

    def add(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > self.cap:
            del self.buffer[: len(self.buffer) - self.cap]
            self.truncated = True

    def text(self) -> str:
        return self.buffer.decode("utf-8", errors="replace")


def _collect(
    proc: subprocess.Popen, deadline: float, output_cap: int, cancel: threading.Event | None
) -> tuple[_Tail, str]:
    """Read output until the process exits, times out or is cancelled.

    Returns the tail and the outcome: "exited", "timed_out" or "cancelled". The process and
    everything it started are gone when this returns.
    """
    tail = _Tail(output_cap)
    fd = proc.stdout.fileno()
    # Who the command has started, refreshed now and then: if bwrap is killed from outside,
    # its children are orphaned before we notice, and this is how we still find them.
    known: dict[int, int] = {}
    next_snapshot = time.monotonic()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        at_eof = False
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                outcome = "cancelled"
                break
            if now >= deadline:
                outcome = "timed_out"
                break
            if proc.poll() is not None:
                outcome = "exited"  # what is still in the pipe is drained below
                break
            if now >= next_snapshot:
                known = _descendants(proc.pid)
                next_snapshot = now + _SNAPSHOT_EVERY_S
            if at_eof:
                time.sleep(0.05)  # output closed early; the process is still running
                continue
            if selector.select(timeout=min(0.1, max(deadline - now, 0))):
                data = os.read(fd, _READ_CHUNK)
                if data:
                    tail.add(data)
                else:
                    at_eof = True
                    selector.unregister(fd)
    # The shell is done or being stopped: whatever it left in the background goes too, so a
    # background process cannot keep the pipe open and the run going.
    _stop(proc, known)
    if not at_eof:
        _drain(fd, tail)
    return tail, outcome


def _drain(fd: int, tail: _Tail) -> None:
    """Read what the stopped processes left in the pipe; bounded, in case a writer escaped."""
    deadline = time.monotonic() + 1.0
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline and selector.select(timeout=0.1):
            data = os.read(fd, _READ_CHUNK)
            if not data:
                return
            tail.add(data)


def _stop(proc: subprocess.Popen, known: dict[int, int] | None = None) -> None:
    """SIGTERM the group, a short grace, then SIGKILL the group and every descendant.

    Descendants are tracked by pid as well as by group because some leave the group: under
    bubblewrap the command runs in its own session inside a pid namespace, which the kernel
    tears down asynchronously once bwrap dies. The namespace's init is bwrap's child, and it
    finishes exiting only after every other process in the namespace, so waiting for the
    descendants we know of to be gone means waiting for all of them.
    """
    tree = {**(known or {}), **_descendants(proc.pid)}
    tree = {pid: start for pid, start in tree.items() if _is_alive(pid, start)}
    if proc.poll() is None or tree:
        _signal_all(proc.pid, tree, signal.SIGTERM)
        _wait_gone(proc, tree, _TERM_GRACE_S)
    _signal_all(proc.pid, tree, signal.SIGKILL)
    _wait_gone(proc, tree, _REAP_WAIT_S)
    proc.wait()


def _signal_all(pgid: int, tree: dict[int, int], signum: int) -> None:
    _signal_group(pgid, signum)
    for pid, start_time in tree.items():
        if _is_alive(pid, start_time):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _wait_gone(proc: subprocess.Popen, tree: dict[int, int], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        leader_running = proc.poll() is None
        if not leader_running and not any(_is_alive(pid, start) for pid, start in tree.items()):
            return
        time.sleep(0.02)


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, state), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    return table


def _read_stat(pid: int) -> tuple[int, int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    state, parent, start_time = fields[0], int(fields[1]), int(fields[19])
    return parent, start_time, state


def _descendants(root: int) -> dict[int, int]:
    """pid -> start time of every process below `root`; the start time guards against reuse."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _start, _state) in table.items():
        children.setdefault(parent, []).append(pid)
    found, queue = {}, list(children.get(root, []))
    while queue:
        pid = queue.pop()
        found[pid] = table[pid][1]
        queue.extend(children.get(pid, []))
    return found


def _is_alive(pid: int, start_time: int) -> bool:
    stat = _read_stat(pid)
    # A zombie has finished; whoever reaps it (maybe a lazy container init) is not our concern.
    return stat is not None and stat[1] == start_time and stat[2] not in ("Z", "X")


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks)

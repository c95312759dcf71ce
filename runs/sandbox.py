"""Run a shell command inside a workspace, sandboxed where possible.

Every command an agent runs, and every setup or test command of a prompt, goes through `run`.
Two backends:

- ``bubblewrap``: its own network namespace with nothing but loopback (the run's model gateway,
  when given, is the one door: its Unix socket is mounted in and relayed to 127.0.0.1:PORT), a
  read-only system, only the workspace and the run's temporary directory writable (HOME lives
  there), all capabilities dropped, a new session, a private pid namespace, killed with its
  parent. The host's home directory is not mounted at all. A worker running as root runs the
  command as an unprivileged uid (the workspace's owner, else nobody), never as uid 0.
- ``none``: runs the command directly. For development only; logged loudly.

Both backends run ``/bin/sh -c COMMAND`` with cwd = workspace, a minimal environment (PATH, HOME,
LANG plus the caller's ``env``; nothing else of the worker's environment, so API keys never leak),
rlimits from `Limits`, stdin from /dev/null, and stdout and stderr merged. When the shell exits,
anything it left running in the background is killed too. With `caps` (runs.caps.RunCaps) the
command joins the run's control groups and is stopped when the run hits one of its caps.
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

from django.conf import settings

from runs import caps as run_caps
from runs.workspace import hand_over

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

# Inside the sandbox: where the gateway's socket and its relay are mounted, and the port the
# relay listens on. The namespace is the run's own, so one fixed port never collides.
GATEWAY_DIR = "/run/mergeable"
GATEWAY_SOCKET = f"{GATEWAY_DIR}/gateway.sock"
GATEWAY_PORT = 4000
_BRIDGE = Path(__file__).with_name("gateway_bridge.py")
NOBODY_UID = 65534

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
    address_space_bytes: int | None = None

    def tightened(self, caps: run_caps.RunCaps | None) -> Limits:
        """These limits, lowered to what the run's caps ask of every process."""
        if caps is None:
            return self
        wanted = caps.rlimits()

        def lower(current: int | None, cap: int | None) -> int | None:
            if cap is None:
                return current
            return cap if current is None else min(current, cap)

        return Limits(
            cpu_seconds=lower(self.cpu_seconds, wanted.get("cpu_seconds")),
            file_size_bytes=lower(self.file_size_bytes, wanted.get("file_size_bytes")),
            open_files=self.open_files,
            processes=lower(self.processes, wanted.get("processes")),
            address_space_bytes=lower(self.address_space_bytes, wanted.get("address_space_bytes")),
        )


@dataclass(frozen=True)
class GatewayDoor:
    """How a command reaches its run's model gateway: the Unix socket the gateway serves, and
    the loopback port it is relayed to where the command runs."""

    socket: Path
    port: int


@dataclass
class Result:
    exit_code: int  # bubblewrap reports a command killed by signal N as 128+N, `none` as -N
    output: str  # stdout+stderr, the last `output_cap` bytes, decoded with errors="replace"
    truncated: bool  # the output exceeded output_cap and its beginning was dropped
    timed_out: bool  # exit_code is then 124
    cancelled: bool  # exit_code is then 130
    duration_s: float
    cap: str | None = None  # the run cap this command hit (runs.caps); it was stopped for it


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
    caps: run_caps.RunCaps | None = None,
    gateway: GatewayDoor | None = None,
    tmp_dir: Path | None = None,
    uid: int | None = None,
) -> Result:
    """Run `command` with /bin/sh -c in `workspace` and return what happened.

    `timeout` is wall-clock seconds; on timeout, or when `cancel` is set, the whole process group
    gets SIGTERM, then SIGKILL after a short grace. `on_start(pgid)` is called once the process
    exists, so another process can stop it with `kill_process_group(pgid)`. `network` (true)
    keeps the host's network: only a prompt's setup command that opted in gets it. `gateway`
    makes the run's model gateway reachable at http://127.0.0.1:{gateway.port}. `extra_rw_paths`
    are writable besides the workspace (a CLI harness's history files, kept outside the workspace
    so they never enter the diff); `tmp_dir` is mounted as /tmp (else a fresh tmpfs). `caps`
    holds the run's caps: the command joins them and is stopped when one is hit. `uid` is who
    the command runs as when the worker is root (default: the workspace's owner, or nobody when
    that is root). Raises SandboxError only when the sandbox cannot start: unknown backend,
    missing workspace, bwrap or setpriv missing or failing to set up.
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
        if tmp_dir is not None:  # the one place the run's /tmp and HOME are made
            (Path(tmp_dir) / "home").mkdir(parents=True, exist_ok=True)
        run_as = _sandbox_uid(workspace, uid) if os.geteuid() == 0 else None
        if run_as is not None:
            # What the caller set up for the command to write (history files, configs) is the
            # command's to write. Nothing of the run's runs meanwhile to swap a directory for a
            # link: every command's processes are gone before the next one starts.
            for path in extra_rw_paths:
                hand_over(Path(path), run_as)
            if tmp_dir is not None:
                hand_over(Path(tmp_dir), run_as, recursive=False)
                hand_over(Path(tmp_dir) / "home", run_as, recursive=False)
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
            gateway=gateway,
            tmp_dir=tmp_dir,
            uid=run_as,
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
            preexec_fn=_child_setup(limits.tightened(caps), caps),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if status_read is not None:
            os.close(status_read)
        raise SandboxError(f"could not start {argv[0]}: {exc}") from exc
    finally:
        if status_write is not None:
            os.close(status_write)

    try:
        if on_start is not None:
            on_start(proc.pid)
        tail, outcome = _collect(proc, started + timeout, output_cap, cancel, caps)
    except BaseException:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()
        status = _read_all(status_read) if status_read is not None else b""
        if caps is not None:
            caps.kill_all()  # whatever slipped out of the process tree still sits in the cgroup

    if backend == "bubblewrap" and outcome == "exited" and proc.returncode >= 0:
        if b'"exit-code"' not in status:
            raise SandboxError(f"bubblewrap could not set up the sandbox: {tail.text().strip()}")

    exit_code = {
        "timed_out": TIMEOUT_EXIT_CODE,
        "cancelled": CANCELLED_EXIT_CODE,
        "cap": CANCELLED_EXIT_CODE,
    }.get(outcome, proc.returncode)
    cap = caps.check(measure_disk=True) if caps is not None else None
    return Result(
        exit_code=exit_code,
        output=tail.text(),
        truncated=tail.truncated,
        timed_out=outcome == "timed_out",
        cancelled=outcome == "cancelled",
        duration_s=time.monotonic() - started,
        cap=cap,
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
    gateway: GatewayDoor | None = None,
    tmp_dir: Path | None = None,
    uid: int | None = None,
) -> list[str]:
    argv = [bwrap]
    for system_dir in _SYSTEM_DIRS:
        path = Path(system_dir)
        if path.is_symlink():  # merged-/usr systems: /bin -> usr/bin
            argv += ["--symlink", os.readlink(path), system_dir]
        elif path.is_dir():
            argv += ["--ro-bind", system_dir, system_dir]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/dev/shm"]
    if tmp_dir is not None:
        argv += ["--bind", str(tmp_dir), "/tmp"]
    else:
        argv += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "0777", "--dir", SANDBOX_HOME]

    # Parents before children, so the more specific path wins: a workspace under a read-only
    # path stays writable, a read-only path inside the workspace (say its .git) stays read-only.
    binds = {str(Path(p).absolute()): "--ro-bind-try" for p in ro_paths}
    binds[str(workspace)] = "--bind"
    for path in rw_paths:
        binds[str(Path(path).absolute())] = "--bind"
    # bwrap makes missing parent directories owner-only; an unprivileged uid must pass them.
    made = {"/", "/tmp", *_SYSTEM_DIRS}
    for path in sorted(binds, key=lambda p: len(Path(p).parts)):
        for parent in map(str, reversed(Path(path).parents)):
            if parent not in made:  # (a parent inside an earlier bind exists: --dir is a no-op)
                argv += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        argv += [binds[path], path, path]
        made.add(path)

    entry = ["/bin/sh", "-c", command]
    if gateway is not None:
        argv += ["--perms", "0755", "--dir", GATEWAY_DIR]
        argv += ["--ro-bind", str(gateway.socket), GATEWAY_SOCKET]
        argv += ["--ro-bind", str(_BRIDGE), f"{GATEWAY_DIR}/bridge.py"]
        entry = [
            sys.executable,
            f"{GATEWAY_DIR}/bridge.py",
            GATEWAY_SOCKET,
            str(gateway.port),
            "--",
            *entry,
        ]

    argv += [
        "--remount-ro", "/",  # the root itself, so creating /root/x or /x fails too
        "--chdir", str(workspace),
        *([] if network else ["--unshare-net"]),
        "--unshare-pid", "--unshare-ipc", "--unshare-uts",
        # No --new-session: bwrap itself starts in a session of its own, with no controlling
        # terminal and no terminal among its descriptors (`run`), so nothing inside can reach
        # a terminal. A second session would also start a new scheduling group at the default
        # priority (`_lower_session_group`).
        "--die-with-parent",
        "--json-status-fd", str(status_fd),
    ]  # fmt: skip
    if uid is None:
        return [*argv, "--cap-drop", "ALL", "--", *entry]
    # A root worker's bwrap needs no user namespace; setpriv then drops to the run's uid with no
    # capabilities left, no supplementary groups and no way to regain privileges.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxError(
            "the worker runs as root and needs setpriv (util-linux) to drop to an unprivileged uid"
        )
    return [
        *argv,
        "--cap-drop", "ALL",
        "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP",
        "--", setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
        "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        *entry,
    ]  # fmt: skip


def _sandbox_uid(workspace: Path, uid: int | None) -> int:
    """Who a root worker's command runs as: never root."""
    if uid is None:
        uid = workspace.stat().st_uid
    return uid if uid != 0 else NOBODY_UID


def _python_paths() -> list[Path]:
    """The running interpreter and its virtualenv, so commands can use the same Python."""
    return [Path(sys.base_prefix), Path(sys.prefix)]


def _bwrap_env(env: dict[str, str] | None) -> dict[str, str]:
    # Passed to bwrap through its environment rather than --setenv, so values (tokens the caller
    # chose to pass) do not show up in `ps` on the host; bwrap hands its environment on as is.
    interpreter_bin = str(Path(sys.executable).parent)
    path = f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:{interpreter_bin}:/sbin:/bin"
    return {"PATH": path, "HOME": SANDBOX_HOME, "LANG": "C.UTF-8", **_operator_env(), **(env or {})}


def _direct_env(env: dict[str, str] | None) -> dict[str, str]:
    path = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    interpreter_bin = str(Path(sys.executable).parent)
    if interpreter_bin not in path.split(os.pathsep):
        path = f"{path}{os.pathsep}{interpreter_bin}"
    home = os.environ.get("HOME", "/")
    return {"PATH": path, "HOME": home, "LANG": "C.UTF-8", **_operator_env(), **(env or {})}


def _operator_env() -> dict[str, str]:
    """settings.MERGEABLE_SANDBOX_ENV: what the operator gives every command; the caller's own
    variables (a run's gateway token) win over it."""
    return dict(_django_setting("MERGEABLE_SANDBOX_ENV", {}))


def _lower_session_group(nice: int) -> None:
    """Give this new session's scheduling group the same niceness, where the kernel groups
    processes by session (autogroup, on by default in most distributions): there a process's
    own niceness only ranks it within its session, and every session shares the CPU equally,
    so eight sandboxes would each take as much as the whole web server. Best effort: without
    autogroup there is no file; an unprivileged process may change one group a tenth of a
    second (EAGAIN), so a second try follows a short wait."""
    for attempt in range(2):
        try:
            with open("/proc/self/autogroup", "w") as group:
                group.write(str(nice))
            return
        except BlockingIOError:
            if attempt == 0:
                time.sleep(0.11)
        except OSError:
            return


def command_niceness() -> int:
    """The niceness sandboxed commands run at: MERGEABLE_SANDBOX_NICE below this process."""
    lower_by = int(_django_setting("MERGEABLE_SANDBOX_NICE", 0))
    return min(19, os.getpriority(os.PRIO_PROCESS, 0) + lower_by)


def _child_setup(limits: Limits, caps: run_caps.RunCaps | None) -> Callable[[], None]:
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes),
        (resource.RLIMIT_NOFILE, limits.open_files),
    ]
    if limits.processes is not None:
        wanted.append((resource.RLIMIT_NPROC, limits.processes))
    if limits.address_space_bytes is not None:
        wanted.append((resource.RLIMIT_AS, limits.address_space_bytes))
    nice = command_niceness()

    def set_up() -> None:
        # Runs in the child between fork and exec: keep it to plain system calls.
        if nice > 0:
            # Below the worker and any web server on the same machine: an agent's busy loop
            # takes the CPU only when they leave it idle. Inherited by all it starts. The new
            # session's group starts at 0 whatever the worker's priority: it follows too.
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            _lower_session_group(nice)
        for which, value in wanted:
            _soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)  # an unprivileged worker cannot raise a hard limit
            resource.setrlimit(which, (value, value))
        if caps is not None:
            caps.join()

    return set_up


def _warn_unsandboxed() -> None:
    global _warned_unsandboxed_pid
    if _warned_unsandboxed_pid != os.getpid():  # once per process, forked workers included
        _warned_unsandboxed_pid = os.getpid()
        logger.warning(
            "Sandbox backend 'none': commands run UNSANDBOXED, with this worker's user, files "
            "and network. Use it for development only; install bubblewrap for real runs."
        )


def _django_setting(name: str, default):
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
    proc: subprocess.Popen,
    deadline: float,
    output_cap: int,
    cancel: threading.Event | None,
    caps: run_caps.RunCaps | None = None,
) -> tuple[_Tail, str]:
    """Read output until the process exits, times out, is cancelled or hits a run cap.

    Returns the tail and the outcome: "exited", "timed_out", "cancelled" or "cap". The process
    and everything it started are gone when this returns.
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
                if caps is not None and caps.check():
                    outcome = "cap"
                    break
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
    """pid -> start time of every process below `root`; the start time guards against reuse.

    A running command's tree is read four times a second. Walking down from `root` through each
    thread's list of children reads a few files per process of the tree; reading the parent of
    every process on the host read one file per process there (a few hundred on a busy worker,
    for each of its running commands). Kernels without those lists get the whole table."""
    if not _HAS_CHILDREN_LISTS:
        return _descendants_from_table(root)
    found: dict[int, int] = {}
    queue = _children(root)
    while queue:
        pid = queue.pop()
        if pid in found:
            continue
        stat = _read_stat(pid)
        if stat is None:  # gone since its parent listed it
            continue
        found[pid] = stat[1]
        queue.extend(_children(pid))
    return found


def _children(pid: int) -> list[int]:
    """The processes any thread of `pid` started that are still its children: not reaped yet,
    and not handed to another parent."""
    children = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/children", "rb") as f:
                children.extend(int(child) for child in f.read().split())
        except OSError:
            continue
    return children


def _descendants_from_table(root: int) -> dict[int, int]:
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


# Linux lists each thread's children in /proc when built with CONFIG_PROC_CHILDREN (most are).
_HAS_CHILDREN_LISTS = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


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

"""Caps over a whole run: processes, memory, disk and CPU time of everything the run starts.

One `RunCaps` per run attempt, open from before `setup` until after the tests. Every sandboxed
command of the run joins its control groups, so the caps hold across commands, not per process.
What the host offers decides how each cap is enforced, and `enforcement` says so for the run's
log and page:

- processes: a cgroup (v1 `pids`, or v2 with the pids controller); else, when the worker is root
  and sandboxed commands run as the run's own uid, RLIMIT_NPROC on that uid.
- memory: a cgroup (v1 `memory`, v2 `memory.max`); else RLIMIT_AS on each process.
- CPU time: the cgroup's cpuacct (v1) or cpu.stat (v2) usage, watched; else RLIMIT_CPU per process.
- disk: a watcher that adds up what the workspace, the run's temporary files and the harness's
  scratch directory hold; every file is also capped by RLIMIT_FSIZE.

Where the run's group has the CPU controller (v1 `cpu`, v2 `cpu`), the parent group of every
run gets the CPU weight of the commands' niceness (`nice`): inside a CPU cgroup, neither a
process's niceness nor its session's group ranks it against processes outside, so without the
weight all runs together would take as much CPU as everything else on the machine.

`check()` is called while commands run (runs.sandbox) and says which cap was hit; the caller
then stops the command and the run. No Django imports: callers pass the numbers.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "mergeable"
DISK_CHECK_INTERVAL_S = 1.0
DEFAULT_CPU_SHARES = 1024  # cgroup v1's cpu.shares of a nice-0 process; v2's cpu.weight is 100
# Caps that must hold before a run may start (unless the site allows otherwise).
REQUIRED = ("processes", "memory")

PROCESSES = "processes"
MEMORY = "memory"
DISK = "disk"
CPU = "cpu"


@dataclass(frozen=True)
class CapLimits:
    processes: int = 256
    memory_mb: int = 4096
    disk_mb: int = 10240
    cpu_seconds: int = 3600

    def describe(self, cap: str) -> str:
        return {
            PROCESSES: f"process cap ({self.processes} processes and threads)",
            MEMORY: f"memory cap ({self.memory_mb} MB)",
            DISK: f"disk cap ({self.disk_mb} MB written)",
            CPU: f"CPU time cap ({self.cpu_seconds} CPU seconds)",
        }[cap]


class CapsUnavailable(Exception):
    """A required cap cannot be enforced on this host, and the site requires it."""


class RunCaps:
    """The control groups, uid and watchers of one run. Use as a context manager."""

    def __init__(
        self,
        name: str,
        limits: CapLimits,
        *,
        watch_paths: Sequence[Path] = (),
        uid: int | None = None,
        nice: int = 0,
        cgroup_root: Path = CGROUP_ROOT,
        parent: str = CGROUP_PARENT,
    ) -> None:
        self.name = name
        self.limits = limits
        self.watch_paths = list(watch_paths)
        # Sandboxed commands run as this uid on the host (None: as the worker's own user).
        self.uid = uid
        self.nice = nice  # the niceness of the run's commands: the runs' CPU weight follows it
        self.cgroup_root = cgroup_root
        self.parent = parent  # the group of every run's group: it carries the runs' CPU weight
        self.groups: dict[str, Path] = {}  # controller -> this run's cgroup directory
        self.version = 0
        self.enforcement: dict[str, dict] = {}
        self.hit: str | None = None
        self._next_disk_check = 0.0
        self._disk_bytes = 0

    # --- Setting up and tearing down -----------------------------------------------------

    def __enter__(self) -> RunCaps:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> RunCaps:
        self._make_groups()
        self.enforcement = self._describe_enforcement()
        return self

    def close(self) -> None:
        """Kill whatever is left in the run's groups and remove them."""
        for path in self.groups.values():
            self._kill_members(path)
        for path in self.groups.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # members are still exiting
        self.groups = {}

    def unenforced(self) -> list[str]:
        return [cap for cap in REQUIRED if not self.enforcement.get(cap, {}).get("how")]

    def _make_groups(self) -> None:
        if os.geteuid() != 0:
            return  # an unprivileged worker cannot make cgroups on hosts without delegation
        v1 = {c: self.cgroup_root / c for c in ("pids", "memory", "cpuacct")}
        if all((path / "cgroup.procs").exists() for path in v1.values()):
            self._make_v1(v1)
            if self.groups:
                self._weigh_v1()
        elif "pids" in _read(self.cgroup_root / "cgroup.controllers").split():
            self._make_v2()

    def _make_v1(self, hierarchies: dict[str, Path]) -> None:
        made: dict[str, Path] = {}
        try:
            for controller, hierarchy in hierarchies.items():
                path = hierarchy / self.parent / self.name
                path.mkdir(parents=True, exist_ok=True)
                made[controller] = path
            _write(made["pids"] / "pids.max", self.limits.processes)
            memory = self.limits.memory_mb << 20
            _write(made["memory"] / "memory.limit_in_bytes", memory)
            if (made["memory"] / "memory.memsw.limit_in_bytes").exists():
                try:  # swap counts too, where the kernel accounts it
                    _write(made["memory"] / "memory.memsw.limit_in_bytes", memory)
                except OSError:
                    pass
        except OSError as exc:
            log.warning("cgroup v1 caps unavailable for %s: %s", self.name, exc)
            for path in made.values():
                _remove_quietly(path)
            return
        self.groups, self.version = made, 1

    def _weigh_v1(self) -> None:
        """The run's group in the v1 `cpu` hierarchy (often the cpuacct one), under a parent
        weighted by the commands' niceness. Best effort: no cap depends on it."""
        hierarchy = self.cgroup_root / "cpu"
        if not (hierarchy / "cgroup.procs").exists():
            return
        path = hierarchy / self.parent / self.name
        try:
            path.mkdir(parents=True, exist_ok=True)
            _write(path.parent / "cpu.shares", cpu_shares(self.nice))
        except OSError as exc:
            log.warning("no CPU weight for %s: %s", self.name, exc)
            if path.resolve() != self.groups["cpuacct"].resolve():
                _remove_quietly(path)
            return
        self.groups["cpu"] = path

    def _make_v2(self) -> None:
        parent = self.cgroup_root / self.parent
        path = parent / self.name
        try:
            parent.mkdir(exist_ok=True)
            wanted = [
                c
                for c in ("pids", "memory", "cpu")
                if c in _read(parent.parent / "cgroup.controllers").split()
            ]
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            path.mkdir(exist_ok=True)
            _write(path / "pids.max", self.limits.processes)
            if "memory" in wanted:
                _write(path / "memory.max", self.limits.memory_mb << 20)
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", 0)
        except OSError as exc:
            log.warning("cgroup v2 caps unavailable for %s: %s", self.name, exc)
            _remove_quietly(path)
            return
        self.groups = {"pids": path, "memory": path, "cpuacct": path}
        self.version = 2
        if (parent / "cpu.weight").exists():  # the root gives its children the CPU controller
            try:  # best effort: no cap depends on it
                _write(parent / "cpu.weight", cpu_weight(self.nice))
            except OSError as exc:
                log.warning("no CPU weight for %s: %s", self.name, exc)

    def _describe_enforcement(self) -> dict[str, dict]:
        limits = self.limits
        cgroup = f"cgroup v{self.version}"
        root_uid = os.geteuid() == 0 and self.uid is not None
        how = {
            PROCESSES: f"{cgroup} pids"
            if "pids" in self.groups
            else ("RLIMIT_NPROC on the run's uid" if root_uid else ""),
            MEMORY: f"{cgroup} memory" if "memory" in self.groups else "RLIMIT_AS per process",
            CPU: f"{cgroup} CPU accounting, watched"
            if "cpuacct" in self.groups
            else "RLIMIT_CPU per process",
            DISK: "watcher over workspace, temporary and scratch files; RLIMIT_FSIZE per file",
        }
        values = {
            PROCESSES: limits.processes,
            MEMORY: f"{limits.memory_mb} MB",
            CPU: f"{limits.cpu_seconds} s",
            DISK: f"{limits.disk_mb} MB",
        }
        enforcement = {cap: {"limit": values[cap], "how": how[cap]} for cap in values}
        enforcement["uid"] = {
            "limit": self.uid if self.uid is not None else os.geteuid(),
            "how": "",
        }
        return enforcement

    # --- Joining, from a command's child process ------------------------------------------

    def rlimits(self) -> dict[str, int]:
        """Per-process rlimits that back the caps up (and stand in where no cgroup holds)."""
        wanted = {
            "cpu_seconds": self.limits.cpu_seconds,
            "file_size_bytes": self.limits.disk_mb << 20,
        }
        if "pids" not in self.groups and os.geteuid() == 0 and self.uid is not None:
            wanted["processes"] = self.limits.processes
        if "memory" not in self.groups:
            wanted["address_space_bytes"] = self.limits.memory_mb << 20
        return wanted

    def join(self) -> None:
        """Move the calling process into the run's groups. Runs between fork and exec."""
        pid = str(os.getpid()).encode()
        for path in dict.fromkeys(self.groups.values()):
            descriptor = os.open(path / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(descriptor, pid)
            finally:
                os.close(descriptor)

    # --- Watching ---------------------------------------------------------------------------

    def check(self, *, measure_disk: bool = False) -> str | None:
        """The cap the run has hit (and keeps it in `hit`), or None. Cheap; call often: the
        disk is measured at most once a second, unless `measure_disk` asks for it now."""
        if self.hit:
            return self.hit
        hit = self._cgroup_hit()
        if hit is None and (measure_disk or time.monotonic() >= self._next_disk_check):
            self._next_disk_check = time.monotonic() + DISK_CHECK_INTERVAL_S
            self._disk_bytes = disk_usage(self.watch_paths)
            if self._disk_bytes > self.limits.disk_mb << 20:
                hit = DISK
        if hit:
            self.hit = hit
            log.warning("run %s hit its %s", self.name, self.limits.describe(hit))
        return hit

    def describe_hit(self) -> str:
        if not self.hit:
            return ""
        return f"The run hit its {self.limits.describe(self.hit)} and was stopped"

    def kill_all(self) -> None:
        """SIGKILL every process in the run's groups (stragglers, a fork bomb's children)."""
        for path in dict.fromkeys(self.groups.values()):
            self._kill_members(path)

    def _cgroup_hit(self) -> str | None:
        if not self.groups:
            return None
        if self.version == 1:
            if _events(self.groups["pids"] / "pids.events").get("max", 0) > 0:
                return PROCESSES
            oom = _events(self.groups["memory"] / "memory.oom_control")
            if oom.get("oom_kill", 0) > 0 or oom.get("under_oom", 0) > 0:
                return MEMORY
            usage_ns = int(_read(self.groups["cpuacct"] / "cpuacct.usage") or 0)
            cpu_seconds = usage_ns / 1e9
        else:
            path = self.groups["pids"]
            if _events(path / "pids.events").get("max", 0) > 0:
                return PROCESSES
            if _events(path / "memory.events").get("oom_kill", 0) > 0:
                return MEMORY
            cpu_seconds = _events(path / "cpu.stat").get("usage_usec", 0) / 1e6
        if cpu_seconds > self.limits.cpu_seconds:
            return CPU
        return None

    @staticmethod
    def _kill_members(path: Path) -> None:
        for _ in range(20):
            members = [int(p) for p in _read(path / "cgroup.procs").split()]
            if not members:
                return
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)


def cpu_shares(nice: int) -> int:
    """The scheduler's weight of a process at `nice` (Linux's table: 1024 at 0, a quarter less
    per step), as cgroup v1's cpu.shares, whose least is 2."""
    return max(2, round(DEFAULT_CPU_SHARES / 1.25 ** max(0, nice)))


def cpu_weight(nice: int) -> int:
    """The same weight on cgroup v2's scale (`cpu.weight`: 100 for a nice-0 process, least 1)."""
    return max(1, cpu_shares(nice) * 100 // DEFAULT_CPU_SHARES)


def disk_usage(paths: Sequence[Path]) -> int:
    """Bytes allocated to the files under `paths`, links not followed, hard links counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [os.fspath(p) for p in paths]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            key = (info.st_dev, info.st_ino)
            if info.st_nlink > 1:
                if key in seen:
                    continue
                seen.add(key)
            total += info.st_blocks * 512
    return total


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: object) -> None:
    path.write_text(str(value))


def _events(path: Path) -> dict[str, int]:
    """A flat keyed file ("name value" lines) such as pids.events or memory.oom_control."""
    found = {}
    for line in _read(path).splitlines():
        name, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            found[name] = int(value)
    return found


def _remove_quietly(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass

"""Benchmark: a worker SIGKILLed mid-run under a backlog; how long until its runs run again.

40 slow runs (a scripted agent whose command sleeps 20 s) on one worker with 8 run slots, started
as production starts it (bin/worker: the run pool and the bookkeeping pool), with Celery beat
sending the reaper. Once 8 runs are mid-command, the worker's whole process group is SIGKILLed and
a new bin/worker started at once; it takes 8 more runs from the backlog. The orphaned runs are
requeued when their heartbeat goes stale, ahead of the backlog, and run again in the next free
slots. All settings are the defaults (heartbeat, staleness window, reaper interval).

Reports, per orphaned run and as a maximum, the seconds from the kill to: requeued by the reaper,
running again (claimed by the new worker), finished. Checks that all 40 runs finish (none lost)
and that no run ran twice at once: a sampler lists, every 0.2 s, the live processes of each
run's attempts (found by the checkout directory `<run>-<attempt>` in their command line or working
directory) and the claims in the database. Target: every orphan running again <= 60 s after the
kill.

PostgreSQL (database `mergeable_bench_recovery`, created and dropped here) and Redis (db 9,
flushed before and after) on 127.0.0.1; else SQLite and the embedded queue, said under
"backend" (the embedded queue ignores priorities: requeued runs then wait behind the backlog).

    DEBUG=true .venv/bin/python bench/bench_recovery.py [--runs=40] [--slots=8] [--sleep=20]
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from _common import (
    ROOT,
    ServiceBackend,
    emit,
    int_arg,
    log,
    make_repo,
    make_var_dir,
    r,
    setup_django,
)

RUNS = int_arg("runs", 40)
SLOTS = int_arg("slots", 8)
SLEEP_S = int_arg("sleep", 20)
TARGET_S = 60
TIMEOUT_S = 600

SERVICES = ServiceBackend("mergeable_bench_recovery", redis_db=9)

SCRIPT = """\
- tool_calls: [{name: run_command, arguments: {command: "sleep %(sleep)s"}}]
- tool_calls: [{name: write_file, arguments: {path: done.txt, content: "done\\n"}}]
- tool_calls: [{name: finish, arguments: {summary: done}}]
"""


# --- processes -----------------------------------------------------------------------------


def start(argv: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as output:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole, and only it
        )


def start_worker(var_dir: Path, name: str) -> subprocess.Popen:
    argv = [str(ROOT / "bin" / "worker"), f"--concurrency={SLOTS}", f"--hostname={name}@%h"]
    return start(argv, var_dir / f"{name}.log")


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class AttemptSampler:
    """Every 0.2 s: which attempts of which runs have live processes. Two attempts of one run
    alive at once would be a run running twice."""

    def __init__(self, checkout_root: Path) -> None:
        self.pattern = re.compile(re.escape(str(checkout_root)) + r"/(\d+)-(\d+)(?:/|\b)")
        self.max_attempts_alive: Counter[int] = Counter()
        self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> AttemptSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=2)

    def attempts_alive(self) -> dict[int, set[int]]:
        alive: dict[int, set[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                try:
                    cwd = os.readlink(f"/proc/{entry}/cwd")
                except OSError:
                    cwd = ""
            except OSError:
                continue
            for match in self.pattern.finditer(f"{cmdline} {cwd}/"):
                alive.setdefault(int(match[1]), set()).add(int(match[2]))
        return alive

    def _sample(self) -> None:
        while not self.stop.wait(0.2):
            self.samples += 1
            for run_id, attempts in self.attempts_alive().items():
                self.max_attempts_alive[run_id] = max(
                    self.max_attempts_alive[run_id], len(attempts)
                )


# --- the drill -----------------------------------------------------------------------------


def build_campaign(var_dir: Path):
    from runs import campaigns
    from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository

    sha = make_repo(var_dir / "repos" / "app", {"README.md": "hello\n"})
    repository = Repository.objects.create(name="app", url=str(var_dir / "repos" / "app"))
    prompt_set = PromptSet.objects.create(name="recovery")
    for index in range(RUNS):
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=f"p{index}",
            title=f"P{index}",
            instructions="go",
            repository=repository,
            commit=sha,
            position=index,
        )
    model = LanguageModel.objects.create(
        name="slow", provider="scripted", script=SCRIPT % {"sleep": SLEEP_S}
    )
    contestant = Contestant.objects.create(name="slow", model=model)
    return campaigns.launch(prompt_set=prompt_set, contestants=[contestant], name="recovery")


def poll(what, predicate, timeout: float, processes=()) -> None:
    from django.db import close_old_connections

    deadline = time.monotonic() + timeout
    while not predicate():
        for process in processes:
            if process.poll() is not None:
                raise SystemExit(f"a process exited ({process.args[0]}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)
        close_old_connections()


def main() -> None:
    var_dir = make_var_dir("bench-recovery")
    backend, env, why = SERVICES.choose()
    log(f"backend: {backend} {why}")
    beat = first = second = None
    try:
        setup_django(var_dir, **env)
        from django.conf import settings
        from django.db import close_old_connections

        from runs.models import Run

        campaign = build_campaign(var_dir)
        runs = campaign.runs.all()
        beat_argv = [sys.executable, "-m", "celery", "-A", "evalsite", "beat", "--loglevel=INFO"]
        beat = start(beat_argv, var_dir / "beat.log")
        first = start_worker(var_dir, "first")
        with AttemptSampler(Path(settings.MERGEABLE_CHECKOUT_ROOT)) as sampler:
            log(f"{RUNS} runs queued; waiting for {SLOTS} to be mid-command")
            poll(
                "the first runs to start their command",
                lambda: (
                    runs.filter(process_group__isnull=False, status=Run.RUNNING).count() >= SLOTS
                ),
                180,
                [first, beat],
            )
            time.sleep(min(5, SLEEP_S / 4))  # well into the command
            orphans = {run.pk: run.worker for run in runs.filter(status__in=Run.CLAIMED_STATUSES)}
            killed_at = time.monotonic()
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            log(f"killed the worker's process group holding runs {sorted(orphans)}")
            second = start_worker(var_dir, "second")

            requeued_at: dict[int, float] = {}
            running_again_at: dict[int, float] = {}
            finished_at: dict[int, float] = {}
            deadline = killed_at + TIMEOUT_S
            last_report = 0.0
            while time.monotonic() < deadline:
                if second.poll() is not None or beat.poll() is not None:
                    raise SystemExit("the new worker or beat exited; see their logs")
                close_old_connections()
                now = time.monotonic() - killed_at
                rows = runs.filter(pk__in=orphans).values("pk", "status", "worker")
                for row in rows:
                    pk, status, worker = row["pk"], row["status"], row["worker"]
                    if status == Run.QUEUED:
                        requeued_at.setdefault(pk, now)
                    elif worker and worker != orphans[pk]:
                        requeued_at.setdefault(pk, now)  # between two samples
                        running_again_at.setdefault(pk, now)
                    if status in Run.ENDED_STATUSES:
                        finished_at.setdefault(pk, now)
                active = runs.filter(status__in=Run.ACTIVE_STATUSES).count()
                if not active:
                    break
                if now - last_report > 10:
                    log(
                        f"{now:.0f} s after the kill: {active} runs active, requeued "
                        f"{len(requeued_at)}, running again {len(running_again_at)}, "
                        f"finished {len(finished_at)} of {len(orphans)} orphans"
                    )
                    last_report = now
                time.sleep(0.2)
            total_s = time.monotonic() - killed_at
            time.sleep(0.5)  # one more sample

        statuses = Counter(runs.values_list("status", flat=True))
        attempts = Counter(runs.values_list("attempts", flat=True))
        twice = sorted(pk for pk, n in sampler.max_attempts_alive.items() if n > 1)
        again = [running_again_at.get(pk) for pk in orphans]
        worst = max((s for s in again if s is not None), default=None)
        all_again = None not in again
        figures = {
            "benchmark": "recovery",
            "backend": backend,
            **({"backend_note": why} if why else {}),
            "runs": RUNS,
            "slots": SLOTS,
            "command_sleep_s": SLEEP_S,
            "heartbeat_s": settings.MERGEABLE_HEARTBEAT_SECONDS,
            "stale_after_s": settings.MERGEABLE_STALE_AFTER_SECONDS,
            "reap_every_s": settings.MERGEABLE_REAP_SECONDS,
            "orphaned_runs": len(orphans),
            "kill_to_requeued_s": sorted(r(requeued_at[pk], 1) for pk in requeued_at),
            "kill_to_running_again_s": sorted(r(s, 1) for s in again if s is not None),
            "kill_to_finished_s": sorted(r(finished_at[pk], 1) for pk in finished_at),
            "kill_to_running_again_s_max": r(worst, 1),
            "kill_to_finished_s_max": r(max(finished_at.values(), default=0), 1) or None,
            "kill_to_all_runs_ended_s": r(total_s, 1),
            "status_counts": dict(statuses),
            "attempts_counts": {str(k): v for k, v in sorted(attempts.items())},
            "lost_runs": RUNS - statuses.get(Run.FINISHED, 0),
            "ran_twice_at_once": twice,
            "process_samples": sampler.samples,
            # How many runs the process scan saw at all: 0 would make the check above blind.
            "runs_seen_in_process_scan": len(sampler.max_attempts_alive),
            "target_s": TARGET_S,
            "met": all_again
            and worst is not None
            and worst <= TARGET_S
            and not twice
            and statuses.get(Run.FINISHED, 0) == RUNS,
            "load_average_1m": r(os.getloadavg()[0], 2),
        }
        emit(figures)
    finally:
        for process in (second, first, beat):
            stop(process)
        SERVICES.cleanup(backend, var_dir)


if __name__ == "__main__":
    main()

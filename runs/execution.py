"""execute(run_id): the run state machine, plain and directly testable.

queued → preparing → running ⇄ awaiting_answer → testing → finished
or failed (the contestant's fault), errored (the environment's fault, retryable), cancelled,
timed_out. A worker claims a run with one conditional UPDATE; a heartbeat thread keeps the claim
fresh and notices cancel requests; the reaper requeues runs whose heartbeat went stale. Every
write the worker then makes to the run is conditional on its claim: a worker that lost its run
writes nothing more and stops it.

After the agent has ended and its diff is captured, the prompt's test files are put back and its
hidden tests added (workspace.restore_test_files, add_hidden_tests): the tests that grade a run
are the prompt author's, never the agent's.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, transaction
from django.db.models import F, Sum
from django.utils import timezone

from runs import (
    agents,
    enqueue,
    gateway_bridge,
    redaction,
    rendered_diffs,
    sandbox,
    test_results,
    workspace,
)
from runs import caps as run_caps
from runs import gateway as run_gateway
from runs.agents import base
from runs.agents.cli import endpoint_problem
from runs.models import Campaign, KeyUnavailable, Run, column_text
from runs.transcript import TranscriptWriter, dumps
from runs.workers import worker_name

log = logging.getLogger(__name__)

DEFAULT_TIME_LIMIT = 1800
SETUP_TIMEOUT = 900
TEST_TIMEOUT = 900
TRANSCRIPT_SAVE_INTERVAL_S = 0.5


class EnvironmentFault(Exception):
    """Something outside the contestant's control failed: the run is errored and retryable."""


def claim(run_id: int, worker: str) -> bool:
    """Take a queued run for this worker. One conditional UPDATE: only one worker can win."""
    now = timezone.now()
    return bool(
        Run.objects.filter(
            pk=run_id, status=Run.QUEUED, attempts__lt=settings.MERGEABLE_MAX_ATTEMPTS
        ).update(
            status=Run.PREPARING,
            attempts=F("attempts") + 1,
            worker=worker,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            process_group=None,
        )
    )


class _Cancel(threading.Event):
    """A run's cancel event. It also says whether the run was lost: reaped, and perhaps handed to
    another worker. Then this worker stops the run and writes nothing more of it."""

    claim_lost = False

    def lose_claim(self) -> None:
        self.claim_lost = True
        self.set()


def _owned(run: Run):
    """The run's row while this worker owns it: claimed by it and not ended."""
    return Run.objects.filter(pk=run.pk, worker=run.worker, status__in=Run.CLAIMED_STATUSES)


def _set(run: Run, cancel: _Cancel, **fields) -> bool:
    """Write fields to the row and the object, only while this worker still owns the run.

    When it does not any more, nothing is written, the run is stopped, and the answer is False.
    """
    if not _owned(run).update(**fields):
        cancel.lose_claim()
        return False
    for name, value in fields.items():
        setattr(run, name, value)
    return True


def _save_artifact(run: Run, cancel: _Cancel, name: str, content: str | bytes) -> None:
    # Artifacts are the run's too: a lost run's are another worker's to write.
    if not cancel.claim_lost:
        run.save_artifact(name, content)


class _Heartbeat:
    """Keeps the claim fresh and turns a cancel request into a kill of the process group."""

    def __init__(self, run: Run, cancel: _Cancel) -> None:
        self.run = run
        self.cancel = cancel
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run.pk}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def _beat(self) -> None:
        interval = settings.MERGEABLE_HEARTBEAT_SECONDS
        try:
            while not self.stop.wait(min(interval, 1.0) if self.cancel.is_set() else interval):
                try:
                    self._check()
                except (DatabaseError, RuntimeError):
                    # A database hiccup must not kill the run; a long outage lets the reaper act.
                    log.warning("heartbeat for run %s failed", self.run.pk, exc_info=True)
        finally:
            try:
                close_old_connections()
            except (DatabaseError, RuntimeError):
                pass

    def _check(self) -> None:
        row = (
            Run.objects.filter(pk=self.run.pk)
            .values("cancel_requested", "process_group", "worker", "status")
            .first()
        )
        if row is None or row["worker"] != self.run.worker:
            self.cancel.lose_claim()  # deleted, or reaped (and perhaps handed to another worker)
            return
        if row["status"] not in Run.CLAIMED_STATUSES:
            # Ended: by this worker a moment ago, or by the reaper giving up on it. (Then the
            # next write finds the claim lost.)
            self.cancel.set()
            return
        if row["cancel_requested"]:
            self.cancel.set()
            if row["process_group"]:
                sandbox.kill_process_group(row["process_group"])
        _owned(self.run).update(heartbeat_at=timezone.now())


def execute(run_id: int, *, worker: str | None = None) -> str | None:
    """Run one run to its end. Returns the final status, or None if another worker has it."""
    worker = worker or worker_name()
    if not claim(run_id, worker):
        return None
    run = Run.objects.select_related("campaign", "contestant__model", "prompt").get(pk=run_id)
    cancel = _Cancel()
    if _budget_spent(run.campaign):
        _end(run, Run.CANCELLED, reason="The campaign's budget is spent")
        return Run.CANCELLED
    with _Heartbeat(run, cancel):
        status = _execute_claimed(run, cancel)
    _update_campaign_state(run.campaign_id)
    return None if cancel.claim_lost else status


def remove_abandoned_checkouts(root: Path) -> list[str]:
    """Remove checkouts in `root` that no live attempt owns; returns their names.

    A worker killed mid-run (SIGKILL, a lost machine) cannot clean up after itself, and the
    reaper runs elsewhere; workers call this when they start (runs.tasks). A checkout `<run>-<attempt>` is abandoned once its run has ended, was
    deleted, or moved on to a later attempt. Checkouts of live attempts, which another worker
    process sharing this root may own, and anything not named like a checkout, are left alone.
    """
    try:
        names = [entry.name for entry in root.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return []
    attempts_by_run: dict[int, list[tuple[int, str]]] = {}
    for name in names:
        run_id, _, attempt = name.partition("-")
        if run_id.isdigit() and attempt.isdigit():
            attempts_by_run.setdefault(int(run_id), []).append((int(attempt), name))
    if not attempts_by_run:
        return []
    live = dict(
        Run.objects.filter(pk__in=attempts_by_run)
        .exclude(status__in=Run.ENDED_STATUSES)
        .values_list("pk", "attempts")
    )
    removed = []
    for run_id, attempts in attempts_by_run.items():
        for attempt, name in attempts:
            if live.get(run_id) != attempt:
                workspace.remove_tree(root / name)
                removed.append(name)
    if removed:
        log.info("removed abandoned checkouts %s", ", ".join(sorted(removed)))
    return removed


def _execute_claimed(run: Run, cancel: _Cancel) -> str:
    prompt = run.snapshot["prompt"]
    test_files = prompt.get("test_files") or []
    setup_left: frozenset[bytes] = frozenset()
    contestant = run.snapshot["contestant"]
    limit = contestant["limits"].get("time_limit") or prompt.get("time_limit") or DEFAULT_TIME_LIMIT
    deadline = time.monotonic() + limit
    timings: dict[str, float] = {}
    run_dir = Path(settings.MERGEABLE_CHECKOUT_ROOT) / f"{run.pk}-{run.attempts}"
    checkout = None
    box: _Box | None = None
    try:
        with _phase(timings, "prepare"):
            # Earlier attempts of this run died with their worker; on this machine, their
            # checkouts are still here. (Other leftovers go when a worker starts.)
            for attempt in range(1, run.attempts):
                workspace.remove_tree(run_dir.parent / f"{run.pk}-{attempt}")
            checkout = workspace.checkout_commit(
                prompt["repository_url"],
                Path(settings.MERGEABLE_WORKSPACE_ROOT),
                prompt["commit"],
                run_dir,
                owner=_run_uid(run),
            )
            box = _Box.open(run, checkout, cancel)
            if prompt.get("setup"):
                result = box.run(
                    prompt["setup"], SETUP_TIMEOUT, network=bool(prompt.get("setup_network"))
                )
                _save_artifact(run, cancel, "setup_output.txt", result.output)
                if box.stop_reason:
                    return _end(run, Run.FAILED, reason=box.stop_reason, timings=timings)
                if cancel.is_set():
                    return _end(run, Run.CANCELLED, timings=timings)
                if result.exit_code != 0:
                    raise EnvironmentFault(
                        f"The setup command exited with {result.exit_code}: {result.output[-500:]}"
                    )
                # What the setup made among the test files is the prompt's: restoring keeps it.
                setup_left = workspace.untracked_test_files(checkout, test_files)

        _set(run, cancel, status=Run.RUNNING)
        if cancel.is_set():
            return _end(run, Run.CANCELLED, timings=timings)
        with _phase(timings, "agent"):
            outcome = _run_agent(run, box, deadline)
        if box.stop_reason:
            # A cap or a gateway limit ended the agent: the contestant's doing.
            _capture(run, checkout, cancel, timings)
            return _end(run, Run.FAILED, reason=box.stop_reason, timings=timings)
        if outcome.end_status == base.MODEL_UNREACHABLE:
            raise EnvironmentFault(f"Could not reach the model: {outcome.error}")
        if outcome.error:
            # The harness could not do its job (a bad command template, a sandbox that would
            # not start): not the contestant's fault.
            raise EnvironmentFault(outcome.error)

        captured = _capture(run, checkout, cancel, timings)
        if outcome.end_status == base.CANCELLED or cancel.is_set():
            return _end(run, Run.CANCELLED, timings=timings)

        if prompt.get("test"):
            _set(run, cancel, status=Run.TESTING)
            if cancel.is_set():
                return _end(run, Run.CANCELLED, timings=timings)
            with _phase(timings, "test"):
                _protect_tests(run, checkout, captured, setup_left)
                _run_tests(run, prompt["test"], box)
            if box.stop_reason:
                return _end(run, Run.FAILED, reason=box.stop_reason, timings=timings)
            if cancel.is_set():
                return _end(run, Run.CANCELLED, timings=timings)

        status, reason = _judge(run, outcome)
        return _end(run, status, reason=reason, timings=timings)
    except (
        EnvironmentFault,
        workspace.WorkspaceError,
        sandbox.SandboxError,
        base.HarnessUnavailable,
        run_caps.CapsUnavailable,
    ) as exc:
        if box is not None and box.stop_reason:
            # The harness broke because a cap stopped it (a CLI killed mid-write leaves no
            # trajectory): the cap is the reason, and it was the contestant's doing.
            return _end(run, Run.FAILED, reason=box.stop_reason, error=str(exc), timings=timings)
        return _end(run, Run.ERRORED, reason=str(exc), error=str(exc), timings=timings)
    except Exception as exc:  # a bug in Mergeable is the environment's fault, not the contestant's
        log.exception("run %s crashed", run.pk)
        return _end(
            run, Run.ERRORED, reason=f"Internal error: {exc}", error=repr(exc), timings=timings
        )
    finally:
        if box is not None:
            box.close()
        if checkout is not None:
            workspace.cleanup(checkout)


def _capture(
    run: Run, checkout: workspace.Checkout, cancel: _Cancel, timings: dict[str, float]
) -> workspace.CapturedDiff:
    with _phase(timings, "capture"):
        captured = workspace.capture_diff(checkout, text_cap=settings.MERGEABLE_ARTIFACT_TEXT_CAP)
        # Per the captured diff, so what is flagged is what reviewers see changed.
        protected = workspace.changed_test_files(
            checkout, captured.tree, run.snapshot["prompt"].get("test_files") or []
        )
        if _set(run, cancel, **Run.diff_fields(captured), test_files_modified=protected):
            run.save_diff(captured)
        else:
            return captured
    # Here, not on the review page: the first scorer never waits for pygments (or the bucket).
    with _phase(timings, "render"):
        rendered_diffs.prerender(run)
    return captured


def _protect_tests(
    run: Run,
    checkout: workspace.Checkout,
    captured: workspace.CapturedDiff,
    setup_left: frozenset[bytes],
) -> None:
    """Make the tests the prompt's: its test files as at its commit, then its hidden tests, run
    against the sources the agent left (no bytecode it compiled before its last edits).

    Only now, with the agent ended and its diff captured, and written by the worker's own git:
    the agent never saw the hidden tests, and cannot have changed what grades it.
    """
    prompt = run.snapshot["prompt"]
    owner = _run_uid(run)
    workspace.remove_bytecode(checkout)
    workspace.restore_test_files(
        checkout, prompt.get("test_files") or [], tree=captured.tree, keep=setup_left, owner=owner
    )
    hidden = prompt.get("hidden_tests")
    if hidden:
        # A commit the mirror lacks (pushed after the prompt was written) is fetched.
        workspace.ensure_mirror(
            prompt["repository_url"], Path(settings.MERGEABLE_WORKSPACE_ROOT), hidden["commit"]
        )
        workspace.add_hidden_tests(checkout, hidden["commit"], hidden["paths"], owner=owner)


def _judge(run: Run, outcome: base.AgentOutcome) -> tuple[str, str]:
    """Decide the final status from the agent's end status, the diff and the tests."""
    if outcome.end_status == base.TIMED_OUT:
        return Run.TIMED_OUT, "The agent ran out of time"
    if outcome.end_status in (base.MAX_STEPS, base.MAX_COST):
        limit = "steps" if outcome.end_status == base.MAX_STEPS else "cost"
        return Run.FAILED, f"The agent hit its {limit} limit"
    if run.test_exit_code not in (None, 0):
        return Run.FAILED, f"Tests failed (exit code {run.test_exit_code})"
    if not run.files_changed:
        return Run.FINISHED, "The agent changed no files"
    return Run.FINISHED, ""


def _end(run: Run, status: str, *, reason: str = "", error: str = "", timings=None) -> str:
    if status != Run.CANCELLED and Run.objects.filter(pk=run.pk, cancel_requested=True).exists():
        # A cancel that came after the heartbeat's last look still wins: on this machine it
        # killed the command at once, so what the engine concluded since is the kill's doing.
        status, reason = Run.CANCELLED, ""
    fields = {"status": status, "finished_at": timezone.now(), "process_group": None}
    if reason:
        fields["status_reason"] = column_text(redaction.scrub(reason))
    if error:
        fields["error"] = column_text(redaction.scrub(error))
    if timings is not None:
        fields["phase_timings"] = {k: round(v, 3) for k, v in timings.items()}
    # Only the owner ends a run: a reaped run that someone else now holds is left alone.
    Run.objects.filter(pk=run.pk, worker=run.worker, status__in=Run.CLAIMED_STATUSES).update(
        **fields
    )
    for name, value in fields.items():
        setattr(run, name, value)
    return status


@contextmanager
def _phase(timings: dict[str, float], name: str):
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.monotonic() - started


class _Box:
    """One run's sandbox: its caps, its uid, its temporary directory and, while the agent runs,
    its model gateway. Every command of the run (setup, the agent's, tests) goes through `run`.

    When a cap or a gateway limit is hit, `stop` records why and sets the run's cancel event so
    the agent ends; `stop_reason` then decides the run's end (failed, with that reason).
    """

    def __init__(
        self,
        run: Run,
        checkout: workspace.Checkout,
        cancel: _Cancel,
        caps: run_caps.RunCaps,
        uid: int | None,
    ) -> None:
        self.run_row = run
        self.checkout = checkout
        self.cancel = cancel
        self.caps = caps
        self.uid = uid
        self.tmp = checkout.root / "tmp"
        self.scratch = checkout.root / "harness"
        self.stop_reason = ""
        self.gateway: run_gateway.Gateway | None = None
        self.door: sandbox.GatewayDoor | None = None
        self._bridge = None
        self._gateway_dir: Path | None = None

    @classmethod
    def open(cls, run: Run, checkout: workspace.Checkout, cancel: _Cancel) -> _Box:
        tmp, scratch = checkout.root / "tmp", checkout.root / "harness"
        scratch.mkdir(parents=True, exist_ok=True)  # (tmp is made by the sandbox, with its HOME)
        uid = _run_uid(run)
        caps = run_caps.RunCaps(
            # Unique on the host: another worker (or another site) may run a run with this id.
            f"run-{run.pk}-{run.attempts}-{os.getpid()}-{secrets.token_hex(4)}",
            cap_limits(run.snapshot["contestant"]["limits"]),
            watch_paths=[checkout.work, tmp, scratch],
            uid=uid,
            nice=sandbox.command_niceness(),
        ).open()
        _set(run, cancel, caps=caps.enforcement)
        log.info("run %s caps: %s", run.pk, json.dumps(caps.enforcement))
        missing = caps.unenforced()
        if missing and not settings.MERGEABLE_ALLOW_UNENFORCED_CAPS:
            caps.close()
            raise run_caps.CapsUnavailable(
                f"This worker cannot enforce the run's {' and '.join(missing)} cap "
                "(no usable cgroup, and the worker is not root): runs are refused. Give the "
                "worker cgroups, or set MERGEABLE_ALLOW_UNENFORCED_CAPS=true to run anyway."
            )
        return cls(run, checkout, cancel, caps, uid)

    def run(
        self,
        command: str,
        timeout: float,
        *,
        env: dict[str, str] | None = None,
        network: bool = False,
        gateway: bool = False,
        extra_rw_paths=(),
        extra_ro_paths=(),
    ) -> sandbox.Result:
        def remember(pgid: int) -> None:
            # A lost run's command is stopped at once: the cancel event kills its group.
            if not _owned(self.run_row).update(process_group=pgid):
                self.cancel.lose_claim()

        result = sandbox.run(
            command,
            self.checkout.work,
            timeout=timeout,
            cancel=self.cancel,
            on_start=remember,
            env=env,
            network=network,
            extra_rw_paths=extra_rw_paths,
            extra_ro_paths=[*self.checkout.sandbox_ro_paths, *extra_ro_paths],
            caps=self.caps,
            gateway=self.door if gateway else None,
            tmp_dir=self.tmp,
            uid=self.uid,
        )
        if result.cap:
            self.stop(self.caps.describe_hit())
        return result

    def stop(self, reason: str) -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        self.cancel.set()

    def start_gateway(self, config, limits: run_gateway.GatewayLimits) -> None:
        # A short directory of its own: a Unix socket's path may not exceed 107 bytes.
        self._gateway_dir = Path(tempfile.mkdtemp(prefix="mergeable-gw-"))
        socket_path = self._gateway_dir / "gateway.sock"

        def on_call(_record, _totals) -> None:
            if self.gateway is not None and self.gateway.limit_hit:
                self.stop(self.gateway.limit_message())

        self.gateway = run_gateway.Gateway(
            config,
            socket_path,
            limits=limits,
            on_call=on_call,
            log_path=self.checkout.root / "gateway.jsonl",
        ).start()
        if sandbox.default_backend() == "bubblewrap":
            port = sandbox.GATEWAY_PORT  # inside the run's own network namespace
        else:
            self._bridge = gateway_bridge.start(str(socket_path))
            port = self._bridge.getsockname()[1]
        self.door = sandbox.GatewayDoor(socket=socket_path, port=port)

    def stop_gateway(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None
        if self.gateway is not None:
            self.gateway.close()
            if self.gateway.limit_hit:
                self.stop(self.gateway.limit_message())
            log_file = self.checkout.root / "gateway.jsonl"
            if log_file.is_file():
                _save_artifact(self.run_row, self.cancel, "raw/gateway.jsonl", log_file.read_text())
        if self._gateway_dir is not None:
            shutil.rmtree(self._gateway_dir, ignore_errors=True)
            self._gateway_dir = None
        self.door = None

    def metered(self) -> dict:
        """The gateway's figures, as Run fields."""
        totals = self.gateway.totals
        return {
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cost_usd": totals.cost_usd,
            "cache_read_tokens": totals.cache_read_tokens,
            "cache_write_tokens": totals.cache_write_tokens,
            "model_calls": totals.calls,
        }

    def close(self) -> None:
        self.stop_gateway()
        self.caps.close()


def _run_uid(run: Run) -> int | None:
    """The host uid a root worker runs this run's commands as: one of a range, never root."""
    if os.geteuid() != 0:
        return None
    return settings.MERGEABLE_SANDBOX_UID_BASE + run.pk % 50_000


def cap_limits(own: dict) -> run_caps.CapLimits:
    """The site's caps, lowered by a contestant's own `limits` where it sets them."""

    def lowest(key: str, site: int) -> int:
        return min(site, own[key]) if own.get(key) else site

    return run_caps.CapLimits(
        processes=lowest("max_processes", settings.MERGEABLE_RUN_MAX_PROCESSES),
        memory_mb=lowest("max_memory_mb", settings.MERGEABLE_RUN_MAX_MEMORY_MB),
        disk_mb=lowest("max_disk_mb", settings.MERGEABLE_RUN_MAX_DISK_MB),
        cpu_seconds=settings.MERGEABLE_RUN_MAX_CPU_SECONDS,
    )


def _run_agent(run: Run, box: _Box, deadline: float) -> base.AgentOutcome:
    contestant = run.contestant
    model = contestant.model
    prompt = run.snapshot["prompt"]
    limits_snapshot = run.snapshot["contestant"]["limits"]
    harness = agents.harness_for(run.snapshot["contestant"].get("harness") or contestant.harness)
    work, cancel = box.checkout.work, box.cancel

    def save(document: dict) -> None:
        _save_artifact(run, cancel, "transcript.json", dumps(document))

    try:
        config = model.provider_config(prompt.get("key"))
    except KeyUnavailable as exc:
        raise EnvironmentFault(str(exc)) from None
    except ValueError as exc:
        raise EnvironmentFault(f"The model's script is invalid: {exc}") from None
    if not model.is_scripted:
        # Checked here, against the real endpoint: behind the gateway a dead endpoint would
        # only show as failed calls, which some CLIs retry for minutes and then exit 0.
        problem = endpoint_problem(config.base_url)
        if problem:
            raise EnvironmentFault(f"Could not reach the model: {problem}")
        box.start_gateway(
            config,
            run_gateway.GatewayLimits(
                max_cost_usd=limits_snapshot.get("max_cost_usd"),
                max_tokens=limits_snapshot.get("max_tokens"),
                max_calls=limits_snapshot.get("max_calls"),
            ),
        )
        # The harness sees the gateway, never the real endpoint or key.
        if getattr(harness, "RUNS_IN_WORKER", False):
            config = box.gateway.worker_model()
        else:
            # A CLI with a fixed wire format (SPEAKS) gets the gateway in that format; the
            # gateway translates to the model's own.
            config = box.gateway.sandbox_model(box.door.port, getattr(harness, "SPEAKS", ""))

    transcript = TranscriptWriter(
        agent_name=harness.NAME,
        agent_version=harness.VERSION,
        model_name=model.model_id or model.name,
        save=save,
        # Live viewers poll the file; rewriting the whole document more often only burns CPU.
        min_interval_s=TRANSCRIPT_SAVE_INTERVAL_S,
    )

    def run_sandboxed(
        command: str,
        timeout: float,
        env: dict[str, str] | None = None,
        gateway: bool = False,
        extra_rw_paths=(),
        extra_ro_paths=(),
    ):
        return box.run(
            command,
            timeout,
            env=env,
            gateway=gateway,
            extra_rw_paths=extra_rw_paths,
            extra_ro_paths=extra_ro_paths,
        )

    def run_command(command: str, timeout: float) -> tuple[int, str]:
        result = run_sandboxed(command, timeout)
        return result.exit_code, result.output

    def on_usage(input_tokens: int, output_tokens: int, cost: float, steps: int) -> None:
        if box.gateway is not None:  # what the harness says is not the meter
            _set(run, cancel, steps=steps, **box.metered())
        else:
            _set(
                run,
                cancel,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cost_usd=cost,
                steps=steps,
            )

    context = base.AgentContext(
        workspace=work,
        instructions=prompt["instructions"],
        title=prompt["title"],
        limits=base.Limits(
            max_steps=limits_snapshot.get("max_steps") or 40,
            max_cost_usd=limits_snapshot.get("max_cost_usd"),
            deadline=deadline,
        ),
        transcript=transcript,
        run_command=run_command,
        ask_user=lambda question: ask_user(run, question, cancel, deadline),
        cancel=cancel,
        options=dict(run.snapshot["contestant"].get("options") or contestant.options),
        on_usage=on_usage,
        model=config,
        run_sandboxed=run_sandboxed,
        save_raw_log=lambda name, content: _save_artifact(run, cancel, f"raw/{name}", content),
        scratch=box.scratch,
    )
    try:
        outcome = harness.run(context)
    finally:
        transcript.close()  # a harness that crashed still leaves every step it made on disk
        metered = box.metered() if box.gateway is not None else None
        box.stop_gateway()
    usage = {"steps": outcome.steps}
    if metered is not None:
        usage |= metered
        usage["reported_usage"] = {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cost_usd": outcome.cost_usd,
        }
    else:
        usage |= {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "cost_usd": outcome.cost_usd,
        }
    transcript.finish(
        prompt_tokens=usage["input_tokens"],
        completion_tokens=usage["output_tokens"],
        cost_usd=usage["cost_usd"],
        end_status=outcome.end_status,
        summary=outcome.summary,
        scripted=model.is_scripted,
        harness=harness.NAME,
    )
    _set(run, cancel, agent_status=outcome.end_status, **usage)
    return outcome


def ask_user(run: Run, question: str, cancel: _Cancel, deadline: float) -> str:
    """A clarifying question: the prepared answer at once, else wait for a human, else a fallback."""
    prompt = run.snapshot["prompt"]
    question = column_text(redaction.scrub(question))
    entry = {"question": question, "asked_at": timezone.now().isoformat(), "answer": None}
    prepared = prompt.get("clarification_answer") or ""
    if prepared:
        entry.update(answer=prepared, source="prepared", answered_at=entry["asked_at"])
        _set(run, cancel, questions=[*run.questions, entry])
        return prepared

    fallback = "No answer is available. Use your best judgement and say what you assumed."
    if not _set(run, cancel, questions=[*run.questions, entry], status=Run.AWAITING_ANSWER):
        return fallback  # the run is lost and stopping: nobody will answer here
    index = len(run.questions) - 1
    waited_until = time.monotonic() + settings.MERGEABLE_ANSWER_TIMEOUT_SECONDS
    while not cancel.is_set() and time.monotonic() < min(waited_until, deadline):
        questions = Run.objects.filter(pk=run.pk).values_list("questions", flat=True).first() or []
        if len(questions) > index and questions[index].get("answer") is not None:
            run.questions = questions
            _set(run, cancel, status=Run.RUNNING)
            return questions[index]["answer"]
        cancel.wait(1.0)
    with transaction.atomic():
        stored = _owned(run).select_for_update().values_list("questions", flat=True).first()
        if stored is None:
            cancel.lose_claim()
            return fallback
        questions = list(stored)
        if len(questions) > index and questions[index].get("answer") is not None:
            fallback = questions[index]["answer"]
        elif len(questions) > index:
            questions[index].update(
                answer=fallback, source="timeout", answered_at=timezone.now().isoformat()
            )
        _owned(run).update(questions=questions)
    run.questions = questions
    _set(run, cancel, status=Run.RUNNING)
    return fallback


def _run_tests(run: Run, command: str, box: _Box) -> None:
    result = box.run(command, TEST_TIMEOUT)
    passed, failed = test_results.parse_junit(box.checkout.work)
    owned = _set(
        run,
        box.cancel,
        test_exit_code=result.exit_code,
        tests_passed=passed,
        tests_failed=failed,
        test_output_tail=test_results.output_tail(result.output),
    )
    if owned:
        run.save_artifact("test_output.txt", result.output)


def _budget_spent(campaign: Campaign) -> bool:
    if campaign.budget_usd is None:
        return False
    spent = campaign.runs.aggregate(total=Sum("cost_usd"))["total"] or 0.0
    return spent >= campaign.budget_usd


def _update_campaign_state(campaign_id: int) -> None:
    campaign = Campaign.objects.get(pk=campaign_id)
    if campaign.budget_usd is not None and _budget_spent(campaign):
        Run.objects.filter(campaign_id=campaign_id, status=Run.QUEUED).update(
            status=Run.CANCELLED,
            status_reason="The campaign's budget is spent",
            finished_at=timezone.now(),
        )
    if campaign.state == Campaign.RUNNING and not campaign.runs.active().exists():
        Campaign.objects.filter(pk=campaign_id, state=Campaign.RUNNING).update(
            state=Campaign.FINISHED
        )


def reap_stale_runs() -> list[int]:
    """Requeue claimed runs whose worker stopped beating; error them after too many attempts."""
    cutoff = timezone.now() - timezone.timedelta(seconds=settings.MERGEABLE_STALE_AFTER_SECONDS)
    stale = Run.objects.filter(status__in=Run.CLAIMED_STATUSES, heartbeat_at__lt=cutoff)
    requeued = []
    for run in stale.only("id", "attempts", "worker", "campaign_id"):
        lost = f"Worker {run.worker} stopped responding"
        if run.attempts >= settings.MERGEABLE_MAX_ATTEMPTS:
            Run.objects.filter(
                pk=run.pk, worker=run.worker, status__in=Run.CLAIMED_STATUSES
            ).update(
                status=Run.ERRORED,
                status_reason=f"{lost}; gave up after {run.attempts} attempts",
                error=lost,
                finished_at=timezone.now(),
            )
            _update_campaign_state(run.campaign_id)
        elif Run.objects.filter(
            pk=run.pk, worker=run.worker, status__in=Run.CLAIMED_STATUSES
        ).update(
            status=Run.QUEUED,
            status_reason=f"{lost}; requeued",
            worker="",
            queued_at=timezone.now(),
        ):
            requeued.append(run.pk)
    if requeued:
        enqueue.runs(requeued, requeued=True)
    return requeued

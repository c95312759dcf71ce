"""What every harness receives and returns, so execution treats them alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runs.transcript import TranscriptWriter

# End statuses an agent reports (the run's status is decided by execution from these, the
# diff and the tests: an agent CLI's exit code is never trusted as success).
FINISHED = "finished"  # the agent said it was done
STOPPED = "stopped"  # the model stopped calling tools without saying finish
MAX_STEPS = "max_steps"
MAX_COST = "max_cost"
TIMED_OUT = "timed_out"
CANCELLED = "cancelled"
MODEL_UNREACHABLE = "model_unreachable"


class HarnessUnavailable(RuntimeError):
    """The harness cannot run here (not installed, unknown): the environment's fault."""


@dataclass
class Limits:
    max_steps: int = 40
    max_cost_usd: float | None = None
    deadline: float = field(default_factory=lambda: time.monotonic() + 1800)

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


@dataclass
class AgentContext:
    workspace: Path
    instructions: str
    title: str
    limits: Limits
    transcript: TranscriptWriter
    # run_command(command, timeout) -> (exit_code, output); goes through the sandbox.
    run_command: Callable[[str, float], tuple[int, str]]
    # ask_user(question) -> answer text (a prepared answer, a human's, or a fallback).
    ask_user: Callable[[str], str]
    cancel: threading.Event
    options: dict = field(default_factory=dict)
    # Called after every model call so the run row shows live tokens and cost.
    on_usage: Callable[[int, int, float, int], None] = lambda *_: None
    # The contestant's model (runs.providers.ModelConfig): model id and prices, and the endpoint
    # and key the harness should use: the run's gateway and token, except for scripted models.
    model: Any = None
    # CLI harnesses: run_sandboxed(command, timeout, env, gateway) -> sandbox.Result. `gateway`
    # lets a CLI reach the run's model gateway (`model` then points there and carries the run's
    # token, never the real key); tokens go only in `env`, never on the command line.
    run_sandboxed: Callable[..., Any] | None = None
    # Keep a harness's native logs beside the ATIF transcript (artifact raw/<name>).
    save_raw_log: Callable[[str, str], None] = lambda name, content: None
    # A writable directory outside the workspace for history files and configs.
    scratch: Path | None = None


@dataclass
class AgentOutcome:
    end_status: str
    summary: str = ""
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str = ""

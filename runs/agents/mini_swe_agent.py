"""The mini-swe-agent harness: its `mini` CLI, headless (`--yolo --exit-immediately`), in the
sandbox, so the commands it runs are sandboxed with it; the model is reached through the run's
gateway only.

mini exits 0 whether it submitted, hit a limit or gave up on format errors, so the outcome comes
from the trajectory it writes (`-o traj.json`): `info.exit_status` and the messages, which become
the ATIF steps. Settings go in a config file in the scratch directory; the key only in the
environment of mini itself, blanked for the commands it runs.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from runs.agents import base, cli
from runs.agents.cli import venv_paths

NAME = "mini-swe-agent"
VERSION = "2.4.6"  # the version bin/install-agents pins; the trajectory format below is its
BASE_CONFIG = (
    "mini.yaml"  # tool calling; options["config"] = "mini_textbased.yaml" for models without
)
COMMAND_TIMEOUT_S = 120
MODEL_RETRY_ATTEMPTS = 3  # mini's default (10, backing off up to a minute) hides a dead endpoint
# Exceptions litellm raises when the endpoint fails: the model's fault, not the contestant's.
MODEL_ERRORS = {
    "APIConnectionError", "APIError", "AuthenticationError", "BadRequestError",
    "InternalServerError", "NotFoundError", "PermissionDeniedError", "RateLimitError",
    "ServiceUnavailableError", "Timeout", "APIResponseValidationError",
}  # fmt: skip


def binary() -> Path:
    return cli.binary("MERGEABLE_MINI_SWE_AGENT_BIN", "mini-swe-agent/bin/mini")


def run(context: base.AgentContext) -> base.AgentOutcome:
    mini = binary()
    if not mini.is_file():
        raise base.HarnessUnavailable(
            f"mini-swe-agent is not installed at {mini}: run `make agents`"
        )
    if context.run_sandboxed is None or context.scratch is None:
        raise base.HarnessUnavailable(
            "the mini-swe-agent harness needs run_sandboxed and a scratch directory"
        )
    model = context.model
    if model is None or model.provider not in ("openai", "anthropic"):
        provider = getattr(model, "provider", None)
        raise base.HarnessUnavailable(
            f"mini-swe-agent needs an openai or anthropic model, not {provider!r}"
        )

    task = (
        f"# Task: {context.title}\n\n{context.instructions}"
        if context.title
        else context.instructions
    )
    scratch = Path(context.scratch) / "mini-swe-agent"
    (scratch / "home").mkdir(parents=True, exist_ok=True)
    trajectory_path = scratch / "traj.json"
    config_path = write_config(context, scratch, task, trajectory_path)
    command = shlex.join(
        [
            str(mini),
            "-c", str(context.options.get("config") or BASE_CONFIG),
            "-c", str(config_path),
            "--yolo", "--exit-immediately",
            "-o", str(trajectory_path),
        ]
    )  # fmt: skip
    result = context.run_sandboxed(
        command,
        timeout=max(1.0, context.limits.seconds_left()),
        env=environment(model, scratch),
        gateway=True,
        extra_ro_paths=venv_paths(mini),
        extra_rw_paths=[scratch],
    )
    context.save_raw_log("mini-swe-agent/output.txt", result.output)
    trajectory = read_trajectory(trajectory_path)
    if trajectory is not None:
        context.save_raw_log("mini-swe-agent/traj.json", json.dumps(trajectory, indent=1))

    if trajectory is None:
        context.transcript.add_step("user", task)
        if result.cancelled:
            return base.AgentOutcome(end_status=base.CANCELLED)
        if result.timed_out:
            return base.AgentOutcome(end_status=base.TIMED_OUT)
        raise base.HarnessUnavailable(
            f"mini-swe-agent wrote no trajectory: {result.output[-1000:].strip()}"
        )
    outcome = convert(trajectory, context)
    context.on_usage(outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps)
    if result.cancelled:
        outcome.end_status = base.CANCELLED
    elif result.timed_out:
        outcome.end_status = base.TIMED_OUT
    return outcome


# --- Configuration -------------------------------------------------------------------------


def model_name(model) -> str:
    return f"{model.provider}/{model.model}"


def write_config(context: base.AgentContext, scratch: Path, task: str, trajectory: Path) -> Path:
    """mini's settings, merged over its base config; JSON is YAML, and mini wants .yaml."""
    model = context.model
    registry = scratch / "model-registry.json"
    # Priced through this registry, mini's own cost limit works for models litellm does not know.
    registry.write_text(
        json.dumps(
            {
                model_name(model): {
                    "input_cost_per_token": model.input_per_mtok / 1e6,
                    "output_cost_per_token": model.output_per_mtok / 1e6,
                    "litellm_provider": model.provider,
                    "mode": "chat",
                }
            }
        )
    )
    model_kwargs: dict = {"drop_params": True}
    if model.base_url:
        model_kwargs["api_base"] = model.base_url.rstrip("/")
    config = {
        "run": {"task": task},
        "agent": {
            "step_limit": context.limits.max_steps,
            "cost_limit": context.limits.max_cost_usd or 0,
            "mode": "yolo",
            "confirm_exit": False,
            "output_path": str(trajectory),
        },
        "model": {
            "model_name": model_name(model),
            "model_kwargs": model_kwargs,
            "litellm_model_registry": str(registry),
            "cost_tracking": "ignore_errors",
        },
        "environment": {
            "environment_class": "local",
            "cwd": str(context.workspace),
            "timeout": int(context.options.get("command_timeout") or COMMAND_TIMEOUT_S),
            # The commands the model runs inherit mini's environment: not its key.
            "env": {"OPENAI_API_KEY": "", "ANTHROPIC_API_KEY": ""},
        },
    }
    path = scratch / "mergeable.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def environment(model, scratch: Path) -> dict[str, str]:
    key_name = f"{model.provider.upper()}_API_KEY"
    return {
        key_name: model.api_key or "none",
        "HOME": str(scratch / "home"),
        "MSWEA_CONFIGURED": "true",
        "MSWEA_GLOBAL_CONFIG_DIR": str(scratch / "home"),
        "MSWEA_SILENT_STARTUP": "1",
        "MSWEA_COST_TRACKING": "ignore_errors",
        "MSWEA_MODEL_RETRY_STOP_AFTER_ATTEMPT": str(MODEL_RETRY_ATTEMPTS),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


# --- Reading the trajectory ----------------------------------------------------------------


def read_trajectory(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("messages"), list) else None


def convert(trajectory: dict, context: base.AgentContext) -> base.AgentOutcome:
    """ATIF steps, usage and the end status from a mini-swe-agent trajectory."""
    outcome = base.AgentOutcome(end_status=base.STOPPED)
    model = context.model
    transcript = context.transcript
    last_agent_step: dict | None = None
    pending: list[tuple[str, str]] = []
    for message in trajectory["messages"]:
        role = message.get("role")
        content = _text(message.get("content"))
        extra = message.get("extra") or {}
        prompt, completion = _usage(extra.get("response"))
        outcome.input_tokens += prompt
        outcome.output_tokens += completion
        if role == "tool":
            pending.append((str(message.get("tool_call_id", "")), content))
            continue
        if pending and last_agent_step is not None:
            transcript.add_observations(last_agent_step, pending)
            pending = []
        if role == "system":
            transcript.add_step("system", content)
        elif role == "assistant":
            metrics = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cost_usd": round(model.cost(prompt, completion), 6),
            }
            last_agent_step = transcript.add_step(
                "agent", content, tool_calls=_tool_calls(message), metrics=metrics
            )
        elif role == "user":
            step_extra = (
                {"interrupt_type": extra["interrupt_type"]} if extra.get("interrupt_type") else None
            )
            if step_extra and prompt:  # a reply mini could not parse: billed all the same
                step_extra["metrics"] = {"prompt_tokens": prompt, "completion_tokens": completion}
            transcript.add_step("user", content, extra=step_extra)
    if pending and last_agent_step is not None:
        transcript.add_observations(last_agent_step, pending)

    info = trajectory.get("info") or {}
    stats = info.get("model_stats") or {}
    outcome.steps = int(stats.get("api_calls") or 0)
    outcome.cost_usd = model.cost(outcome.input_tokens, outcome.output_tokens)
    _end_status(outcome, trajectory, context.limits)
    return outcome


def _end_status(outcome: base.AgentOutcome, trajectory: dict, limits: base.Limits) -> None:
    info = trajectory.get("info") or {}
    status = str(info.get("exit_status") or "")
    last = trajectory["messages"][-1] if trajectory["messages"] else {}
    last_extra = last.get("extra") or {}
    if status == "Submitted":
        outcome.end_status = base.FINISHED
        outcome.summary = str(info.get("submission") or "").strip() or _last_reply(trajectory)
    elif status == "LimitsExceeded":
        over_cost = limits.max_cost_usd is not None and outcome.cost_usd >= limits.max_cost_usd
        outcome.end_status = base.MAX_COST if over_cost else base.MAX_STEPS
    elif status == "TimeExceeded":
        outcome.end_status = base.TIMED_OUT
    elif status == "RepeatedFormatError":
        outcome.end_status = base.STOPPED
        outcome.summary = (
            "mini-swe-agent stopped: the model's replies repeatedly had no valid command"
        )
    elif status in MODEL_ERRORS:
        outcome.end_status = base.MODEL_UNREACHABLE
        outcome.error = f"{status}: {last_extra.get('exception_str') or last.get('content') or ''}"[
            :1000
        ]
    elif status:
        raise base.HarnessUnavailable(
            f"mini-swe-agent failed with {status}: {str(last.get('content'))[:1000]}"
        )
    else:
        outcome.end_status = base.STOPPED
        outcome.summary = "mini-swe-agent ended without an exit status"


def _last_reply(trajectory: dict) -> str:
    replies = [m for m in trajectory["messages"] if m.get("role") == "assistant"]
    return _text(replies[-1].get("content")) if replies else ""


def _tool_calls(message: dict) -> list[dict]:
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {"_raw": function.get("arguments")}
        calls.append(
            {
                "id": call.get("id") or f"call-{index}",
                "name": function.get("name", ""),
                "arguments": arguments,
            }
        )
    if not calls:  # the text-based config: commands parsed out of the reply
        for index, action in enumerate((message.get("extra") or {}).get("actions") or []):
            calls.append(
                {
                    "id": f"action-{index}",
                    "name": "bash",
                    "arguments": {"command": action.get("command", "")},
                }
            )
    return calls


def _usage(response: object) -> tuple[int, int]:
    if not isinstance(response, dict):
        return 0, 0
    usage = response.get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runs.agents import base, cli
from runs.agents.cli import venv_paths
from runs.transcript import TranscriptWriter, add_result, load_json, parse_time

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
    """ATIF steps, usage and the end status of a run from the trajectory mini wrote."""
    model = context.model
    read = read_messages(trajectory, context.transcript, price=model.cost)
    outcome = base.AgentOutcome(
        end_status=read.end_status,
        summary=read.summary,
        steps=read.api_calls,
        input_tokens=read.input_tokens,
        output_tokens=read.output_tokens,
        cost_usd=model.cost(read.input_tokens, read.output_tokens),
        error=read.error,
    )
    if read.exit_status == "LimitsExceeded":
        # mini counts cost with its own price list; ours decides which limit was reached.
        limits = context.limits
        over_cost = limits.max_cost_usd is not None and outcome.cost_usd >= limits.max_cost_usd
        outcome.end_status = base.MAX_COST if over_cost else base.MAX_STEPS
    elif read.exit_status and read.end_status == base.STOPPED and not read.summary:
        raise base.HarnessUnavailable(f"mini-swe-agent failed with {read.error}")
    return outcome


# --- The trajectory format, for runs and for imports --------------------------------------


@dataclass
class Trajectory:
    """What a trajectory says beyond its steps."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    api_calls: int = 0
    exit_status: str = ""
    end_status: str = base.STOPPED
    summary: str = ""
    error: str = ""


def read_messages(
    trajectory: dict,
    transcript: TranscriptWriter,
    *,
    price: Callable[[int, int], float] | None = None,
    filename: str = "trajectory",
) -> Trajectory:
    """Add a trajectory's messages to `transcript` as ATIF steps; ValueError names a bad message.

    Commands are tool calls (mini 2's tool calling) or the `actions` parsed from a reply (the
    text-based config), numbered from 1 where mini gave no id; their output (role "tool", or
    "user" in text mode) is the observation of the step that ran them. A reply mini could not
    parse is a user step marked with its `interrupt_type`. With `price`, costs come from token
    counts; without, from mini's own `cost` per reply and `instance_cost` in total.
    """
    info = trajectory.get("info") if isinstance(trajectory.get("info"), dict) else {}
    messages = trajectory.get("messages")
    if not isinstance(messages, list):
        raise ValueError(f"{filename}: 'messages' must be a list of messages.")
    read = Trajectory()
    summed_cost = 0.0
    pending: dict | None = None  # the agent step whose commands await their output
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValueError(f"{filename}: message {index} has no role.")
        role = message["role"]
        content = _text(message.get("content"), filename, index)
        extra = message.get("extra") if isinstance(message.get("extra"), dict) else {}
        when = parse_time(extra.get("timestamp"))
        prompt, completion = _usage(extra.get("response"))
        read.input_tokens += prompt
        read.output_tokens += completion
        if role == "assistant":
            calls = _tool_calls(message, extra)
            cost = price(prompt, completion) if price else cli.json_number(extra.get("cost"))
            summed_cost += cost
            metrics = {"prompt_tokens": prompt, "completion_tokens": completion}
            metrics["cost_usd"] = round(cost, 6)
            step = transcript.add_step(
                "agent", content, tool_calls=calls, metrics=metrics, timestamp=when
            )
            pending = step if calls else None
        elif pending is not None and (
            role == "tool" or (role == "user" and not extra.get("interrupt_type"))
        ):
            known = [call["tool_call_id"] for call in pending["tool_calls"]]
            answered = {
                r["source_call_id"] for r in pending.get("observation", {}).get("results", [])
            }
            call_id = message.get("tool_call_id")
            if call_id not in known:
                call_id = next((c for c in known if c not in answered), known[-1])
            if add_result(transcript, pending, call_id, content) >= len(known):
                pending = None
        elif role in ("system", "user", "tool"):
            step_extra = {}
            if extra.get("interrupt_type"):
                step_extra["interrupt_type"] = extra["interrupt_type"]
                if prompt:  # a reply mini could not parse: billed all the same
                    step_extra["metrics"] = {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                    }
            source = "system" if role == "system" else "user"
            transcript.add_step(source, content, extra=step_extra or None, timestamp=when)
        elif role == "exit":
            read.exit_status = str(extra.get("exit_status") or read.exit_status)
            if content and content != read.exit_status:
                transcript.add_step("system", f"Exit: {content}", timestamp=when)
        else:
            raise ValueError(f"{filename}: message {index} has the unknown role {role!r}.")
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    read.api_calls = cli.json_count(stats.get("api_calls")) or sum(
        1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant"
    )
    if price:
        read.cost_usd = price(read.input_tokens, read.output_tokens)
    else:
        instance_cost = stats.get("instance_cost")
        read.cost_usd = cli.json_number(instance_cost) if instance_cost is not None else summed_cost
    read.exit_status = str(info.get("exit_status") or read.exit_status)
    _read_end(read, info, messages, trajectory)
    return read


def _read_end(read: Trajectory, info: dict, messages: list, trajectory: dict) -> None:
    status = read.exit_status
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    last_extra = last.get("extra") if isinstance(last.get("extra"), dict) else {}
    if status == "Submitted":
        read.end_status = base.FINISHED
        read.summary = str(info.get("submission") or "").strip() or _last_reply(messages)
    elif status == "LimitsExceeded":
        # mini stops at whichever of its step and cost limits comes first.
        config = info.get("config") if isinstance(info.get("config"), dict) else {}
        agent = config.get("agent") if isinstance(config.get("agent"), dict) else {}
        cost_limit = cli.json_number(agent.get("cost_limit"))
        over_cost = cost_limit > 0 and read.cost_usd >= cost_limit
        read.end_status = base.MAX_COST if over_cost else base.MAX_STEPS
    elif status == "TimeExceeded":
        read.end_status = base.TIMED_OUT
    elif status == "RepeatedFormatError":
        read.summary = "mini-swe-agent stopped: the model's replies repeatedly had no valid command"
    elif status in MODEL_ERRORS:
        read.end_status = base.MODEL_UNREACHABLE
        detail = last_extra.get("exception_str") or last.get("content") or ""
        read.error = f"{status}: {detail}"[:1000]
    elif status:
        read.error = f"{status}: {str(last.get('content'))[:1000]}"
    else:
        read.summary = "mini-swe-agent ended without an exit status"


def _last_reply(messages: list) -> str:
    replies = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    return _text(replies[-1].get("content"), "", 0) if replies else ""


def _tool_calls(message: dict, extra: dict) -> list[dict]:
    calls = []
    for number, call in enumerate(message.get("tool_calls") or [], 1):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = {"_raw": arguments}
        calls.append(
            {
                "id": str(call.get("id") or f"call-{number}"),
                "name": str(function.get("name") or "bash"),
                "arguments": arguments if isinstance(arguments, dict) else {"_raw": arguments},
            }
        )
    if not calls:  # the text-based config: commands parsed out of the reply
        for number, action in enumerate(extra.get("actions") or [], 1):
            if isinstance(action, dict) and isinstance(action.get("command"), str):
                calls.append(
                    {
                        "id": str(action.get("tool_call_id") or f"action-{number}"),
                        "name": "bash",
                        "arguments": {"command": action["command"]},
                    }
                )
    return calls


def _usage(response: object) -> tuple[int, int]:
    if not isinstance(response, dict) or not isinstance(response.get("usage"), dict):
        return 0, 0
    usage = response["usage"]
    return cli.json_count(usage.get("prompt_tokens")), cli.json_count(
        usage.get("completion_tokens")
    )


def _text(content: object, filename: str, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts
        parts = []
        for part in content:
            if not isinstance(part, dict):
                raise ValueError(f"{filename}: message {index} has malformed content.")
            parts.append(
                str(part["text"]) if "text" in part else f"[{part.get('type', 'content')}]"
            )
        return "\n".join(parts)
    raise ValueError(f"{filename}: message {index}'s content must be text or a list of parts.")


# --- Importing a trajectory ----------------------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    head = text.lstrip()[:200_000]
    if not head.startswith("{"):
        return False
    return '"trajectory_format": "mini-swe-agent' in head or (
        '"messages"' in head and '"info"' in head
    )


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """A mini-swe-agent trajectory (-o traj.json): {"info": {...}, "messages": [...]}."""
    data = load_json(text, filename)
    if not isinstance(data, dict):
        raise ValueError(f"{filename}: a mini-swe-agent trajectory is a JSON object.")
    info = data.get("info", {})
    if not isinstance(info, dict):
        raise ValueError(f"{filename}: 'info' must be an object.")
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model_config = config.get("model") if isinstance(config.get("model"), dict) else {}
    writer = TranscriptWriter(
        agent_name=NAME,
        agent_version=str(info.get("mini_version") or ""),
        model_name=str(model_config.get("model_name") or ""),
    )
    read = read_messages(data, writer, filename=filename)
    writer.finish(
        prompt_tokens=read.input_tokens,
        completion_tokens=read.output_tokens,
        cost_usd=read.cost_usd,
        end_status=read.end_status if read.exit_status else "",
        imported=True,
        source_format=NAME,
        source_file=filename,
    )
    return writer.document

"""The `command` harness: run any agent CLI the team already uses, from a command template.

The contestant's ``options["command"]`` is a shell command template such as::

    my-agent --repo {workspace} --task-file {prompt_file} --model {model} --api-base {base_url}

Each placeholder's value is shell-quoted where it is substituted, so a path or model id with
spaces or quotes stays one argument. ``{base_url}`` is the run's model gateway inside the
sandbox, and the "key" the command gets is the run's token, worthless outside the run: the real
key stays in the worker. The token is passed only in the environment, as ``MERGEABLE_API_KEY``
and the provider's usual variable, never on the command line.

The command's exit code is not a verdict: agent CLIs exit 0 whether or not they did anything
useful, so the run is judged like every other run, by its diff and its tests.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path

from runs.agents import base

NAME = "command"
VERSION = "1"
PLACEHOLDERS = ("workspace", "prompt_file", "model", "base_url")
OUTPUT_TAIL = 4000

# The variable each provider's own SDKs and CLIs read their key and endpoint from.
_PROVIDER_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
_PROVIDER_URL_VARIABLES = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
_PLACEHOLDER = re.compile(r"\{\{|\}\}|(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)([!:][^{}\s]*)?\}")
_KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS)


class CommandTemplateError(ValueError):
    """The contestant's command template cannot be turned into a command."""


def build_command(template: object, values: dict[str, str]) -> str:
    """Substitute shell-quoted `values` for the ``{name}`` placeholders in `template`.

    Only ``{name}`` is a placeholder, so shell syntax such as ``${VAR}``, ``${VAR:-x}`` or
    ``{a,b}`` passes through; ``{{`` and ``}}`` are literal braces (for awk's ``{{print}}``).
    """
    if not isinstance(template, str) or not template.strip():
        raise CommandTemplateError(
            f'The command harness needs options["command"]: a shell command template using {_KNOWN}'
        )

    def substitute(match: re.Match) -> str:
        if match.group(0) in ("{{", "}}"):
            return match.group(0)[0]
        name, spec = match.group(1), match.group(2)
        if name not in values or spec:
            raise CommandTemplateError(
                f"Unknown placeholder {match.group(0)} in the command template; the placeholders "
                f"are {_KNOWN} (write {{{{ and }}}} for literal braces)"
            )
        return shlex.quote(values[name])

    return _PLACEHOLDER.sub(substitute, template)


def environment(model, prompt_file: Path, workspace: Path) -> dict[str, str]:
    """What the command gets in its environment: the endpoint, the model and (only here) the key."""
    provider = getattr(model, "provider", "") or ""
    base_url = getattr(model, "base_url", "") or ""
    env = {
        "MERGEABLE_MODEL": getattr(model, "model", "") or "",
        "MERGEABLE_BASE_URL": base_url,
        "MERGEABLE_PROVIDER": provider,
        "MERGEABLE_PROMPT_FILE": str(prompt_file),
        "MERGEABLE_WORKSPACE": str(workspace),
    }
    if base_url and provider in _PROVIDER_URL_VARIABLES:
        env[_PROVIDER_URL_VARIABLES[provider]] = base_url
    key = getattr(model, "api_key", "") or ""
    if key:
        env["MERGEABLE_API_KEY"] = key
        if provider in _PROVIDER_KEY_VARIABLES:
            env[_PROVIDER_KEY_VARIABLES[provider]] = key
    return env


def run(context: base.AgentContext) -> base.AgentOutcome:
    task = f"# Task: {context.title}\n\n{context.instructions}"
    context.transcript.add_step("user", task)
    outcome = base.AgentOutcome(end_status=base.STOPPED)

    scratch = context.scratch or Path(tempfile.mkdtemp(prefix="mergeable-command-"))
    scratch.mkdir(parents=True, exist_ok=True)
    prompt_file = scratch / "prompt.md"
    prompt_file.write_text(task)

    model = context.model
    values = {
        "workspace": str(context.workspace),
        "prompt_file": str(prompt_file),
        "model": getattr(model, "model", "") or "",
        "base_url": getattr(model, "base_url", "") or "",
    }
    try:
        command = build_command(context.options.get("command"), values)
    except CommandTemplateError as exc:
        return _failed_to_start(context, outcome, str(exc))
    if context.run_sandboxed is None:
        return _failed_to_start(context, outcome, "This worker cannot run CLI harnesses.")
    if context.cancel.is_set():
        outcome.end_status = base.CANCELLED
        return outcome
    seconds = context.limits.seconds_left()
    if seconds <= 0:
        outcome.end_status = base.TIMED_OUT
        return outcome

    try:
        result = context.run_sandboxed(
            command,
            timeout=seconds,
            env=environment(model, prompt_file, context.workspace),
            gateway=True,
            extra_rw_paths=[scratch],
        )
    except Exception as exc:  # noqa: BLE001 - a sandbox that cannot start is reported, not raised
        return _failed_to_start(context, outcome, f"The command could not start: {exc}", command)

    context.save_raw_log("command.log", result.output)
    tail = result.output[-OUTPUT_TAIL:]
    step = context.transcript.add_step(
        "agent",
        "Ran the contestant's command.",
        tool_calls=[{"id": "command", "name": "run_command", "arguments": {"command": command}}],
        extra={
            "exit_code": result.exit_code,
            "duration_s": round(result.duration_s, 3),
            "timed_out": result.timed_out,
            "cancelled": result.cancelled,
        },
    )
    context.transcript.add_observations(
        step, [("command", f"exit code: {result.exit_code}\n{tail}")]
    )
    outcome.steps = 1
    outcome.summary = tail[-500:].strip()
    if result.cancelled or context.cancel.is_set():
        outcome.end_status = base.CANCELLED
    elif result.timed_out:
        outcome.end_status = base.TIMED_OUT
    else:
        outcome.end_status = base.FINISHED
    return outcome


def _failed_to_start(
    context: base.AgentContext, outcome: base.AgentOutcome, error: str, command: str = ""
) -> base.AgentOutcome:
    """The contestant's configuration or the sandbox failed, before the agent did anything."""
    context.transcript.add_step("system", error, extra={"command": command} if command else None)
    outcome.error = error
    return outcome

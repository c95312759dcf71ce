"""The opencode harness: `opencode run --format json`, headless, in the sandbox; it reaches only
the run's gateway.

Settings go in OPENCODE_CONFIG_CONTENT, which opencode reads after every config file, so a
repository's own opencode.json cannot undo them: one provider, "mergeable", for the gateway
(`@ai-sdk/openai-compatible`, or `@ai-sdk/anthropic`, both bundled in the binary), the model with
its prices, every permission allowed (bubblewrap is the boundary) except `task`: subagents run in
sessions of their own whose steps the stream never shows, so they would escape the step limit.
No snapshots, LSP servers or formatters. Auto-update, the models.dev fetch, sharing and default
plugins are off by environment; npm's registry is a closed loopback port, so the plugin install
opencode starts in the background fails at once instead of waiting on a network there is none of.
The run's token is in the environment only; the config names it as `{env:…}`.

The stream it prints (one JSON event a line: step_start, text, reasoning, tool_use, step_finish
with tokens and cost, error) is the run's raw log and becomes the ATIF transcript, one agent step
per opencode step. opencode exits 1 after an error and 0 otherwise, so the outcome is read from
the stream: the last step's finish reason and any error event.

Steps: opencode's own limit (the agent's `steps`) only asks the model to stop: its last step
carries a "maximum steps reached" message, but the tools are still offered and opencode runs
whatever calls come back. So a small watchdog runs opencode inside the sandbox, copies its stream
to a file and kills it at the step that used up the allowance when the model still called tools.
opencode sends its next model call as soon as a step ends, so that call may be out (and metered
by the gateway) before the kill lands: the limit holds to within one call. A turn that uses up
its allowance is reported as `max_steps`.

Questions: a turn that ends on a question with no file changed goes to `ask_user`, and the answer
continues the same session (`--session ID`); HOME, and opencode's session database in it, stay in
the scratch directory between turns.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runs.agents import base, cli
from runs.transcript import TranscriptWriter, parse_time

NAME = "opencode"
VERSION = "1.18.33"  # the version bin/install-agents pins; the stream format below is its
PROVIDER_ID = "mergeable"
MAX_QUESTION_ROUNDS = 2
TOKEN_VARIABLE = "MERGEABLE_GATEWAY_TOKEN"
CLOSED_PORT_URL = "http://127.0.0.1:9/"  # the discard port: nothing listens, a connect fails
ERROR_TEXT_CAP = 1000
# What opencode calls a failed model call: the endpoint's fault, not the contestant's.
MODEL_ERRORS = {"APIError", "ProviderAuthError"}
STREAM_EVENTS = {"step_start", "step_finish", "text", "reasoning", "tool_use", "error"}

# `python -c WATCHDOG ALLOWANCE EVENTS OPENCODE ARGS...`, in the sandbox with the worker's Python:
# runs opencode, copies its stdout to the events file line by line, and stops it at the
# step_finish that uses up the allowance while the model still called tools (opencode itself
# would go on). Given on the command line, not as a file the agent could rewrite between turns.
WATCHDOG = """\
import json, subprocess, sys

allowance, events_path = int(sys.argv[1]), sys.argv[2]
opencode = subprocess.Popen(sys.argv[3:], stdout=subprocess.PIPE)
steps = 0
with open(events_path, "ab") as events:
    for line in opencode.stdout:
        events.write(line)
        events.flush()
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("type") != "step_finish":
            continue
        steps += 1
        if steps >= allowance and (event.get("part") or {}).get("reason") == "tool-calls":
            opencode.kill()  # at once: it is already on its way to the next model call
            print(f"mergeable: stopped opencode after {steps} steps", file=sys.stderr)
            break
opencode.wait()
"""


def binary() -> Path:
    return cli.binary("MERGEABLE_OPENCODE_BIN", "opencode/node_modules/.bin/opencode")


def install_dir(executable: Path) -> Path:
    """The npm prefix the CLI was installed in (the directory holding node_modules), to mount:
    node_modules/.bin/opencode is a link into the package that holds the native binary."""
    for parent in executable.parents:
        if parent.name == "node_modules":
            return parent.parent
    return executable.resolve().parent


def run(context: base.AgentContext) -> base.AgentOutcome:
    opencode = binary()
    if not opencode.is_file():
        raise base.HarnessUnavailable(f"opencode is not installed at {opencode}: run `make agents`")
    if context.run_sandboxed is None or context.scratch is None:
        raise base.HarnessUnavailable(
            "the opencode harness needs run_sandboxed and a scratch directory"
        )
    model = context.model
    if model is None or model.provider not in ("openai", "anthropic"):
        provider = getattr(model, "provider", None)
        raise base.HarnessUnavailable(
            f"opencode needs an openai or anthropic model, not {provider!r}"
        )

    session = Session(context, opencode)
    message = context.instructions
    if context.title:
        message = f"# Task: {context.title}\n\n{message}"
    outcome = base.AgentOutcome(end_status=base.STOPPED)
    before = cli.snapshot(context.workspace)
    try:
        for round_number in range(MAX_QUESTION_ROUNDS + 1):
            allowance = context.limits.max_steps - outcome.steps
            turn = session.run_turn(message, allowance)
            stream = turn.stream
            outcome.steps += stream.steps
            outcome.input_tokens += stream.input_tokens
            outcome.output_tokens += stream.output_tokens
            outcome.cost_usd += stream.cost_usd
            context.on_usage(
                outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps
            )
            outcome.summary = stream.last_text
            end_status = turn_end(turn, allowance, context.limits, outcome)
            if end_status is not None:
                outcome.end_status = end_status
                return outcome
            if stream.finish_reason != "stop":
                outcome.end_status = base.STOPPED
                outcome.summary = stream.last_text or stop_summary(stream.finish_reason)
                return outcome
            question = cli.question_in(stream.last_text)
            if question is None or cli.changed_files(before, cli.snapshot(context.workspace)):
                outcome.end_status = base.FINISHED
                return outcome
            if round_number == MAX_QUESTION_ROUNDS:
                outcome.end_status = base.STOPPED
                outcome.summary = f"opencode ended on a question: {question}"
                return outcome
            message = context.ask_user(question)
        return outcome
    finally:
        session.save_raw_logs()


def turn_end(
    turn: Turn, allowance: int, limits: base.Limits, outcome: base.AgentOutcome
) -> str | None:
    """The run's end status if this turn ended it: stopped from outside, a failed model call,
    a limit reached. Raises HarnessUnavailable when opencode failed on its own."""
    stream = turn.stream
    if turn.cancelled:
        return base.CANCELLED
    if turn.timed_out:
        return base.TIMED_OUT
    if stream.steps >= allowance:
        return base.MAX_STEPS
    if stream.error_name in MODEL_ERRORS:
        outcome.error = stream.error
        return base.MODEL_UNREACHABLE
    if stream.error:
        raise base.HarnessUnavailable(f"opencode failed: {stream.error}")
    if not stream.steps:
        raise base.HarnessUnavailable(
            f"opencode printed no events: {turn.output[-ERROR_TEXT_CAP:].strip()}"
        )
    if limits.max_cost_usd is not None and outcome.cost_usd >= limits.max_cost_usd:
        return base.MAX_COST
    return None


def stop_summary(reason: str) -> str:
    if reason == "length":
        return "opencode stopped: the model's reply was cut off at its output token limit"
    return f"opencode stopped with finish reason {reason or 'none'}"


# --- Configuration -------------------------------------------------------------------------


def config(model, max_steps: int) -> dict:
    """opencode's settings for a turn: the gateway as its one provider, everything allowed
    but subagents, no snapshots, LSP servers or formatters."""
    if model.provider == "anthropic":
        # The gateway serves Anthropic's /v1/messages at its origin; the SDK appends /messages.
        package, base_url = "@ai-sdk/anthropic", model.base_url.rstrip("/") + "/v1"
    else:
        package, base_url = "@ai-sdk/openai-compatible", model.base_url.rstrip("/")
    prices = {
        "input": model.input_per_mtok,
        "output": model.output_per_mtok,
        # The meter counts cached input at the input price; so does opencode's cost, then.
        "cache_read": model.input_per_mtok,
        "cache_write": model.input_per_mtok,
    }
    steps = {"steps": max(1, max_steps)}
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER_ID: {
                "npm": package,
                "name": "Mergeable gateway",
                "options": {"baseURL": base_url, "apiKey": f"{{env:{TOKEN_VARIABLE}}}"},
                "models": {model.model: {"name": model.model, "cost": prices}},
            }
        },
        "model": model_name(model),
        "small_model": model_name(model),
        "permission": {"*": "allow", "task": "deny"},
        "agent": {"build": steps, "plan": steps},
        "autoupdate": False,
        "share": "disabled",
        "snapshot": False,
        "lsp": False,
        "formatter": False,
    }


def model_name(model) -> str:
    return f"{PROVIDER_ID}/{model.model}"


def environment(model, home: Path, max_steps: int) -> dict[str, str]:
    return {
        TOKEN_VARIABLE: model.api_key or "none",
        "OPENCODE_CONFIG_CONTENT": json.dumps(config(model, max_steps)),
        "HOME": str(home),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "npm_config_registry": CLOSED_PORT_URL,
        "NPM_CONFIG_REGISTRY": CLOSED_PORT_URL,
    }


# --- Running opencode ----------------------------------------------------------------------


@dataclass
class Turn:
    """One `opencode run`: what its stream said, and how the command ended."""

    stream: Stream
    output: str = ""
    timed_out: bool = False
    cancelled: bool = False


class Session:
    def __init__(self, context: base.AgentContext, opencode: Path) -> None:
        self.context = context
        self.opencode = opencode
        self.dir = Path(context.scratch) / "opencode"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.session_id = ""
        self.turns = 0
        self.events_log = ""
        self.output_log = ""

    def command(self, allowance: int, events: Path, message: Path) -> str:
        args = [
            sys.executable, "-c", WATCHDOG, str(allowance), str(events),
            str(self.opencode), "run", "--format", "json", "--thinking", "--auto",
            "--model", model_name(self.context.model),
            # A title of its own, or opencode asks the model for one in a call beside the
            # first, racing it for the model's replies.
            "--title", self.context.title or "Mergeable run",
        ]  # fmt: skip
        if self.session_id:
            args += ["--session", self.session_id]
        # The message comes on stdin: as an argument, opencode quotes it.
        return f"{shlex.join(args)} < {shlex.quote(str(message))}"

    def run_turn(self, message: str, allowance: int) -> Turn:
        self.context.transcript.add_step("user", message)
        self.turns += 1
        events = self.dir / f"events-{self.turns}.jsonl"
        message_file = self.dir / f"message-{self.turns}.md"
        message_file.write_text(message)
        result = self.context.run_sandboxed(
            self.command(allowance, events, message_file),
            timeout=max(1.0, self.context.limits.seconds_left()),
            env=environment(self.context.model, self.home, allowance),
            gateway=True,
            extra_ro_paths=[install_dir(self.opencode)],
            extra_rw_paths=[self.dir],
        )
        text = events.read_text(errors="replace") if events.is_file() else ""
        self.events_log += text
        self.output_log += result.output
        stream = read_stream(text, self.context.transcript, price=self.context.model.cost)
        self.session_id = stream.session_id or self.session_id
        return Turn(
            stream=stream,
            output=result.output,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
        )

    def save_raw_logs(self) -> None:
        if self.events_log:
            self.context.save_raw_log("opencode/events.jsonl", self.events_log)
        if self.output_log:
            self.context.save_raw_log("opencode/output.txt", self.output_log)


# --- The stream, for runs and for imports --------------------------------------------------


@dataclass
class Stream:
    """What an opencode JSON stream says beyond its steps."""

    session_id: str = ""
    steps: int = 0  # model calls that answered: opencode steps
    input_tokens: int = 0  # all input, cached or not, as the gateway counts it
    output_tokens: int = 0  # reasoning included
    cached_tokens: int = 0
    cost_usd: float = 0.0  # opencode's own figure, from the prices in its config
    last_text: str = ""  # the model's text in the last step
    finish_reason: str = ""  # of the last step: "stop", "tool-calls", "length"...
    error_name: str = ""
    error: str = ""  # the last error event, "Name: message"


@dataclass
class _Step:
    timestamp: object = None
    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    results: list[tuple[str, str]] = field(default_factory=list)


def read_stream(
    text: str, transcript: TranscriptWriter, *, price=None, filename: str = "stream"
) -> Stream:
    """Add the steps of an opencode `--format json` stream to `transcript`; ValueError names a
    line that is not an event.

    Each step (step_start … step_finish) is one agent step: its text parts as the message, its
    reasoning, its tool calls with their output (or error) as the observation, and the step's
    tokens as metrics. A step the stream leaves open (opencode was stopped mid-step) is added
    without metrics; an error event becomes a system step. With `price(input, output)`, costs
    come from token counts; without, from opencode's own `cost`.
    """
    stream = Stream()
    current: _Step | None = None

    def close(finish: dict | None) -> None:
        nonlocal current
        if current is None:
            return
        message = "\n\n".join(t for t in current.texts if t.strip())
        metrics = None
        if finish is not None:
            metrics = _metrics(finish, price)
            stream.input_tokens += metrics["prompt_tokens"]
            stream.output_tokens += metrics["completion_tokens"]
            stream.cached_tokens += metrics.get("cached_tokens", 0)
            stream.cost_usd += metrics["cost_usd"]
            stream.finish_reason = str(finish.get("reason") or "")
        step = transcript.add_step(
            "agent",
            message,
            tool_calls=current.calls,
            metrics=metrics,
            reasoning_content="\n\n".join(current.reasoning) or None,
            timestamp=current.timestamp,
        )
        if current.results:
            transcript.add_observations(step, current.results)
        stream.last_text = message
        current = None

    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        event = _event(line, filename, number)
        kind = event["type"]
        part = event.get("part") if isinstance(event.get("part"), dict) else {}
        stream.session_id = stream.session_id or str(event.get("sessionID") or "")
        when = parse_time(event.get("timestamp"))
        if kind == "step_start":
            close(None)
            stream.steps += 1
            current = _Step(timestamp=when)
            continue
        if kind == "error":
            close(None)
            stream.error_name, stream.error = _error(event.get("error"))
            transcript.add_step("system", f"opencode error: {stream.error}", timestamp=when)
            continue
        if current is None:  # a part outside any step: opencode never prints one, but be lenient
            stream.steps += kind == "step_finish"
            current = _Step(timestamp=when)
        if kind == "text":
            current.texts.append(str(part.get("text") or ""))
        elif kind == "reasoning":
            current.reasoning.append(str(part.get("text") or ""))
        elif kind == "tool_use":
            call_id, call, result = _tool_use(part, len(current.calls) + 1)
            current.calls.append(call)
            current.results.append((call_id, result))
        elif kind == "step_finish":
            close(part)
    close(None)
    return stream


def _event(line: str, filename: str, number: int) -> dict:
    try:
        event = json.loads(line)
    except ValueError:
        raise ValueError(f"{filename}: line {number} is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ValueError(f"{filename}: line {number} is not an opencode event (no type).")
    return event


def _tool_use(part: dict, number: int) -> tuple[str, dict, str]:
    state = part.get("state") if isinstance(part.get("state"), dict) else {}
    call_id = str(part.get("callID") or part.get("id") or f"call-{number}")
    arguments = state.get("input")
    call = {
        "id": call_id,
        "name": str(part.get("tool") or "tool"),
        "arguments": arguments if isinstance(arguments, dict) else {"_raw": arguments},
    }
    if state.get("status") == "error":
        result = f"Error: {state.get('error') or 'the tool failed'}"
    else:
        output = state.get("output")
        result = output if isinstance(output, str) else json.dumps(output)
    return call_id, call, result


def _metrics(finish: dict, price) -> dict:
    tokens = finish.get("tokens") if isinstance(finish.get("tokens"), dict) else {}
    cache = tokens.get("cache") if isinstance(tokens.get("cache"), dict) else {}
    cached = cli.json_count(cache.get("read"))
    # opencode splits input into uncached, cache reads and cache writes, and reasoning out of
    # output; providers (and the gateway) count each whole.
    prompt = cli.json_count(tokens.get("input")) + cached + cli.json_count(cache.get("write"))
    completion = cli.json_count(tokens.get("output")) + cli.json_count(tokens.get("reasoning"))
    cost = price(prompt, completion) if price else cli.json_number(finish.get("cost"))
    metrics = {"prompt_tokens": prompt, "completion_tokens": completion}
    if cached:
        metrics["cached_tokens"] = cached
    metrics["cost_usd"] = round(cost, 6)
    return metrics


def _error(error: object) -> tuple[str, str]:
    if not isinstance(error, dict):
        return "UnknownError", str(error)[:ERROR_TEXT_CAP]
    name = str(error.get("name") or "UnknownError")
    data = error.get("data") if isinstance(error.get("data"), dict) else {}
    message = str(data.get("message") or error.get("message") or "")
    status = data.get("statusCode")
    if status is not None:
        message = f"{message} (HTTP {status})"
    return name, f"{name}: {message}"[:ERROR_TEXT_CAP]


# --- Importing a stream ----------------------------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    """An opencode `run --format json` stream: its first line is an event with a sessionID."""
    event = cli.first_json_object(text)
    return (
        event is not None
        and event.get("type") in STREAM_EVENTS
        and isinstance(event.get("sessionID"), str)
    )


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """The JSON stream `opencode run --format json` prints, saved to a file, as ATIF. The stream
    does not repeat the user's message: the transcript starts with the agent's first step."""
    writer = TranscriptWriter(agent_name=NAME, agent_version="", model_name="")
    stream = read_stream(text, writer, filename=filename)
    if not writer.steps:
        raise ValueError(f"{filename}: the opencode stream holds no steps.")
    writer.document["session_id"] = stream.session_id or writer.document["session_id"]
    if stream.error_name in MODEL_ERRORS:
        end_status = base.MODEL_UNREACHABLE
    elif stream.finish_reason == "stop" and not stream.error:
        end_status = base.FINISHED
    else:
        end_status = base.STOPPED
    writer.finish(
        prompt_tokens=stream.input_tokens,
        completion_tokens=stream.output_tokens,
        cost_usd=stream.cost_usd,
        cached_tokens=stream.cached_tokens,
        end_status=end_status,
        imported=True,
        source_format=NAME,
        source_file=filename,
    )
    return writer.document

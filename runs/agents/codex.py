"""The Codex CLI harness: `codex exec --json`, headless, in the sandbox; it reaches only the run's
gateway.

Codex reads its settings from a config.toml in CODEX_HOME, which lives in the scratch directory:
a model provider whose base_url is the run's gateway (Codex speaks only the Responses API; the
gateway translates for a model that speaks another format) and whose key is read from an
environment variable that the commands Codex runs do not inherit. Its own sandbox and approvals
are off (bubblewrap is the boundary), and so is everything that would reach beyond the gateway:
update checks, analytics, feedback, web search (a server-side tool: the provider would search
for it), plugins, apps and sub-agents.

Codex's exit code means nothing: the outcome comes from the JSONL events it prints. A turn ends
in `turn.completed` (with usage) or `turn.failed`; a stream that stops before either was cut off.

Codex has no turn limit. A small guard in the sandbox reads the stream as it comes, appends it
to events.jsonl in the scratch directory, and stops Codex once the agent has made as many tool
calls as the run allows steps, before the model's next call (mini-swe-agent's step limit, with a
tool call for a step). The gateway's max_calls is the contestant's own limit, not the harness's.

When the turn ends on a question (cli.question_in) and no file changed, the question goes to
`ask_user` and the same thread is resumed with the answer (`codex exec resume THREAD`).

Reading the stream (`StreamReader`, also the importer's converter): the text of a reply and the
tool calls that follow it make one agent step, as the model produced them. The stream reports
usage per turn only, and after a resume counts the whole thread so far, so each turn's usage is
the difference, put on the turn's last agent step.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runs.agents import base, cli
from runs.transcript import TranscriptWriter

NAME = "codex"
# The wire format the CLI speaks (OpenAI Responses under /v1): the gateway translates.
SPEAKS = "openai"
VERSION = "0.171.0"  # the version bin/install-agents pins; the event format below is its
MAX_QUESTION_ROUNDS = 2
PROVIDER_ID = "mergeable"
TOKEN_VARIABLE = "MERGEABLE_MODEL_TOKEN"
# Codex retries a failed call four or five times by default; a dead endpoint should show soon.
MODEL_RETRIES = 2
# Items of the stream that are the agent acting: each counts as a step.
TOOL_ITEMS = ("command_execution", "file_change", "mcp_tool_call", "web_search", "collab_tool_call")
STREAM_EVENTS = {
    "thread.started", "turn.started", "turn.completed", "turn.failed",
    "item.started", "item.updated", "item.completed", "error",
}  # fmt: skip
COMPLETED, FAILED = "completed", "failed"
# The gateway's one 403: a limit of the run's is spent (runs/gateway.py, _limit_sentence).
_GATEWAY_REFUSAL = re.compile(r"\b403\b.*Mergeable gateway: this run's")

# Runs in the sandbox with the worker's Python: `guard.py LIMIT EVENTS -- codex ...`. It keeps the
# stream as it comes (a killed Codex leaves everything it said) and stops Codex once LIMIT tool
# calls have completed. Standard library only.
STEP_GUARD = f"""\
import json, subprocess, sys
limit, events, command = int(sys.argv[1]), sys.argv[2], sys.argv[4:]
tools = {TOOL_ITEMS!r}
done = set()
codex = subprocess.Popen(command, stdout=subprocess.PIPE)
with open(events, "ab") as log:
    for line in codex.stdout:
        log.write(line)
        log.flush()
        try:
            event = json.loads(line)
            item = event.get("item") or {{}}
        except (ValueError, AttributeError):
            continue
        if event.get("type") == "item.completed" and item.get("type") in tools:
            done.add(item.get("id"))
            if len(done) >= limit:
                codex.terminate()
                break
try:
    codex.wait(5)
except subprocess.TimeoutExpired:
    codex.kill()
"""


def binary() -> Path:
    return cli.binary("MERGEABLE_CODEX_BIN", "codex/node_modules/.bin/codex")


def install_paths(launcher: Path) -> list[Path]:
    """What the sandbox must see of the npm install: the node_modules holding the launcher and,
    beside it, the package with the native binary."""
    paths = []
    for path in (launcher, launcher.resolve()):
        holder = next((p for p in path.parents if p.name == "node_modules"), path.parent)
        if holder not in paths:
            paths.append(holder)
    return paths


def run(context: base.AgentContext) -> base.AgentOutcome:
    codex = binary()
    if not codex.is_file():
        raise base.HarnessUnavailable(
            f"the Codex CLI is not installed at {codex}: run `make agents`"
        )
    if context.run_sandboxed is None or context.scratch is None:
        raise base.HarnessUnavailable(
            "the codex harness needs run_sandboxed and a scratch directory"
        )
    model = context.model
    if model is None or model.provider not in ("openai", "anthropic") or not model.base_url:
        provider = getattr(model, "provider", None)
        raise base.HarnessUnavailable(
            f"Codex needs an openai or anthropic model behind the run's gateway, not {provider!r}"
        )

    session = Session(context, codex)
    message = (
        f"# Task: {context.title}\n\n{context.instructions}"
        if context.title
        else context.instructions
    )
    outcome = base.AgentOutcome(end_status=base.STOPPED)
    before = cli.snapshot(context.workspace)
    try:
        for round_number in range(MAX_QUESTION_ROUNDS + 1):
            turn = session.run_turn(message)
            reader = session.reader
            outcome.steps = reader.agent_steps
            outcome.input_tokens = reader.input_tokens
            outcome.output_tokens = reader.output_tokens
            outcome.cost_usd = model.cost(reader.input_tokens, reader.output_tokens)
            context.on_usage(
                outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps
            )
            if turn.cancelled:
                outcome.end_status = base.CANCELLED
            elif turn.timed_out:
                outcome.end_status = base.TIMED_OUT
            elif turn.status == FAILED:
                _failed(outcome, turn.error)
            elif turn.status != COMPLETED:
                if reader.tool_calls >= context.limits.max_steps:
                    outcome.end_status = base.MAX_STEPS
                    outcome.summary = f"Codex was stopped after {reader.tool_calls} tool calls"
                    return outcome
                raise base.HarnessUnavailable(
                    f"Codex stopped without ending its turn: {turn.output[-1000:].strip()}"
                )
            else:
                changed = cli.changed_files(before, cli.snapshot(context.workspace))
                question = None if changed else cli.question_in(turn.last_message)
                if question is None:
                    outcome.end_status = base.FINISHED
                    outcome.summary = turn.last_message
                elif round_number == MAX_QUESTION_ROUNDS or not turn.thread_id:
                    outcome.end_status = base.STOPPED
                    outcome.summary = f"Codex ended on a question: {question}"
                else:
                    message = context.ask_user(question)
                    continue
            return outcome
        return outcome
    finally:
        session.save_raw_logs()


def _failed(outcome: base.AgentOutcome, error: str) -> None:
    if _GATEWAY_REFUSAL.search(error):
        # The run's budget (cost, tokens or calls) is spent: the contestant's doing. In a run the
        # gateway's own report of which limit decides the reason; this covers Codex seeing it first.
        outcome.end_status = base.MAX_COST
        outcome.summary = error[:1000]
    else:
        outcome.end_status = base.MODEL_UNREACHABLE
        outcome.error = error[:1000] or "Codex's turn failed without saying why"


# --- Configuration -------------------------------------------------------------------------


def settings(context: base.AgentContext) -> dict:
    """config.toml as a dict. `options["config"]` may add top-level keys (say
    model_reasoning_effort or model_context_window); what keeps Codex on the gateway wins."""
    model = context.model
    own = context.options.get("config") or {}
    if not isinstance(own, dict):
        raise base.HarnessUnavailable("the codex option 'config' must be a mapping of settings")
    return {
        **own,
        "model": model.model,
        "model_provider": PROVIDER_ID,
        "check_for_update_on_startup": False,
        "web_search": "disabled",
        "analytics": {"enabled": False},
        "feedback": {"enabled": False},
        "agents": {"enabled": False},
        "features": {"goals": False, "image_generation": False, "plugins": False, "apps": False},
        # The commands the model runs do not see the token Codex itself uses.
        "shell_environment_policy": {
            "inherit": "all",
            "ignore_default_excludes": False,
            "exclude": [TOKEN_VARIABLE],
        },
        "model_providers": {
            PROVIDER_ID: {
                "name": "Mergeable run gateway",
                "base_url": gateway_url(model.base_url),
                "env_key": TOKEN_VARIABLE,
                "wire_api": "responses",
                "request_max_retries": MODEL_RETRIES,
                "stream_max_retries": MODEL_RETRIES,
            }
        },
    }


def gateway_url(base_url: str) -> str:
    """The OpenAI-style base URL Codex needs. The gateway serves the Responses API whatever the
    model speaks (translating), but an anthropic model's base URL has no /v1."""
    base_url = base_url.rstrip("/")
    return base_url if base_url.endswith("/v1") else f"{base_url}/v1"


def toml(data: dict, path: tuple[str, ...] = ()) -> str:
    """A TOML document for a dict of strings, numbers, booleans, lists and tables."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)
    ]
    for key, value in data.items():
        if isinstance(value, dict):
            table = (*path, key)
            lines += ["", f"[{'.'.join(_toml_key(k) for k in table)}]", toml(value, table)]
    return "\n".join(lines)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are TOML's, but for DEL, which TOML wants escaped too.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise base.HarnessUnavailable(f"the codex setting {value!r} cannot be written as TOML")


# --- The workspace -------------------------------------------------------------------------


# --- Running Codex -------------------------------------------------------------------------


@dataclass
class Turn:
    """What one `codex exec` said about its turn."""

    thread_id: str = ""
    status: str = ""  # COMPLETED, FAILED, or "" when the stream stopped before the turn ended
    error: str = ""
    last_message: str = ""
    output: str = ""  # what Codex printed besides the stream (stderr)
    timed_out: bool = False
    cancelled: bool = False


class Session:
    """One Codex thread over one or more `codex exec` runs, with its files in the scratch dir."""

    def __init__(self, context: base.AgentContext, codex: Path) -> None:
        self.context = context
        self.codex = codex
        self.dir = Path(context.scratch) / "codex"
        self.home = self.dir / "home"  # CODEX_HOME and HOME: config, sessions, state
        self.home.mkdir(parents=True, exist_ok=True)
        self.events = self.dir / "events.jsonl"
        self.prompt = self.dir / "prompt.md"
        # Outside the writable directory and mounted read-only: the agent cannot lift its limit.
        self.guard = Path(context.scratch) / "codex-step-guard.py"
        self.guard.write_text(STEP_GUARD)
        self.config = settings(context)
        self.reader = StreamReader(context.transcript, context.model)
        self.thread_id = ""
        self.output = ""

    def command(self, steps_left: int) -> str:
        args = [
            sys.executable, str(self.guard), str(steps_left), str(self.events), "--",
            str(self.codex), "exec", "--json", "--color", "never",
            "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check",
            "-C", str(self.context.workspace),
        ]  # fmt: skip
        if self.thread_id:
            args += ["resume", self.thread_id]
        # The message comes on stdin: an argument could not be longer than 128 KiB.
        return f"{shlex.join([*args, '-'])} < {shlex.quote(str(self.prompt))}"

    def environment(self) -> dict[str, str]:
        return {
            TOKEN_VARIABLE: self.context.model.api_key or "none",
            "CODEX_HOME": str(self.home),
            "HOME": str(self.home),
            "NO_COLOR": "1",
        }

    def run_turn(self, message: str) -> Turn:
        self.context.transcript.add_step("user", message)
        steps_left = self.context.limits.max_steps - self.reader.tool_calls
        if steps_left <= 0:  # (a resumed turn would have no step to take)
            return Turn(thread_id=self.thread_id)
        self.prompt.write_text(message)
        # Written afresh every time: the agent could have changed it in the last turn.
        (self.home / "config.toml").write_text(toml(self.config) + "\n")
        start = self.events.stat().st_size if self.events.is_file() else 0
        result = self.context.run_sandboxed(
            self.command(steps_left),
            timeout=max(1.0, self.context.limits.seconds_left()),
            env=self.environment(),
            gateway=True,
            extra_ro_paths=[*install_paths(self.codex), self.guard],
            extra_rw_paths=[self.dir],
        )
        self.output += result.output
        turn = self.reader.read(_read_from(self.events, start))
        turn.output = result.output
        turn.timed_out, turn.cancelled = result.timed_out, result.cancelled
        self.thread_id = turn.thread_id or self.thread_id
        return turn

    def save_raw_logs(self) -> None:
        if self.events.is_file():
            self.context.save_raw_log("codex/events.jsonl", self.events.read_text(errors="replace"))
        if self.output:
            self.context.save_raw_log("codex/output.txt", self.output)
        # Codex's own record of the thread: every request it built, with per-call usage.
        for rollout in sorted((self.home / "sessions").glob("**/rollout-*.jsonl")):
            self.context.save_raw_log(f"codex/{rollout.name}", rollout.read_text(errors="replace"))


def _read_from(path: Path, offset: int) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


# --- Reading the stream --------------------------------------------------------------------


@dataclass
class _Step:
    """An agent step being gathered: a reply's text, then the tool calls it made."""

    texts: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    results: dict[str, str] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)
    plan: list | None = None

    def empty(self) -> bool:
        return not (self.texts or self.reasoning or self.calls or self.plan)


class StreamReader:
    """Writes the ATIF steps of `codex exec --json` streams into a TranscriptWriter and keeps
    count of usage, agent steps and tool calls. Feed it each stream in order with `read`."""

    def __init__(self, transcript: TranscriptWriter, model=None, *, imported: bool = False) -> None:
        self.transcript = transcript
        self.model = model
        # An imported stream: a bad line is an error, and steps have no time (the stream gives
        # none, and the import's is not the run's).
        self.imported = imported
        self._when = {"timestamp": None} if imported else {}
        self.input_tokens = self.output_tokens = self.cached_tokens = 0
        self.tool_calls = 0
        self.agent_steps = 0
        self.events = 0
        self.warnings: list[str] = []
        self._thread_usage: dict[str, dict] = {}
        self._threads = 0
        self._done: set[str] = set()
        self._step = _Step()
        self._turn_steps: list[dict] = []
        self._turn = Turn()

    def read(self, text: str, filename: str = "the stream") -> Turn:
        """Read one stream (or several, concatenated); returns its last turn."""
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                if self.imported:
                    raise ValueError(f"{filename}: line {number} is not a Codex JSON event")
                continue
            self.events += 1
            self._event(event)
        if self._turn.status == "":  # cut off mid-turn: keep what it did
            self._close_step()
        return self._turn

    def _event(self, event: dict) -> None:
        kind = event["type"]
        if kind == "thread.started":
            self._threads += 1
            self._turn = Turn(thread_id=str(event.get("thread_id") or ""))
        elif kind == "turn.started":
            self._turn = Turn(thread_id=self._turn.thread_id)
            self._turn_steps = []
        elif kind in ("item.started", "item.updated", "item.completed"):
            item = event.get("item")
            if isinstance(item, dict):
                self._item(item, done=kind == "item.completed")
        elif kind == "turn.completed":
            self._turn.status = COMPLETED
            self._close_turn(event.get("usage"))
        elif kind == "turn.failed":
            self._turn.status = FAILED
            error = event.get("error") or {}
            self._turn.error = str(error.get("message") if isinstance(error, dict) else error)
            self._close_turn(None)
        elif kind == "error":
            message = str(event.get("message") or "")
            self._turn.error = message
            self._warn(message)

    def _item(self, item: dict, *, done: bool) -> None:
        kind = item.get("type")
        item_id = str(item.get("id") or "")
        if self._threads > 1:  # item ids start again in every `codex exec`
            item_id = f"{self._threads}.{item_id}"
        if kind in ("agent_message", "reasoning"):
            if not done:
                return
            if self._step.calls:  # text after tool calls: the model's next reply
                self._close_step()
            text = str(item.get("text") or "")
            if kind == "agent_message":
                self._step.texts.append(text)
                self._turn.last_message = text
            else:
                self._step.reasoning.append(text)
        elif kind in TOOL_ITEMS:
            known = any(call["id"] == item_id for call in self._step.calls)
            if not known:
                if self._step.calls and not self._step.running:  # the next reply's calls
                    self._close_step()
                name, arguments = _call(item)
                self._step.calls.append({"id": item_id, "name": name, "arguments": arguments})
            if done:
                self._step.running.discard(item_id)
                self._step.results[item_id] = _result(item)
                if item_id not in self._done:
                    self._done.add(item_id)
                    self.tool_calls += 1
            else:
                self._step.running.add(item_id)
        elif kind == "todo_list":
            self._step.plan = item.get("items") if isinstance(item.get("items"), list) else []
        elif kind == "error" and done:
            self._warn(str(item.get("message") or ""))

    def _close_step(self, metrics: dict | None = None, extra: dict | None = None) -> dict | None:
        step, self._step = self._step, _Step()
        if step.empty():
            return None
        step_extra = {"plan": step.plan} if step.plan is not None else {}
        written = self.transcript.add_step(
            "agent",
            "\n\n".join(step.texts),
            tool_calls=step.calls,
            metrics=metrics,
            extra={**step_extra, **(extra or {})} or None,
            reasoning_content="\n\n".join(step.reasoning) or None,
            **self._when,
        )
        results = [(c["id"], step.results[c["id"]]) for c in step.calls if c["id"] in step.results]
        if results:
            self.transcript.add_observations(written, results)
        self.agent_steps += 1
        self._turn_steps.append(written)
        return written

    def _close_turn(self, usage: object) -> None:
        metrics = self._usage(usage) if isinstance(usage, dict) else None
        extra = {"metrics_cover": "the whole turn"} if metrics else None
        if self._close_step(metrics, extra) is None and metrics:
            if self._turn_steps:
                last = self._turn_steps[-1]
                last["metrics"] = metrics
                last["extra"] = {**(last.get("extra") or {}), **extra}
                self.transcript.flush()
            elif metrics["prompt_tokens"] or metrics["completion_tokens"]:
                self.transcript.add_step("agent", "", metrics=metrics, extra=extra, **self._when)
                self.agent_steps += 1
        self._turn_steps = []

    def _usage(self, usage: dict) -> dict:
        """This turn's usage: Codex reports the thread's so far, so the difference."""
        totals = {
            "input": cli.json_count(usage.get("input_tokens")),
            "cached": cli.json_count(usage.get("cached_input_tokens")),
            "output": cli.json_count(usage.get("output_tokens")),
        }
        thread = self._turn.thread_id or "-"
        before = self._thread_usage.get(thread, {})
        self._thread_usage[thread] = totals
        turn = {key: max(0, value - before.get(key, 0)) for key, value in totals.items()}
        self.input_tokens += turn["input"]
        self.output_tokens += turn["output"]
        self.cached_tokens += turn["cached"]
        metrics = {
            "prompt_tokens": turn["input"],
            "completion_tokens": turn["output"],
            "cached_tokens": turn["cached"],
        }
        if self.model is not None:
            metrics["cost_usd"] = round(self.model.cost(turn["input"], turn["output"]), 6)
        return metrics

    def _warn(self, message: str) -> None:
        """Codex's notices (fallback model metadata, retries) as system steps, once each."""
        if not message or message in self.warnings:
            return
        self.warnings.append(message)
        if not self._step.running and (self._step.calls or not self._step.texts):
            self._close_step()  # (a reply still arriving keeps its step)
        self.transcript.add_step("system", f"Codex: {message}", **self._when)


def _call(item: dict) -> tuple[str, dict]:
    kind = item["type"]
    if kind == "command_execution":
        return "shell", {"command": str(item.get("command") or "")}
    if kind == "file_change":
        return "apply_patch", {"changes": item.get("changes") or []}
    if kind == "mcp_tool_call":
        arguments = item.get("arguments")
        name = f"{item.get('server') or 'mcp'}.{item.get('tool') or 'tool'}"
        return name, arguments if isinstance(arguments, dict) else {"arguments": arguments}
    if kind == "web_search":
        return "web_search", {"query": str(item.get("query") or "")}
    details = {k: v for k, v in item.items() if k not in ("id", "type", "status")}
    return str(item.get("tool") or kind), details


def _result(item: dict) -> str:
    kind = item["type"]
    if kind == "command_execution":
        output = str(item.get("aggregated_output") or "")
        code = item.get("exit_code")
        if code not in (0, None):
            output += f"\n[exit code {code}]"
        return output
    if kind == "mcp_tool_call":
        error = item.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"error: {error['message']}"
        result = item.get("result")
        if isinstance(result, dict) and isinstance(result.get("content"), list):
            return "\n".join(
                str(part.get("text", "")) for part in result["content"] if isinstance(part, dict)
            )
        return json.dumps(result) if result is not None else ""
    if kind == "file_change":
        changes = item.get("changes") or []
        paths = ", ".join(
            f"{c.get('kind', 'update')} {c.get('path', '')}" for c in changes if isinstance(c, dict)
        )
        return f"{item.get('status', '')}: {paths}".strip(": ")
    return str(item.get("status") or "")


# --- Importing a stream --------------------------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    """Whether this is `codex exec --json` output: its first line is one of Codex's events."""
    event = cli.first_json_object(text)
    return (
        event is not None
        and event.get("type") in STREAM_EVENTS - {"error"}
        and ("thread_id" in event or "item" in event or event["type"].startswith("turn."))
    )


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """An ATIF document from `codex exec --json` output; ValueError names what is wrong.

    The stream has no prompts, no timestamps and no prices: the document has Codex's steps (its
    replies, tool calls and notices), untimed, and no cost.
    """
    writer = TranscriptWriter(agent_name=NAME, agent_version="", model_name="")
    reader = StreamReader(writer, imported=True)
    last = reader.read(text, filename)
    if not reader.events:
        raise ValueError(f"{filename}: no Codex events (the output of `codex exec --json`)")
    if last.status == COMPLETED:
        end_status = base.FINISHED
    elif last.status == FAILED:
        outcome = base.AgentOutcome(end_status="")
        _failed(outcome, last.error)
        end_status = outcome.end_status
    else:
        end_status = base.STOPPED
    writer.finish(
        prompt_tokens=reader.input_tokens,
        completion_tokens=reader.output_tokens,
        cost_usd=0.0,
        cached_tokens=reader.cached_tokens,
        end_status=end_status,
        imported=True,
        source_format=NAME,
        source_file=filename,
    )
    return writer.document

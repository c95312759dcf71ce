"""The Claude Code harness: `claude -p`, headless, in the sandbox; it reaches only the run's gateway.

Claude Code runs once per user message with its NDJSON stream (`--output-format stream-json
--verbose --include-partial-messages`) written to a file in the scratch directory, never through
the sandbox's capped output. Its home and config dir are in the scratch directory too, so the
session it keeps there can be resumed (`--resume SESSION`, same cwd) with the answer when it ends
its turn on a question without touching a file.

Its exit code means nothing: the end status comes from the stream's final `result` event (its
subtype, `is_error`, `api_error_status`). The stream is also the transcript: `parse_stream` reads
it (and Claude Code's own session files, `~/.claude/projects/*/SESSION.jsonl`, for the importer)
into ATIF steps. Each model call's blocks arrive as separate `assistant` events with the usage of
its `message_start`; the partial messages add the `message_delta` that carries its real output
tokens.

Permissions are bypassed inside the sandbox, which is the boundary; as root it refuses that
unless `IS_SANDBOX=1`.
"""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runs.agents import base, cli
from runs.transcript import TranscriptWriter, parse_time

NAME = "claude-code"
# The wire format the CLI speaks: the gateway serves it that way and translates to the model's own.
SPEAKS = "anthropic"
VERSION = "2.1.332"  # the version bin/install-agents pins; the stream format below is its
MAX_QUESTION_ROUNDS = 2
MODEL_RETRIES = 3  # Claude Code's default (10, backing off) hides a dead endpoint for minutes
STDERR_TAIL = 2000
# In the stream, an API error Claude Code gave up on is an assistant message from this "model".
SYNTHETIC_MODEL = "<synthetic>"
# Event types of the stream and of session files, to recognize them among other JSON lines.
_EVENT_TYPES = {"system", "assistant", "user", "result", "stream_event", "queue-operation"}

ENVIRONMENT = {
    # No telemetry, error reports, update checks, release notes or feature-flag fetches: the
    # sandbox has no network, and the CLI must not wait for it.
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "CLAUDE_CODE_MAX_RETRIES": str(MODEL_RETRIES),
    # Bypassing permissions is what the sandbox is for; the sandbox runs it as a non-root uid,
    # but a worker using the `none` backend as root would otherwise be refused.
    "IS_SANDBOX": "1",
    # Not CLAUDE_CODE_SUBPROCESS_ENV_SCRUB: it would keep the run's token from the commands the
    # model runs, but it also forces the permission mode back to asking and plants empty
    # .env, package.json, .npmrc … files in the workspace, which would land in the diff. The
    # token is worth nothing outside the run's gateway, and the model holds it through the CLI.
}


def binary() -> Path:
    return cli.binary("MERGEABLE_CLAUDE_CODE_BIN", "claude-code/node_modules/.bin/claude")


def install_dir(executable: Path) -> Path:
    """What to mount for the CLI: its npm prefix (the directory holding node_modules), where the
    .bin link and the native binary it points to both live."""
    resolved = executable.resolve()
    for parent in resolved.parents:
        if parent.name == "node_modules":
            return parent.parent
    return resolved.parent


def run(context: base.AgentContext) -> base.AgentOutcome:
    claude = binary()
    if not claude.is_file():
        raise base.HarnessUnavailable(
            f"Claude Code is not installed at {claude}: run `make agents`"
        )
    if context.run_sandboxed is None or context.scratch is None:
        raise base.HarnessUnavailable(
            "the claude-code harness needs run_sandboxed and a scratch directory"
        )
    model = context.model
    if model is None or model.provider != SPEAKS:
        provider = getattr(model, "provider", None)
        raise base.HarnessUnavailable(
            "Claude Code speaks only the Anthropic Messages API: it needs a model behind the "
            f"run's gateway (openai or anthropic), not {provider!r}"
        )
    session = Session(context, claude)
    message = context.instructions
    if context.title:
        message = f"# Task: {context.title}\n\n{context.instructions}"
    outcome = base.AgentOutcome(end_status=base.STOPPED)
    before = cli.snapshot(context.workspace)
    try:
        for round_number in range(MAX_QUESTION_ROUNDS + 1):
            turns_left = context.limits.max_steps - outcome.steps
            if turns_left <= 0:
                outcome.end_status = base.MAX_STEPS
                return outcome
            if context.cancel.is_set():
                outcome.end_status = base.CANCELLED
                return outcome
            round_ = session.run_round(message, max_turns=turns_left)
            outcome.steps += round_.stream.model_calls
            outcome.input_tokens += round_.stream.input_tokens
            outcome.output_tokens += round_.stream.output_tokens
            outcome.cost_usd += model.cost(round_.stream.input_tokens, round_.stream.output_tokens)
            context.on_usage(
                outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps
            )
            if round_.cancelled:
                outcome.end_status = base.CANCELLED
                return outcome
            if round_.timed_out:
                outcome.end_status = base.TIMED_OUT
                return outcome
            result = round_.stream.result
            if result is None:
                raise base.HarnessUnavailable(
                    f"Claude Code ended (exit code {round_.exit_code}) without a result: "
                    f"{round_.stderr[-STDERR_TAIL:].strip() or 'no output'}"
                )
            outcome.end_status, outcome.error = end_status(result)
            final = str(result.get("result") or "")
            outcome.summary = final
            if outcome.end_status != base.FINISHED:
                return outcome
            question = cli.question_in(final)
            if question is None or cli.changed_files(before, cli.snapshot(context.workspace)):
                return outcome
            if round_number == MAX_QUESTION_ROUNDS:
                outcome.end_status = base.STOPPED
                outcome.summary = f"Claude Code still had a question after {round_number} answers"
                return outcome
            if context.limits.max_cost_usd is not None and (
                outcome.cost_usd >= context.limits.max_cost_usd
            ):
                outcome.end_status = base.MAX_COST
                return outcome
            message = context.ask_user(question)
        return outcome
    finally:
        session.save_raw_logs()


def end_status(result: dict) -> tuple[str, str]:
    """The end status a `result` event means, and the error when the model could not be used."""
    subtype = str(result.get("subtype") or "")
    errors = "; ".join(str(e) for e in result.get("errors") or [] if e)
    if subtype == "error_max_turns" or result.get("terminal_reason") == "max_turns":
        return base.MAX_STEPS, ""
    if subtype == "error_max_budget_usd":
        return base.MAX_COST, ""
    if result.get("api_error_status") or result.get("terminal_reason") == "api_error":
        return base.MODEL_UNREACHABLE, str(result.get("result") or errors)[:1000]
    if subtype.startswith("error") or result.get("is_error"):
        raise base.HarnessUnavailable(
            f"Claude Code failed ({subtype or 'is_error'}): "
            f"{(errors or str(result.get('result') or ''))[:1000]}"
        )
    return base.FINISHED, ""


# --- Running Claude Code -------------------------------------------------------------------


@dataclass
class Round:
    stream: Stream
    exit_code: int
    stderr: str
    timed_out: bool
    cancelled: bool


class Session:
    """One Claude Code session over the rounds of a run: same home, same cwd, same session id."""

    def __init__(self, context: base.AgentContext, claude: Path) -> None:
        self.context = context
        self.claude = claude.resolve()
        self.dir = Path(context.scratch) / "claude-code"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.session_id = str(uuid.uuid4())
        self.rounds = 0
        self.stream_log = ""
        self.stderr_log = ""
        model = context.model
        self.env = {
            **ENVIRONMENT,
            "HOME": str(self.home),
            "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
            "ANTHROPIC_BASE_URL": model.base_url.rstrip("/"),
            "ANTHROPIC_API_KEY": model.api_key or "none",
            # Side calls Claude Code makes with a smaller model go to the run's model too.
            "ANTHROPIC_SMALL_FAST_MODEL": model.model,
            "ANTHROPIC_DEFAULT_HAIKU_MODEL": model.model,
        }

    def command(self, prompt: Path, stream: Path, max_turns: int) -> str:
        args = [
            str(self.claude), "-p",
            "--output-format", "stream-json", "--verbose", "--include-partial-messages",
            "--model", self.context.model.model,
            "--max-turns", str(max_turns),
            "--dangerously-skip-permissions",
        ]  # fmt: skip
        if self.rounds == 0:
            args += ["--session-id", self.session_id]
        else:
            args += ["--resume", self.session_id]
        # stdout to a file: the stream is the transcript, and the sandbox keeps only a tail.
        return f"{shlex.join(args)} < {shlex.quote(str(prompt))} > {shlex.quote(str(stream))}"

    def run_round(self, message: str, *, max_turns: int) -> Round:
        self.context.transcript.add_step(
            "user", message, extra={"claude_code_session": self.session_id}
        )
        number = self.rounds + 1
        prompt = self.dir / f"prompt-{number}.md"
        stream_path = self.dir / f"stream-{number}.jsonl"
        prompt.write_text(message)
        result = self.context.run_sandboxed(
            self.command(prompt, stream_path, max_turns),
            timeout=max(1.0, self.context.limits.seconds_left()),
            env=self.env,
            gateway=True,
            extra_ro_paths=[install_dir(self.claude)],
            extra_rw_paths=[self.dir],
        )
        self.rounds = number
        text = stream_path.read_text(errors="replace") if stream_path.is_file() else ""
        self.stream_log += text
        self.stderr_log += result.output
        stream = parse_stream(text)
        write_steps(self.context.transcript, stream, price=self.context.model.cost)
        return Round(
            stream=stream,
            exit_code=result.exit_code,
            stderr=result.output,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
        )

    def save_raw_logs(self) -> None:
        if self.stream_log:
            self.context.save_raw_log("claude-code/stream.jsonl", self.stream_log)
        if self.stderr_log.strip():
            self.context.save_raw_log("claude-code/stderr.txt", self.stderr_log)
        # Claude Code's own record of the session: what it sent, system prompt included.
        for path in sorted((self.home / ".claude" / "projects").glob(f"*/{self.session_id}.jsonl")):
            self.context.save_raw_log("claude-code/session.jsonl", path.read_text(errors="replace"))


# --- Reading the stream --------------------------------------------------------------------


@dataclass
class Usage:
    """One model call's tokens, as Anthropic counts them: input_tokens leaves out cached input."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    final: bool = False  # the message_delta was read: the output tokens are the call's total

    @property
    def prompt_tokens(self) -> int:
        """All input, cached or not, as the gateway meters it."""
        return self.input_tokens + self.cache_read_tokens + self.cache_write_tokens

    def update(self, usage: object, *, final: bool = False) -> None:
        """Later figures win, except that the output tokens of a message_delta (`final`) stay:
        the assistant events of a stream carry its message_start's usage."""
        if not isinstance(usage, dict):
            return
        if self.final and not final:
            usage = {k: v for k, v in usage.items() if k != "output_tokens"}
        self.final = self.final or final
        for name, key in (
            ("input_tokens", "input_tokens"),
            ("output_tokens", "output_tokens"),
            ("cache_read_tokens", "cache_read_input_tokens"),
            ("cache_write_tokens", "cache_creation_input_tokens"),
        ):
            if usage.get(key) is not None:
                setattr(self, name, _count(usage[key]))


@dataclass
class Entry:
    """A step to be: a model call's blocks gathered, a user message, or a system note."""

    source: str
    message: str = ""
    tool_calls: list[dict] = field(default_factory=list)
    results: list[tuple[str, str]] = field(default_factory=list)
    usage: Usage | None = None
    reasoning: str = ""
    extra: dict = field(default_factory=dict)
    timestamp: str = ""


@dataclass
class Stream:
    entries: list[Entry] = field(default_factory=list)
    session_id: str = ""
    model: str = ""
    version: str = ""
    results: list[dict] = field(default_factory=list)
    # Rounds whose result event is missing (a killed CLI): their steps' usage is all there is.
    unfinished_usage: Usage = field(default_factory=Usage)

    @property
    def result(self) -> dict | None:
        return self.results[-1] if self.results else None

    @property
    def model_calls(self) -> int:
        return sum(1 for entry in self.entries if entry.usage is not None)

    @property
    def input_tokens(self) -> int:
        return self.unfinished_usage.prompt_tokens + sum(
            _result_usage(r).prompt_tokens for r in self.results
        )

    @property
    def output_tokens(self) -> int:
        return self.unfinished_usage.output_tokens + sum(
            _result_usage(r).output_tokens for r in self.results
        )

    @property
    def cached_tokens(self) -> int:
        return self.unfinished_usage.cache_read_tokens + sum(
            _result_usage(r).cache_read_tokens for r in self.results
        )

    @property
    def reported_cost(self) -> float | None:
        """Claude Code's own estimate, from its price list (a guess for models it does not know)."""
        costs = [r["total_cost_usd"] for r in self.results if _number(r.get("total_cost_usd"))]
        return float(sum(costs)) if costs else None


def parse_stream(text: str) -> Stream:
    """Steps, usage and results from Claude Code's NDJSON: a `-p --output-format stream-json`
    stream (one or more invocations, with or without partial messages) or a session file.

    Lines that are not JSON objects (stderr mixed in) are skipped.
    """
    stream = Stream()
    calls: dict[str, Entry] = {}  # message id -> its agent entry
    usage: dict[str, Usage] = {}  # message id -> its usage, as it grows
    by_call_id: dict[str, Entry] = {}  # tool_use id -> the agent entry that made the call
    round_calls: list[Entry] = []  # agent entries since the last result event
    for event in _events(text):
        kind = event.get("type")
        stream.session_id = str(
            event.get("session_id") or event.get("sessionId") or stream.session_id
        )
        stream.version = str(event.get("version") or stream.version)
        if kind == "system":
            _read_system(stream, event)
        elif kind == "stream_event":
            _read_partial(event, usage)
        elif kind == "assistant":
            _read_assistant(stream, event, calls, usage, by_call_id, round_calls)
        elif kind == "user":
            _read_user(stream, event, by_call_id)
        elif kind == "result":
            stream.results.append(event)
            round_calls = []
    for entry in round_calls:
        stream.unfinished_usage.input_tokens += entry.usage.input_tokens
        stream.unfinished_usage.output_tokens += entry.usage.output_tokens
        stream.unfinished_usage.cache_read_tokens += entry.usage.cache_read_tokens
        stream.unfinished_usage.cache_write_tokens += entry.usage.cache_write_tokens
    return stream


def _events(text: str):
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            yield event


def _read_system(stream: Stream, event: dict) -> None:
    subtype = event.get("subtype")
    if subtype == "init":
        stream.model = str(event.get("model") or stream.model)
        stream.version = str(event.get("claude_code_version") or stream.version)
    elif subtype == "api_retry":
        stream.entries.append(
            Entry(
                source="system",
                message=(
                    f"Model call failed ({event.get('error_status') or event.get('error')}); "
                    f"retry {event.get('attempt')} of {event.get('max_retries')}"
                ),
                extra={"claude_code_event": "api_retry"},
            )
        )
    elif subtype == "compact_boundary":
        stream.entries.append(
            Entry(
                source="system",
                message="Claude Code compacted the conversation",
                extra={"claude_code_event": "compact_boundary"},
            )
        )


def _read_partial(event: dict, usage: dict[str, Usage]) -> None:
    inner = event.get("event") if isinstance(event.get("event"), dict) else {}
    if inner.get("type") == "message_start" and isinstance(inner.get("message"), dict):
        message_id = str(inner["message"].get("id") or "")
        usage.setdefault(message_id, Usage()).update(inner["message"].get("usage"))
    elif inner.get("type") == "message_delta":
        message_id = str(event.get("api_message_id") or "")
        usage.setdefault(message_id, Usage()).update(inner.get("usage"), final=True)


def _read_assistant(
    stream: Stream,
    event: dict,
    calls: dict[str, Entry],
    usage: dict[str, Usage],
    by_call_id: dict[str, Entry],
    round_calls: list[Entry],
) -> None:
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    blocks = message.get("content") if isinstance(message.get("content"), list) else []
    if message.get("model") == SYNTHETIC_MODEL or event.get("is_api_error_message"):
        # Not a model call: Claude Code reporting one that failed.
        text = _blocks_text(blocks)
        stream.entries.append(
            Entry(
                source="system",
                message=text,
                extra={"claude_code_event": "api_error", "status": event.get("api_error_status")},
                timestamp=str(event.get("timestamp") or ""),
            )
        )
        return
    stream.model = stream.model or str(message.get("model") or "")
    message_id = str(message.get("id") or event.get("uuid") or len(stream.entries))
    entry = calls.get(message_id)
    if entry is None:
        entry = Entry(source="agent", usage=usage.setdefault(message_id, Usage()))
        entry.timestamp = str(event.get("timestamp") or "")
        parent = event.get("parent_tool_use_id") or (
            "sidechain" if event.get("isSidechain") else None
        )
        if parent:
            entry.extra["parent_tool_use_id"] = parent  # a subagent's call
        calls[message_id] = entry
        stream.entries.append(entry)
        round_calls.append(entry)
    entry.usage.update(message.get("usage"))
    texts, thinking = [], []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") in ("thinking", "redacted_thinking"):
            thinking.append(str(block.get("thinking") or "[redacted thinking]"))
        elif block.get("type") in ("tool_use", "server_tool_use"):
            call_id = str(block.get("id") or f"call-{len(by_call_id)}")
            arguments = block.get("input") if isinstance(block.get("input"), dict) else {}
            entry.tool_calls.append(
                {"id": call_id, "name": str(block.get("name") or ""), "arguments": arguments}
            )
            by_call_id[call_id] = entry
    entry.message = "\n\n".join(t for t in [entry.message, *texts] if t.strip())
    entry.reasoning = "\n\n".join(t for t in [entry.reasoning, *thinking] if t.strip())


def _read_user(stream: Stream, event: dict, by_call_id: dict[str, Entry]) -> None:
    if event.get("isMeta") or event.get("isCompactSummary"):
        return  # Claude Code's own notes to the model, not a message anyone wrote
    message = event.get("message") if isinstance(event.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, str):
        texts = [content]
        blocks: list = []
    else:
        blocks = content if isinstance(content, list) else []
        texts = [
            str(b.get("text") or "")
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text"
        ]
    for block in blocks:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            call_id = str(block.get("tool_use_id") or "")
            output = _result_text(block.get("content"))
            if block.get("is_error"):
                output = f"[error] {output}"
            owner = by_call_id.get(call_id)
            if owner is not None:
                owner.results.append((call_id, output))
    text = "\n\n".join(t for t in texts if t.strip())
    if text:
        stream.entries.append(
            Entry(source="user", message=text, timestamp=str(event.get("timestamp") or ""))
        )


def _blocks_text(blocks: list) -> str:
    return "\n\n".join(
        str(b.get("text") or "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text") or ""))
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'content')}]")
        return "\n".join(parts)
    return "" if content is None else str(content)


def _result_usage(result: dict) -> Usage:
    usage = Usage()
    usage.update(result.get("usage"))
    return usage


def _count(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- Writing ATIF --------------------------------------------------------------------------


def write_steps(
    writer: TranscriptWriter, stream: Stream, price=None, *, known_times_only: bool = False
) -> list[dict]:
    """Add the stream's entries to `writer` as ATIF steps, at the times the stream gives.

    `price(input_tokens, output_tokens)` gives each call's cost; without it, steps carry none.
    An entry the stream gives no time for is stamped now, or with `known_times_only` left
    without a timestamp.
    """
    steps = []
    for entry in stream.entries:
        metrics = None
        if entry.usage is not None:
            metrics = {
                "prompt_tokens": entry.usage.prompt_tokens,
                "completion_tokens": entry.usage.output_tokens,
                "cached_tokens": entry.usage.cache_read_tokens,
            }
            if entry.usage.cache_write_tokens:
                metrics["extra"] = {"cache_write_tokens": entry.usage.cache_write_tokens}
            if price is not None:
                cost = price(entry.usage.prompt_tokens, entry.usage.output_tokens)
                metrics["cost_usd"] = round(cost, 6)
        when = parse_time(entry.timestamp, numbers=False)
        step = writer.add_step(
            entry.source,
            entry.message,
            tool_calls=entry.tool_calls,
            metrics=metrics,
            reasoning_content=entry.reasoning or None,
            extra=entry.extra or None,
            **({"timestamp": when} if when is not None or known_times_only else {}),
        )
        if entry.results:
            writer.add_observations(step, entry.results)
        steps.append(step)
    return steps


# --- Importing -----------------------------------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    """Whether `text` is Claude Code's stream-json output or one of its session files: NDJSON
    whose first events include one of its types naming a session (`session_id` in streams,
    `sessionId` in session files; opencode's `sessionID` and Codex's `thread_id` are others')."""
    for line in text[:200_000].splitlines()[:50]:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(event, dict)
            and event.get("type") in _EVENT_TYPES
            and ("session_id" in event or "sessionId" in event)
        ):
            return True
    return False


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """An ATIF document from a Claude Code stream-json log or session file.

    Costs are Claude Code's own estimates (`total_cost_usd`) when it reported any; steps carry
    none, for the importer knows no prices.
    """
    stream = parse_stream(text)
    if not stream.entries:
        raise ValueError(
            f"{filename}: no Claude Code messages found (expected the NDJSON of `claude -p "
            "--output-format stream-json --verbose`, or a session file from ~/.claude/projects)."
        )
    writer = TranscriptWriter(
        agent_name=NAME,
        agent_version=stream.version,
        model_name=stream.model,
        session_id=stream.session_id or None,
    )
    # The import's own time would mislead: a step the source gives no time for has none.
    write_steps(writer, stream, known_times_only=True)
    status = ""  # a session file has no result event: how it ended is not known
    if stream.result is not None:
        try:
            status = end_status(stream.result)[0]
        except base.HarnessUnavailable:
            status = base.STOPPED
    writer.finish(
        prompt_tokens=stream.input_tokens,
        completion_tokens=stream.output_tokens,
        cached_tokens=stream.cached_tokens,
        cost_usd=stream.reported_cost or 0.0,
        end_status=status,
        imported=True,
        source_format=NAME,
        source_file=filename,
    )
    return writer.document

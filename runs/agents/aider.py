"""The aider harness: aider's CLI, headless, in the sandbox; it reaches only the run's gateway.

aider runs once per user message (`--message-file`), with its history files in the scratch
directory outside the workspace. Its exit code means nothing (it exits 0 when the endpoint is
down or no edit applied), so the outcome is read from what it left: the LLM history (one entry
per model call), the analytics log (per-call tokens) and whether any workspace file changed.
When it ends on a question without touching a file, the question goes to `ask_user` and the
session is resumed with `--restore-chat-history` and the answer.

The workspace has no .git (the host keeps it outside), so aider runs with `--no-git` and has no
repository map: the files of a small workspace are added to the chat, a larger one is listed in
the message. `options["files"]` names the files to add explicitly.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from runs.agents import base, cli
from runs.agents.cli import changed_files, snapshot, venv_paths, workspace_files
from runs.transcript import TranscriptWriter, parse_time

NAME = "aider"
VERSION = "0.86.2"  # the version bin/install-agents pins; the log parsing below relies on it
MAX_QUESTION_ROUNDS = 2
CONTEXT_WINDOW = 128_000
# A small workspace goes into the chat whole; aider without git cannot discover files itself.
SMALL_WORKSPACE_FILES = 30
SMALL_WORKSPACE_BYTES = 100_000
LISTED_FILES = 300
_LLM_HEADER = re.compile(r"^(TO LLM|LLM RESPONSE) \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
_ROLE_LINE = re.compile(r"^(SYSTEM|USER|ASSISTANT)(?: (.*))?$")
# aider appends its edit-format reminder to the last user message of every call.
_REMINDER = "\n# *SEARCH/REPLACE block* Rules:"
_APPLIED = re.compile(r"^Applied edit to (.+?)\s*$", re.MULTILINE)
# What aider prints when a call fails or an edit does not apply.
_ERROR_LINE = re.compile(r"litellm\.\w+|\w+Error\b|did not conform|Failed to apply|No exact match")


def binary() -> Path:
    return cli.binary("MERGEABLE_AIDER_BIN", "aider/bin/aider")


def run(context: base.AgentContext) -> base.AgentOutcome:
    aider = binary()
    if not aider.is_file():
        raise base.HarnessUnavailable(f"aider is not installed at {aider}: run `make agents`")
    if context.run_sandboxed is None or context.scratch is None:
        raise base.HarnessUnavailable(
            "the aider harness needs run_sandboxed and a scratch directory"
        )
    model_name, model_env = model_settings(context.model)
    session = Session(context, aider, model_name, model_env)

    message = first_message(context.workspace, context.title, context.instructions)
    outcome = base.AgentOutcome(end_status=base.STOPPED)
    before = snapshot(context.workspace)
    try:
        for round_number in range(MAX_QUESTION_ROUNDS + 1):
            round_ = session.run_round(message, resume=round_number > 0)
            outcome.steps += len(round_.usage)
            outcome.input_tokens += round_.input_tokens
            outcome.output_tokens += round_.output_tokens
            outcome.cost_usd += round_.cost_usd
            context.on_usage(
                outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps
            )
            if round_.cancelled:
                outcome.end_status = base.CANCELLED
                return outcome
            if round_.timed_out:
                outcome.end_status = base.TIMED_OUT
                return outcome
            if not round_.usage:
                outcome.end_status = base.MODEL_UNREACHABLE
                outcome.error = round_.error or "aider got no reply from the model"
                return outcome

            changed = changed_files(before, snapshot(context.workspace))
            last_reply = round_.last_reply()
            if changed:
                outcome.end_status = base.FINISHED
                outcome.summary = last_reply
                return outcome
            question = question_in(last_reply)
            if question is None or round_number == MAX_QUESTION_ROUNDS:
                outcome.end_status = base.STOPPED
                reason = round_.error or "the model's reply contained no edit that applied"
                outcome.summary = f"aider made no edits: {reason}"
                return outcome
            if over_budget(context.limits, outcome):
                outcome.end_status = base.MAX_COST
                return outcome
            message = context.ask_user(question)
        return outcome
    finally:
        session.save_raw_logs()


# --- Configuration -------------------------------------------------------------------------


def model_settings(model) -> tuple[str, dict[str, str]]:
    """aider's --model name and the environment that points litellm at the endpoint."""
    if model is None or model.provider not in ("openai", "anthropic"):
        provider = getattr(model, "provider", None)
        raise base.HarnessUnavailable(f"aider needs an openai or anthropic model, not {provider!r}")
    prefix = model.provider.upper()
    env = {f"{prefix}_API_KEY": model.api_key or "none"}
    if model.base_url:
        env[f"{prefix}_API_BASE"] = model.base_url.rstrip("/")
    return f"{model.provider}/{model.model}", env


def over_budget(limits: base.Limits, outcome: base.AgentOutcome) -> bool:
    return limits.max_cost_usd is not None and outcome.cost_usd >= limits.max_cost_usd


# --- The workspace -------------------------------------------------------------------------


def small_workspace(workspace: Path) -> list[str] | None:
    """Every file, if the workspace is small enough to put in the chat whole."""
    files = workspace_files(workspace)
    if len(files) > SMALL_WORKSPACE_FILES:
        return None
    if sum((workspace / rel).stat().st_size for rel in files) > SMALL_WORKSPACE_BYTES:
        return None
    return files


def first_message(workspace: Path, title: str, instructions: str) -> str:
    message = f"# Task: {title}\n\n{instructions}" if title else instructions
    if small_workspace(workspace) is None:
        files = workspace_files(workspace)
        listing = "\n".join(files[:LISTED_FILES])
        more = f"\n… and {len(files) - LISTED_FILES} more" if len(files) > LISTED_FILES else ""
        message += f"\n\nFiles in the repository:\n{listing}{more}"
    return message


def question_in(reply: str) -> str | None:
    """The reply, if it ends by asking something and proposes no edit."""
    if "<<<<<<< SEARCH" in reply:
        return None
    return cli.question_in(reply)


# --- Running aider -------------------------------------------------------------------------


@dataclass
class Call:
    """One model call from the LLM history: the last user message sent and the reply."""

    sent: str
    response: str | None = None


@dataclass
class Round:
    calls: list[Call] = field(default_factory=list)
    usage: list[tuple[int, int]] = field(default_factory=list)
    cost_usd: float = 0.0
    output: str = ""
    error: str = ""
    timed_out: bool = False
    cancelled: bool = False

    @property
    def input_tokens(self) -> int:
        return sum(prompt for prompt, _ in self.usage)

    @property
    def output_tokens(self) -> int:
        return sum(completion for _, completion in self.usage)

    def last_reply(self) -> str:
        replies = [call.response for call in self.calls if call.response is not None]
        return replies[-1] if replies else ""


class Session:
    def __init__(self, context: base.AgentContext, aider: Path, model_name: str, env: dict) -> None:
        self.context = context
        self.aider = aider
        self.model_name = model_name
        self.dir = Path(context.scratch) / "aider"
        self.home = self.dir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.chat = self.dir / "chat.md"
        self.llm_log = self.dir / "llm.log"
        self.analytics = self.dir / "analytics.jsonl"
        self.inputs = self.dir / "input.history"
        self.message_file = self.dir / "message.md"
        self.metadata = self.dir / "model-metadata.json"
        self.output_log = ""
        self.env = {**env, "HOME": str(self.home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self._write_metadata()

    def _write_metadata(self) -> None:
        # Known to aider through this file, the model needs no price list from the internet
        # and gets a sensible context window instead of a warning.
        model = self.context.model
        window = int(self.context.options.get("context_window") or CONTEXT_WINDOW)
        entry = {
            "max_input_tokens": window,
            "max_tokens": window,
            "max_output_tokens": min(window, 16_384),
            "input_cost_per_token": model.input_per_mtok / 1e6,
            "output_cost_per_token": model.output_per_mtok / 1e6,
            "litellm_provider": model.provider,
            "mode": "chat",
        }
        self.metadata.write_text(json.dumps({self.model_name: entry}))

    def command(self, resume: bool) -> str:
        args = [
            str(self.aider),
            "--model", self.model_name,
            "--edit-format", str(self.context.options.get("edit_format") or "diff"),
            "--model-metadata-file", str(self.metadata),
            "--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore",
            "--no-check-update", "--no-show-release-notes", "--no-analytics",
            "--no-show-model-warnings", "--no-git", "--no-pretty", "--no-stream",
            "--no-suggest-shell-commands", "--no-auto-lint", "--no-fancy-input",
            "--chat-history-file", str(self.chat),
            "--input-history-file", str(self.inputs),
            "--llm-history-file", str(self.llm_log),
            "--analytics-log", str(self.analytics),
            "--message-file", str(self.message_file),
        ]  # fmt: skip
        if resume:
            args.append("--restore-chat-history")
        files = self.context.options.get("files") or small_workspace(self.context.workspace)
        args += ["--", *[str(f) for f in files or []]]
        return shlex.join(args)

    def run_round(self, message: str, *, resume: bool) -> Round:
        self.context.transcript.add_step("user", message)
        self.message_file.write_text(message)
        log_start = _size(self.llm_log)
        chat_start = _size(self.chat)
        analytics_start = _size(self.analytics)
        result = self.context.run_sandboxed(
            self.command(resume),
            timeout=max(1.0, self.context.limits.seconds_left()),
            env=self.env,
            gateway=True,
            extra_ro_paths=venv_paths(self.aider),
            extra_rw_paths=[self.dir],
        )
        round_ = Round(
            calls=parse_llm_history(_read_from(self.llm_log, log_start)),
            usage=parse_usage(_read_from(self.analytics, analytics_start)),
            output=result.output,
            timed_out=result.timed_out,
            cancelled=result.cancelled,
        )
        mark_failed_calls(round_)
        self.output_log += result.output
        # The chat history has aider's messages unwrapped; its terminal output wraps them.
        round_.error = last_error(aider_messages(_read_from(self.chat, chat_start)))
        model = self.context.model
        round_.cost_usd = sum(model.cost(p, c) for p, c in round_.usage)
        self._add_steps(round_, message)
        return round_

    def _add_steps(self, round_: Round, message: str) -> None:
        model = self.context.model
        applied = _APPLIED.findall(round_.output)
        usage = iter(round_.usage)
        for index, call in enumerate(round_.calls):
            if index > 0 or _normalize(call.sent) != _normalize(message):
                # aider's own follow-up: a failed edit's error or files it added to the chat.
                self.context.transcript.add_step("user", call.sent, extra={"from": "aider"})
            if call.response is None:
                continue
            metrics = None
            if (tokens := next(usage, None)) is not None:
                prompt, completion = tokens
                metrics = {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "cost_usd": round(model.cost(prompt, completion), 6),
                }
            extra = {}
            if index == len(round_.calls) - 1:
                extra = {"applied_edits": applied} if applied else {}
                if round_.error:
                    extra["aider_error"] = round_.error
            step = self.context.transcript.add_step(
                "agent",
                call.response,
                tool_calls=edit_calls(call.response),
                metrics=metrics,
                extra=extra or None,
            )
            if step.get("tool_calls") and index == len(round_.calls) - 1:
                self.context.transcript.add_observations(step, edit_results(step, round_.output))

    def save_raw_logs(self) -> None:
        for name, path in (
            ("aider/chat.md", self.chat),
            ("aider/llm.log", self.llm_log),
            ("aider/analytics.jsonl", self.analytics),
        ):
            if path.is_file():
                self.context.save_raw_log(name, path.read_text(errors="replace"))
        if self.output_log:
            self.context.save_raw_log("aider/output.txt", self.output_log)


# --- Reading aider's logs ------------------------------------------------------------------


def parse_llm_history(text: str) -> list[Call]:
    """Calls from aider's --llm-history-file: "TO LLM" blocks, each maybe followed by a reply."""
    calls: list[Call] = []
    kind = None
    lines: list[str] = []

    def close() -> None:
        if kind == "TO LLM":
            calls.append(Call(sent=_last_user_message(lines)))
        elif kind == "LLM RESPONSE" and calls:
            calls[-1].response = "\n".join(_strip_roles(lines)).strip()

    for line in text.splitlines():
        header = _LLM_HEADER.match(line)
        if header:
            close()
            kind, lines = header.group(1), []
        else:
            lines.append(line)
    close()
    return calls


def _strip_roles(lines: list[str]) -> list[str]:
    stripped = []
    for line in lines:
        match = _ROLE_LINE.match(line)
        stripped.append((match.group(2) or "") if match else line)
    return stripped


def _last_user_message(lines: list[str]) -> str:
    messages: list[list[str]] = []
    for line in lines:
        if line == "-------":
            messages.append([])
        elif messages:
            messages[-1].append(line)
    users = [m for m in messages if m and m[0].startswith("USER")]
    if not users:
        return ""
    text = "\n".join(_strip_roles(users[-1]))
    return text.split(_REMINDER, 1)[0].strip()


def mark_failed_calls(round_: Round) -> None:
    """aider logs an empty reply for a call that failed; only answered calls are in analytics."""
    if len(round_.usage) == len(round_.calls):
        return
    for call in round_.calls:
        if not call.response:
            call.response = None


def aider_messages(chat: str) -> str:
    """aider's own messages (the "> " lines) from a stretch of its chat history."""
    lines = [line[2:].rstrip() for line in chat.splitlines() if line.startswith("> ")]
    return "\n".join(lines)


def parse_usage(text: str) -> list[tuple[int, int]]:
    """(prompt_tokens, completion_tokens) of each model call in aider's --analytics-log."""
    usage = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "message_send":
            props = event.get("properties") or {}
            usage.append(
                (int(props.get("prompt_tokens") or 0), int(props.get("completion_tokens") or 0))
            )
    return usage


def last_error(output: str) -> str:
    """The last line of aider's output that reports an error, if any."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line and _ERROR_LINE.search(line) and "raw.githubusercontent.com" not in line:
            return line[:500]
    return ""


def _normalize(text: str) -> str:
    return " ".join(text.split())


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _read_from(path: Path, offset: int) -> str:
    if not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


# --- aider's edits, in runs and in imported chat histories ---------------------------------

_SEARCH_REPLACE = re.compile(
    r"(?:^|\n)([^\n`]+?)\n```[^\n]*\n<<<<<<< SEARCH\n(.*?)\n?=======\n(.*?)\n?>>>>>>> REPLACE",
    re.DOTALL,
)


def edit_calls(reply: str) -> list[dict]:
    """The SEARCH/REPLACE blocks of a reply as edit_file tool calls, numbered from 1."""
    return [
        {
            "id": f"edit-{number}",
            "name": "edit_file",
            "arguments": {"path": path.strip(), "old": old, "new": new},
        }
        for number, (path, old, new) in enumerate(_SEARCH_REPLACE.findall(reply), 1)
    ]


def edit_results(step: dict, output: str) -> list[tuple[str, str]]:
    """Each edit call's result: the lines of aider's output about its file."""
    results = []
    for call in step["tool_calls"]:
        path = call["arguments"]["path"]
        about = [line.strip() for line in output.splitlines() if path and path in line]
        applied = [line for line in about if line.startswith("Applied edit to")]
        results.append((call["tool_call_id"], "\n".join(applied or about) or output.strip()))
    return results


# --- Importing a chat history ----------------------------------------------------------------

_CHAT_START = re.compile(r"^# aider chat started at (.+?)\s*$")
_CHAT_TOKENS = re.compile(
    r"Tokens: ([\d.,]+)([kKmM]?) sent.*?([\d.,]+)([kKmM]?) received\.?"
    r"(?:\s*Cost: \$([\d.,]+) message)?"
)


def looks_like(text: str, filename: str) -> bool:
    return filename.lower().endswith(".md") or text.lstrip().startswith("# aider chat started at")


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """aider's .aider.chat.history.md: "#### " lines are the user's, "> " lines aider's own output
    (edits applied, token counts), everything else the model's reply with SEARCH/REPLACE blocks."""
    lines = text.splitlines()
    if not any(_CHAT_START.match(line) for line in lines):
        raise ValueError(
            f"{filename}: not an aider chat history: there is no '# aider chat started at' line."
        )
    writer = TranscriptWriter(agent_name=NAME, agent_version="", model_name="")
    session_time = None
    input_tokens = output_tokens = 0
    cost = 0.0
    last_agent: dict | None = None
    for kind, block in _chat_blocks(lines):
        body = "\n".join(block).strip()
        if kind == "start":
            session_time = parse_time(body.replace(" ", "T", 1))
        elif kind == "user":
            writer.add_step("user", body, timestamp=session_time)
            last_agent = None
        elif kind == "agent":
            last_agent = writer.add_step(
                "agent", body, tool_calls=edit_calls(body), timestamp=session_time
            )
        else:
            used = _chat_usage(block)
            if used and last_agent is not None:
                last_agent["metrics"] = used
            if used:
                input_tokens += used["prompt_tokens"]
                output_tokens += used["completion_tokens"]
                cost += used["cost_usd"]
            output = "\n".join(line for line in block if not line.startswith("Tokens:")).strip()
            if not output:
                continue
            if last_agent is not None and last_agent.get("tool_calls"):
                if "observation" not in last_agent:
                    writer.add_observations(last_agent, edit_results(last_agent, output))
                continue
            writer.add_step("system", output, timestamp=session_time)
    if not any(step["source"] in ("user", "agent") for step in writer.steps):
        raise ValueError(f"{filename}: the aider chat history holds no messages.")
    writer.finish(
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        cost_usd=cost,
        end_status="",
        imported=True,
        source_format=NAME,
        source_file=filename,
    )
    return writer.document


def _chat_blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(kind, lines) runs of a chat history: kind is start, user, agent or output."""
    blocks: list[tuple[str, list[str]]] = []
    in_fence = False  # inside the model's ``` blocks, ">>>>>>> REPLACE" is the model's text
    for line in lines:
        if start := _CHAT_START.match(line):
            blocks.append(("start", [start.group(1)]))
            in_fence = False
            continue
        if in_fence or not line.startswith((">", "####")) or line.startswith(">>>>>>>"):
            kind, content = "agent", line
            if line.startswith("```"):
                in_fence = not in_fence
        elif line.startswith("####"):
            kind, content = "user", line[4:].removeprefix(" ")
        else:
            kind, content = "output", line[1:].removeprefix(" ")
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(content)
        elif kind == "agent" and not content.strip():
            continue  # blank lines between blocks belong to nobody
        else:
            blocks.append((kind, [content]))
    return blocks


def _chat_usage(block: list[str]) -> dict | None:
    for line in block:
        if match := _CHAT_TOKENS.search(line):
            return {
                "prompt_tokens": _count(match.group(1), match.group(2)),
                "completion_tokens": _count(match.group(3), match.group(4)),
                "cost_usd": float((match.group(5) or "0").replace(",", "")),
            }
    return None


def _count(number: str, suffix: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(suffix.lower(), 1)
    return round(float(number.replace(",", "")) * scale)

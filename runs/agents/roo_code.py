"""Roo Code task folders, imported: Roo Code runs inside VS Code and its CLI is not on a registry,
so Mergeable never runs it (this module has no `run` and is not a harness). Cline, its ancestor,
keeps the same folder; `runs.agents.cline` reads it with this module's reader.

A task folder (`…/globalStorage/<extension>/tasks/<task id>/`) holds:

- `api_conversation_history.json`: the conversation as sent to the model, Anthropic-style blocks.
  Tool calls are `tool_use`/`tool_result` blocks (Roo Code 3.41 on, Cline with native tool calls)
  or XML in the reply's text (`<read_file><path>…</path></read_file>`), answered by user text that
  starts "[read_file for 'x'] Result:". Every user turn carries `<environment_details>` (the model
  id, the running cost, open tabs): dropped here, reviewers must not see it. Condensing keeps the
  old messages, tagged `condenseParent` (or `truncationParent`), and appends a summary
  (`isSummary`) or marker (`isTruncationMarker`): those are context the tool wrote for the model,
  so they become steps marked `is_copied_context`, not turns of the user.
- `ui_messages.json`: what the panel showed, `ask`/`say` messages; `api_req_started` carries each
  request's tokens (`tokensIn`, `tokensOut`, `cacheReads`, `cacheWrites`) and cost.
- `history_item.json` (Roo Code): the task's totals, mode and parent/child task ids.
- `task_metadata.json`: files in context; Cline adds the models used and its own version.

A subtask (`new_task`) has a folder of its own; given as files named after its task id
(`<id>_api_conversation_history.json`, or `<id>/…`), its steps are joined to its parent's where the
parent waited for it. The "Export task" markdown (`roo_task_….md`, `cline_task_….md`) is read too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from runs.agents import base, cli
from runs.transcript import TranscriptWriter, add_result, load_json, parse_time

NAME = "roo-code"
API_FILE = "api_conversation_history.json"
UI_FILE = "ui_messages.json"
HISTORY_FILE = "history_item.json"
METADATA_FILE = "task_metadata.json"
TASK_FILES = {API_FILE: "api", UI_FILE: "ui", HISTORY_FILE: "history", METADATA_FILE: "metadata"}


@dataclass(frozen=True)
class Dialect:
    name: str
    export_prefix: str
    # Roo Code's tokensIn counts all input, cached or not; Cline's counts the uncached part only.
    tokens_in_has_cache: bool


ROO_CODE = Dialect(NAME, "roo_task_", tokens_in_has_cache=True)
CLINE = Dialect("cline", "cline_task_", tokens_in_has_cache=False)

# The tools of Roo Code and Cline, as the model calls them (XML tags before native tool calls).
TOOL_NAMES = frozenset(
    "read_file write_to_file apply_diff insert_content search_and_replace search_replace "
    "edit_file apply_patch replace_in_file search_files list_files list_code_definition_names "
    "execute_command read_command_output browser_action use_mcp_tool access_mcp_resource "
    "ask_followup_question attempt_completion switch_mode new_task fetch_instructions "
    "codebase_search update_todo_list run_slash_command generate_image plan_mode_respond "
    "act_mode_respond load_mcp_documentation web_fetch web_search condense summarize_task "
    "report_bug new_rule focus_chain skill".split()
)
# The panel's names for them (ui_messages.json "tool" messages).
UI_TOOL_NAMES = {
    "readFile": "read_file",
    "readCommandOutput": "read_command_output",
    "editedExistingFile": "write_to_file",
    "newFileCreated": "write_to_file",
    "appliedDiff": "apply_diff",
    "insertContent": "insert_content",
    "searchAndReplace": "search_and_replace",
    "fileDeleted": "delete_file",
    "listFilesTopLevel": "list_files",
    "listFilesRecursive": "list_files",
    "listCodeDefinitionNames": "list_code_definition_names",
    "searchFiles": "search_files",
    "codebaseSearch": "codebase_search",
    "switchMode": "switch_mode",
    "newTask": "new_task",
    "finishTask": "attempt_completion",
    "fetchInstructions": "fetch_instructions",
    "updateTodoList": "update_todo_list",
    "runSlashCommand": "run_slash_command",
    "generateImage": "generate_image",
    "webFetch": "web_fetch",
    "webSearch": "web_search",
    "summarizeTask": "summarize_task",
    "skill": "skill",
}

# Roo Code and Cline append this block to user turns and tool results: the model id, the running
# cost, open tabs, the time. Reviewers must not see it (it names the model), and it is noise.
_ENVIRONMENT_DETAILS = re.compile(
    r"<environment_details>.*?(?:</environment_details>|\Z)", re.DOTALL | re.IGNORECASE
)
_WRAPPED = re.compile(r"\A\s*<(task|user_message|feedback|answer)>\n?(.*?)\n?</\1>\s*\Z", re.DOTALL)
_RESULT_HEADER = re.compile(r"\A\[(\w+)(?: for [^\n]*?| in [^\n]*?)?\] Result:[ \t]*\n?")
_XML_CALL = re.compile(r"<(" + "|".join(sorted(TOOL_NAMES)) + r")>(.*?)</\1>", re.DOTALL)
_THINKING = re.compile(r"<thinking>(.*?)</thinking>", re.DOTALL)
_OPEN_TAG = re.compile(r"<(\w+)>")
_SUBTASK_DONE = re.compile(r"Subtask (\S+) completed")
_EXPORT_ROLE = re.compile(r"^\*\*(User|Assistant):\*\*\n\n", re.MULTILINE)


def without_environment_details(text: str) -> str:
    if "<environment_details" not in text.lower():
        return text
    return _ENVIRONMENT_DETAILS.sub("", text).strip()


# --- The import registry's entry points ----------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    name = filename.lower()
    if name.endswith(".md"):
        return PurePosixPath(name).name.startswith(ROO_CODE.export_prefix) or text.startswith(
            "**User:**"
        )
    if name.endswith(tuple(TASK_FILES)):
        return True
    return text.lstrip().startswith("[") and bool(re.search(r'"(role|say|ask)"\s*:', text[:20_000]))


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    files = {**extra_files, filename: text}
    dialect = CLINE if _is_cline(files) else ROO_CODE
    return read_task_folder(text, filename, extra_files, dialect)


def _is_cline(files: dict[str, str]) -> bool:
    for name, text in files.items():
        lowered = PurePosixPath(name.replace("\\", "/")).name.lower()
        if lowered.startswith(CLINE.export_prefix):
            return True
        if lowered.endswith(METADATA_FILE) and re.search(r'"(model_usage|cline_version)"', text):
            return True
        if lowered.endswith(UI_FILE) and re.search(
            r'"say"\s*:\s*"task"|"ask"\s*:\s*"(plan|act)_mode_respond"', text
        ):
            return True
        if lowered.endswith(API_FILE) and '"modelInfo"' in text:
            return True
    return False


def read_task_folder(
    text: str, filename: str, extra_files: dict[str, str], dialect: Dialect
) -> dict:
    """The task (and its subtasks) as one ATIF document; ValueError names a file's problem."""
    if filename.lower().endswith(".md"):
        return _read_export(text, filename, dialect)
    if not _task_key(filename)[1]:  # a task file under another name: which one, by its content
        data = load_json(text, filename)
        first = data[0] if isinstance(data, list) and data else {}
        is_ui = isinstance(first, dict) and "type" in first and "role" not in first
        extra_files = {**extra_files, (UI_FILE if is_ui else API_FILE): text}
        tasks = _group_files(extra_files, {UI_FILE: filename, API_FILE: filename})
        main_key = ""
    else:
        tasks = _group_files({**extra_files, filename: text})
        main_key = _task_key(filename)[0]
    main = tasks.pop(main_key)
    writer = TranscriptWriter(
        agent_name=dialect.name, agent_version=main.version(), model_name=main.model_name()
    )
    reader = _Reader(writer, dialect, tasks)
    finished = reader.read(main).finished
    totals = reader.totals  # the task's and its subtasks'
    if not writer.steps:
        raise ValueError(f"{filename}: the task holds no messages.")
    extra = {"mode": main.history.get("mode")} if main.history.get("mode") else {}
    if main.files_in_context():
        extra["files_in_context"] = main.files_in_context()
    if reader.joined:
        extra["subtasks"] = reader.joined
    writer.finish(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        cost_usd=totals.cost_usd,
        cached_tokens=totals.cached_tokens,
        end_status=base.FINISHED if finished else "",
        imported=True,
        source_format=dialect.name,
        source_file=filename,
        **extra,
    )
    return writer.document


# --- A task's files ------------------------------------------------------------------------


@dataclass
class _Task:
    key: str  # the task id its files were named with, "" for the main task's plain names
    api: list | None = None
    ui: list | None = None
    history: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)  # kind -> file name, for errors

    @property
    def task_id(self) -> str:
        return str(self.history.get("id") or self.key)

    def version(self) -> str:
        for entry in reversed(self.metadata.get("environment_history") or []):
            if isinstance(entry, dict) and entry.get("cline_version"):
                return str(entry["cline_version"])
        return ""

    def model_name(self) -> str:
        for entry in reversed(self.metadata.get("model_usage") or []):
            if isinstance(entry, dict) and entry.get("model_id"):
                return str(entry["model_id"])
        return ""

    def files_in_context(self) -> list[dict]:
        return [
            {"path": entry["path"], "source": entry.get("record_source", "")}
            for entry in self.metadata.get("files_in_context") or []
            if isinstance(entry, dict) and isinstance(entry.get("path"), str)
        ]


def _task_key(name: str) -> tuple[str, str]:
    """(task key, kind) of a file name: "<id>/api_conversation_history.json" -> (id, "api")."""
    lowered = name.replace("\\", "/").lower()
    for file_name, kind in TASK_FILES.items():
        if lowered.endswith(file_name):
            prefix = name.replace("\\", "/")[: len(name) - len(file_name)]
            return prefix.rstrip("/_.-").rsplit("/", 1)[-1], kind
    return "", ""


def _group_files(files: dict[str, str], shown_as: dict | None = None) -> dict[str, _Task]:
    """The files by task; `shown_as` names a file in errors by the name it was given."""
    tasks: dict[str, _Task] = {"": _Task("")}
    for name, text in files.items():
        key, kind = _task_key(name)
        if not kind:
            continue  # kept as a raw artifact, not read
        task = tasks.setdefault(key, _Task(key))
        name = (shown_as or {}).get(name, name)
        data = load_json(text, name)
        expected = dict if kind in ("history", "metadata") else list
        if not isinstance(data, expected):
            what = "an object" if expected is dict else "a list of messages"
            raise ValueError(f"{name}: expected {what}.")
        setattr(task, kind, data)
        task.names[kind] = name
    return tasks


# --- Reading a task into steps -------------------------------------------------------------


@dataclass
class _Totals:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    finished: bool = False

    def add(self, other: _Totals) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_tokens += other.cached_tokens
        self.cost_usd += other.cost_usd


class _Reader:
    def __init__(self, writer: TranscriptWriter, dialect: Dialect, others: dict[str, _Task]):
        self.writer = writer
        self.dialect = dialect
        self.others = others  # subtasks not joined yet, by key
        self.joined: list[str] = []
        self.totals = _Totals()

    def read(self, task: _Task, subtask: str = "") -> _Totals:
        if task.api is None and task.ui is None:
            name = next(iter(task.names.values()), "the task")
            raise ValueError(f"{name}: give {API_FILE} or {UI_FILE} with it.")
        requests = _ui_requests(task.ui or [], task.names.get("ui", UI_FILE), self.dialect)
        if task.api is not None:
            _ApiSteps(self, task, requests, subtask).read()
            finished = _ended_with_completion(task)
        else:
            finished = _UiSteps(self, task, subtask).read()
        totals = _task_totals(task, requests, self.dialect)
        totals.finished = finished
        self.totals.add(totals)
        return totals

    def step(self, source: str, message: str, subtask: str, **kwargs) -> dict:
        if subtask:
            kwargs["extra"] = {**(kwargs.get("extra") or {}), "subtask": subtask}
        return self.writer.add_step(source, message, **kwargs)

    def join_subtask(self, child_id: str | None, parent: _Task) -> bool:
        """Add a subtask's steps here, if its files were given; True when they were."""
        key = self._find_subtask(child_id, parent)
        if key is None:
            return False
        child = self.others.pop(key)
        self.joined.append(child.task_id)
        self.read(child, subtask=child.task_id)
        return True

    def _find_subtask(self, child_id: str | None, parent: _Task) -> str | None:
        if child_id:
            for key, task in self.others.items():
                if child_id in (key, task.task_id):
                    return key
            return None
        for key, task in sorted(self.others.items(), key=lambda item: item[1].history.get("ts", 0)):
            if task.history.get("parentTaskId") in (None, parent.task_id):
                return key
        return None


def _ui_requests(messages: list, filename: str, dialect: Dialect) -> list[dict]:
    """The usage of each API request the panel recorded, in order."""
    requests = []
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("type") not in ("say", "ask"):
            raise ValueError(f"{filename}: message {index} needs a type of say or ask.")
        if message.get("say") == "condense_context":
            condense = message.get("contextCondense")
            if isinstance(condense, dict):
                requests.append({"cost": cli.json_number(condense.get("cost")), "condense": True})
            continue
        if message.get("say") != "api_req_started":
            continue
        try:
            request = json.loads(message.get("text") or "{}")
        except json.JSONDecodeError:
            continue
        if isinstance(request, dict):
            requests.append(_request_metrics(request, dialect))
    return requests


def _request_metrics(request: dict, dialect: Dialect) -> dict:
    tokens_in = cli.json_count(request.get("tokensIn"))
    cache_reads = cli.json_count(request.get("cacheReads"))
    cache_writes = cli.json_count(request.get("cacheWrites"))
    prompt = tokens_in if dialect.tokens_in_has_cache else tokens_in + cache_reads + cache_writes
    return {
        "prompt_tokens": prompt,
        "completion_tokens": cli.json_count(request.get("tokensOut")),
        "cached_tokens": cache_reads,
        "cost_usd": round(cli.json_number(request.get("cost")), 6),
        "answered": bool(request.get("tokensOut") or request.get("cost")),
    }


def _task_totals(task: _Task, requests: list[dict], dialect: Dialect) -> _Totals:
    """history_item.json's totals when given, else the panel's requests, else Cline's metrics."""
    history = task.history
    if isinstance(history.get("tokensIn"), int | float):
        reads = cli.json_count(history.get("cacheReads"))
        writes = cli.json_count(history.get("cacheWrites"))
        tokens_in = cli.json_count(history.get("tokensIn"))
        return _Totals(
            prompt_tokens=tokens_in if dialect.tokens_in_has_cache else tokens_in + reads + writes,
            completion_tokens=cli.json_count(history.get("tokensOut")),
            cached_tokens=reads,
            cost_usd=cli.json_number(history.get("totalCost")),
        )
    totals = _Totals()
    if requests:
        for request in requests:
            totals.prompt_tokens += request.get("prompt_tokens", 0)
            totals.completion_tokens += request.get("completion_tokens", 0)
            totals.cached_tokens += request.get("cached_tokens", 0)
            totals.cost_usd += request.get("cost_usd", request.get("cost", 0.0))
        return totals
    for message in task.api or []:
        metrics = _cline_metrics(message)
        if metrics:
            totals.prompt_tokens += metrics["prompt_tokens"]
            totals.completion_tokens += metrics["completion_tokens"]
            totals.cached_tokens += metrics["cached_tokens"]
            totals.cost_usd += metrics.get("cost_usd", 0.0)
    return totals


def _cline_metrics(message: object) -> dict | None:
    metrics = message.get("metrics") if isinstance(message, dict) else None
    tokens = metrics.get("tokens") if isinstance(metrics, dict) else None
    if not isinstance(tokens, dict):
        return None
    result = {
        "prompt_tokens": cli.json_count(tokens.get("prompt")),
        "completion_tokens": cli.json_count(tokens.get("completion")),
        "cached_tokens": cli.json_count(tokens.get("cached")),
    }
    if isinstance(metrics.get("cost"), int | float):
        result["cost_usd"] = round(float(metrics["cost"]), 6)
    return result


def _ended_with_completion(task: _Task) -> bool:
    """Did the task really end with attempt_completion (not a completion the user answered)?"""
    if task.ui:
        return _ui_ended_with_completion(task.ui)
    for message in reversed(task.api or []):
        if not isinstance(message, dict) or message.get("type") == "reasoning":
            continue
        if message.get("role") == "user":
            return False  # the user spoke (or a tool answered) after the last reply
        blocks = _blocks(message.get("content"))
        calls = [b.get("name") for b in blocks if b.get("type") == "tool_use"]
        text = "\n".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
        xml = [match.group(1) for match in _XML_CALL.finditer(text)]
        return (calls or xml or [None])[-1] == "attempt_completion"
    return False


def _ui_ended_with_completion(messages: list) -> bool:
    last_completion = last_activity = -1
    for index, message in enumerate(messages):
        kind = message.get("say") or message.get("ask")
        if kind == "completion_result" and not message.get("partial"):
            last_completion = index
        elif kind in ("api_req_started", "user_feedback", "text") and index > 0:
            last_activity = index
    return last_completion > last_activity


# --- api_conversation_history.json -----------------------------------------------------------


class _ApiSteps:
    def __init__(self, reader: _Reader, task: _Task, requests: list[dict], subtask: str):
        self.reader = reader
        self.task = task
        self.subtask = subtask
        self.filename = task.names.get("api", API_FILE)
        self.calls: dict[str, tuple[dict, str]] = {}  # call id -> (step, function name)
        self.last_agent: dict | None = None
        self.pending_reasoning: list[str] = []
        # Per-step usage from the panel, when its requests pair off with the replies.
        answered = [r for r in requests if r.get("answered") and not r.get("condense")]
        replies = [m for m in task.api if isinstance(m, dict) and m.get("role") == "assistant"]
        self.metrics = iter(answered if len(answered) == len(replies) else [])

    def read(self) -> None:
        for index, message in enumerate(self.task.api, 1):
            if (
                isinstance(message, dict)
                and message.get("type") == "reasoning"
                and ("role" not in message)
            ):
                self.pending_reasoning += _reasoning_texts(message)
                continue
            if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
                raise ValueError(
                    f"{self.filename}: message {index} needs a role of user or assistant."
                )
            content = message.get("content")
            if not isinstance(content, str | list):
                raise ValueError(
                    f"{self.filename}: message {index}'s content must be text or a list."
                )
            for block in _blocks(content):
                if not isinstance(block.get("type"), str):
                    raise ValueError(
                        f"{self.filename}: message {index} has a block without a type."
                    )
            when = parse_time(message.get("ts"))
            extra = {
                key: message[key]
                for key in ("condenseParent", "truncationParent")
                if message.get(key)
            }
            if message["role"] == "assistant":
                self.assistant(message, when, extra)
            else:
                self.user(message, when, extra)

    def step(self, source: str, text: str, **kwargs) -> dict:
        return self.reader.step(source, text, self.subtask, **kwargs)

    def assistant(self, message: dict, when, extra: dict) -> None:
        texts, calls, reasoning = [], [], list(self.pending_reasoning)
        self.pending_reasoning = []
        if isinstance(message.get("reasoning_content"), str):
            reasoning.append(message["reasoning_content"])
        for detail in message.get("reasoning_details") or []:
            if isinstance(detail, dict) and isinstance(detail.get("text"), str):
                reasoning.append(detail["text"])
        for block in _blocks(message.get("content")):
            kind = block["type"]
            if kind == "text":
                text, xml_calls, thoughts = _parse_reply_text(str(block.get("text", "")))
                texts.append(text)
                calls += xml_calls
                reasoning += thoughts
            elif kind == "tool_use":
                arguments = block.get("input")
                calls.append(
                    {
                        "id": str(block.get("id") or f"tool-{len(self.calls) + len(calls) + 1}"),
                        "name": str(block.get("name") or "tool"),
                        "arguments": arguments
                        if isinstance(arguments, dict)
                        else {"_raw": arguments},
                    }
                )
            elif kind in ("reasoning", "thinking"):
                reasoning += _reasoning_texts(block)
            elif kind == "image":
                texts.append("[image]")
            # thoughtSignature, redacted_thinking: opaque tokens for the provider, nothing to read
        for number, call in enumerate(calls, 1):
            if call["id"].startswith("xml-"):
                call["id"] = f"xml-{len(self.calls) + number}"
        metrics = next(self.metrics, None) or _cline_metrics(message)
        if metrics:
            metrics = {k: v for k, v in metrics.items() if k not in ("answered", "condense")}
        model_info = message.get("modelInfo") if isinstance(message.get("modelInfo"), dict) else {}
        step = self.step(
            "agent",
            "\n\n".join(t for t in texts if t.strip()),
            tool_calls=calls,
            metrics=metrics or None,
            model_name=str(model_info.get("modelId") or "") or None,
            reasoning_content="\n\n".join(r for r in reasoning if r.strip()) or None,
            timestamp=when,
            extra=extra or None,
        )
        for call in calls:
            self.calls[call["id"]] = (step, call["name"])
        self.last_agent = step if calls else None

    def user(self, message: dict, when, extra: dict) -> None:
        if message.get("isSummary") or message.get("isTruncationMarker"):
            text = "\n\n".join(_text_blocks(message.get("content")))
            marker = (
                {"condensed_summary": message.get("condenseId", "")}
                if message.get("isSummary")
                else {"truncation_marker": message.get("truncationId", "")}
            )
            self.step(
                "system", text, is_copied_context=True, timestamp=when, extra={**extra, **marker}
            )
            return
        texts: list[str] = []
        open_result: list | None = None  # an XML-era result: [call id, its text parts]
        results: list[list] = []
        for block in _blocks(message.get("content")):
            kind = block["type"]
            if kind == "tool_result":
                self.tool_result(block)
                open_result = None
            elif kind == "text":
                text = without_environment_details(str(block.get("text", "")))
                header = _RESULT_HEADER.match(text)
                if header and (call_id := self.xml_call_for(header.group(1), results)):
                    open_result = [call_id, [text[header.end() :]]]
                    results.append(open_result)
                elif open_result is not None:
                    open_result[1].append(text)
                elif text.strip():
                    texts.append(_unwrapped(text))
            elif kind == "image":
                (open_result[1] if open_result else texts).append("[image]")
        for call_id, parts in results:
            self.add_result(call_id, "\n".join(p for p in parts if p.strip()).strip())
        body = "\n\n".join(texts)
        if body.startswith(("[TASK RESUMPTION]", "[ERROR]")):
            self.step("system", body, timestamp=when, extra=extra or None)
        elif body:
            self.step("user", body, timestamp=when, extra=extra or None)

    def xml_call_for(self, name: str, taken: list[list]) -> str | None:
        if self.last_agent is None:
            return None
        answered = {
            r["source_call_id"] for r in self.last_agent.get("observation", {}).get("results", [])
        }
        answered |= {call_id for call_id, _parts in taken}
        open_calls = [c for c in self.last_agent["tool_calls"] if c["tool_call_id"] not in answered]
        named = [c for c in open_calls if c["function_name"] == name]
        chosen = (named or open_calls or [None])[0]
        return chosen["tool_call_id"] if chosen else None

    def tool_result(self, block: dict) -> None:
        content = block.get("content")
        if isinstance(content, list):
            parts = [
                without_environment_details(str(part.get("text", "")))
                if isinstance(part, dict) and part.get("type") == "text"
                else "[image]"
                for part in content
            ]
            text = "\n".join(p for p in parts if p.strip())
        else:
            text = without_environment_details(str(content or ""))
        if block.get("is_error"):
            text = f"error: {text}"
        self.add_result(str(block.get("tool_use_id") or ""), text)

    def add_result(self, call_id: str, text: str) -> None:
        owner = self.calls.get(call_id)
        if owner is None:
            self.step("user", text)
            return
        step, name = owner
        if name == "new_task":
            match = _SUBTASK_DONE.search(text)
            self.reader.join_subtask(match.group(1) if match else None, self.task)
        add_result(self.reader.writer, step, call_id, text)


def _blocks(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block if isinstance(block, dict) else {} for block in content or []]


def _text_blocks(content) -> list[str]:
    texts = []
    for block in _blocks(content):
        if block.get("type") == "text":
            text = without_environment_details(str(block.get("text", "")))
            if text.strip():
                texts.append(text)
    return texts


def _unwrapped(text: str) -> str:
    match = _WRAPPED.match(text)
    return match.group(2) if match else text.strip()


def _reasoning_texts(block: dict) -> list[str]:
    texts = []
    for key in ("text", "thinking"):
        if isinstance(block.get(key), str) and block[key].strip():
            texts.append(block[key])
    if not texts:  # OpenAI's reasoning items: a readable summary beside the encrypted content
        for part in block.get("summary") or []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
    return texts


def _parse_reply_text(text: str) -> tuple[str, list[dict], list[str]]:
    """A reply's text without its XML tool calls and <thinking>: (text, calls, thoughts)."""
    thoughts = [t.strip() for t in _THINKING.findall(text)]
    text = _THINKING.sub("", text)
    calls = [
        {
            "id": f"xml-{number}",
            "name": match.group(1),
            "arguments": _xml_parameters(match.group(2)),
        }
        for number, match in enumerate(_XML_CALL.finditer(text), 1)
    ]
    text = _XML_CALL.sub("", text)
    return text.strip(), calls, thoughts


def _xml_parameters(body: str) -> dict:
    """<path>a.py</path><content>…</content> -> {"path": "a.py", "content": "…"}; nested XML
    (read_file's <args>) stays text."""
    parameters: dict = {}
    position = 0
    while match := _OPEN_TAG.search(body, position):
        name = match.group(1)
        closing = f"</{name}>"
        # A file's content or a diff may itself hold the closing tag; the last one ends it.
        end = (
            body.rfind(closing) if name in ("content", "diff") else body.find(closing, match.end())
        )
        if end < match.end():
            break
        value = body[match.end() : end]
        parameters[name] = value.removeprefix("\n").removesuffix("\n")
        position = end + len(closing)
    return parameters


# --- ui_messages.json alone ----------------------------------------------------------------


class _UiSteps:
    """Steps from what the panel showed, when the API conversation is not given."""

    def __init__(self, reader: _Reader, task: _Task, subtask: str):
        self.reader = reader
        self.task = task
        self.subtask = subtask
        self.pending_call: dict | None = None  # a step whose call awaits its output
        self.pending_metrics: dict | None = None
        self.pending_reasoning: list[str] = []

    def step(self, source: str, text: str, **kwargs) -> dict:
        if source == "agent":
            if self.pending_metrics:
                kwargs["metrics"] = self.pending_metrics
                self.pending_metrics = None
            if self.pending_reasoning:
                kwargs["reasoning_content"] = "\n\n".join(self.pending_reasoning)
                self.pending_reasoning = []
        return self.reader.step(source, text, self.subtask, **kwargs)

    def call(self, name: str, arguments: dict, when, text: str = "") -> dict:
        number = sum(len(s.get("tool_calls", [])) for s in self.reader.writer.steps) + 1
        step = self.step(
            "agent",
            text,
            tool_calls=[{"id": f"ui-{number}", "name": name, "arguments": arguments}],
            timestamp=when,
        )
        # Only a question and a command have an answer in the panel: the user's, the output.
        self.pending_call = step if name in ("ask_followup_question", "execute_command") else None
        return step

    def answer(self, text: str) -> bool:
        if self.pending_call is None:
            return False
        call_id = self.pending_call["tool_calls"][0]["tool_call_id"]
        add_result(self.reader.writer, self.pending_call, call_id, text)
        self.pending_call = None
        return True

    def read(self) -> bool:
        messages = self.task.ui
        dialect = self.reader.dialect
        for index, message in enumerate(messages):
            if message.get("partial"):
                continue
            kind = message.get("say") or message.get("ask") or ""
            text = str(message.get("text") or "")
            when = parse_time(message.get("ts"))
            if (index == 0 and kind in ("text", "task")) or kind == "user_feedback":
                if not (kind == "user_feedback" and self.answer(text)):
                    self.step("user", _unwrapped(text), timestamp=when)
            elif kind == "api_req_started":
                try:
                    request = json.loads(text or "{}")
                except json.JSONDecodeError:
                    request = {}
                if isinstance(request, dict):
                    metrics = _request_metrics(request, dialect)
                    metrics.pop("answered")
                    self.pending_metrics = metrics
            elif kind == "reasoning" and text.strip():
                self.pending_reasoning.append(text)
            elif kind == "text" and text.strip():
                self.step("agent", text, timestamp=when)
            elif kind == "followup":
                question = _json_object(text)
                arguments = {"question": str(question.get("question") or text)}
                if question.get("suggest"):
                    arguments["follow_up"] = question["suggest"]
                self.call("ask_followup_question", arguments, when)
            elif kind == "tool":
                arguments = _json_object(text)
                shown = str(arguments.pop("tool", "") or "tool")
                self.call(UI_TOOL_NAMES.get(shown, shown), arguments, when)
                if shown == "newTask":
                    self.pending_call = None
                    self.reader.join_subtask(None, self.task)
            elif kind == "command":
                self.call("execute_command", {"command": text}, when)
            elif kind == "command_output":
                self.answer(text)
            elif kind == "completion_result" and text.strip():
                self.call("attempt_completion", {"result": text}, when)
                self.pending_call = None
            elif kind == "subtask_result":
                self.step("system", f"Subtask result:\n{text}", timestamp=when)
            elif kind in ("error", "api_req_failed", "mistake_limit_reached", "diff_error"):
                self.step("system", f"Error: {text}".strip(), timestamp=when)
            elif kind == "condense_context":
                condense = message.get("contextCondense") or {}
                summary = condense.get("summary") if isinstance(condense, dict) else ""
                self.step(
                    "system",
                    str(summary or ""),
                    is_copied_context=True,
                    timestamp=when,
                    extra={"condensed_summary": condense.get("condenseId", "")},
                )
        return _ui_ended_with_completion(messages)


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


# --- The "Export task" markdown ------------------------------------------------------------


def _read_export(text: str, filename: str, dialect: Dialect) -> dict:
    """The markdown the panel's "Export task" writes: "**User:**" / "**Assistant:**" messages
    separated by "---"; "[Tool Use: name]" then "Key: value" lines; "[Tool]" results."""
    starts = list(_EXPORT_ROLE.finditer(text))
    if not starts:
        raise ValueError(f"{filename}: not an exported task: there is no '**User:**' message.")
    writer = TranscriptWriter(agent_name=dialect.name, agent_version="", model_name="")
    last_agent: dict | None = None
    for position, start in enumerate(starts):
        end = starts[position + 1].start() if position + 1 < len(starts) else len(text)
        body = text[start.end() : end].strip()
        body = body.removesuffix("---").rstrip()
        if start.group(1) == "Assistant":
            last_agent = _export_reply(writer, body)
            continue
        texts, results = _export_user(body)
        if last_agent is not None:
            for call, result in zip(last_agent.get("tool_calls", []), results, strict=False):
                add_result(writer, last_agent, call["tool_call_id"], result)
        if texts:
            writer.add_step("user", "\n\n".join(texts), timestamp=None)
    writer.finish(
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
        end_status="",
        imported=True,
        source_format=dialect.name,
        source_file=filename,
    )
    return writer.document


def _export_sections(body: str) -> list[tuple[str, list[str]]]:
    """(marker, lines) sections: marker is "", "[Tool Use: x]", "[Tool]", "[Reasoning]"…"""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in body.splitlines():
        if re.fullmatch(r"\[(Tool Use: [\w-]+|Tool|Tool \(Error\)|Reasoning)\]", line):
            sections.append((line, []))
        else:
            sections[-1][1].append(line)
    return sections


def _export_reply(writer: TranscriptWriter, body: str) -> dict:
    texts, calls, reasoning = [], [], []
    for marker, lines in _export_sections(body):
        if marker.startswith("[Tool Use: "):
            arguments: dict = {}
            key = None
            for line in lines:
                match = re.match(r"([A-Z][\w]*): ?(.*)", line)
                if match:
                    key = match.group(1)[0].lower() + match.group(1)[1:]
                    arguments[key] = match.group(2)
                elif key is not None:
                    arguments[key] += "\n" + line
            name = marker[len("[Tool Use: ") : -1]
            calls.append({"id": f"export-{len(calls) + 1}", "name": name, "arguments": arguments})
        elif marker == "[Reasoning]":
            reasoning.append("\n".join(lines).strip())
        else:
            reply, xml_calls, thoughts = _parse_reply_text("\n".join(lines))
            texts.append(reply)
            calls += [{**c, "id": f"export-{len(calls) + n}"} for n, c in enumerate(xml_calls, 1)]
            reasoning += thoughts
    return writer.add_step(
        "agent",
        "\n\n".join(t for t in texts if t.strip()),
        tool_calls=calls,
        reasoning_content="\n\n".join(r for r in reasoning if r) or None,
        timestamp=None,
    )


def _export_user(body: str) -> tuple[list[str], list[str]]:
    texts, results = [], []
    for marker, lines in _export_sections(body):
        content = without_environment_details("\n".join(lines)).strip()
        if marker in ("[Tool]", "[Tool (Error)]"):
            results.append(f"error: {content}" if marker == "[Tool (Error)]" else content)
        elif marker:
            texts.append(f"{marker}\n{content}".strip())
        else:
            header = _RESULT_HEADER.match(content)
            if header:  # an XML-era result exported as plain text
                results.append(content[header.end() :].strip())
            elif content:
                texts.append(_unwrapped(content))
    return texts, results

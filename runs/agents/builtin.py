"""Mergeable's builtin agent: a tool-calling loop over any provider.

The loop runs in the worker, so the model's key never enters the sandbox; only ``run_command``
crosses into it. The tool names and arguments are a contract (DESIGN.md).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from runs import providers
from runs.agents import base

NAME = "mergeable-builtin"
VERSION = "1.0"
# The loop runs in the worker: it reaches the run's gateway over its Unix socket (execution
# gives it the gateway's worker-side model), and only run_command enters the sandbox.
RUNS_IN_WORKER = True
TOOL_OUTPUT_CAP = 12_000
MAX_FILE_READ = 400_000
MAX_SEARCH_MATCHES = 200

SYSTEM_PROMPT = """\
You are a careful software engineer working in a git checkout of the team's repository.
Complete the task below by reading the code, making the change and checking it.

Tools (all paths are relative to the repository root):
- list_files(path="."): list a directory.
- read_file(path, start_line?, end_line?): read a file with line numbers (1-based, inclusive).
- search(pattern, path?): regex search; returns lines as path:line: text.
- write_file(path, content): create or replace a file.
- edit_file(path, old, new): replace one exact occurrence of old with new.
- run_command(command, timeout?): run a shell command (no network); returns exit code and output.
- ask_user(question): ask the task's author a clarifying question when the spec is ambiguous.
- finish(summary): end the task with a short summary of what you changed.

Follow the conventions you see in the codebase. Run the tests when there are any. Keep changes
focused on the task. Call finish when you are done.
"""

TOOLS = [
    providers.ToolSpec(
        "list_files",
        "List the entries of a directory in the workspace.",
        {"type": "object", "properties": {"path": {"type": "string", "default": "."}}},
    ),
    providers.ToolSpec(
        "read_file",
        "Read a text file with line numbers. Optional 1-based inclusive line range.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "start_line": {"type": "integer"},
                "end_line": {"type": "integer"},
            },
            "required": ["path"],
        },
    ),
    providers.ToolSpec(
        "search",
        "Search files for a regular expression; returns path:line: text.",
        {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    ),
    providers.ToolSpec(
        "write_file",
        "Create or replace a file with the given content.",
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    ),
    providers.ToolSpec(
        "edit_file",
        "Replace exactly one occurrence of `old` with `new` in a file.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
            },
            "required": ["path", "old", "new"],
        },
    ),
    providers.ToolSpec(
        "run_command",
        "Run a shell command in the workspace (sandboxed, no network).",
        {
            "type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
            "required": ["command"],
        },
    ),
    providers.ToolSpec(
        "ask_user",
        "Ask the task's author a clarifying question.",
        {
            "type": "object",
            "properties": {"question": {"type": "string"}},
            "required": ["question"],
        },
    ),
    providers.ToolSpec(
        "finish",
        "End the task.",
        {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]},
    ),
]


class ToolError(Exception):
    """An error the model can read and act on; never crashes the run."""


def truncate(text: str, cap: int = TOOL_OUTPUT_CAP) -> str:
    if len(text) <= cap:
        return text
    half = cap // 2
    dropped = len(text) - cap
    return (
        f"{text[:half]}\n… [{dropped} characters truncated: read a narrower range or search] …\n"
        f"{text[-half:]}"
    )


class Tools:
    """The file tools, confined to the workspace.

    Every path is resolved, symbolic links included, and refused unless it ends inside the
    workspace (and outside its `.git`). The resolved path is then opened one component at a time
    from the workspace's own directory, each with O_NOFOLLOW: a link swapped in after the check
    (say by a process the agent left running) makes the open fail instead of leading out.
    """

    def __init__(self, context: base.AgentContext) -> None:
        self.context = context
        self.root = context.workspace.resolve()

    def resolve(self, path: object) -> Path:
        if not isinstance(path, str) or path.strip() == "":
            raise ToolError("path must be a non-empty string")
        if "\0" in path:
            raise ToolError("path must not contain a NUL character")
        try:
            candidate = (self.root / path).resolve()
        except RuntimeError:  # a symlink loop
            raise ToolError(f"{path!r} is a loop of symbolic links") from None
        if not self._inside(candidate):
            raise ToolError(
                f"{path!r} is outside the workspace; use paths relative to the repository root"
            )
        parts = candidate.relative_to(self.root).parts
        if parts and parts[0] == ".git":
            raise ToolError(".git is not part of the workspace")
        return candidate

    def _inside(self, resolved: Path) -> bool:
        return resolved == self.root or self.root in resolved.parents

    def _open(self, target: Path, flags: int, *, make_parents: bool = False) -> int:
        """A descriptor for `target` (a path `resolve` returned), opened without following links.

        With `make_parents`, missing directories on the way are created.
        """
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        parts = target.relative_to(self.root).parts
        if not parts:
            return fd
        try:
            for name in parts[:-1]:
                directory_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    next_fd = os.open(name, directory_flags, dir_fd=fd)
                except FileNotFoundError:
                    if not make_parents:
                        raise
                    os.mkdir(name, dir_fd=fd)
                    next_fd = os.open(name, directory_flags, dir_fd=fd)
                os.close(fd)
                fd = next_fd
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        finally:
            os.close(fd)

    def _read(self, path: str, target: Path, *, size_cap: int | None = None) -> bytes:
        """The content of the regular file `target`; refuses anything else, or a larger file
        than `size_cap` bytes.

        O_NONBLOCK: opening a FIFO the agent made would otherwise wait forever for a writer.
        """
        try:
            fd = self._open(target, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ToolError(f"{path!r} does not exist or is not a file") from None
        except OSError as exc:
            raise ToolError(f"{path!r} could not be opened: {_reason(exc)}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"{path!r} does not exist or is not a file")
            if size_cap is not None and info.st_size > size_cap:
                raise ToolError(
                    f"{path!r} is large; read it in ranges with start_line and end_line"
                )
            return handle.read()

    def _write(self, path: str, target: Path, content: str) -> None:
        if target == self.root:
            raise ToolError(f"{path!r} is a directory")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK
        try:
            fd = self._open(target, flags, make_parents=True)
        except IsADirectoryError:
            raise ToolError(f"{path!r} is a directory") from None
        except OSError as exc:
            raise ToolError(f"{path!r} could not be written: {_reason(exc)}") from None
        with os.fdopen(fd, "wb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ToolError(f"{path!r} is not a regular file")
            handle.write(content.encode())

    def list_files(self, path: str = ".") -> str:
        target = self.resolve(path)
        try:
            fd = self._open(target, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            raise ToolError(f"{path!r} is not a directory") from None
        try:
            with os.scandir(fd) as scan:
                entries = sorted(
                    self._describe(entry, target, fd) for entry in scan if entry.name != ".git"
                )
        finally:
            os.close(fd)
        return "\n".join(entries) or "(empty directory)"

    def _describe(self, entry: os.DirEntry, directory: Path, directory_fd: int) -> str:
        if not entry.is_symlink():
            return entry.name + ("/" if entry.is_dir(follow_symlinks=False) else "")
        # A link shows its own text, as `ls -l` does; never what it points to.
        text = os.readlink(entry.name, dir_fd=directory_fd)
        try:
            inside = self._inside((directory / entry.name).resolve())
        except (RuntimeError, OSError):
            inside = False
        return f"{entry.name}@ -> {text}" + ("" if inside else " (outside the workspace)")

    def read_file(
        self, path: str, start_line: int | None = None, end_line: int | None = None
    ) -> str:
        target = self.resolve(path)
        data = self._read(path, target, size_cap=MAX_FILE_READ if start_line is None else None)
        lines = data.decode(errors="replace").splitlines()
        start = max(int(start_line or 1), 1)
        end = min(int(end_line or len(lines)), len(lines))
        if start > max(end, 1) and lines:
            raise ToolError(f"start_line {start} is past the end ({len(lines)} lines)")
        width = len(str(end))
        return (
            "\n".join(f"{n:>{width}}  {lines[n - 1]}" for n in range(start, end + 1))
            or "(empty file)"
        )

    def search(self, pattern: str, path: str = ".") -> str:
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ToolError(f"invalid regular expression: {exc}") from None
        target = self.resolve(path)
        files = sorted(self._walk(target)) if target.is_dir() else [target]
        matches = []
        for file in files:
            text = self._searchable_text(file)
            if text is None:
                continue
            rel = file.relative_to(self.root)
            for number, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    matches.append(f"{rel}:{number}: {line[:300]}")
                    if len(matches) >= MAX_SEARCH_MATCHES:
                        matches.append(f"(stopped after {MAX_SEARCH_MATCHES} matches)")
                        return "\n".join(matches)
        return "\n".join(matches) or "no matches"

    def _walk(self, directory: Path):
        # os.walk never descends into a linked directory; a linked file is yielded, and resolved
        # (or skipped) by _searchable_text.
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames[:] = [d for d in dirnames if d not in (".git", "node_modules", "__pycache__")]
            for name in filenames:
                yield Path(dirpath) / name

    def _searchable_text(self, file: Path) -> str | None:
        """The text of `file`, or None when it is not a text file or is a link leading out."""
        try:
            if file.is_symlink():
                file = self.resolve(str(file.relative_to(self.root)))
            return self._read(str(file), file).decode()
        except (ToolError, UnicodeDecodeError, OSError):
            return None

    def write_file(self, path: str, content: str) -> str:
        if not isinstance(content, str):
            raise ToolError("content must be a string")
        target = self.resolve(path)
        self._write(path, target, content)
        return f"wrote {path} ({len(content.splitlines())} lines)"

    def edit_file(self, path: str, old: str, new: str) -> str:
        if not isinstance(old, str) or not isinstance(new, str) or old == "":
            raise ToolError("old must be a non-empty string and new a string")
        target = self.resolve(path)
        text = self._read(path, target).decode()
        count = text.count(old)
        if count == 0:
            raise ToolError(f"old text not found in {path}; read the file and copy the exact text")
        if count > 1:
            raise ToolError(
                f"old text occurs {count} times in {path}; include more context to make it unique"
            )
        self._write(path, target, text.replace(old, new, 1))
        return f"edited {path}"

    def run_command(self, command: str, timeout: int | None = None) -> str:
        if not isinstance(command, str) or not command.strip():
            raise ToolError("command must be a non-empty string")
        left = self.context.limits.seconds_left()
        wanted = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else 300.0
        exit_code, output = self.context.run_command(command, max(1.0, min(wanted, left)))
        return f"exit code: {exit_code}\n{truncate(output)}"


def run(context: base.AgentContext) -> base.AgentOutcome:
    # A client per run (its own pool and cookies), sharing only the SSL context.
    with providers.client_for(context.model) as client:
        with providers.for_model(context.model, client=client) as provider:
            return run_with(context, provider)


def run_with(context: base.AgentContext, provider: providers.Provider) -> base.AgentOutcome:
    """The loop: ask the model, run its tool calls, feed back results, until finish or a limit."""
    tools = Tools(context)
    messages: list[dict] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"# Task: {context.title}\n\n{context.instructions}"},
    ]
    context.transcript.add_step("system", SYSTEM_PROMPT)
    context.transcript.add_step("user", messages[1]["content"])
    outcome = base.AgentOutcome(end_status=base.STOPPED)

    while True:
        if context.cancel.is_set():
            outcome.end_status = base.CANCELLED
            return outcome
        if context.limits.seconds_left() <= 0:
            outcome.end_status = base.TIMED_OUT
            return outcome
        if outcome.steps >= context.limits.max_steps:
            outcome.end_status = base.MAX_STEPS
            return outcome
        if (
            context.limits.max_cost_usd is not None
            and outcome.cost_usd >= context.limits.max_cost_usd
        ):
            outcome.end_status = base.MAX_COST
            return outcome

        try:
            reply = provider.complete(messages, TOOLS)
        except providers.ProviderError as exc:
            outcome.end_status = base.MODEL_UNREACHABLE
            outcome.error = str(exc)
            return outcome
        outcome.steps += 1
        outcome.input_tokens += reply.input_tokens
        outcome.output_tokens += reply.output_tokens
        outcome.cost_usd += reply.cost_usd
        context.on_usage(
            outcome.input_tokens, outcome.output_tokens, outcome.cost_usd, outcome.steps
        )

        calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls]
        step = context.transcript.add_step(
            "agent",
            reply.text,
            tool_calls=calls,
            metrics={
                "prompt_tokens": reply.input_tokens,
                "completion_tokens": reply.output_tokens,
                "cost_usd": round(reply.cost_usd, 6),
            },
            extra={"stop_reason": reply.stop_reason},
        )
        messages.append({"role": "assistant", "content": reply.text, "tool_calls": calls})
        if not calls:
            # A model that stops calling tools is done talking; nudging it burns budget.
            outcome.end_status = base.STOPPED
            outcome.summary = reply.text
            return outcome

        results = []
        finished = False
        for call in calls:
            content, is_finish = _dispatch(tools, context, call)
            results.append((call["id"], content))
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
            if is_finish:
                finished = True
                outcome.summary = str(call["arguments"].get("summary", ""))
        context.transcript.add_observations(step, results)
        if finished:
            outcome.end_status = base.FINISHED
            return outcome


def _dispatch(tools: Tools, context: base.AgentContext, call: dict) -> tuple[str, bool]:
    name, arguments = call["name"], call["arguments"]
    if not isinstance(arguments, dict) or "_raw" in arguments:
        raw = arguments.get("_raw") if isinstance(arguments, dict) else arguments
        return f"error: the arguments for {name} were not a JSON object: {str(raw)[:200]}", False
    if name == "finish":
        return "finished", True
    if name == "ask_user":
        question = arguments.get("question")
        if not isinstance(question, str) or not question.strip():
            return "error: question must be a non-empty string", False
        return context.ask_user(question.strip()), False
    method = getattr(tools, name, None) if name in _TOOL_NAMES else None
    if method is None:
        return (
            f"error: unknown tool {name!r}; the tools are {', '.join(sorted(_TOOL_NAMES | {'ask_user', 'finish'}))}",
            False,
        )
    try:
        return truncate(method(**arguments)), False
    except ToolError as exc:
        return f"error: {exc}", False
    except TypeError as exc:
        return f"error: wrong arguments for {name}: {exc}", False
    except (OSError, ValueError) as exc:
        return f"error: {exc}", False


def _reason(exc: OSError) -> str:
    # The message without the file name, which may be a host path.
    return exc.strerror or type(exc).__name__


_TOOL_NAMES = {"list_files", "read_file", "search", "write_file", "edit_file", "run_command"}


def describe_arguments(arguments: dict) -> str:
    return json.dumps(arguments, ensure_ascii=False)[:500]

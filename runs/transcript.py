"""The normalized transcript: ATIF (Agent Trajectory Interchange Format), written as v1.6.

A run's transcript is written to storage as it grows, so the browser can follow it live.
Mergeable's own fields go under ``extra``. Transcripts from elsewhere are read in any ATIF version
from v1.4 (the version Mergeable wrote first) to v1.7; `validate` checks what reviewers and the
run's totals rely on, and `import_transcript` is the ATIF entry of the import registry.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

SCHEMA_VERSION = "ATIF-v1.6"
# v1.5 added agent.tool_definitions, v1.6 content-part messages (text and images), v1.7
# trajectory_id, subagent_trajectories and `extra` on tool calls and observation results.
READ_VERSIONS = ("ATIF-v1.4", "ATIF-v1.5", "ATIF-v1.6", "ATIF-v1.7")
UNKNOWN_VERSION = "unknown"  # ATIF requires agent.version; some sources never say theirs
# Fields ATIF allows on agent steps only.
AGENT_ONLY_FIELDS = ("model_name", "reasoning_content", "reasoning_effort", "tool_calls", "metrics")
_NOW = object()  # add_step's default timestamp: the moment the step is added

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat()


class TranscriptWriter:
    """Builds an ATIF document step by step and hands it to ``save`` as it changes.

    With ``min_interval_s`` (default 0: after every change), ``save`` runs at most that often:
    a change made sooner after the last save is saved by a timer thread when the interval is
    up, so the stored document is never more than ``min_interval_s`` behind. ``finish`` and
    ``close`` save at once. ``save`` may then run in the timer thread; it is never called twice
    at the same time, and the document is not changed while it runs.
    """

    def __init__(
        self,
        *,
        agent_name: str,
        agent_version: str,
        model_name: str,
        save: Callable[[dict], None] | None = None,
        session_id: str | None = None,
        min_interval_s: float = 0.0,
        tool_definitions: list[dict] | None = None,
    ) -> None:
        self._save = save
        self._min_interval_s = min_interval_s
        self._lock = threading.RLock()  # held while the document changes and while it is saved
        self._last_save: float | None = None
        self._dirty = False
        self._timer: threading.Timer | None = None
        self.document: dict = {
            "schema_version": SCHEMA_VERSION,
            "session_id": session_id or str(uuid.uuid4()),
            "agent": {
                "name": agent_name,
                "version": agent_version or UNKNOWN_VERSION,
                "model_name": model_name,
            },
            "steps": [],
            "final_metrics": {},
            "extra": {},
        }
        if tool_definitions:
            self.document["agent"]["tool_definitions"] = tool_definitions

    @property
    def steps(self) -> list[dict]:
        return self.document["steps"]

    def add_step(
        self,
        source: str,
        message: str = "",
        *,
        tool_calls: list[dict] | None = None,
        metrics: dict | None = None,
        extra: dict | None = None,
        model_name: str | None = None,
        reasoning_content: str | None = None,
        is_copied_context: bool = False,
        timestamp=_NOW,
    ) -> dict:
        """Append a step. `tool_calls` are {"id", "name", "arguments"}; `metrics` (prompt_tokens,
        completion_tokens, cached_tokens, cost_usd), `model_name` and `reasoning_content` belong
        to agent steps only. `timestamp` is the moment of the step (a datetime or ISO text; None
        for unknown); by default, now."""
        if source not in ("system", "user", "agent"):
            raise ValueError(f"unknown step source {source!r}")
        if source != "agent" and (tool_calls or metrics or model_name or reasoning_content):
            raise ValueError("tool calls, metrics, model_name and reasoning are for agent steps")
        step: dict = {"step_id": len(self.steps) + 1, "source": source}
        if timestamp is _NOW:
            step["timestamp"] = _now()
        elif timestamp is not None:
            step["timestamp"] = timestamp if isinstance(timestamp, str) else timestamp.isoformat()
        step["message"] = message
        if model_name:
            step["model_name"] = model_name
        if reasoning_content:
            step["reasoning_content"] = reasoning_content
        if tool_calls:
            step["tool_calls"] = [
                {
                    "tool_call_id": call["id"],
                    "function_name": call["name"],
                    "arguments": call["arguments"],
                }
                for call in tool_calls
            ]
        if metrics:
            step["metrics"] = metrics
        if is_copied_context:
            step["is_copied_context"] = True
        if extra:
            step["extra"] = extra
        with self._lock:
            step["step_id"] = len(self.steps) + 1
            self.steps.append(step)
        self.flush()
        return step

    def add_observations(self, step: dict, results: list[tuple[str, str]]) -> None:
        """Attach tool results (call id, content) to the agent step that made the calls."""
        observation = {
            "results": [
                {"source_call_id": call_id, "content": content} for call_id, content in results
            ]
        }
        with self._lock:
            step["observation"] = observation
        self.flush()

    def finish(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        cached_tokens: int | None = None,
        **extra,
    ) -> None:
        with self._lock:
            self.document["final_metrics"] = {
                "total_prompt_tokens": prompt_tokens,
                "total_completion_tokens": completion_tokens,
                "total_cost_usd": round(cost_usd, 6),
                "total_steps": len(self.steps),
            }
            if cached_tokens is not None:
                self.document["final_metrics"]["total_cached_tokens"] = cached_tokens
            self.document["extra"].update(extra)
            self._dirty = True
        self.close()

    def flush(self) -> None:
        """Save the document now, or within ``min_interval_s`` of the last save."""
        if self._save is None:
            return
        with self._lock:
            self._dirty = True
            wait = 0.0
            if self._last_save is not None:
                wait = self._last_save + self._min_interval_s - time.monotonic()
            if wait <= 0:
                self._write()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._deferred)
                self._timer.daemon = True
                self._timer.start()

    def close(self) -> None:
        """Save any change not saved yet, now, and stop the timer."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._dirty and self._save is not None:
                self._write()

    def _deferred(self) -> None:
        with self._lock:
            self._timer = None
            if not self._dirty:
                return
            try:
                self._write()
            except Exception:  # the next change or close() tries again
                log.warning("could not save the transcript", exc_info=True)

    def _write(self) -> None:
        self._save(self.document)
        self._dirty = False
        self._last_save = time.monotonic()


def dumps(document: dict) -> str:
    # No indent: only the compact form uses the C encoder, several times faster on a long run.
    return json.dumps(document, ensure_ascii=False)


def validate(document: object) -> dict:
    """Check an ATIF document from elsewhere (v1.4 to v1.7); ValueError names the problem.

    Checked: the version, the steps in order (step_id 1, 2, 3...), each step's source, that only
    agent steps carry model_name, reasoning, tool calls and metrics, that every tool call has an
    id, a function name and object arguments, that observation results name calls of their own
    step, that messages are text or (from v1.6) lists of text and image parts, and the agent.
    """
    if not isinstance(document, dict):
        raise ValueError("transcript: expected a JSON object")
    version = document.get("schema_version", "")
    if not isinstance(version, str) or not version.startswith("ATIF"):
        raise ValueError("transcript: schema_version must name an ATIF version")
    if version not in READ_VERSIONS:
        raise ValueError(
            f"transcript: schema_version {version!r} is not one Mergeable reads "
            f"({', '.join(READ_VERSIONS)})"
        )
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise ValueError("transcript: steps must be a list")
    parts_allowed = version >= "ATIF-v1.6"
    for index, step in enumerate(steps, 1):
        _validate_step(step, index, parts_allowed)
    agent = document.get("agent")
    if not isinstance(agent, dict) or not isinstance(agent.get("name"), str):
        raise ValueError("transcript: agent must be an object with a name")
    for key in ("version", "model_name"):
        if agent.get(key) is not None and not isinstance(agent[key], str):
            raise ValueError(f"transcript: agent.{key} must be text")
    if agent.get("tool_definitions") is not None and not isinstance(
        agent["tool_definitions"], list
    ):
        raise ValueError("transcript: agent.tool_definitions must be a list")
    for key in ("final_metrics", "extra"):
        if document.get(key) is not None and not isinstance(document[key], dict):
            raise ValueError(f"transcript: {key} must be an object")
    return document


def _validate_step(step: object, index: int, parts_allowed: bool) -> None:
    where = f"transcript: step {index}"
    if not isinstance(step, dict):
        raise ValueError(f"{where} must be an object")
    if step.get("source") not in ("system", "user", "agent"):
        raise ValueError(f"{where} has no valid source")
    step_id = step.get("step_id")
    if step_id != index or isinstance(step_id, bool):
        raise ValueError(f"{where} has step_id {step_id!r}: step ids must run 1, 2, 3... in order")
    if step["source"] != "agent":
        present = [key for key in AGENT_ONLY_FIELDS if step.get(key) is not None]
        if present:
            raise ValueError(
                f"{where} is a {step['source']} step but has {', '.join(present)} "
                "(only agent steps may)"
            )
    if step.get("timestamp") is not None and parse_time(step["timestamp"], numbers=False) is None:
        raise ValueError(f"{where} has a timestamp that is not ISO 8601")
    _validate_content(step.get("message", ""), f"{where}'s message", parts_allowed)
    if step.get("metrics") is not None and not isinstance(step["metrics"], dict):
        raise ValueError(f"{where}'s metrics must be an object")
    call_ids = set()
    calls = step.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise ValueError(f"{where}'s tool_calls must be a list")
    for number, call in enumerate(calls or [], 1):
        if not isinstance(call, dict):
            raise ValueError(f"{where}, tool call {number} must be an object")
        for key in ("tool_call_id", "function_name"):
            if not isinstance(call.get(key), str) or not call[key]:
                raise ValueError(f"{where}, tool call {number} has no {key}")
        if not isinstance(call.get("arguments"), dict):
            raise ValueError(f"{where}, tool call {number}'s arguments must be an object")
        call_ids.add(call["tool_call_id"])
    observation = step.get("observation")
    if observation is None:
        return
    if not isinstance(observation, dict) or not isinstance(observation.get("results"), list):
        raise ValueError(f"{where}'s observation must hold a list of results")
    for number, result in enumerate(observation["results"], 1):
        if not isinstance(result, dict):
            raise ValueError(f"{where}, observation result {number} must be an object")
        source = result.get("source_call_id")
        if source is not None and source not in call_ids:
            raise ValueError(
                f"{where}, observation result {number} answers {source!r}, "
                "which is not a tool call of that step"
            )
        if result.get("content") is not None:
            _validate_content(
                result["content"], f"{where}, observation result {number}", parts_allowed
            )


def _validate_content(content: object, where: str, parts_allowed: bool) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise ValueError(f"{where} must be text" + (" or a list of parts" if parts_allowed else ""))
    if not parts_allowed:
        raise ValueError(f"{where} is a list of parts, which ATIF allows from v1.6 on")
    for number, part in enumerate(content, 1):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image" and isinstance(part.get("source"), dict):
            continue
        raise ValueError(f"{where}, part {number} must be a text part or an image part")


def text_of(content: object) -> str:
    """A message or result as text: content parts joined, each image as a placeholder."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "image":
                source = part.get("source") if isinstance(part.get("source"), dict) else {}
                where = source.get("path") or source.get("url") or ""
                texts.append(f"[image {where}]".replace(" ]", "]"))
        return "\n".join(texts)
    return json.dumps(content, ensure_ascii=False)


# --- Reading native files --------------------------------------------------------------------


def load_json(text: str, filename: str):
    """Parse a JSON file from elsewhere; ValueError names the file, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{filename}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None


def parse_time(value, *, numbers: bool = True) -> datetime | None:
    """A timestamp as native logs write it: ISO 8601 text, or Unix seconds or milliseconds."""
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def add_result(writer: TranscriptWriter, step: dict, call_id: str, content) -> int:
    """Add one tool result to an agent step's observation; returns how many it now holds."""
    results = [
        (result["source_call_id"], result["content"])
        for result in step.get("observation", {}).get("results", [])
    ]
    writer.add_observations(step, [*results, (call_id, content)])
    return len(results) + 1


# --- ATIF as an import format ----------------------------------------------------------------


def looks_like(text: str, filename: str) -> bool:
    head = text.lstrip()[:4000]
    return head.startswith("{") and '"schema_version"' in head and '"ATIF' in head


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """An ATIF document from elsewhere, validated; content-part messages become text for
    reviewers (the file itself is kept as the run's raw artifact)."""
    document = load_json(text, filename)
    try:
        validate(document)
    except ValueError as exc:
        raise ValueError(f"{filename}: {exc}.") from None
    for step in document["steps"]:
        if isinstance(step.get("message"), list):
            step["message"] = text_of(step["message"])
        for result in (step.get("observation") or {}).get("results", []):
            if isinstance(result.get("content"), list):
                result["content"] = text_of(result["content"])
    return document

"""The normalized transcript: ATIF (Agent Trajectory Interchange Format) v1.4.

A run's transcript is written to storage as it grows, so the browser can follow it live.
Mergeable's own fields go under ``extra``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

SCHEMA_VERSION = "ATIF-v1.4"

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
            "agent": {"name": agent_name, "version": agent_version, "model_name": model_name},
            "steps": [],
            "final_metrics": {},
            "extra": {},
        }

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
    ) -> dict:
        if source not in ("system", "user", "agent"):
            raise ValueError(f"unknown step source {source!r}")
        step: dict = {
            "step_id": len(self.steps) + 1,
            "source": source,
            "timestamp": _now(),
            "message": message,
        }
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
        if extra:
            step["extra"] = extra
        with self._lock:
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
        self, *, prompt_tokens: int, completion_tokens: int, cost_usd: float, **extra
    ) -> None:
        with self._lock:
            self.document["final_metrics"] = {
                "total_prompt_tokens": prompt_tokens,
                "total_completion_tokens": completion_tokens,
                "total_cost_usd": round(cost_usd, 6),
                "total_steps": len(self.steps),
            }
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
    """Check the shape of an ATIF document from elsewhere; ValueError names the problem."""
    if not isinstance(document, dict):
        raise ValueError("transcript: expected a JSON object")
    version = document.get("schema_version", "")
    if not isinstance(version, str) or not version.startswith("ATIF"):
        raise ValueError("transcript: schema_version must name an ATIF version")
    steps = document.get("steps")
    if not isinstance(steps, list):
        raise ValueError("transcript: steps must be a list")
    for index, step in enumerate(steps, 1):
        if not isinstance(step, dict):
            raise ValueError(f"transcript: step {index} must be an object")
        if step.get("source") not in ("system", "user", "agent"):
            raise ValueError(f"transcript: step {index} has no valid source")
    return document

"""The normalized transcript: ATIF (Agent Trajectory Interchange Format) v1.4.

A run's transcript is written to storage after every step, so the browser can follow it live.
Mergeable's own fields go under ``extra``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

SCHEMA_VERSION = "ATIF-v1.4"


def _now() -> str:
    return datetime.now(UTC).isoformat()


class TranscriptWriter:
    """Builds an ATIF document step by step and hands it to ``save`` after each step."""

    def __init__(
        self,
        *,
        agent_name: str,
        agent_version: str,
        model_name: str,
        save: Callable[[dict], None] | None = None,
        session_id: str | None = None,
    ) -> None:
        self._save = save
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
        self.steps.append(step)
        self.flush()
        return step

    def add_observations(self, step: dict, results: list[tuple[str, str]]) -> None:
        """Attach tool results (call id, content) to the agent step that made the calls."""
        step["observation"] = {
            "results": [{"source_call_id": call_id, "content": content} for call_id, content in results]
        }
        self.flush()

    def finish(self, *, prompt_tokens: int, completion_tokens: int, cost_usd: float, **extra) -> None:
        self.document["final_metrics"] = {
            "total_prompt_tokens": prompt_tokens,
            "total_completion_tokens": completion_tokens,
            "total_cost_usd": round(cost_usd, 6),
            "total_steps": len(self.steps),
        }
        self.document["extra"].update(extra)
        self.flush()

    def flush(self) -> None:
        if self._save is not None:
            self._save(self.document)


def dumps(document: dict) -> str:
    return json.dumps(document, ensure_ascii=False, indent=1)


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

"""A run's diff rendered for the review page (highlighted rows, expandable ranges), stored beside
the run's other artifacts.

Rendering is pygments over every changed line: a large diff takes seconds. The worker renders
once, as soon as it has captured the diff, so that the first scorer to open the run reads a stored
rendering rather than waiting for one, however far away the storage is. The page still renders
on demand (and stores it) when the stored rendering is missing or from an older RENDER_VERSION.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from runs import diffs
from runs.models import Run

log = logging.getLogger(__name__)

# Bump when the stored shape of a rendered diff changes, so stale renderings are re-rendered.
RENDER_VERSION = 2  # 2: hidden and bidirectional Unicode shown as marks
DIFF_ARTIFACT = "rendered_diff.json"
REFERENCE_ARTIFACT = "rendered_reference.json"


def empty(error: str = "") -> dict:
    return {"files": [], "totals": {"files": 0, "additions": 0, "deletions": 0}, "error": error}


def render_diff(run: Run) -> dict:
    before = run.read_json_artifact("before.json", {}) or {}
    after = run.read_json_artifact("after.json", {}) or {}
    return diffs.render_diff(run.diff, before, after)


def reference_patch(run: Run) -> str:
    """The prompt's reference patch ("what we would have written"), or ''."""
    patch = (run.snapshot.get("prompt") or {}).get("reference_patch") or ""
    return patch if patch.strip() else ""


def load_or_render(run: Run, artifact: str, render: Callable[[], dict]) -> dict:
    """The stored rendering, or a new one, stored for the next reader."""
    stored = run.read_json_artifact(artifact)
    if isinstance(stored, dict) and stored.get("version") == RENDER_VERSION:
        return stored["diff"]
    return _render_and_store(run, artifact, render)


def _render_and_store(run: Run, artifact: str, render: Callable[[], dict]) -> dict:
    try:
        rendered = render()
        rendered.setdefault("error", "")
    except ValueError as exc:
        rendered = empty(f"The diff could not be read: {diffs.strip_control(str(exc))}")
    _add_range_sizes(rendered)
    run.save_artifact(artifact, json.dumps({"version": RENDER_VERSION, "diff": rendered}))
    return rendered


def _add_range_sizes(rendered: dict) -> None:
    """Give each expandable range its line count and new-minus-old offset, for the links."""
    for entry in rendered.get("files", []):
        ranges = [hunk.get("expand_before") for hunk in entry.get("hunks", [])]
        for span in [*ranges, entry.get("expand_after")]:
            if span:
                span["count"] = span["old_end"] - span["old_start"] + 1
                span["delta"] = span["new_start"] - span["old_start"]


def prerender(run: Run) -> None:
    """Render and store the run's diff and its prompt's reference patch, replacing any earlier
    rendering (a retried run's diff is new). Called by the worker once the diff is stored; a
    failure here costs the first reviewer a wait, never the run its result."""
    try:
        _render_and_store(run, DIFF_ARTIFACT, lambda: render_diff(run))
        patch = reference_patch(run)
        if patch:
            _render_and_store(run, REFERENCE_ARTIFACT, lambda: diffs.render_diff(patch))
    except Exception:
        log.exception("could not render the diff of run %s for review", run.pk)

"""Cline task folders, imported: Cline runs inside VS Code and is never run by Mergeable (this
module has no `run` and is not a harness).

Cline's folder is Roo Code's ancestor and reads the same way (see `runs.agents.roo_code`), with
three differences this reader knows: `tokensIn` counts only uncached input (cache reads and writes
are added to make the prompt's size), the model and Cline's version are in `task_metadata.json`
(and each reply's `modelInfo`, with its usage in `metrics`), and there is no `history_item.json`.
The first user turn wraps the task in `<task>`; the "Export task" markdown is `cline_task_….md`.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from runs.agents import roo_code

NAME = "cline"

# What only Cline writes: its first UI message, its plan/act mode asks, its per-reply model info.
_MARKERS = re.compile(
    r'"say"\s*:\s*"task"|"ask"\s*:\s*"(?:plan|act)_mode_respond"|"modelInfo"\s*:|"cline_version"'
)


def looks_like(text: str, filename: str) -> bool:
    name = PurePosixPath(filename.replace("\\", "/")).name.lower()
    if name.endswith(".md"):
        return name.startswith(roo_code.CLINE.export_prefix)
    if not (name.endswith(tuple(roo_code.TASK_FILES)) or text.lstrip().startswith("[")):
        return False
    return bool(_MARKERS.search(text[:200_000]))


def import_transcript(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    return roo_code.read_task_folder(text, filename, extra_files, roo_code.CLINE)

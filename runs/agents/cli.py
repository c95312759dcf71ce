"""What the CLI harnesses share: where they are installed, reaching the endpoint, mounting a
venv, telling a final question from a final answer, seeing whether the agent changed a file, and
reading figures and events out of their native logs."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

AGENTS_DIR = Path(__file__).resolve().parents[2] / ".agents"
# Never the agent's work: left out of workspace listings and change checks.
SKIPPED_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv"}


def binary(setting: str, default: str) -> Path:
    """Where a CLI is installed: the Django setting when configured, else under .agents/."""
    if settings.configured:
        return Path(getattr(settings, setting))
    return AGENTS_DIR / default


def endpoint_problem(base_url: str, timeout: float = 5.0) -> str:
    """Why the endpoint cannot be reached, or "" if a TCP connection opens.

    aider retries a refused connection for about a minute and then exits 0, so a dead endpoint
    is caught here, before it starts.
    """
    if not base_url:
        return ""
    parts = urlsplit(base_url)
    if not parts.hostname:
        return f"the model's base URL {base_url!r} has no host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port}: {exc}"
    return ""


def venv_paths(executable: Path) -> list[Path]:
    """The CLI's virtualenv and the interpreter it was made from, to mount in the sandbox."""
    venv = executable.parent.parent
    paths = [venv]
    config = venv / "pyvenv.cfg"
    if config.is_file():
        for line in config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                paths.append(Path(value.strip()).parent)
    return paths


def question_in(reply: str) -> str | None:
    """The agent's last reply, when it ends its turn by asking something (one of its last three
    lines ends with "?"); None when it reads as an answer or a report."""
    tail = reply.strip().splitlines()[-3:]
    if any(line.rstrip().endswith("?") for line in tail):
        return reply.strip()
    return None


def workspace_files(workspace: Path) -> list[str]:
    """Every file under the workspace, sorted, outside SKIPPED_DIRS."""
    found = []
    for dirpath, dirnames, filenames in os.walk(workspace):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for name in sorted(filenames):
            found.append(str((Path(dirpath) / name).relative_to(workspace)))
    return found


def snapshot(workspace: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) of every file, to tell whether the agent changed any."""
    result = {}
    for rel in workspace_files(workspace):
        try:
            stat = (workspace / rel).lstat()
        except OSError:
            continue
        result[rel] = (stat.st_size, stat.st_mtime_ns)
    return result


def changed_files(before: dict, after: dict) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def json_number(value: object) -> float:
    """A figure from a native log: a JSON number, else 0 (booleans are not numbers here)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def json_count(value: object) -> int:
    """A count from a native log: a JSON number, else 0."""
    return int(json_number(value))


def first_json_object(text: str) -> dict | None:
    """The first non-blank line of a JSON-lines log, parsed, when it is an object."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        event = json.loads(first)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None

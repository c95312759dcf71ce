"""What the CLI harnesses share: where they are installed, reaching the endpoint, mounting a
venv, and telling a final question from a final answer."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

AGENTS_DIR = Path(__file__).resolve().parents[2] / ".agents"


def binary(setting: str, default: str) -> Path:
    """Where a CLI is installed: the Django setting when configured, else under .agents/."""
    try:
        from django.conf import settings

        if settings.configured:
            return Path(getattr(settings, setting))
    except ImportError:
        pass
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

"""What would give away who made a run, and hiding it from a blind reviewer.

A blind reviewer judges the change, not its maker: the review page (scoring) and the page of a
run still under way (runs) hide these terms from everything the agent wrote.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from runs.models import Contestant, Run

HIDDEN = "[hidden]"

# Commands that start another program: the program after them is the one that names the agent.
_LAUNCHERS = {"env", "sh", "bash", "python", "python3", "node", "npx", "uv", "uvx", "pipx", "exec"}


def _command_program(template: Any) -> str:
    """The agent program a `command` harness runs (``my-agent`` in ``npx my-agent --repo …``)."""
    if not isinstance(template, str):
        return ""
    for word in template.split():
        if word.startswith("-") or "=" in word or "{" in word:
            continue
        name = word.rsplit("/", 1)[-1]
        if name not in _LAUNCHERS:
            return name
    return ""


# What `identity_terms` reads of who made a run, as paths from the run: a page that hides or names
# them selects these of the run's contestant and model, and not their settings or API key.
IDENTITY_FIELDS = (
    *(f"contestant__{name}" for name in ("name", "harness", "options")),
    *(f"contestant__model__{name}" for name in ("name", "model_id", "provider", "base_url")),
)


def identity_terms(run: Run) -> dict[str, list[str]]:
    """Words that would give away who made a run, as {"names": [...], "words": [...]}.

    Names (the contestant's name and label, the model's name and id, the base URL's host and
    path, the agent program of a `command` harness) are hidden wherever they appear, even inside
    a longer word. Words (the harness and the provider, e.g. "aider", "openai", "Anthropic") are
    ordinary enough to be hidden only as whole words. The `command` harness's own name says
    nothing about the contestant ("command" is everywhere in a transcript), so it is not hidden.
    """
    contestant = run.contestant
    model = contestant.model
    snapshot = run.snapshot.get("contestant") or {}
    names = {
        contestant.name,
        contestant.label,
        model.name,
        model.model_id,
        snapshot.get("name"),
        snapshot.get("model"),
        snapshot.get("model_id"),
    }
    url = urlsplit(model.base_url or "")
    if url.hostname:
        names.add(url.hostname)
        if url.port:
            names.add(f"{url.hostname}:{url.port}")
    if url.path.strip("/"):
        names.add(url.path.rstrip("/"))
    words = {model.provider, model.get_provider_display(), snapshot.get("provider")}
    for harness in {contestant.harness, snapshot.get("harness")} - {None, ""}:
        if harness == Contestant.COMMAND:
            options = snapshot.get("options") or contestant.options or {}
            names.add(_command_program(options.get("command")))
        else:
            words.update({harness, dict(Contestant.HARNESSES).get(harness)})

    # Very short terms ("a", "gp") would shred ordinary words; they identify nobody anyway.
    def usable(terms: set) -> list[str]:
        return sorted((t for t in terms if isinstance(t, str) and len(t) >= 3), key=len)[::-1]

    return {"names": usable(names), "words": usable(words - names)}


def redactor(terms: dict[str, list[str]] | None):
    """A function replacing every term of ``identity_terms`` in a text with HIDDEN."""
    names = (terms or {}).get("names") or []
    words = (terms or {}).get("words") or []
    if not names and not words:
        return lambda text: text
    alternatives = [(term, re.escape(term)) for term in names]
    alternatives += [(term, rf"(?<![^\W_]){re.escape(term)}(?![^\W_])") for term in words]
    # Longest first, so "gpt-4o-mini" is hidden whole rather than as "[hidden]-mini".
    alternatives.sort(key=lambda pair: len(pair[0]), reverse=True)
    pattern = re.compile("|".join(regex for _, regex in alternatives), re.IGNORECASE)
    return lambda text: pattern.sub(HIDDEN, text)


def hide_identity(run: Run, text: str) -> str:
    """``text`` with everything that names ``run``'s maker hidden."""
    return redactor(identity_terms(run))(text)

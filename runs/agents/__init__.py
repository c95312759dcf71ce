"""The one registry of agent harnesses: each a module exposing NAME, VERSION and
run(context) -> AgentOutcome. The Contestant model's choices come from here."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from runs.agents.base import HarnessUnavailable

# name: (label shown in forms, module). Order is the order forms offer them.
HARNESSES = {
    "builtin": ("Builtin agent", "runs.agents.builtin"),
    "aider": ("aider", "runs.agents.aider"),
    "mini-swe-agent": ("mini-swe-agent", "runs.agents.mini_swe_agent"),
    "claude-code": ("Claude Code", "runs.agents.claude_code"),
    "codex": ("Codex CLI", "runs.agents.codex"),
    "opencode": ("opencode", "runs.agents.opencode"),
    "command": ("Any command", "runs.agents.command"),
}
CHOICES = [(name, label) for name, (label, _module) in HARNESSES.items()]


class UnknownHarness(HarnessUnavailable):
    pass


def harness_for(name: str) -> ModuleType:
    try:
        return import_module(HARNESSES[name][1])
    except KeyError:
        raise UnknownHarness(f"unknown harness {name!r}") from None
    except ModuleNotFoundError as exc:
        raise UnknownHarness(f"the {name} harness is not available: {exc}") from None

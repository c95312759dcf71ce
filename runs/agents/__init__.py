"""One module per agent harness. Each exposes NAME, VERSION and run(context) -> AgentOutcome."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from runs.agents.base import HarnessUnavailable

HARNESS_MODULES = {
    "builtin": "runs.agents.builtin",
    "aider": "runs.agents.aider",
    "mini-swe-agent": "runs.agents.mini_swe_agent",
    "command": "runs.agents.command",
}


class UnknownHarness(HarnessUnavailable):
    pass


def harness_for(name: str) -> ModuleType:
    try:
        return import_module(HARNESS_MODULES[name])
    except KeyError:
        raise UnknownHarness(f"unknown harness {name!r}") from None
    except ModuleNotFoundError as exc:
        raise UnknownHarness(f"the {name} harness is not available: {exc}") from None

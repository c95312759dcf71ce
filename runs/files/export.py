"""Writing a file as FORMATS.md shows it: block literals for long text, defaults left out."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

# -- Writing YAML --------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        # Indent list items under their key, as FORMATS.md writes them.
        return super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str):
    # Multi-line text (instructions, patches) reads best as a block literal. PyYAML falls back
    # to a quoted style by itself when a literal cannot represent the text exactly.
    if "\x85" in value:
        # PyYAML writes NEL unescaped in plain, single-quoted and literal styles, and reads it
        # back as a line break; only double quotes escape it.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"')
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_str(value)


def _represent_list(dumper: yaml.SafeDumper, value: list):
    # Short lists of single words (tags, expected files) fit on one line: [a, b]; sentences such
    # as acceptance criteria read better one per line.
    flow = all(isinstance(item, str) and not any(c.isspace() for c in item) for item in value) and (
        sum(len(item) + 2 for item in value) <= 60
    )
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def dump(document: dict) -> str:
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def without_defaults(items: Iterable[tuple[str, Any]]) -> dict:
    """The pairs whose value is not empty or default, in order (FORMATS.md omits those)."""
    return {key: value for key, value in items if not is_default(value)}


def is_default(value: Any) -> bool:
    # Spelled out because `0 in (False, ...)` is true, and a limit of 0.0 is not a default.
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)

"""The one way Mergeable reads YAML that people give it: prompt sets, contestants, model scripts.

Safe (plain data only) and strict: anchors (``&name``), aliases (``*name``) and duplicate keys in
a mapping are refused. Aliases let a few hundred bytes stand for billions of values (a 465-byte
contestants file once took 22 s and 1.8 GB), and none of Mergeable's formats needs them.

Errors are ``yaml.MarkedYAMLError``: their ``problem_mark`` names the line and column.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError

# libyaml's parser is about ten times faster than PyYAML's; the composition below is PyYAML's
# own, in Python, so that it can refuse anchors and aliases before any value is built.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(Composer, _SafeLoader):  # type: ignore[misc, valid-type]
    """A SafeLoader that refuses anchors, aliases and duplicate keys, naming the line."""

    def __init__(self, stream) -> None:
        _SafeLoader.__init__(self, stream)
        Composer.__init__(self)

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(
                None,
                None,
                f"an alias (*{event.anchor}) is not allowed: write the value out in full",
                event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(
                None,
                None,
                f"an anchor (&{event.anchor}) is not allowed: anchors and aliases are refused",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        # YAML would keep the last of two equal keys; in a file kept in git that is a typo.
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _value in node.value:
                # An inline merge (`<<: {...}`) may be overridden; only literal keys are checked.
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = self.construct_object(key_node)
                if key in seen:
                    raise ConstructorError(
                        None, None, f"duplicate key {key!r}"[:100], key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def load(text: str) -> Any:
    """Parse one YAML document; raises yaml.YAMLError (a MarkedYAMLError naming the line)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader

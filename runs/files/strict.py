"""The strict-type layer every Mergeable file goes through: YAML, types, unknown keys, errors.

Files are a public interface (FORMATS.md), so reading them is strict: unknown keys, wrong types
and missing fields are all reported at once, each as ``FILE: ENTRY: FIELD: message``. This layer
checks only shapes and types; what a value may be is the model's rule (its ``clean()``), reported
here under the file's name for the field by `model_rules`, so a file, a form and the API are held
to the same rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from runs import yaml_loader

_SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_SHA = re.compile(r"^[0-9a-fA-F]{4,64}\Z")
_MAX_INT = 2**31 - 1  # PositiveIntegerField's range on every database backend


class FormatError(ValueError):
    """A file that does not follow its format; ``errors`` holds every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# -- Reading YAML --------------------------------------------------------------------------------


def load_yaml(text: str, filename: str) -> Any:
    try:
        return yaml_loader.load(text)
    except yaml.MarkedYAMLError as exc:
        # Only the mark and the problem: the snippet PyYAML adds could quote a secret.
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = exc.problem or exc.context or "cannot be parsed"
        raise FormatError([f"{filename}: {where}: invalid YAML: {problem}"]) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # e.g. `2024-13-45` matches the timestamp pattern and then fails in datetime().
        reason = type(exc).__name__ if isinstance(exc, RecursionError) else str(exc)[:200]
        raise FormatError([f"{filename}: invalid YAML: {reason}"]) from None


# -- Field validation ----------------------------------------------------------------------------


class Invalid(Exception):
    pass


class Errors:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.messages: list[str] = []

    def add(self, entry: str, field_name: str, message: str) -> None:
        self.messages.append(f"{self.filename}: {entry}: {field_name}: {message}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise FormatError(self.messages)


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def string(*, max_length: int | None = None, blank: bool = False, slug: bool = False):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"must be a string, not {type_name(value)}")
        check_text(value)
        if not blank and not value.strip():
            raise Invalid("must not be empty")
        if max_length is not None and len(value) > max_length:
            raise Invalid(f"must be at most {max_length} characters")
        if slug and not _SLUG.match(value):
            raise Invalid(
                f"{show(value)} is not a slug (letters, digits, hyphens and underscores only)"
            )
        return value

    return check


def check_text(value: str) -> None:
    # Both pass YAML (as escapes) but no database stores them: PostgreSQL refuses NUL, and a lone
    # surrogate cannot be encoded at all.
    if "\x00" in value:
        raise Invalid("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid("must be valid Unicode text (no lone surrogates)") from None


def sha(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise Invalid("must be a string; quote a sha made only of digits")
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {type_name(value)}")
    if not _SHA.match(value):
        raise Invalid(f"{show(value)} is not a commit sha (4 to 64 hex digits)")
    return value.lower()


def string_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Invalid(f"must be a list of strings, not {type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"item {index} must be a non-empty string")
        try:
            check_text(item)
        except Invalid as exc:
            raise Invalid(f"item {index} {exc}") from None
    return list(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {type_name(value)}")
    return value


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be a positive integer, not {type_name(value)}")
    if not 1 <= value <= _MAX_INT:
        raise Invalid(f"must be a positive integer up to {_MAX_INT}")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, not {type_name(value)}")
    if not math.isfinite(value) or abs(value) > 1e15:
        raise Invalid("must be a finite number")
    return float(value)


def non_negative(value: Any) -> float:
    result = number(value)
    if result < 0:
        raise Invalid("must not be negative")
    return result


def choice(*options: str):
    def check(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise Invalid(f"{show(value)} is not one of: {', '.join(options)}")
        return value

    return check


def json_mapping(value: Any) -> dict:
    """Free-form settings passed through to a provider or harness: any JSON mapping."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a mapping, not {type_name(value)}")
    try:
        # A round trip checks that every value is JSON (and copies it out of the parsed file).
        # ensure_ascii=False lets encode() find lone surrogates; \u0000 is refused by PostgreSQL.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        if "\x00" in text or "\\u0000" in text:
            raise ValueError("NUL")
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise Invalid(
            "must hold only JSON values (strings, numbers, booleans, lists, mappings)"
        ) from None


def scores(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise Invalid(f"must be a mapping of benchmark name to score, not {type_name(value)}")
    cleaned = {}
    for name, score in value.items():
        if not isinstance(name, str) or not name.strip():
            raise Invalid(f"benchmark name {show(name)} must be a non-empty string")
        check_text(name)
        try:
            cleaned[name] = number(score)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc}") from None
    return cleaned


@dataclass(frozen=True)
class Field:
    check: Callable[[Any], Any] | None = None
    required: bool = False
    nested: dict[str, Field] | None = None  # a sub-mapping, validated field by field


def read(
    data: Any, spec: dict[str, Field], entry: str, errors: Errors, prefix: str = ""
) -> dict[str, Any]:
    """Validate one mapping against `spec`: the cleaned fields that are present and valid.

    Every problem goes to `errors`. An optional field given as null counts as absent, so
    `tags:` with nothing after it is the same as no tags.
    """
    if not isinstance(data, dict):
        errors.add(
            entry, prefix.rstrip(".") or "(entry)", f"must be a mapping, not {type_name(data)}"
        )
        return {}
    cleaned: dict[str, Any] = {}
    for key in data:
        if key not in spec:
            name = key if isinstance(key, str) else show(key)
            errors.add(entry, f"{prefix}{name}"[:100], f"unknown key (expected: {', '.join(spec)})")
    for name, rule in spec.items():
        value = data.get(name)
        if value is None:
            if rule.required:
                errors.add(entry, prefix + name, "is required")
            continue
        if rule.nested is not None:
            cleaned[name] = read(value, rule.nested, entry, errors, f"{prefix}{name}.")
            continue
        try:
            cleaned[name] = rule.check(value)
        except Invalid as exc:
            errors.add(entry, prefix + name, str(exc))
    return cleaned


def entries(data: dict, name: str, errors: Errors) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add("top level", name, f"must be a list, not {type_name(value)}")
        return []
    return value


def entry_label(section: str, index: int, item: Any, identity: str) -> str:
    """`prompts[2] (key 'refunds')`: the position, plus the identity when there is one."""
    text = f"{section}[{index}]"
    if isinstance(item, dict) and isinstance(item.get(identity), str):
        text += f" ({identity} {show(item[identity], 60)})"
    return text


def no_duplicates(items: list[tuple[str, dict]], identity: str, errors: Errors) -> None:
    first: dict[str, str] = {}
    for entry, cleaned in items:
        value = cleaned.get(identity)
        if value is None:
            continue
        if value in first:
            errors.add(entry, identity, f"duplicate {identity} {show(value)} (also {first[value]})")
        else:
            first[value] = entry


def model_rules(
    instance,
    entry: str,
    errors: Errors,
    file_names: dict[str, str],
    *,
    fields: tuple[str, ...] = (),
    prefixes: dict[str, str] | None = None,
) -> None:
    """Report what the model's own rules refuse, under the file's names for its fields.

    Value rules live on the model, once, for the files and the forms alike; this layer only
    checks types. `instance` holds just the fields those rules read: its clean() runs, and so do
    the validators of `fields`. A clean() that normalizes a value (a repository's URL) leaves it
    normalized on `instance`. A field the type checks already found fault with is not faulted
    again. `prefixes` puts the file's context before a field's messages (a script's path).
    """
    exclude = [f.name for f in instance._meta.fields if f.name not in fields]
    try:
        instance.full_clean(exclude=exclude, validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            where = "(entry)" if name == NON_FIELD_ERRORS else file_names.get(name, name)
            if any(m.startswith(f"{errors.filename}: {entry}: {where}: ") for m in errors.messages):
                continue
            prefix = (prefixes or {}).get(name, "")
            for message in messages:
                errors.add(entry, where, prefix + _file_style(message, name))


def _file_style(message: str, field_name: str) -> str:
    """A form's sentence in the files' style, which names the field before it: "must be …"."""
    message = message.rstrip(".")
    if message.startswith(f"{field_name} "):  # "api_key_env may not name …"
        return message[len(field_name) + 1 :]
    return message[:1].lower() + message[1:]

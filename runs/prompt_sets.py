"""Import and export of prompt-set and contestants files (the YAML formats in FORMATS.md).

These files are a public interface that teams keep in git and feed to CI, so validation is strict:
unknown keys, wrong types and missing fields are all reported at once, each as
``FILE: ENTRY: FIELD: message``. Importing is all or nothing: everything is validated (including
resolving every prompt's commit against a mirror of its repository) before anything is written,
and the writes happen in one transaction.

API keys are write-only: they never appear in an export, an error message or a log line.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import transaction

from runs import agents, yaml_loader
from runs.models import (
    Contestant,
    LanguageModel,
    Prompt,
    PromptSet,
    Repository,
    api_key_env_problem,
    hidden_path_problem,
)

_SLUG = re.compile(r"^[-a-zA-Z0-9_]+\Z")
_SHA = re.compile(r"^[0-9a-fA-F]{4,64}\Z")
_MAX_INT = 2**31 - 1  # PositiveIntegerField's range on every database backend
_MAX_SCRIPT_BYTES = 5 * 1024 * 1024


class FormatError(ValueError):
    """A file that does not follow its format; ``errors`` holds every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


@dataclass
class ImportReport:
    """What an import did. Entries read like ``"prompt refunds"`` or ``"repository shop"``."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)
    # For each entry in `updated`, the names of the fields that changed (never their values).
    changes: dict[str, list[str]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [f"created {entry}" for entry in self.created]
        for entry in self.updated:
            fields = self.changes.get(entry)
            lines.append(f"updated {entry}" + (f" ({', '.join(fields)})" if fields else ""))
        lines += [f"unchanged {entry}" for entry in self.unchanged]
        lines += [f"archived {entry}" for entry in self.archived]
        return lines

    def summary(self) -> str:
        return (
            f"{len(self.created)} created, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged, {len(self.archived)} archived"
        )


# -- Reading YAML --------------------------------------------------------------------------------


def _load_yaml(text: str, filename: str) -> Any:
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


class _Invalid(Exception):
    pass


class _Errors:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.messages: list[str] = []

    def add(self, entry: str, field_name: str, message: str) -> None:
        self.messages.append(f"{self.filename}: {entry}: {field_name}: {message}")

    def raise_if_any(self) -> None:
        if self.messages:
            raise FormatError(self.messages)


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def _string(*, max_length: int | None = None, blank: bool = False, slug: bool = False):
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid(f"must be a string, not {_type_name(value)}")
        _check_text(value)
        if not blank and not value.strip():
            raise _Invalid("must not be empty")
        if max_length is not None and len(value) > max_length:
            raise _Invalid(f"must be at most {max_length} characters")
        if slug and not _SLUG.match(value):
            raise _Invalid(
                f"{_show(value)} is not a slug (letters, digits, hyphens and underscores only)"
            )
        return value

    return check


def _check_text(value: str) -> None:
    # Both pass YAML (as escapes) but no database stores them: PostgreSQL refuses NUL, and a lone
    # surrogate cannot be encoded at all.
    if "\x00" in value:
        raise _Invalid("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid("must be valid Unicode text (no lone surrogates)") from None


def _sha(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _Invalid("must be a string; quote a sha made only of digits")
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, not {_type_name(value)}")
    if not _SHA.match(value):
        raise _Invalid(f"{_show(value)} is not a commit sha (4 to 64 hex digits)")
    return value.lower()


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of strings, not {_type_name(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(f"item {index} must be a non-empty string")
        try:
            _check_text(item)
        except _Invalid as exc:
            raise _Invalid(f"item {index} {exc}") from None
    return list(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, not {_type_name(value)}")
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be a positive integer, not {_type_name(value)}")
    if not 1 <= value <= _MAX_INT:
        raise _Invalid(f"must be a positive integer up to {_MAX_INT}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number, not {_type_name(value)}")
    if not math.isfinite(value) or abs(value) > 1e15:
        raise _Invalid("must be a finite number")
    return float(value)


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise _Invalid("must not be negative")
    return number


def _choice(*options: str):
    def check(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise _Invalid(f"{_show(value)} is not one of: {', '.join(options)}")
        return value

    return check


def _json_mapping(value: Any) -> dict:
    """Free-form settings passed through to a provider or harness: any JSON mapping."""
    if not isinstance(value, dict):
        raise _Invalid(f"must be a mapping, not {_type_name(value)}")
    try:
        # A round trip checks that every value is JSON (and copies it out of the parsed file).
        # ensure_ascii=False lets encode() find lone surrogates; \u0000 is refused by PostgreSQL.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        if "\x00" in text or "\\u0000" in text:
            raise ValueError("NUL")
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise _Invalid(
            "must hold only JSON values (strings, numbers, booleans, lists, mappings)"
        ) from None


def _scores(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a mapping of benchmark name to score, not {_type_name(value)}")
    cleaned = {}
    for name, score in value.items():
        if not isinstance(name, str) or not name.strip():
            raise _Invalid(f"benchmark name {_show(name)} must be a non-empty string")
        _check_text(name)
        try:
            cleaned[name] = _number(score)
        except _Invalid as exc:
            raise _Invalid(f"{name}: {exc}") from None
    return cleaned


@dataclass(frozen=True)
class _Field:
    check: Callable[[Any], Any] | None = None
    required: bool = False
    nested: dict[str, _Field] | None = None  # a sub-mapping, validated field by field


def _read(
    data: Any, spec: dict[str, _Field], entry: str, errors: _Errors, prefix: str = ""
) -> dict[str, Any]:
    """Validate one mapping against `spec`: the cleaned fields that are present and valid.

    Every problem goes to `errors`. An optional field given as null counts as absent, so
    `tags:` with nothing after it is the same as no tags.
    """
    if not isinstance(data, dict):
        errors.add(
            entry, prefix.rstrip(".") or "(entry)", f"must be a mapping, not {_type_name(data)}"
        )
        return {}
    cleaned: dict[str, Any] = {}
    for key in data:
        if key not in spec:
            name = key if isinstance(key, str) else _show(key)
            errors.add(entry, f"{prefix}{name}"[:100], f"unknown key (expected: {', '.join(spec)})")
    for name, rule in spec.items():
        value = data.get(name)
        if value is None:
            if rule.required:
                errors.add(entry, prefix + name, "is required")
            continue
        if rule.nested is not None:
            cleaned[name] = _read(value, rule.nested, entry, errors, f"{prefix}{name}.")
            continue
        try:
            cleaned[name] = rule.check(value)
        except _Invalid as exc:
            errors.add(entry, prefix + name, str(exc))
    return cleaned


def _entries(data: dict, name: str, errors: _Errors) -> list[Any]:
    value = data.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        errors.add("top level", name, f"must be a list, not {_type_name(value)}")
        return []
    return value


def _label(section: str, index: int, item: Any, identity: str) -> str:
    """`prompts[2] (key 'refunds')`: the position, plus the identity when there is one."""
    label = f"{section}[{index}]"
    if isinstance(item, dict) and isinstance(item.get(identity), str):
        label += f" ({identity} {_show(item[identity], 60)})"
    return label


def _no_duplicates(items: list[tuple[str, dict]], identity: str, errors: _Errors) -> None:
    first: dict[str, str] = {}
    for label, cleaned in items:
        value = cleaned.get(identity)
        if value is None:
            continue
        if value in first:
            errors.add(
                label, identity, f"duplicate {identity} {_show(value)} (also {first[value]})"
            )
        else:
            first[value] = label


def _model_rules(instance, entry: str, errors: _Errors, file_names: dict[str, str]) -> None:
    """Report what the model's own clean() refuses, under the file's names for its fields.

    Value rules live on the model, once, for the files and the forms alike; this layer only
    checks types. `instance` holds just the fields those rules read. A field the type checks
    already found fault with is not faulted again.
    """
    try:
        instance.clean()
    except ValidationError as exc:
        for name, messages in exc.message_dict.items():
            where = "(entry)" if name == NON_FIELD_ERRORS else file_names.get(name, name)
            if any(m.startswith(f"{errors.filename}: {entry}: {where}: ") for m in errors.messages):
                continue
            for message in messages:
                # The forms' sentences, in the files' style: "field: must be …".
                errors.add(entry, where, message[:1].lower() + message[1:].rstrip("."))


# -- Upserting -----------------------------------------------------------------------------------


# Database fields as the file calls them, for "updated prompt x (setup, title)".
_FILE_NAMES = {
    "repository_id": "repository",
    "model_id": "model",
    "setup_command": "setup",
    "test_command": "test",
    "hidden_tests_commit": "hidden_tests",
    "hidden_tests_paths": "hidden_tests",
    "clarification_expected": "clarification",
    "clarification_answer": "clarification",
    "input_per_mtok": "price",
    "output_per_mtok": "price",
    "script_path": "script",
    "max_steps": "limits",
    "max_cost_usd": "limits",
    "max_processes": "limits",
    "max_memory_mb": "limits",
    "max_disk_mb": "limits",
    "max_tokens": "limits",
    "max_calls": "limits",
}


def _upsert(model, lookup: dict, values: dict, label: str, report: ImportReport):
    """Create or update one row by its natural key, recording what happened in `report`."""
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        report.created.append(label)
        return obj
    changed = [name for name, value in values.items() if getattr(obj, name) != value]
    if changed:
        for name in changed:
            setattr(obj, name, values[name])
        obj.save()
        report.updated.append(label)
        report.changes[label] = list(dict.fromkeys(_FILE_NAMES.get(n, n) for n in changed))
    else:
        report.unchanged.append(label)
    return obj


# -- Prompt sets ---------------------------------------------------------------------------------

_REPOSITORY_FIELDS = {
    "name": _Field(_string(max_length=100, slug=True), required=True),
    "url": _Field(_string(max_length=1000), required=True),
    "default_branch": _Field(_string(max_length=200)),
}

_PROMPT_FIELDS = {
    "key": _Field(_string(max_length=200, slug=True), required=True),
    "title": _Field(_string(max_length=300), required=True),
    "repository": _Field(_string(max_length=100), required=True),
    "commit": _Field(_sha, required=True),
    "instructions": _Field(_string(), required=True),
    "tags": _Field(_string_list),
    "acceptance_criteria": _Field(_string_list),
    "expected_files": _Field(_string_list),
    "setup": _Field(_string(blank=True)),
    "setup_network": _Field(_boolean),
    "test": _Field(_string(blank=True)),
    "test_files": _Field(_string_list),
    "hidden_tests": _Field(
        nested={
            "commit": _Field(_sha, required=True),
            "paths": _Field(_string_list, required=True),
        }
    ),
    "clarification": _Field(
        nested={
            "expected": _Field(_boolean),
            "answer": _Field(_string(blank=True)),
        }
    ),
    "reference_patch": _Field(_string(blank=True)),
    "time_limit": _Field(_positive_int),
}

_PROMPT_SET_FIELDS = {
    "name": _Field(_string(max_length=200), required=True),
    "description": _Field(_string(blank=True)),
    "repositories": _Field(lambda value: value),  # validated entry by entry below
    "prompts": _Field(lambda value: value),
}


@dataclass
class _PromptSetPlan:
    name: str
    description: str
    repositories: list[dict]  # model fields, file order
    prompts: list[dict]  # model fields plus "repository" (a name), file order


def _prompt_values(cleaned: dict) -> dict:
    clarification = cleaned.get("clarification", {})
    return {
        "key": cleaned["key"],
        "title": cleaned["title"],
        "repository": cleaned["repository"],
        "commit": cleaned["commit"],
        "instructions": cleaned["instructions"],
        "tags": cleaned.get("tags", []),
        "acceptance_criteria": cleaned.get("acceptance_criteria", []),
        "expected_files": cleaned.get("expected_files", []),
        "setup_command": cleaned.get("setup", ""),
        "setup_network": cleaned.get("setup_network", False),
        "test_command": cleaned.get("test", ""),
        "test_files": cleaned.get("test_files", []),
        "hidden_tests_commit": cleaned.get("hidden_tests", {}).get("commit", ""),
        "hidden_tests_paths": cleaned.get("hidden_tests", {}).get("paths", []),
        "clarification_expected": clarification.get("expected", False),
        "clarification_answer": clarification.get("answer", ""),
        "reference_patch": cleaned.get("reference_patch", ""),
        "time_limit": cleaned.get("time_limit"),
    }


def _check_repository_url(url: str) -> str:
    from django.conf import settings

    from runs.workspace import redact_url, validate_repository_url

    try:
        return validate_repository_url(url, settings.MERGEABLE_LOCAL_REPO_ROOTS)
    except ValueError as exc:
        raise _Invalid(_redacted(str(exc), url, redact_url)) from None


def _redacted(message: str, url: str, redact_url: Callable[[str], str]) -> str:
    """`message` with `url` (and any credentials in it) replaced by its redacted form."""
    safe = redact_url(url)
    return message.replace(url, safe) if url else message


class _CommitResolver:
    """Resolves commits against mirrors under MERGEABLE_WORKSPACE_ROOT, one mirror per URL."""

    def __init__(self) -> None:
        from django.conf import settings

        self.root = Path(settings.MERGEABLE_WORKSPACE_ROOT)
        self.broken: dict[str, str] = {}  # url -> why the mirror cannot be fetched

    def resolve(self, url: str, commit: str) -> str:
        """The full sha of `commit`; raises _Invalid (commit missing) or _Unreachable."""
        from runs import workspace

        if url in self.broken:
            raise _Unreachable(self.broken[url])
        failures = (workspace.WorkspaceError, OSError, subprocess.SubprocessError, ValueError)
        try:
            mirror = workspace.ensure_mirror(url, self.root, commit=commit)
        except failures as exc:
            # A failed fetch of one commit still leaves a usable mirror that can say "not found";
            # with no mirror at all, the repository itself is at fault.
            mirror = workspace.mirror_path(self.root, url)
            if not (mirror / "HEAD").exists():
                self.broken[url] = _redacted(str(exc), url, workspace.redact_url)[:500]
                raise _Unreachable(self.broken[url]) from None
        try:
            return workspace.resolve_commit(mirror, commit)
        except failures:
            raise _Invalid("not found") from None


class _Unreachable(Exception):
    pass


# The prompt's fields its clean() checks, as the file names them.
_PROMPT_RULE_NAMES = {
    "setup_command": "setup",
    "hidden_tests_commit": "hidden_tests.commit",
    "hidden_tests_paths": "hidden_tests.paths",
}


def _resolve_hidden_tests(
    resolver: _CommitResolver,
    url: str,
    repository: str,
    hidden: dict,
    label: str,
    errors: _Errors,
    unreachable: set[str],
) -> None:
    """Resolve `hidden["commit"]` in place to its full sha, and check that it has every path."""
    from runs import workspace

    try:
        hidden["commit"] = resolver.resolve(url, hidden["commit"])
    except _Invalid:
        errors.add(
            label,
            "hidden_tests.commit",
            f"{_show(hidden['commit'])} not found in repository {_show(repository)}",
        )
        return
    except _Unreachable as exc:
        if repository not in unreachable:
            unreachable.add(repository)
            message = f"cannot fetch repository {_show(repository)}: {exc}"
            errors.add(label, "hidden_tests.commit", message)
        return
    # Paths the prompt's own rules refuse are reported by them; git would refuse them too.
    paths = [path for path in hidden["paths"] if not hidden_path_problem(path)]
    try:
        missing = workspace.missing_paths(
            workspace.mirror_path(resolver.root, url), hidden["commit"], paths
        )
    except workspace.WorkspaceError as exc:
        errors.add(label, "hidden_tests.paths", f"cannot be checked: {exc}")
        return
    for path in missing:
        errors.add(
            label, "hidden_tests.paths", f"{_show(path)} not in commit {hidden['commit'][:12]}"
        )


def _plan_prompt_set(data: Any, errors: _Errors) -> _PromptSetPlan | None:
    if not isinstance(data, dict):
        errors.add("top level", "(file)", f"must be a mapping, not {_type_name(data)}")
        return None
    top = _read(data, _PROMPT_SET_FIELDS, "top level", errors)

    repositories: list[dict] = []
    repository_labels: dict[str, str] = {}
    checked: list[tuple[str, dict]] = []
    for index, item in enumerate(_entries(data, "repositories", errors)):
        label = _label("repositories", index, item, "name")
        cleaned = _read(item, _REPOSITORY_FIELDS, label, errors)
        checked.append((label, cleaned))
        if "url" in cleaned and "name" in cleaned:
            cleaned["url"] = _restore_credentials(cleaned["name"], cleaned["url"])
        if "url" in cleaned:
            try:
                cleaned["url"] = _check_repository_url(cleaned["url"])
            except _Invalid as exc:
                errors.add(label, "url", str(exc))
                del cleaned["url"]
        if "name" in cleaned and "url" in cleaned:
            repository_labels.setdefault(cleaned["name"], label)
            repositories.append({"default_branch": "", **cleaned})
    _no_duplicates(checked, "name", errors)
    urls = {repo["name"]: repo["url"] for repo in reversed(repositories)}

    prompts: list[dict] = []
    checked = []
    resolver = _CommitResolver()
    unreachable: set[str] = set()
    for index, item in enumerate(_entries(data, "prompts", errors)):
        label = _label("prompts", index, item, "key")
        cleaned = _read(item, _PROMPT_FIELDS, label, errors)
        checked.append((label, cleaned))
        hidden = cleaned.get("hidden_tests", {})
        # (A setup of the wrong type is reported once, as such, not again as missing.)
        setup_checked = (
            "setup" in cleaned or not isinstance(item, dict) or item.get("setup") is None
        )
        rules = Prompt(
            setup_command=cleaned.get("setup", ""),
            setup_network=cleaned.get("setup_network", False) and setup_checked,
            test_files=cleaned.get("test_files", []),
            hidden_tests_commit=hidden.get("commit", ""),
            hidden_tests_paths=hidden.get("paths", []),
        )
        _model_rules(rules, label, errors, _PROMPT_RULE_NAMES)
        repository = cleaned.get("repository")
        url = urls.get(repository) if repository else None
        if repository and url is None and not _repository_in_file(data, repository):
            # Not in this file: a repository already curated in the database will do.
            stored = Repository.objects.filter(name=repository).first()
            if stored is None:
                errors.add(label, "repository", f"unknown repository {_show(repository)}")
            else:
                url = urls[repository] = stored.url
        if url and "commit" in cleaned:
            try:
                cleaned["commit"] = resolver.resolve(url, cleaned["commit"])
            except _Invalid:
                errors.add(
                    label,
                    "commit",
                    f"{_show(cleaned['commit'])} not found in repository {_show(repository)}",
                )
                del cleaned["commit"]
            except _Unreachable as exc:
                # Said once, on the repository's own entry when the file declares it.
                if repository not in unreachable:
                    unreachable.add(repository)
                    where = repository_labels.get(repository)
                    message = f"cannot fetch repository {_show(repository)}: {exc}"
                    if where is None:
                        errors.add(label, "repository", message)
                    else:
                        errors.add(where, "url", message)
                del cleaned["commit"]
        if url and "commit" in hidden and "paths" in hidden and repository not in unreachable:
            _resolve_hidden_tests(resolver, url, repository, hidden, label, errors, unreachable)
        if all(name in cleaned for name, rule in _PROMPT_FIELDS.items() if rule.required):
            prompts.append(_prompt_values(cleaned))
    _no_duplicates(checked, "key", errors)

    if "name" not in top:
        return None
    return _PromptSetPlan(
        name=top["name"],
        description=top.get("description", ""),
        repositories=repositories,
        prompts=prompts,
    )


def _repository_in_file(data: dict, name: str) -> bool:
    """Whether the file declares `name` at all, even if that entry was invalid."""
    entries = data.get("repositories")
    return isinstance(entries, list) and any(
        isinstance(item, dict) and item.get("name") == name for item in entries
    )


def import_prompt_set(text: str, *, filename: str = "upload.yaml") -> ImportReport:
    """Create or update a prompt set from a prompt-set file; raises FormatError on any problem.

    Prompts are matched by key: changed ones are updated in place, ones the set holds but the
    file does not are archived, and `position` follows the file's order.
    """
    errors = _Errors(filename)
    plan = _plan_prompt_set(_load_yaml(text, filename), errors)
    errors.raise_if_any()
    assert plan is not None
    with transaction.atomic():
        return _apply_prompt_set(plan, filename)


def _apply_prompt_set(plan: _PromptSetPlan, filename: str) -> ImportReport:
    report = ImportReport()
    prompt_set = _upsert(
        PromptSet,
        {"name": plan.name},
        {"description": plan.description, "archived": False},
        f"prompt set {plan.name}",
        report,
    )
    repositories = {}
    for repo in plan.repositories:
        repositories[repo["name"]] = _upsert(
            Repository,
            {"name": repo["name"]},
            {"url": repo["url"], "default_branch": repo["default_branch"], "archived": False},
            f"repository {repo['name']}",
            report,
        )
    for name in {p["repository"] for p in plan.prompts} - set(repositories):
        repositories[name] = Repository.objects.filter(name=name).first()
        if repositories[name] is None:  # deleted since validation
            raise FormatError([f"{filename}: prompts: repository: unknown repository {name!r}"])

    existing = {prompt.key: prompt for prompt in prompt_set.prompts.all()}
    for position, values in enumerate(plan.prompts):
        values = dict(values)
        key = values.pop("key")
        values["repository_id"] = repositories[values.pop("repository")].pk
        values.update(position=position, archived=False)
        _upsert(Prompt, {"prompt_set": prompt_set, "key": key}, values, f"prompt {key}", report)
    in_file = {p["key"] for p in plan.prompts}
    for key, prompt in existing.items():
        if key not in in_file and not prompt.archived:
            prompt.archived = True
            prompt.save(update_fields=["archived"])
            report.archived.append(f"prompt {key}")
    return report


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


def _dump(document: dict) -> str:
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )


def _without_defaults(items: Iterable[tuple[str, Any]]) -> dict:
    """The pairs whose value is not empty or default, in order (FORMATS.md omits those)."""
    return {key: value for key, value in items if not _is_default(value)}


def _is_default(value: Any) -> bool:
    # Spelled out because `0 in (False, ...)` is true, and a limit of 0.0 is not a default.
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def export_prompt_set(prompt_set: PromptSet) -> str:
    """The prompt set's active prompts as a prompt-set file; importing it changes nothing."""
    prompts = list(prompt_set.active_prompts().order_by("position", "id"))
    repositories: dict[str, Repository] = {}
    for prompt in prompts:
        repositories.setdefault(prompt.repository.name, prompt.repository)
    document = _without_defaults(
        [
            ("name", prompt_set.name),
            ("description", prompt_set.description),
            ("repositories", [_export_repository(repo) for repo in repositories.values()]),
            ("prompts", [_export_prompt(prompt) for prompt in prompts]),
        ]
    )
    return _dump(document)


def _restore_credentials(name: str, url: str) -> str:
    """Exports never show credentials embedded in a URL: they write the redacted form. Importing
    that redacted URL again for the same repository keeps the stored URL and its credentials."""
    from runs.workspace import redact_url

    if not isinstance(url, str) or "***@" not in url:
        return url
    stored = Repository.objects.filter(name=name).values_list("url", flat=True).first()
    if stored and redact_url(stored) == url:
        return stored
    return url


def _export_repository(repository: Repository) -> dict:
    from runs.workspace import redact_url

    return _without_defaults(
        [
            ("name", repository.name),
            ("url", redact_url(repository.url)),
            ("default_branch", repository.default_branch),
        ]
    )


def _export_prompt(prompt: Prompt) -> dict:
    clarification = _without_defaults(
        [("expected", prompt.clarification_expected), ("answer", prompt.clarification_answer)]
    )
    return _without_defaults(
        [
            ("key", prompt.key),
            ("title", prompt.title),
            ("repository", prompt.repository.name),
            ("commit", prompt.commit),
            ("instructions", prompt.instructions),
            ("tags", list(prompt.tags)),
            ("acceptance_criteria", list(prompt.acceptance_criteria)),
            ("expected_files", list(prompt.expected_files)),
            ("setup", prompt.setup_command),
            ("setup_network", prompt.setup_network),
            ("test", prompt.test_command),
            ("test_files", list(prompt.test_files)),
            ("hidden_tests", prompt.hidden_tests),
            ("clarification", clarification),
            ("reference_patch", prompt.reference_patch),
            ("time_limit", prompt.time_limit),
        ]
    )


# -- Contestants ---------------------------------------------------------------------------------

_PROVIDERS = tuple(choice for choice, _ in LanguageModel.PROVIDERS)
_HARNESSES = tuple(agents.HARNESSES)

_MODEL_FIELDS = {
    "name": _Field(_string(max_length=100, slug=True), required=True),
    "provider": _Field(_choice(*_PROVIDERS), required=True),
    "base_url": _Field(_string(max_length=500)),
    "model": _Field(_string(max_length=200)),
    "api_key": _Field(_string()),
    "api_key_env": _Field(_string(max_length=100)),
    "price": _Field(
        nested={
            "input_per_mtok": _Field(_non_negative),
            "output_per_mtok": _Field(_non_negative),
        }
    ),
    "params": _Field(_json_mapping),
    "script": _Field(_string(max_length=500)),
}

_CONTESTANT_FIELDS = {
    "name": _Field(_string(max_length=100, slug=True), required=True),
    "harness": _Field(_choice(*_HARNESSES), required=True),
    "model": _Field(_string(max_length=100), required=True),
    "limits": _Field(
        nested={
            "max_steps": _Field(_positive_int),
            "max_cost_usd": _Field(_non_negative),
            "time_limit": _Field(_positive_int),
            "max_processes": _Field(_positive_int),
            "max_memory_mb": _Field(_positive_int),
            "max_disk_mb": _Field(_positive_int),
            "max_tokens": _Field(_positive_int),
            "max_calls": _Field(_positive_int),
        }
    ),
    "options": _Field(_json_mapping),
    "benchmarks": _Field(_scores),
}

_CONTESTANTS_FILE_FIELDS = {
    "models": _Field(lambda value: value),
    "contestants": _Field(lambda value: value),
}


def _read_script(path_text: str, base_dir: Path | None) -> str:
    """The text of a scripted model's script, validated; raises _Invalid naming the problem.

    With no `base_dir` (a browser upload) the path is relative to the project and may not leave
    it, so an upload cannot read arbitrary files on the server.
    """
    from runs.providers import load_script

    if base_dir is None:
        from django.conf import settings

        root = Path(settings.BASE_DIR).resolve()
        path = (root / path_text).resolve()
        if not path.is_relative_to(root):
            raise _Invalid(f"{_show(path_text)} is outside the project directory")
    else:
        path = (Path(base_dir) / path_text).resolve()
    try:
        if not path.is_file():
            raise _Invalid(f"{_show(path_text)} is not a file")
        if path.stat().st_size > _MAX_SCRIPT_BYTES:
            raise _Invalid(f"{_show(path_text)} is larger than {_MAX_SCRIPT_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Invalid(f"cannot read {_show(path_text)}: {type(exc).__name__}") from None
    try:
        load_script(text)
    except ValueError as exc:
        raise _Invalid(f"{path_text}: {exc}") from None
    return text


def _model_values(cleaned: dict, label: str, errors: _Errors, base_dir: Path | None) -> dict:
    provider = cleaned.get("provider")
    if provider in (LanguageModel.OPENAI, LanguageModel.ANTHROPIC):
        for name in ("base_url", "model"):
            if name not in cleaned:
                errors.add(label, name, f"is required for provider {provider}")
    if "api_key" in cleaned and "api_key_env" in cleaned:
        errors.add(label, "api_key", "give api_key or api_key_env, not both")
    if "api_key_env" in cleaned and (problem := api_key_env_problem(cleaned["api_key_env"])):
        errors.add(label, "api_key_env", problem)
    script = ""
    if provider == LanguageModel.SCRIPTED:
        if "script" not in cleaned:
            errors.add(label, "script", "is required for provider scripted")
        else:
            try:
                script = _read_script(cleaned["script"], base_dir)
            except _Invalid as exc:
                errors.add(label, "script", str(exc))
    elif "script" in cleaned and provider is not None:
        errors.add(label, "script", "is only for provider scripted")
    price = cleaned.get("price", {})
    values = {
        "provider": provider,
        "base_url": cleaned.get("base_url", ""),
        "model_id": cleaned.get("model", ""),
        "api_key_env": cleaned.get("api_key_env", ""),
        "input_per_mtok": price.get("input_per_mtok", 0.0),
        "output_per_mtok": price.get("output_per_mtok", 0.0),
        "params": cleaned.get("params", {}),
        "script_path": cleaned.get("script", "") if script else "",
        "script": script,
        "archived": False,
    }
    if "api_key" in cleaned:
        values["api_key"] = cleaned["api_key"]
    elif "api_key_env" in cleaned:
        # The file switched this model to an environment variable: a stored key would win.
        values["api_key"] = ""
    # With neither, the stored key is kept: exports never include keys, and re-importing an
    # export must not wipe them.
    return values


# The contestant fields a file's `limits` mapping holds, under the same names.
_LIMITS = tuple(_CONTESTANT_FIELDS["limits"].nested or ())


def _contestant_values(cleaned: dict) -> dict:
    limits = cleaned.get("limits", {})
    return {
        "harness": cleaned["harness"],
        "model": cleaned["model"],
        "options": cleaned.get("options", {}),
        **{name: limits.get(name) for name in _LIMITS},
        "benchmarks": cleaned.get("benchmarks", {}),
        "archived": False,
    }


def import_contestants(
    text: str, *, filename: str = "upload.yaml", base_dir: Path | None = None
) -> ImportReport:
    """Create or update models and contestants from a contestants file (all or nothing).

    `base_dir` is the contestants file's directory, which scripted models' `script` paths are
    relative to; without it (an upload) they are relative to the project's BASE_DIR. Nothing is
    archived or deleted: entries missing from the file are left alone.
    """
    errors = _Errors(filename)
    data = _load_yaml(text, filename)
    if not isinstance(data, dict):
        errors.add("top level", "(file)", f"must be a mapping, not {_type_name(data)}")
        errors.raise_if_any()
    _read(data, _CONTESTANTS_FILE_FIELDS, "top level", errors)

    models: dict[str, dict] = {}
    checked: list[tuple[str, dict]] = []
    for index, item in enumerate(_entries(data, "models", errors)):
        label = _label("models", index, item, "name")
        cleaned = _read(item, _MODEL_FIELDS, label, errors)
        checked.append((label, cleaned))
        values = _model_values(cleaned, label, errors, base_dir)
        if "name" in cleaned:
            models.setdefault(cleaned["name"], values)
    _no_duplicates(checked, "name", errors)

    contestants: dict[str, dict] = {}
    checked = []
    for index, item in enumerate(_entries(data, "contestants", errors)):
        label = _label("contestants", index, item, "name")
        cleaned = _read(item, _CONTESTANT_FIELDS, label, errors)
        checked.append((label, cleaned))
        limits = cleaned.get("limits", {})
        _model_rules(
            Contestant(**limits), label, errors, {name: f"limits.{name}" for name in _LIMITS}
        )
        model = cleaned.get("model")
        if (
            model
            and model not in models
            and not _model_in_file(data, model)
            and not LanguageModel.objects.filter(name=model).exists()
        ):
            errors.add(label, "model", f"unknown model {_show(model)}")
        if "name" in cleaned and all(
            name in cleaned for name, rule in _CONTESTANT_FIELDS.items() if rule.required
        ):
            contestants.setdefault(cleaned["name"], _contestant_values(cleaned))
    _no_duplicates(checked, "name", errors)
    errors.raise_if_any()

    with transaction.atomic():
        report = ImportReport()
        for name, values in models.items():
            _upsert(LanguageModel, {"name": name}, values, f"model {name}", report)
        for name, values in contestants.items():
            values = dict(values)
            model = LanguageModel.objects.filter(name=values.pop("model")).first()
            if model is None:  # deleted since validation
                raise FormatError([f"{filename}: contestants: model: unknown model"])
            values["model_id"] = model.pk
            _upsert(Contestant, {"name": name}, values, f"contestant {name}", report)
        return report


def _model_in_file(data: dict, name: str) -> bool:
    entries = data.get("models")
    return isinstance(entries, list) and any(
        isinstance(item, dict) and item.get("name") == name for item in entries
    )


def export_contestants(contestants: Iterable[Contestant] | None = None) -> str:
    """A contestants file for `contestants` and their models (default: every active one).

    Never includes API keys, only `api_key_env`: the file is meant to be shared.
    """
    if contestants is None:
        chosen = list(Contestant.objects.filter(archived=False).select_related("model"))
        models = {m.pk: m for m in LanguageModel.objects.filter(archived=False)}
    else:
        chosen = sorted(contestants, key=lambda c: c.name)
        models = {}
    for contestant in chosen:
        models.setdefault(contestant.model.pk, contestant.model)
    document = _without_defaults(
        [
            ("models", [_export_model(m) for m in sorted(models.values(), key=lambda m: m.name)]),
            ("contestants", [_export_contestant(c) for c in chosen]),
        ]
    )
    return _dump(document)


def _export_model(model: LanguageModel) -> dict:
    price = None
    if model.input_per_mtok or model.output_per_mtok:
        price = {"input_per_mtok": model.input_per_mtok, "output_per_mtok": model.output_per_mtok}
    return _without_defaults(
        [
            ("name", model.name),
            ("provider", model.provider),
            ("base_url", model.base_url),
            ("model", model.model_id),
            ("api_key_env", model.api_key_env),
            ("price", price),
            ("params", dict(model.params)),
            ("script", model.script_path if model.is_scripted else ""),
        ]
    )


def _export_contestant(contestant: Contestant) -> dict:
    limits = _without_defaults((name, getattr(contestant, name)) for name in _LIMITS)
    return _without_defaults(
        [
            ("name", contestant.name),
            ("harness", contestant.harness),
            ("model", contestant.model.name),
            ("limits", limits),
            ("options", dict(contestant.options)),
            ("benchmarks", dict(contestant.benchmarks)),
        ]
    )

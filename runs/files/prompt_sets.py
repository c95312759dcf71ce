"""The prompt-set file (FORMATS.md): import and export.

Importing is all or nothing: everything is validated (including resolving every prompt's commit
against a mirror of its repository) before anything is written, and the writes happen in one
transaction. Shapes and types are checked by `runs.files.strict`; what a value may be, by the
models' own rules. A repository URL is exported with its credentials hidden, and importing that
URL again keeps the stored one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from runs.files.export import dump, without_defaults
from runs.files.report import ImportReport, upsert
from runs.files.strict import (
    Errors,
    Field,
    FormatError,
    boolean,
    entries,
    entry_label,
    load_yaml,
    model_rules,
    no_duplicates,
    positive_int,
    read,
    sha,
    show,
    string,
    string_list,
    type_name,
)
from runs.models import CommitNotFound, Prompt, PromptSet, Repository, RepositoryUnreachable

_REPOSITORY_FIELDS = {
    "name": Field(string(max_length=100, slug=True), required=True),
    "url": Field(string(max_length=1000), required=True),
    "default_branch": Field(string(max_length=200)),
}

_PROMPT_FIELDS = {
    "key": Field(string(max_length=200, slug=True), required=True),
    "title": Field(string(max_length=300), required=True),
    "repository": Field(string(max_length=100), required=True),
    "commit": Field(sha, required=True),
    "instructions": Field(string(), required=True),
    "tags": Field(string_list),
    "acceptance_criteria": Field(string_list),
    "expected_files": Field(string_list),
    "setup": Field(string(blank=True)),
    "setup_network": Field(boolean),
    "test": Field(string(blank=True)),
    "test_files": Field(string_list),
    "hidden_tests": Field(
        nested={
            "commit": Field(sha, required=True),
            "paths": Field(string_list, required=True),
        }
    ),
    "clarification": Field(
        nested={
            "expected": Field(boolean),
            "answer": Field(string(blank=True)),
        }
    ),
    "reference_patch": Field(string(blank=True)),
    "time_limit": Field(positive_int),
}

_PROMPT_SET_FIELDS = {
    "name": Field(string(max_length=200), required=True),
    "description": Field(string(blank=True)),
    "repositories": Field(lambda value: value),  # validated entry by entry below
    "prompts": Field(lambda value: value),
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


# The prompt's and the repository's fields their rules check, as the file names them.
_PROMPT_RULE_NAMES = {
    "setup_command": "setup",
    "hidden_tests_commit": "hidden_tests.commit",
    "hidden_tests_paths": "hidden_tests.paths",
}


def _resolve_hidden_tests(
    repository: Repository, hidden: dict, label: str, errors: Errors, unreachable: set[str]
) -> None:
    """Resolve `hidden["commit"]` in place to its full sha, and check that it has every path."""
    name = repository.name
    try:
        hidden["commit"] = repository.resolve_commit(hidden["commit"])
    except CommitNotFound:
        message = f"{show(hidden['commit'])} not found in repository {show(name)}"
        errors.add(label, "hidden_tests.commit", message)
        return
    except RepositoryUnreachable as exc:
        unreachable.add(name)
        errors.add(label, "hidden_tests.commit", f"cannot fetch repository {show(name)}: {exc}")
        return
    try:
        missing = repository.missing_paths(hidden["commit"], hidden["paths"])
    except RepositoryUnreachable as exc:
        errors.add(label, "hidden_tests.paths", f"cannot be checked: {exc}")
        return
    for path in missing:
        errors.add(
            label, "hidden_tests.paths", f"{show(path)} not in commit {hidden['commit'][:12]}"
        )


def _plan_prompt_set(data: Any, errors: Errors) -> _PromptSetPlan | None:
    if not isinstance(data, dict):
        errors.add("top level", "(file)", f"must be a mapping, not {type_name(data)}")
        return None
    top = read(data, _PROMPT_SET_FIELDS, "top level", errors)

    repositories: list[dict] = []
    repository_labels: dict[str, str] = {}
    checked: list[tuple[str, dict]] = []
    for index, item in enumerate(entries(data, "repositories", errors)):
        label = entry_label("repositories", index, item, "name")
        cleaned = read(item, _REPOSITORY_FIELDS, label, errors)
        checked.append((label, cleaned))
        if "url" in cleaned and "name" in cleaned:
            stored = Repository.objects.filter(name=cleaned["name"]).first()
            if stored is not None:
                cleaned["url"] = stored.restored_url(cleaned["url"])
        if "url" in cleaned:
            rules = Repository(url=cleaned["url"])
            before = len(errors.messages)
            model_rules(rules, label, errors, {}, fields=("url",))
            if len(errors.messages) > before:
                del cleaned["url"]
            else:
                cleaned["url"] = rules.url  # in its normal form
        if "name" in cleaned and "url" in cleaned:
            repository_labels.setdefault(cleaned["name"], label)
            repositories.append({"default_branch": "", **cleaned})
    no_duplicates(checked, "name", errors)
    # The file's repositories (the first entry of a name wins), as the rows they will be.
    declared = {
        repo["name"]: Repository(name=repo["name"], url=repo["url"])
        for repo in reversed(repositories)
    }

    prompts: list[dict] = []
    checked = []
    unreachable: set[str] = set()  # repository names: said once, never fetched again
    for index, item in enumerate(entries(data, "prompts", errors)):
        label = entry_label("prompts", index, item, "key")
        cleaned = read(item, _PROMPT_FIELDS, label, errors)
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
        model_rules(rules, label, errors, _PROMPT_RULE_NAMES, fields=())
        name = cleaned.get("repository")
        repository = declared.get(name) if name else None
        if name and repository is None and not _repository_in_file(data, name):
            # Not in this file: a repository already curated in the database will do.
            repository = declared[name] = Repository.objects.filter(name=name).first()
            if repository is None:
                errors.add(label, "repository", f"unknown repository {show(name)}")
        if repository is not None and name in unreachable:
            cleaned.pop("commit", None)
        elif repository is not None and "commit" in cleaned:
            try:
                cleaned["commit"] = repository.resolve_commit(cleaned["commit"])
            except CommitNotFound:
                message = f"{show(cleaned['commit'])} not found in repository {show(name)}"
                errors.add(label, "commit", message)
                del cleaned["commit"]
            except RepositoryUnreachable as exc:
                # Said once, on the repository's own entry when the file declares it.
                unreachable.add(name)
                where = repository_labels.get(name)
                message = f"cannot fetch repository {show(name)}: {exc}"
                if where is None:
                    errors.add(label, "repository", message)
                else:
                    errors.add(where, "url", message)
                del cleaned["commit"]
        if repository is not None and "commit" in hidden and "paths" in hidden:
            if name not in unreachable:
                _resolve_hidden_tests(repository, hidden, label, errors, unreachable)
        if all(name in cleaned for name, rule in _PROMPT_FIELDS.items() if rule.required):
            prompts.append(_prompt_values(cleaned))
    no_duplicates(checked, "key", errors)

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
    errors = Errors(filename)
    plan = _plan_prompt_set(load_yaml(text, filename), errors)
    errors.raise_if_any()
    assert plan is not None
    with transaction.atomic():
        return _apply_prompt_set(plan, filename)


def _apply_prompt_set(plan: _PromptSetPlan, filename: str) -> ImportReport:
    report = ImportReport()
    prompt_set = upsert(
        PromptSet,
        {"name": plan.name},
        {"description": plan.description, "archived": False},
        f"prompt set {plan.name}",
        report,
    )
    repositories = {}
    for repo in plan.repositories:
        repositories[repo["name"]] = upsert(
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
        upsert(Prompt, {"prompt_set": prompt_set, "key": key}, values, f"prompt {key}", report)
    in_file = {p["key"] for p in plan.prompts}
    for key, prompt in existing.items():
        if key not in in_file and not prompt.archived:
            prompt.archived = True
            prompt.save(update_fields=["archived"])
            report.archived.append(f"prompt {key}")
    return report


def export_prompt_set(prompt_set: PromptSet) -> str:
    """The prompt set's active prompts as a prompt-set file; importing it changes nothing."""
    prompts = list(prompt_set.active_prompts().order_by("position", "id"))
    repositories: dict[str, Repository] = {}
    for prompt in prompts:
        repositories.setdefault(prompt.repository.name, prompt.repository)
    document = without_defaults(
        [
            ("name", prompt_set.name),
            ("description", prompt_set.description),
            ("repositories", [_export_repository(repo) for repo in repositories.values()]),
            ("prompts", [_export_prompt(prompt) for prompt in prompts]),
        ]
    )
    return dump(document)


def _export_repository(repository: Repository) -> dict:
    return without_defaults(
        [
            ("name", repository.name),
            ("url", repository.display_url),
            ("default_branch", repository.default_branch),
        ]
    )


def _export_prompt(prompt: Prompt) -> dict:
    clarification = without_defaults(
        [("expected", prompt.clarification_expected), ("answer", prompt.clarification_answer)]
    )
    return without_defaults(
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

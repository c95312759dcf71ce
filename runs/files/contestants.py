"""The contestants file (FORMATS.md): models and the contestants that drive them.

Importing is all or nothing and archives nothing: entries missing from the file are left alone.
Shapes and types are checked by `runs.files.strict`; what a value may be (a provider's required
fields, a script that parses, the site's caps), by the models' own rules. API keys are
write-only: they never appear in an export, an error message or a log line.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from django.conf import settings
from django.db import transaction

from runs import agents
from runs.files.export import dump, without_defaults
from runs.files.report import ImportReport, upsert
from runs.files.strict import (
    Errors,
    Field,
    FormatError,
    Invalid,
    choice,
    entries,
    entry_label,
    json_mapping,
    load_yaml,
    model_rules,
    no_duplicates,
    non_negative,
    positive_int,
    read,
    scores,
    show,
    string,
    type_name,
)
from runs.models import Contestant, LanguageModel

_MAX_SCRIPT_BYTES = 5 * 1024 * 1024

_PROVIDERS = tuple(choice for choice, _ in LanguageModel.PROVIDERS)
_HARNESSES = tuple(agents.HARNESSES)

_MODEL_FIELDS = {
    "name": Field(string(max_length=100, slug=True), required=True),
    "provider": Field(choice(*_PROVIDERS), required=True),
    "base_url": Field(string(max_length=500)),
    "model": Field(string(max_length=200)),
    "api_key": Field(string()),
    "api_key_env": Field(string(max_length=100)),
    "price": Field(
        nested={
            "input_per_mtok": Field(non_negative),
            "output_per_mtok": Field(non_negative),
        }
    ),
    "params": Field(json_mapping),
    "script": Field(string(max_length=500)),
}

_CONTESTANT_FIELDS = {
    "name": Field(string(max_length=100, slug=True), required=True),
    "harness": Field(choice(*_HARNESSES), required=True),
    "model": Field(string(max_length=100), required=True),
    "limits": Field(
        nested={
            "max_steps": Field(positive_int),
            "max_cost_usd": Field(non_negative),
            "time_limit": Field(positive_int),
            "max_processes": Field(positive_int),
            "max_memory_mb": Field(positive_int),
            "max_disk_mb": Field(positive_int),
            "max_tokens": Field(positive_int),
            "max_calls": Field(positive_int),
        }
    ),
    "options": Field(json_mapping),
    "benchmarks": Field(scores),
}

_CONTESTANTS_FILE_FIELDS = {
    "models": Field(lambda value: value),
    "contestants": Field(lambda value: value),
}


def _read_script(path_text: str, base_dir: Path | None) -> str:
    """The text of a scripted model's script file; raises Invalid naming the problem. Whether the
    text is a valid script is the model's rule.

    With no `base_dir` (a browser upload) the path is relative to the project and may not leave
    it, so an upload cannot read arbitrary files on the server.
    """
    if base_dir is None:
        root = Path(settings.BASE_DIR).resolve()
        path = (root / path_text).resolve()
        if not path.is_relative_to(root):
            raise Invalid(f"{show(path_text)} is outside the project directory")
    else:
        path = (Path(base_dir) / path_text).resolve()
    try:
        if not path.is_file():
            raise Invalid(f"{show(path_text)} is not a file")
        if path.stat().st_size > _MAX_SCRIPT_BYTES:
            raise Invalid(f"{show(path_text)} is larger than {_MAX_SCRIPT_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Invalid(f"cannot read {show(path_text)}: {type(exc).__name__}") from None
    return text


def _model_values(cleaned: dict, label: str, errors: Errors, base_dir: Path | None) -> dict:
    provider = cleaned.get("provider")
    if "api_key" in cleaned and "api_key_env" in cleaned:
        errors.add(label, "api_key", "give api_key or api_key_env, not both")
    script = ""
    if provider == LanguageModel.SCRIPTED:
        if "script" not in cleaned:
            errors.add(label, "script", "is required for provider scripted")
        else:
            try:
                script = _read_script(cleaned["script"], base_dir)
            except Invalid as exc:
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
    rules = LanguageModel(
        provider=provider or "",
        base_url=values["base_url"],
        model_id=values["model_id"],
        api_key_env=values["api_key_env"],
        script=script,
    )
    model_rules(
        rules,
        label,
        errors,
        {"model_id": "model"},
        prefixes={"script": f"{cleaned.get('script')}: "},
    )
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
    errors = Errors(filename)
    data = load_yaml(text, filename)
    if not isinstance(data, dict):
        errors.add("top level", "(file)", f"must be a mapping, not {type_name(data)}")
        errors.raise_if_any()
    read(data, _CONTESTANTS_FILE_FIELDS, "top level", errors)

    models: dict[str, dict] = {}
    checked: list[tuple[str, dict]] = []
    for index, item in enumerate(entries(data, "models", errors)):
        label = entry_label("models", index, item, "name")
        cleaned = read(item, _MODEL_FIELDS, label, errors)
        checked.append((label, cleaned))
        values = _model_values(cleaned, label, errors, base_dir)
        if "name" in cleaned:
            models.setdefault(cleaned["name"], values)
    no_duplicates(checked, "name", errors)

    contestants: dict[str, dict] = {}
    checked = []
    for index, item in enumerate(entries(data, "contestants", errors)):
        label = entry_label("contestants", index, item, "name")
        cleaned = read(item, _CONTESTANT_FIELDS, label, errors)
        checked.append((label, cleaned))
        limits = cleaned.get("limits", {})
        rules = Contestant(**limits, benchmarks=cleaned.get("benchmarks", {}))
        model_rules(rules, label, errors, {name: f"limits.{name}" for name in _LIMITS})
        model = cleaned.get("model")
        if (
            model
            and model not in models
            and not _model_in_file(data, model)
            and not LanguageModel.objects.filter(name=model).exists()
        ):
            errors.add(label, "model", f"unknown model {show(model)}")
        if "name" in cleaned and all(
            name in cleaned for name, rule in _CONTESTANT_FIELDS.items() if rule.required
        ):
            contestants.setdefault(cleaned["name"], _contestant_values(cleaned))
    no_duplicates(checked, "name", errors)
    errors.raise_if_any()

    with transaction.atomic():
        report = ImportReport()
        for name, values in models.items():
            upsert(LanguageModel, {"name": name}, values, f"model {name}", report)
        for name, values in contestants.items():
            values = dict(values)
            model = LanguageModel.objects.filter(name=values.pop("model")).first()
            if model is None:  # deleted since validation
                raise FormatError([f"{filename}: contestants: model: unknown model"])
            values["model_id"] = model.pk
            upsert(Contestant, {"name": name}, values, f"contestant {name}", report)
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
    document = without_defaults(
        [
            ("models", [_export_model(m) for m in sorted(models.values(), key=lambda m: m.name)]),
            ("contestants", [_export_contestant(c) for c in chosen]),
        ]
    )
    return dump(document)


def _export_model(model: LanguageModel) -> dict:
    price = None
    if model.input_per_mtok or model.output_per_mtok:
        price = {"input_per_mtok": model.input_per_mtok, "output_per_mtok": model.output_per_mtok}
    return without_defaults(
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
    limits = without_defaults((name, getattr(contestant, name)) for name in _LIMITS)
    return without_defaults(
        [
            ("name", contestant.name),
            ("harness", contestant.harness),
            ("model", contestant.model.name),
            ("limits", limits),
            ("options", dict(contestant.options)),
            ("benchmarks", dict(contestant.benchmarks)),
        ]
    )

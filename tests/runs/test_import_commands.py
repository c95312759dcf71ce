"""The import/export commands, and contestants files (models with keys and scripts)."""

from __future__ import annotations

import logging
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection

from runs.files.contestants import export_contestants, import_contestants
from runs.files.strict import FormatError
from runs.models import Contestant, LanguageModel, Prompt, PromptSet

API_KEY = "sk-live-7f3a9c1e5b2d4f6a8c0e"

SCRIPT = """\
- text: Reading the code first.
  tool_calls:
    - name: list_files
      arguments: {path: .}
- tool_calls:
    - name: finish
      arguments: {summary: done}
"""

CONTESTANTS = """\
models:
  - name: local-qwen
    provider: openai
    base_url: http://127.0.0.1:11434/v1
    model: qwen2.5-coder:32b
    api_key_env: OLLAMA_API_KEY
    price: {input_per_mtok: 0.5, output_per_mtok: 1.5}
    params: {temperature: 0}
  - name: claude
    provider: anthropic
    base_url: https://api.anthropic.com
    model: claude-sonnet-4-5
    api_key: "{api_key}"
  - name: demo-script
    provider: scripted
    script: scripts/fix-add.yaml
contestants:
  - name: qwen-builtin
    harness: builtin
    model: local-qwen
    limits: {max_steps: 40, max_cost_usd: 2.0, time_limit: 1800}
    options: {}
    benchmarks: {HumanEval: 87.0}
  - name: claude-aider
    harness: aider
    model: claude
    limits: {max_processes: 64, max_memory_mb: 2048, max_disk_mb: 512, max_tokens: 200000,
             max_calls: 50}
  - name: demo
    harness: builtin
    model: demo-script
""".replace("{api_key}", API_KEY)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def contestants_file(tmp_path) -> Path:
    (tmp_path / "ci" / "scripts").mkdir(parents=True)
    (tmp_path / "ci" / "scripts" / "fix-add.yaml").write_text(SCRIPT)
    path = tmp_path / "ci" / "contestants.yaml"
    path.write_text(CONTESTANTS)
    return path


@pytest.fixture
def prompt_set_file(tmp_path, make_repo) -> Path:
    repo, sha = make_repo({"calc.py": "def add(a, b):\n    return a - b\n"}, name="calc")
    path = tmp_path / "tasks.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "calc-tasks",
                "repositories": [{"name": "calc", "url": str(repo)}],
                "prompts": [
                    {
                        "key": "fix-add",
                        "title": "Fix add",
                        "repository": "calc",
                        "commit": sha[:10],
                        "instructions": "add() subtracts.\nMake it add.\n",
                        "test": "python -c 'import calc; assert calc.add(1, 2) == 3'",
                    }
                ],
            },
            sort_keys=False,
        )
    )
    return path


def _raw_api_key(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM runs_languagemodel WHERE name = %s", [name])
        return cursor.fetchone()[0]


# -- Prompt sets -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_imports_a_prompt_set_file_and_prints_what_changed(prompt_set_file):
    output = run("import_prompt_set", str(prompt_set_file))

    assert output.splitlines() == [
        "created prompt set calc-tasks",
        "created repository calc",
        "created prompt fix-add",
        f"Imported {prompt_set_file}: 3 created, 0 updated, 0 unchanged, 0 archived",
    ]
    assert len(Prompt.objects.get(key="fix-add").commit) == 40

    again = run("import_prompt_set", str(prompt_set_file))
    assert again.splitlines()[-1].endswith("0 created, 0 updated, 3 unchanged, 0 archived")


@pytest.mark.django_db
def test_it_fails_with_every_error_and_imports_nothing(prompt_set_file):
    document = yaml.safe_load(prompt_set_file.read_text())
    document["prompts"][0]["commit"] = "deadbeef"
    document["prompts"][0]["time_limt"] = 5
    prompt_set_file.write_text(yaml.safe_dump(document))

    with pytest.raises(CommandError) as raised:
        run("import_prompt_set", str(prompt_set_file))

    message = str(raised.value)
    assert f"{prompt_set_file}: prompts[0] (key 'fix-add'): time_limt: unknown key" in message
    assert f"{prompt_set_file}: prompts[0] (key 'fix-add'): commit: 'deadbeef' not found" in (
        message
    )
    assert PromptSet.objects.count() == 0


@pytest.mark.django_db
def test_it_fails_clearly_on_a_missing_file(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        run("import_prompt_set", str(tmp_path / "nope.yaml"))


@pytest.mark.django_db
def test_it_exports_a_prompt_set_that_imports_back_unchanged(prompt_set_file, tmp_path):
    run("import_prompt_set", str(prompt_set_file))

    exported = run("export_prompt_set", "calc-tasks")

    assert yaml.safe_load(exported)["prompts"][0]["commit"] == Prompt.objects.get().commit
    copy = tmp_path / "exported.yaml"
    copy.write_text(exported)
    assert run("import_prompt_set", str(copy)).splitlines()[:-1] == [
        "unchanged prompt set calc-tasks",
        "unchanged repository calc",
        "unchanged prompt fix-add",
    ]


@pytest.mark.django_db
def test_it_names_the_known_sets_when_exporting_an_unknown_one(prompt_set_file):
    run("import_prompt_set", str(prompt_set_file))

    with pytest.raises(
        CommandError, match="No prompt set is named 'calc'. Prompt sets: calc-tasks"
    ):
        run("export_prompt_set", "calc")


# -- Contestants -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_imports_contestants_with_a_scripted_model(contestants_file):
    output = run("import_contestants", str(contestants_file))

    assert "created model demo-script" in output
    assert "created contestant demo" in output
    scripted = LanguageModel.objects.get(name="demo-script")
    assert scripted.is_scripted
    assert scripted.script == SCRIPT
    assert scripted.script_path == "scripts/fix-add.yaml"
    assert Contestant.objects.get(name="demo").label == "demo (scripted)"
    qwen = Contestant.objects.get(name="qwen-builtin")
    assert (qwen.max_steps, qwen.max_cost_usd, qwen.time_limit) == (40, 2.0, 1800)
    assert qwen.benchmarks == {"HumanEval": 87.0}
    assert qwen.model.model_id == "qwen2.5-coder:32b"
    assert (qwen.model.input_per_mtok, qwen.model.output_per_mtok) == (0.5, 1.5)
    assert qwen.model.params == {"temperature": 0}
    assert qwen.model.api_key_env == "OLLAMA_API_KEY"


@pytest.mark.django_db
def test_it_never_reveals_an_imported_api_key(contestants_file, caplog):
    caplog.set_level(logging.DEBUG)

    outputs = [
        run("import_contestants", str(contestants_file)),
        run("import_contestants", str(contestants_file)),
        run("export_contestants"),
        run("export_contestants", "claude-aider"),
        export_contestants(),
    ]

    model = LanguageModel.objects.get(name="claude")
    assert model.api_key == API_KEY
    raw = _raw_api_key("claude")
    assert raw and raw != API_KEY and API_KEY not in raw
    for output in outputs:
        assert API_KEY not in output
        assert "api_key:" not in output
    assert "api_key_env: OLLAMA_API_KEY" in outputs[2]
    assert all(API_KEY not in record.getMessage() for record in caplog.records)


@pytest.mark.django_db
def test_it_never_puts_a_key_in_an_error(contestants_file):
    text = contestants_file.read_text().replace(
        "    api_key: ", "    api_key_env: ANTHROPIC_API_KEY\n    api_key: "
    )

    with pytest.raises(FormatError) as raised:
        import_contestants(text, filename="c.yaml", base_dir=contestants_file.parent)

    assert raised.value.errors == [
        "c.yaml: models[1] (name 'claude'): api_key: give api_key or api_key_env, not both"
    ]
    assert API_KEY not in str(raised.value)
    assert LanguageModel.objects.count() == 0


@pytest.mark.django_db
def test_it_keeps_a_stored_key_when_the_file_omits_it(contestants_file, tmp_path):
    run("import_contestants", str(contestants_file))
    exported = tmp_path / "ci" / "exported.yaml"
    exported.write_text(run("export_contestants"))

    output = run("import_contestants", str(exported))

    assert "0 created, 0 updated, 6 unchanged" in output
    assert LanguageModel.objects.get(name="claude").api_key == API_KEY


@pytest.mark.django_db
def test_it_exports_contestants_that_import_back_as_the_same_settings(contestants_file):
    import_contestants(contestants_file.read_text(), base_dir=contestants_file.parent)

    exported = yaml.safe_load(export_contestants())

    original = yaml.safe_load(CONTESTANTS)
    del original["models"][1]["api_key"]
    del original["contestants"][0]["options"]  # empty, so omitted
    by_name = {m["name"]: m for m in exported["models"]}
    assert by_name == {m["name"]: m for m in original["models"]}
    assert sorted(exported["contestants"], key=lambda c: c["name"]) == sorted(
        original["contestants"], key=lambda c: c["name"]
    )


@pytest.mark.django_db
def test_it_updates_a_model_in_place_and_switches_it_to_an_environment_key(contestants_file):
    import_contestants(contestants_file.read_text(), base_dir=contestants_file.parent)
    text = CONTESTANTS.replace(f'api_key: "{API_KEY}"', "api_key_env: ANTHROPIC_API_KEY")

    report = import_contestants(text, base_dir=contestants_file.parent)

    assert report.updated == ["model claude"]
    assert "updated model claude (api_key_env, api_key)" in report.lines()
    model = LanguageModel.objects.get(name="claude")
    assert (model.api_key, model.api_key_env) == ("", "ANTHROPIC_API_KEY")


@pytest.mark.django_db
def test_it_resolves_an_uploaded_script_inside_the_project_only(settings, tmp_path):
    project = tmp_path / "project"
    (project / "demo" / "scripts").mkdir(parents=True)
    (project / "demo" / "scripts" / "x.yaml").write_text(SCRIPT)
    (tmp_path / "secret.yaml").write_text(SCRIPT)
    settings.BASE_DIR = project
    template = "models:\n  - name: s\n    provider: scripted\n    script: {}\n"

    import_contestants(template.format("demo/scripts/x.yaml"))
    assert LanguageModel.objects.get(name="s").script == SCRIPT

    for outside in ("../secret.yaml", str(tmp_path / "secret.yaml")):
        with pytest.raises(FormatError) as raised:
            import_contestants(template.format(outside), filename="up.yaml")
        assert raised.value.errors[0].startswith(
            "up.yaml: models[0] (name 's'): script: "
        ) and raised.value.errors[0].endswith("is outside the project directory")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("scripts/fix-add.yaml", "scripts/missing.yaml"),
            "c.yaml: models[2] (name 'demo-script'): script: 'scripts/missing.yaml' is not a file",
        ),
        (
            ("harness: aider", "harness: cursor"),
            "c.yaml: contestants[1] (name 'claude-aider'): harness: 'cursor' is not one of",
        ),
        (
            ("model: demo-script", "model: gpt-9"),
            "c.yaml: contestants[2] (name 'demo'): model: unknown model 'gpt-9'",
        ),
        (
            ("max_steps: 40", "max_steps: many"),
            "c.yaml: contestants[0] (name 'qwen-builtin'): limits.max_steps: must be a positive",
        ),
        (
            ("max_processes: 64", "max_processes: 257"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_processes: must be at most "
            "256, the site's cap (MERGEABLE_RUN_MAX_PROCESSES)",
        ),
        (
            ("max_disk_mb: 512", "max_disk_mb: 10241"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_disk_mb: must be at most "
            "10240, the site's cap (MERGEABLE_RUN_MAX_DISK_MB)",
        ),
        (
            ("max_memory_mb: 2048", "max_memory_mb: 0"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_memory_mb: must be a "
            "positive integer up to",
        ),
        (
            ("max_tokens: 200000", "max_tokens: 200000.0"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_tokens: must be a positive "
            "integer, not a number",
        ),
        (
            ("max_calls: 50", "max_calls: true"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_calls: must be a positive "
            "integer, not a boolean",
        ),
        (
            ("max_calls: 50", "max_calls: 50, max_threads: 8"),
            "c.yaml: contestants[1] (name 'claude-aider'): limits.max_threads: unknown key",
        ),
        (
            ("{HumanEval: 87.0}", "{HumanEval: high}"),
            "c.yaml: contestants[0] (name 'qwen-builtin'): benchmarks: HumanEval: must be a number",
        ),
        (
            ("    base_url: https://api.anthropic.com\n", ""),
            "c.yaml: models[1] (name 'claude'): base_url: is required for provider anthropic",
        ),
        (
            ("provider: openai", "provider: openai\n    temperature: 0"),
            "c.yaml: models[0] (name 'local-qwen'): temperature: unknown key",
        ),
        (
            ("name: demo\n", "name: qwen-builtin\n"),
            "c.yaml: contestants[2] (name 'qwen-builtin'): name: duplicate name 'qwen-builtin'",
        ),
    ],
)
def test_it_rejects_a_bad_contestants_file_and_writes_nothing(contestants_file, change, expected):
    import_contestants(CONTESTANTS, base_dir=contestants_file.parent)
    before = list(LanguageModel.objects.values_list("name", "model_id", "params"))
    old, new = change
    assert old in CONTESTANTS
    text = CONTESTANTS.replace(old, new).replace("qwen2.5-coder:32b", "qwen3-coder")

    with pytest.raises(FormatError) as raised:
        import_contestants(text, filename="c.yaml", base_dir=contestants_file.parent)

    assert any(error.startswith(expected) for error in raised.value.errors), raised.value.errors
    assert list(LanguageModel.objects.values_list("name", "model_id", "params")) == before
    assert Contestant.objects.count() == 3


@pytest.mark.django_db
def test_it_reports_a_broken_script_by_turn(contestants_file):
    (contestants_file.parent / "scripts" / "fix-add.yaml").write_text("- text: 3\n  oops: 1\n")

    with pytest.raises(FormatError) as raised:
        import_contestants(CONTESTANTS, filename="c.yaml", base_dir=contestants_file.parent)

    assert raised.value.errors[0].startswith(
        "c.yaml: models[2] (name 'demo-script'): script: scripts/fix-add.yaml: turn 1: "
    )


@pytest.mark.django_db
def test_it_stores_sandbox_and_gateway_limits_and_snapshots_them(contestants_file):
    import_contestants(CONTESTANTS, base_dir=contestants_file.parent)

    limited = Contestant.objects.get(name="claude-aider").snapshot()["limits"]
    unlimited = Contestant.objects.get(name="demo").snapshot()["limits"]

    assert limited == {
        "max_steps": None,
        "max_cost_usd": None,
        "time_limit": None,
        "max_processes": 64,
        "max_memory_mb": 2048,
        "max_disk_mb": 512,
        "max_tokens": 200000,
        "max_calls": 50,
    }
    assert set(unlimited) == set(limited) and set(unlimited.values()) == {None}


@pytest.mark.django_db
def test_it_checks_limits_against_the_sites_current_caps(contestants_file, settings):
    settings.MERGEABLE_RUN_MAX_MEMORY_MB = 1024
    settings.MERGEABLE_RUN_MAX_PROCESSES = 64  # a limit equal to the cap is allowed

    with pytest.raises(FormatError) as raised:
        import_contestants(CONTESTANTS, filename="c.yaml", base_dir=contestants_file.parent)

    assert raised.value.errors == [
        "c.yaml: contestants[1] (name 'claude-aider'): limits.max_memory_mb: must be at most "
        "1024, the site's cap (MERGEABLE_RUN_MAX_MEMORY_MB)"
    ]
    assert not Contestant.objects.exists()


@pytest.mark.django_db
def test_it_reports_an_update_that_only_lowers_a_limit(contestants_file):
    import_contestants(CONTESTANTS, base_dir=contestants_file.parent)
    text = CONTESTANTS.replace("max_calls: 50", "max_calls: 20")

    report = import_contestants(text, base_dir=contestants_file.parent)

    assert report.updated == ["contestant claude-aider"]
    assert "updated contestant claude-aider (limits)" in report.lines()
    assert Contestant.objects.get(name="claude-aider").max_calls == 20

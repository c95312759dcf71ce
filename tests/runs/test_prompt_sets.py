"""Importing and exporting prompt-set files (FORMATS.md), against real git repositories."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.files.prompt_sets import export_prompt_set, import_prompt_set
from runs.files.strict import FormatError
from runs.models import Prompt, PromptSet, Repository
from tests.conftest import git

EXAMPLE = """\
name: backend-2026q4                 # unique; importing again updates the set in place
description: Real tasks from the backend team
repositories:
  - name: shop
    url: {url}
    default_branch: main                    # optional
prompts:
  - key: partial-refunds             # unique within the set; the identity used on re-import
    title: Add partial refunds
    repository: shop
    commit: {commit}
    instructions: |
      Markdown. May read like a PRD and point at docs in the repo.
    tags: [multi-file, ambiguous-spec]          # optional
    acceptance_criteria:                        # optional; shown to scorers as a checklist
      - A refund can never exceed the captured amount
    expected_files: [shop/payments/refunds.py]  # optional; "did it find the right files?"
    setup: pip install -e .                     # optional; runs before the agent
    test: pytest -q tests/payments              # optional; runs after the agent
    test_files: ["tests/**"]                    # optional globs: restored to this commit's version
                                                # before `test` runs; a run whose agent changed
                                                # them is flagged (it cannot grade itself)
    hidden_tests:                               # optional: added only after the agent has ended,
      commit: '{hidden}'                        # never visible to it; taken from another commit
      paths: [tests/payments/test_refund_limits.py]   # of the same repository
    clarification:                              # optional
      expected: true                            # the spec is ambiguous on purpose
      answer: Partial refunds apply to card payments only.
    reference_patch: |                          # optional; a human's solution as a unified diff
      diff --git a/shop/payments/refunds.py b/shop/payments/refunds.py
      --- a/shop/payments/refunds.py
      +++ b/shop/payments/refunds.py
      @@ -1 +1,2 @@
       def refund(): pass
      +def partial_refund(): pass
    time_limit: 1800                            # optional, seconds
"""


@pytest.fixture
def shop(make_repo):
    """A real repository with two commits: (path, first sha, second sha). The second adds a
    README and a test."""
    path, first = make_repo({"shop/payments/refunds.py": "def refund(): pass\n"}, name="shop")
    (path / "README.md").write_text("# Shop\n")
    (path / "tests" / "payments").mkdir(parents=True)
    (path / "tests" / "payments" / "test_refund_limits.py").write_text("def test_limit(): pass\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "readme")
    return path, first, git(path, "rev-parse", "HEAD")


@pytest.fixture
def example(shop) -> str:
    path, first, second = shop
    # A short sha is quoted, as FORMATS.md asks: unquoted, one made only of digits (or digits and
    # one "e") would be read as a number, about one time in thirty.
    return EXAMPLE.format(url=path, commit=first, hidden=second[:9])


def _document(shop) -> dict:
    path, first, second = shop
    return {
        "name": "backend",
        "repositories": [{"name": "shop", "url": str(path)}],
        "prompts": [
            {
                "key": "partial-refunds",
                "title": "Add partial refunds",
                "repository": "shop",
                "commit": first,
                "instructions": "Refund part of a payment.\n",
            },
            {
                "key": "readme",
                "title": "Document the shop",
                "repository": "shop",
                "commit": second,
                "instructions": "Write a README.",
            },
        ],
    }


def _import(document: dict, filename: str = "tasks.yaml"):
    return import_prompt_set(yaml.safe_dump(document, sort_keys=False), filename=filename)


def _database_state() -> dict:
    return {
        "prompt_sets": list(PromptSet.objects.values_list("name", "description", "archived")),
        "repositories": list(Repository.objects.values_list("name", "url", "default_branch")),
        "prompts": list(
            Prompt.objects.values_list(
                "key",
                "title",
                "commit",
                "position",
                "archived",
                "test_files",
                "hidden_tests_commit",
                "hidden_tests_paths",
            )
        ),  # fmt: skip
    }


@pytest.mark.django_db
def test_it_imports_the_formats_example(example, shop):
    report = import_prompt_set(example, filename="tasks.yaml")

    assert report.lines() == [
        "created prompt set backend-2026q4",
        "created repository shop",
        "created prompt partial-refunds",
    ]
    prompt = Prompt.objects.get(prompt_set__name="backend-2026q4", key="partial-refunds")
    assert prompt.prompt_set.description == "Real tasks from the backend team"
    assert prompt.repository.url == str(shop[0])
    assert prompt.repository.default_branch == "main"
    assert prompt.commit == shop[1]
    assert prompt.title == "Add partial refunds"
    assert prompt.instructions.startswith("Markdown. May read like a PRD")
    assert prompt.tags == ["multi-file", "ambiguous-spec"]
    assert prompt.acceptance_criteria == ["A refund can never exceed the captured amount"]
    assert prompt.expected_files == ["shop/payments/refunds.py"]
    assert prompt.setup_command == "pip install -e ."
    assert prompt.test_command == "pytest -q tests/payments"
    assert prompt.clarification_expected is True
    assert prompt.clarification_answer == "Partial refunds apply to card payments only."
    assert "+def partial_refund(): pass" in prompt.reference_patch
    assert prompt.time_limit == 1800
    assert prompt.test_files == ["tests/**"]
    assert prompt.hidden_tests_commit == shop[2]  # resolved to the full sha
    assert prompt.hidden_tests_paths == ["tests/payments/test_refund_limits.py"]


@pytest.mark.django_db
def test_it_resolves_an_abbreviated_sha_to_the_full_sha(shop):
    document = _document(shop)
    document["prompts"][1]["commit"] = shop[2][:7].upper()

    _import(document)

    assert Prompt.objects.get(key="readme").commit == shop[2]
    assert len(shop[2]) == 40


@pytest.mark.django_db
def test_it_reports_everything_unchanged_on_reimport(example):
    import_prompt_set(example)

    report = import_prompt_set(example)

    assert report.created == report.updated == report.archived == []
    assert report.unchanged == [
        "prompt set backend-2026q4",
        "repository shop",
        "prompt partial-refunds",
    ]


@pytest.mark.django_db
def test_it_updates_a_changed_title_in_place(shop):
    document = _document(shop)
    _import(document)
    original_id = Prompt.objects.get(key="readme").pk

    document["prompts"][1]["title"] = "Write the README"
    report = _import(document)

    assert report.updated == ["prompt readme"]
    assert "updated prompt readme (title)" in report.lines()
    prompt = Prompt.objects.get(key="readme")
    assert (prompt.pk, prompt.title) == (original_id, "Write the README")


@pytest.mark.django_db
def test_it_archives_a_prompt_removed_from_the_file_and_follows_file_order(shop):
    document = _document(shop)
    _import(document)

    document["prompts"] = [document["prompts"][1]]
    report = _import(document)

    assert report.archived == ["prompt partial-refunds"]
    assert Prompt.objects.get(key="partial-refunds").archived
    assert [p.key for p in PromptSet.objects.get(name="backend").active_prompts()] == ["readme"]
    assert Prompt.objects.get(key="readme").position == 0

    document = _document(shop)
    document["prompts"].reverse()
    report = _import(document)
    assert "updated prompt partial-refunds (position, archived)" in report.lines()
    assert [p.key for p in PromptSet.objects.get(name="backend").active_prompts()] == [
        "readme",
        "partial-refunds",
    ]


@pytest.mark.django_db
def test_it_unarchives_an_archived_prompt_set(shop):
    _import(_document(shop))
    PromptSet.objects.update(archived=True)

    report = _import(_document(shop))

    assert report.updated == ["prompt set backend"]
    assert not PromptSet.objects.get(name="backend").archived


@pytest.mark.django_db
def test_it_exports_what_it_imported(example, shop):
    import_prompt_set(example)

    exported = export_prompt_set(PromptSet.objects.get(name="backend-2026q4"))

    expected = yaml.safe_load(example)
    expected["prompts"][0]["commit"] = shop[1]
    expected["prompts"][0]["hidden_tests"]["commit"] = shop[2]
    assert yaml.safe_load(exported) == expected
    assert list(yaml.safe_load(exported)["prompts"][0]) == list(expected["prompts"][0])
    # Multi-line text reads as block literals, not one quoted line full of "\n".
    assert "instructions: |" in exported
    assert "reference_patch: |" in exported


@pytest.mark.django_db
def test_it_omits_empty_optional_fields_from_the_export(shop):
    _import(_document(shop))

    exported = yaml.safe_load(export_prompt_set(PromptSet.objects.get(name="backend")))

    assert exported == _document(shop)


@pytest.mark.django_db
def test_it_reimports_an_export_without_changing_anything(example, shop):
    document = _document(shop)
    document["prompts"][0].update(
        instructions="  Indented first line\n\ntrailing spaces   \nno newline at the end",
        tags=["yes", "1"],
        time_limit=60,
        clarification={"answer": "Only cards."},
        test="pytest -q\n",
        setup="pip install -e .",
        setup_network=True,
        test_files=["tests/**", "**/conftest.py", "*"],
        hidden_tests={"commit": shop[2][:7], "paths": ["tests/payments", "README.md"]},
    )
    document["prompts"][1]["title"] = "null"
    _import(document)
    import_prompt_set(example)

    for prompt_set in PromptSet.objects.all():
        before = _database_state()
        report = import_prompt_set(export_prompt_set(prompt_set))
        assert report.created == report.updated == report.archived == []
        assert _database_state() == before
    assert Prompt.objects.get(key="readme").title == "null"


MISTAKES = {
    "unknown top-level key": (
        lambda d: d.update(nmae="typo"),
        "tasks.yaml: top level: nmae: unknown key",
    ),
    "unknown prompt key": (
        lambda d: d["prompts"][1].update(titel="typo"),
        "tasks.yaml: prompts[1] (key 'readme'): titel: unknown key",
    ),
    "unknown clarification key": (
        lambda d: d["prompts"][1].update(clarification={"expected": True, "answr": "x"}),
        "tasks.yaml: prompts[1] (key 'readme'): clarification.answr: unknown key",
    ),
    "wrong type": (
        lambda d: d["prompts"][1].update(time_limit="soon"),
        "tasks.yaml: prompts[1] (key 'readme'): time_limit: must be a positive integer",
    ),
    "wrong type in a list": (
        lambda d: d["prompts"][1].update(tags=["ok", {"nested": 1}]),
        "tasks.yaml: prompts[1] (key 'readme'): tags: item 1 must be a non-empty string",
    ),
    "missing required field": (
        lambda d: d["prompts"][1].pop("instructions"),
        "tasks.yaml: prompts[1] (key 'readme'): instructions: is required",
    ),
    "key that is not a slug": (
        lambda d: d["prompts"][1].update(key="read me"),
        "tasks.yaml: prompts[1] (key 'read me'): key: 'read me' is not a slug",
    ),
    "unknown repository": (
        lambda d: d["prompts"][1].update(repository="warehouse"),
        "tasks.yaml: prompts[1] (key 'readme'): repository: unknown repository 'warehouse'",
    ),
    "missing commit": (
        lambda d: d["prompts"][1].update(commit="deadbeef"),
        "tasks.yaml: prompts[1] (key 'readme'): commit: 'deadbeef' not found in repository 'shop'",
    ),
    "commit that is not a sha": (
        lambda d: d["prompts"][1].update(commit="main"),
        "tasks.yaml: prompts[1] (key 'readme'): commit: 'main' is not a commit sha",
    ),
    "bad url": (
        lambda d: d["repositories"][0].update(url="ext::sh -c x"),
        "tasks.yaml: repositories[0] (name 'shop'): url: ",
    ),
    "duplicate prompt key": (
        lambda d: d["prompts"].append(dict(d["prompts"][0])),
        "tasks.yaml: prompts[2] (key 'partial-refunds'): key: duplicate key 'partial-refunds'",
    ),
    "duplicate repository name": (
        lambda d: d["repositories"].append(dict(d["repositories"][0])),
        "tasks.yaml: repositories[1] (name 'shop'): name: duplicate name 'shop'",
    ),
    "setup_network not a boolean": (
        lambda d: d["prompts"][1].update(setup="pip install .", setup_network="yes"),
        "tasks.yaml: prompts[1] (key 'readme'): setup_network: must be true or false, not a string",
    ),
    "setup_network without a setup": (
        lambda d: d["prompts"][1].update(setup_network=True),
        "tasks.yaml: prompts[1] (key 'readme'): setup_network: needs a setup command: only the "
        "setup command runs with network access",
    ),
    "setup_network with a blank setup": (
        lambda d: d["prompts"][1].update(setup="  ", setup_network=True),
        "tasks.yaml: prompts[1] (key 'readme'): setup_network: needs a setup command",
    ),
    "test_files not a list": (
        lambda d: d["prompts"][1].update(test_files="tests/**"),
        "tasks.yaml: prompts[1] (key 'readme'): test_files: must be a list of strings",
    ),
    "absolute test glob": (
        lambda d: d["prompts"][1].update(test_files=["tests/**", "/etc/**"]),
        "tasks.yaml: prompts[1] (key 'readme'): test_files: '/etc/**' is absolute",
    ),
    "test glob out of the repository": (
        lambda d: d["prompts"][1].update(test_files=["tests/../../x"]),
        "tasks.yaml: prompts[1] (key 'readme'): test_files: 'tests/../../x' leaves the repository",
    ),
    "unknown hidden_tests key": (
        lambda d: d["prompts"][1].update(
            hidden_tests={"commit": d["prompts"][1]["commit"], "paths": ["README.md"], "pth": 1}
        ),
        "tasks.yaml: prompts[1] (key 'readme'): hidden_tests.pth: unknown key",
    ),
    "hidden_tests without a commit": (
        lambda d: d["prompts"][1].update(hidden_tests={"paths": ["README.md"]}),
        "tasks.yaml: prompts[1] (key 'readme'): hidden_tests.commit: is required",
    ),
    "hidden commit not in the repository": (
        lambda d: d["prompts"][1].update(
            hidden_tests={"commit": "deadbeef", "paths": ["README.md"]}
        ),
        "tasks.yaml: prompts[1] (key 'readme'): hidden_tests.commit: 'deadbeef' not found in "
        "repository 'shop'",
    ),
    "hidden path not in the commit": (
        lambda d: d["prompts"][1].update(
            hidden_tests={"commit": d["prompts"][0]["commit"], "paths": ["README.md"]}
        ),
        "tasks.yaml: prompts[1] (key 'readme'): hidden_tests.paths: 'README.md' not in commit ",
    ),
    "hidden path out of the repository": (
        lambda d: d["prompts"][1].update(
            hidden_tests={"commit": d["prompts"][1]["commit"], "paths": ["tests/../../etc"]}
        ),
        "tasks.yaml: prompts[1] (key 'readme'): hidden_tests.paths: 'tests/../../etc' is not a "
        "plain relative path",
    ),
    "prompts not a list": (
        lambda d: d.update(prompts={"readme": {}}),
        "tasks.yaml: top level: prompts: must be a list",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("mistake", MISTAKES)
def test_it_rejects_a_mistake_naming_file_entry_and_field_and_writes_nothing(shop, mistake):
    _import(_document(shop))
    before = _database_state()
    document = _document(shop)
    # Valid changes next to the mistake: an import that wrote anything would be visible.
    document["prompts"][0]["title"] = "Changed title"
    document["description"] = "Changed description"
    mutate, expected = MISTAKES[mistake]
    mutate(document)

    with pytest.raises(FormatError) as raised:
        _import(document)

    assert any(error.startswith(expected) for error in raised.value.errors), raised.value.errors
    assert str(raised.value) == "\n".join(raised.value.errors)
    assert _database_state() == before
    assert Prompt.objects.get(key="partial-refunds").title == "Add partial refunds"


@pytest.mark.django_db
def test_it_reports_every_mistake_at_once(shop):
    document = _document(shop)
    document["colour"] = "blue"
    document["prompts"][0]["commit"] = "deadbeef"
    document["prompts"][1]["time_limit"] = -5
    del document["prompts"][1]["title"]

    with pytest.raises(FormatError) as raised:
        _import(document)

    assert raised.value.errors == [
        "tasks.yaml: top level: colour: unknown key (expected: name, description, repositories,"
        " prompts)",
        "tasks.yaml: prompts[0] (key 'partial-refunds'): commit: 'deadbeef' not found in "
        "repository 'shop'",
        "tasks.yaml: prompts[1] (key 'readme'): title: is required",
        "tasks.yaml: prompts[1] (key 'readme'): time_limit: must be a positive integer up to "
        "2147483647",
    ]
    assert PromptSet.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "tasks.yaml: line 2, column 1: invalid YAML: "),
        ("name: a\nname: b\n", "tasks.yaml: line 2, column 1: invalid YAML: duplicate key 'name'"),
        ("- just\n- a list\n", "tasks.yaml: top level: (file): must be a mapping, not a list"),
        ("", "tasks.yaml: top level: (file): must be a mapping, not null"),
        ("name: x\nd: 2024-13-45\n", "tasks.yaml: invalid YAML: "),
        ('name: "\\0"\n', "tasks.yaml: top level: name: must not contain NUL characters"),
    ],
)
def test_it_rejects_a_file_that_is_not_a_valid_document(text, expected):
    with pytest.raises(FormatError) as raised:
        import_prompt_set(text, filename="tasks.yaml")

    assert raised.value.errors[0].startswith(expected), raised.value.errors
    assert PromptSet.objects.count() == 0


@pytest.mark.django_db
def test_it_never_shows_credentials_from_a_repository_url(shop, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = True  # a loopback URL, to fail without leaving
    document = _document(shop)
    # Port 9 on 127.0.0.1 refuses the connection: the fetch fails without leaving the machine.
    document["repositories"][0]["url"] = "http://robot:hunter2-secret@127.0.0.1:9/shop.git"

    with pytest.raises(FormatError) as raised:
        _import(document)

    assert "hunter2-secret" not in str(raised.value)
    assert "tasks.yaml: repositories[0] (name 'shop'): url: cannot fetch repository 'shop'" in (
        str(raised.value)
    )


@pytest.mark.django_db
def test_it_uses_a_repository_already_in_the_database(shop):
    _import(_document(shop))
    document = _document(shop)
    document["name"] = "frontend"
    del document["repositories"]

    report = _import(document)

    assert "created prompt readme" in report.lines()
    assert Repository.objects.count() == 1


@pytest.mark.django_db
def test_it_gives_the_setup_the_network_only_when_the_file_says_so(shop):
    document = _document(shop)
    document["prompts"][0].update(setup="pip install -e .", setup_network=True)
    document["prompts"][1].update(setup="make deps", setup_network=False)

    _import(document)

    assert Prompt.objects.get(key="partial-refunds").setup_network is True
    assert Prompt.objects.get(key="readme").setup_network is False
    exported = yaml.safe_load(export_prompt_set(PromptSet.objects.get(name="backend")))
    del document["prompts"][1]["setup_network"]  # false is the default, so omitted
    assert exported == document


@pytest.mark.django_db
def test_it_reports_an_update_that_only_turns_on_the_setups_network(shop):
    document = _document(shop)
    document["prompts"][0]["setup"] = "pip install -e ."
    _import(document)
    document["prompts"][0]["setup_network"] = True

    report = _import(document)

    assert "updated prompt partial-refunds (setup_network)" in report.lines()
    assert Prompt.objects.get(key="partial-refunds").setup_network is True


@pytest.mark.django_db
def test_it_reports_a_setup_of_the_wrong_type_once(shop):
    document = _document(shop)
    document["prompts"][0].update(setup=["pip", "install"], setup_network=True)

    with pytest.raises(FormatError) as raised:
        _import(document)

    assert raised.value.errors == [
        "tasks.yaml: prompts[0] (key 'partial-refunds'): setup: must be a string, not a list"
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("hidden_tests", "expected"),
    [
        ({"paths": ["README.md"]}, ["hidden_tests.commit: is required"]),
        ({"commit": "main"}, ["hidden_tests.commit: 'main' is not", "hidden_tests.paths: is req"]),
        (
            {"commit": "main", "paths": ["../x"]},
            ["hidden_tests.commit: 'main' is not", "hidden_tests.paths: '../x' is not a plain"],
        ),
        ("tests/", ["hidden_tests: must be a mapping, not a string"]),
    ],
)
def test_it_reports_each_problem_of_hidden_tests_once(shop, hidden_tests, expected):
    document = _document(shop)
    document["prompts"][0]["hidden_tests"] = hidden_tests

    with pytest.raises(FormatError) as raised:
        _import(document)

    prefix = "tasks.yaml: prompts[0] (key 'partial-refunds'): "
    assert len(raised.value.errors) == len(expected), raised.value.errors
    for error, start in zip(raised.value.errors, expected, strict=True):
        assert error.startswith(prefix + start), raised.value.errors


@pytest.mark.django_db
def test_it_names_protected_and_hidden_tests_in_an_update(shop):
    document = _document(shop)
    _import(document)
    document["prompts"][1].update(
        test_files=["tests/**"], hidden_tests={"commit": shop[2], "paths": ["tests"]}
    )

    report = _import(document)

    assert "updated prompt readme (test_files, hidden_tests)" in report.lines()


@pytest.mark.django_db
def test_it_keeps_protected_and_hidden_tests_in_the_run_snapshot(shop):
    from runs import campaigns
    from runs.models import Contestant, LanguageModel

    document = _document(shop)
    document["prompts"][1].update(
        test_files=["tests/**"], hidden_tests={"commit": shop[2][:8], "paths": ["tests"]}
    )
    _import(document)
    model = LanguageModel.objects.create(name="m", provider="scripted", script="- text: hi\n")
    contestant = Contestant.objects.create(name="c", model=model)

    campaign = campaigns.launch(
        prompt_set=PromptSet.objects.get(name="backend"), contestants=[contestant]
    )

    snapshots = {run.prompt.key: run.snapshot["prompt"] for run in campaign.runs.all()}
    assert snapshots["readme"]["test_files"] == ["tests/**"]
    assert snapshots["readme"]["hidden_tests"] == {"commit": shop[2], "paths": ["tests"]}
    assert (
        snapshots["partial-refunds"]["test_files"],
        snapshots["partial-refunds"]["hidden_tests"],
    ) == ([], None)


@pytest.mark.django_db
def test_it_keeps_the_setups_network_in_the_run_snapshot(shop):
    from runs import campaigns
    from runs.models import Contestant, LanguageModel

    document = _document(shop)
    document["prompts"][0].update(setup="pip install -e .", setup_network=True)
    _import(document)
    model = LanguageModel.objects.create(name="m", provider="scripted", script="- text: hi\n")
    contestant = Contestant.objects.create(name="c", model=model)

    campaign = campaigns.launch(
        prompt_set=PromptSet.objects.get(name="backend"), contestants=[contestant]
    )

    snapshots = {run.prompt.key: run.snapshot for run in campaign.runs.select_related("prompt")}
    assert snapshots["partial-refunds"]["prompt"]["setup"] == "pip install -e ."
    assert snapshots["partial-refunds"]["prompt"]["setup_network"] is True
    assert snapshots["readme"]["prompt"]["setup_network"] is False


# -- Robustness: whatever the file holds, the answer is a FormatError or a successful import. ----

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    # No ":" so no generated string is a network URL that git would try to reach.
    | st.text(alphabet=st.characters(exclude_characters=":"), max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=12) | st.integers(), children, max_size=4)
    ),
    max_leaves=12,
)
_field_names = st.sampled_from(
    ["name", "description", "repositories", "prompts", "key", "title", "repository", "commit",
     "instructions", "tags", "clarification", "expected", "answer", "time_limit", "url",
     "setup", "setup_network", "test", "acceptance_criteria", "expected_files",
     "reference_patch", "test_files", "hidden_tests", "paths", "typo"]
)  # fmt: skip


def _mutate(document: dict, data) -> object:
    """Replace, delete or add one value somewhere inside a copy of a valid document."""
    mutated = copy.deepcopy(document)
    containers = []

    def walk(node):
        if isinstance(node, dict | list):
            containers.append(node)
            for child in node.values() if isinstance(node, dict) else node:
                walk(child)

    walk(mutated)
    target = data.draw(st.sampled_from(containers))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if isinstance(target, dict):
        key = data.draw(
            st.sampled_from(sorted(target)) if target and action != "add" else _field_names
        )
        if action == "delete":
            target.pop(key, None)
        else:
            target[key] = data.draw(_values)
    elif target:
        index = data.draw(st.integers(0, len(target) - 1))
        if action == "delete":
            del target[index]
        elif action == "add":
            target.insert(index, data.draw(_values))
        else:
            target[index] = data.draw(_values)
    return mutated


@pytest.mark.django_db
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_it_answers_any_document_with_an_import_or_a_format_error(shop, data):
    if data.draw(st.booleans()):
        document = _mutate(_document(shop), data)
    else:
        document = data.draw(st.dictionaries(_field_names, _values, max_size=5) | _values)
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)

    try:
        import_prompt_set(text, filename="fuzz.yaml")
    except FormatError as exc:
        assert exc.errors
        assert all(error.startswith("fuzz.yaml: ") for error in exc.errors)


_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40
)
_line = _text.filter(str.strip)


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    title=_line.map(lambda s: s[:300]),
    instructions=_line,
    tags=st.lists(_line, max_size=4),
    setup=_text,
    answer=_text,
)
def test_it_exports_any_text_so_that_it_imports_back_unchanged(
    shop, title, instructions, tags, setup, answer
):
    document = _document(shop)
    document["prompts"][0].update(
        title=title,
        instructions=instructions,
        tags=tags,
        setup=setup,
        clarification={"expected": False, "answer": answer},
    )
    _import(document)
    before = _database_state()
    exported = export_prompt_set(PromptSet.objects.get(name="backend"))

    report = import_prompt_set(exported)

    assert report.updated == [] and report.created == []
    assert _database_state() == before
    prompt = yaml.safe_load(exported)["prompts"][0]
    assert (prompt["title"], prompt["instructions"]) == (title, instructions)
    assert prompt.get("tags", []) == tags


def test_it_never_exports_credentials_and_keeps_them_on_reimport(db, make_repo, settings):
    from runs.models import Repository

    path, sha = make_repo({"a.py": "x = 1\n"}, name="secretrepo")
    text = (
        "name: creds\n"
        "repositories:\n"
        f"  - name: shop\n    url: {path}\n"
        "prompts:\n"
        f"  - key: k\n    title: T\n    repository: shop\n    commit: {sha}\n    instructions: go\n"
    )
    import_prompt_set(text, filename="creds.yaml")
    # Credentials can only live in network URLs; store one as an admin would have typed it.
    Repository.objects.filter(name="shop").update(
        url="https://bot:hunter2@git.example.com/shop.git"
    )
    exported = export_prompt_set(PromptSet.objects.get(name="creds"))
    assert "hunter2" not in exported and "bot" not in exported
    assert "https://***@git.example.com/shop.git" in exported
    stored = Repository.objects.get(name="shop")
    assert stored.restored_url("https://***@git.example.com/shop.git") == (
        "https://bot:hunter2@git.example.com/shop.git"
    )
    assert Repository(url="https://x@y/z.git").restored_url(
        "https://***@git.example.com/shop.git"
    ) == ("https://***@git.example.com/shop.git")

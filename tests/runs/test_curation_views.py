"""The curation pages: repositories, prompt sets and prompts, models, contestants (admin only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from runs import checks
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository
from tests.conftest import git
from tests.fake_llm import FakeLLM
from tests.world import KWARG_OBJECTS, build_world

CURATION_URLS = {
    # name: (kwargs needed, POST-only)
    "prompt_sets": ((), False),
    "prompt_set_create": ((), False),
    "prompt_set": (("prompt_set_id",), False),
    "prompt_set_edit": (("prompt_set_id",), False),
    "prompt_set_archive": (("prompt_set_id",), True),
    "prompt_set_import": ((), True),
    "prompt_set_export": (("prompt_set_id",), False),
    "prompt_create": (("prompt_set_id",), False),
    "prompt_edit": (("prompt_id",), False),
    "prompt_move": (("prompt_id",), True),
    "prompt_archive": (("prompt_id",), True),
    "markdown_preview": ((), True),
    "repositories": ((), False),
    "repository_create": ((), False),
    "repository_edit": (("repository_id",), False),
    "repository_check": (("repository_id",), True),
    "repository_status": (("repository_id",), False),
    "models": ((), False),
    "model_create": ((), False),
    "model_edit": (("model_id",), False),
    "model_test": (("model_id",), True),
    "model_status": (("model_id",), False),
    "model_archive": (("model_id",), True),
    "contestants": ((), False),
    "contestant_create": ((), False),
    "contestant_edit": (("contestant_id",), False),
    "contestant_archive": (("contestant_id",), True),
    "contestants_import": ((), True),
    "contestants_export": ((), False),
}


def _url(name: str, world: dict) -> str:
    kwargs_needed, _ = CURATION_URLS[name]
    return reverse(f"runs:{name}", kwargs={k: world[KWARG_OBJECTS[k]].pk for k in kwargs_needed})


@pytest.fixture
def world(admin_user):
    return build_world(admin_user)


@pytest.fixture
def admin(client_for, admin_user):
    return client_for(admin_user)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# -- Permissions ---------------------------------------------------------------------------------


def test_it_lists_every_curation_url_in_the_matrix():
    from tests.runs.matrix import MATRIX

    for name in CURATION_URLS:
        assert MATRIX[f"runs:{name}"] == "admin"


@pytest.mark.parametrize("who", ["lead", "scorer", "outsider"])
def test_it_forbids_every_curation_page_to_non_admins(client_for, world, who, request):
    user = request.getfixturevalue(who)
    client = client_for(user)
    for name in CURATION_URLS:
        url = _url(name, world)
        assert client.get(url).status_code == 403, f"GET {name}"
        assert client.post(url, {"direction": "up", "name": "x"}).status_code == 403, name
    # Nothing a POST could have changed did change.
    assert not PromptSet.objects.filter(archived=True).exists()
    assert not LanguageModel.objects.filter(archived=True).exists()
    assert not Contestant.objects.filter(archived=True).exists()
    assert Repository.objects.get().last_check == {}


def test_it_serves_every_curation_page_to_admins(admin, world):
    for name, (_, post_only) in CURATION_URLS.items():
        response = admin.get(_url(name, world))
        expected = 405 if post_only else 200
        assert response.status_code == expected, f"GET {name} -> {response.status_code}"


def test_it_sends_anonymous_visitors_to_login(client, world):
    response = client.get(reverse("runs:models"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# -- Prompt sets and prompts ---------------------------------------------------------------------


def test_it_creates_and_edits_a_prompt_set(admin):
    response = admin.post(reverse("runs:prompt_set_create"), {"name": "q4", "description": "d"})
    prompt_set = PromptSet.objects.get(name="q4")
    assert response["Location"] == prompt_set.get_absolute_url()
    admin.post(
        reverse("runs:prompt_set_edit", kwargs={"prompt_set_id": prompt_set.pk}),
        {"name": "q4-backend", "description": "Backend tasks"},
    )
    prompt_set.refresh_from_db()
    assert (prompt_set.name, prompt_set.description) == ("q4-backend", "Backend tasks")


def test_it_refuses_a_duplicate_prompt_set_name(admin, world):
    response = admin.post(reverse("runs:prompt_set_create"), {"name": "backend"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert PromptSet.objects.count() == 1


def test_it_archives_and_restores_a_prompt_set_that_has_runs(admin, world):
    url = _url("prompt_set_archive", world)
    admin.post(url)
    assert PromptSet.objects.get().archived
    page = admin.get(_url("prompt_set", world)).content.decode()
    assert "Restore" in page and "Delete" not in page
    admin.post(url)
    assert not PromptSet.objects.get().archived


@pytest.fixture
def local_repo(db, make_repo):
    path, sha = make_repo({"app.py": "print('hi')\n", "README.md": "# App\n"})
    repository = Repository.objects.create(name="app", url=str(path))
    return repository, sha


def _prompt_data(repository: Repository, **overrides) -> dict:
    data = {
        "title": "Add refunds",
        "key": "refunds",
        "repository": repository.pk,
        "commit": "main",
        "instructions": "Refund **partially**.",
        "tags": "multi-file, ambiguous-spec, multi-file",
        "acceptance_criteria": "Never exceed the captured amount\n\n  Log every refund  \n",
        "expected_files": "shop/refunds.py\nshop/models.py",
        "setup_command": "pip install -e .",
        "test_command": "pytest -q",
        "clarification_expected": "on",
        "clarification_answer": "Cards only.",
        "reference_patch": "",
        "time_limit": "1800",
    }
    data.update(overrides)
    return data


def test_it_creates_a_prompt_pinned_to_the_full_sha(admin, local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    response = admin.post(url, _prompt_data(repository, commit=sha[:8]))
    assert response.status_code == 302, response.content.decode()
    prompt = Prompt.objects.get(key="refunds")
    assert prompt.commit == sha
    assert prompt.tags == ["multi-file", "ambiguous-spec"]
    assert prompt.acceptance_criteria == ["Never exceed the captured amount", "Log every refund"]
    assert prompt.expected_files == ["shop/refunds.py", "shop/models.py"]
    assert prompt.clarification_expected and prompt.time_limit == 1800


def _commit_hidden_test(repository: Repository) -> str:
    from pathlib import Path

    from tests.conftest import git

    path = Path(repository.url)
    (path / "tests").mkdir()
    (path / "tests" / "test_hidden.py").write_text("def test_hidden(): pass\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "hidden")
    return git(path, "rev-parse", "HEAD")


def test_it_saves_protected_and_hidden_tests(admin, local_repo):
    repository, sha = local_repo
    hidden = _commit_hidden_test(repository)
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    form = admin.get(url).content.decode()
    assert 'name="test_files"' in form and 'name="hidden_tests_paths"' in form
    data = _prompt_data(
        repository,
        commit=sha,
        test_files="tests/**\n\n**/conftest.py\n",
        hidden_tests_commit=hidden[:8],
        hidden_tests_paths="tests/test_hidden.py",
    )

    response = admin.post(url, data)

    assert response.status_code == 302, response.content.decode()
    prompt = Prompt.objects.get(key="refunds")
    assert prompt.test_files == ["tests/**", "**/conftest.py"]
    assert prompt.hidden_tests == {"commit": hidden, "paths": ["tests/test_hidden.py"]}


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"test_files": "/etc/**"}, "test_files", "'/etc/**' is absolute"),
        ({"hidden_tests_paths": "tests"}, "hidden_tests_commit", "Needed with hidden test"),
        ({"hidden_tests_commit": "HIDDEN"}, "hidden_tests_paths", "Needed with a hidden tests"),
        (
            {"hidden_tests_commit": "HIDDEN", "hidden_tests_paths": "tests/nope.py"},
            "hidden_tests_paths",
            "'tests/nope.py' is not in commit",
        ),
        (
            {"hidden_tests_commit": "HIDDEN", "hidden_tests_paths": "../tests"},
            "hidden_tests_paths",
            "'../tests' is not a plain relative path",
        ),
        (
            {"hidden_tests_commit": "deadbeef", "hidden_tests_paths": "tests"},
            "hidden_tests_commit",
            "Cannot resolve this commit",
        ),
    ],
)
def test_it_refuses_tests_it_cannot_protect_or_find(admin, local_repo, fields, field, message):
    repository, sha = local_repo
    hidden = _commit_hidden_test(repository)
    fields = {name: value.replace("HIDDEN", hidden) for name, value in fields.items()}
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})

    response = admin.post(url, _prompt_data(repository, commit=sha, **fields))

    assert response.status_code == 200
    assert response.context["form"].errors[field][0].startswith(message)
    assert not Prompt.objects.exists()


def test_it_lets_only_the_setup_use_the_network_and_says_so(admin, local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    form = admin.get(url).content.decode()
    assert 'name="setup_network"' in form and "The setup command may use the network" in form

    response = admin.post(url, _prompt_data(repository, commit=sha, setup_network="on"))

    assert response.status_code == 302, response.content.decode()
    assert Prompt.objects.get(key="refunds").setup_network is True
    page = admin.get(prompt_set.get_absolute_url()).content.decode()
    assert "runs with network access" in page and "setup uses the network" in page


def test_it_refuses_network_for_a_prompt_without_a_setup(admin, local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    data = _prompt_data(repository, commit=sha, setup_command="", setup_network="on")

    response = admin.post(url, data)

    assert response.status_code == 200
    assert response.context["form"].errors["setup_network"] == [
        "Needs a setup command: only the setup command runs with network access."
    ]
    assert not Prompt.objects.exists()


def test_it_says_a_setup_without_the_network_runs_offline(admin, world):
    Prompt.objects.filter(pk=world["prompt"].pk).update(setup_command="make deps")
    page = admin.get(_url("prompt_set", world)).content.decode()
    assert "runs without network access" in page and "setup uses the network" not in page


def test_it_resolves_a_branch_name_to_a_sha(admin, local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    admin.post(url, _prompt_data(repository, commit="main"))
    assert Prompt.objects.get().commit == sha


def test_it_shows_an_unknown_commit_as_a_form_error(admin, local_repo):
    repository, _ = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    response = admin.post(url, _prompt_data(repository, commit="deadbeef"))
    assert response.status_code == 200
    assert response.context["form"].errors["commit"][0].startswith("Cannot resolve this commit")
    assert not Prompt.objects.exists()


def test_it_refuses_a_key_used_twice_in_a_set(admin, world, local_repo):
    repository, sha = local_repo
    url = _url("prompt_create", world)
    response = admin.post(url, _prompt_data(repository, key="refunds", commit=sha))
    assert "already has this key" in response.content.decode()
    assert world["prompt_set"].prompts.count() == 1


def test_it_edits_a_prompt_without_refetching_an_unchanged_commit(admin, world):
    # The world's repository is unreachable: an edit that kept its commit must not fetch.
    prompt = world["prompt"]
    data = _prompt_data(world["repository"], commit=prompt.commit, title="Refunds, partial")
    response = admin.post(_url("prompt_edit", world), data)
    assert response.status_code == 302
    prompt.refresh_from_db()
    assert prompt.title == "Refunds, partial" and prompt.commit == "a" * 40


def test_it_appends_new_prompts_and_moves_them(admin, local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})
    for key in ("one", "two", "three"):
        admin.post(url, _prompt_data(repository, key=key, commit=sha))

    def order():
        return list(
            prompt_set.active_prompts().order_by("position", "id").values_list("key", flat=True)
        )

    assert order() == ["one", "two", "three"]
    three = Prompt.objects.get(key="three")
    move = reverse("runs:prompt_move", kwargs={"prompt_id": three.pk})
    admin.post(move, {"direction": "up"})
    assert order() == ["one", "three", "two"]
    admin.post(move, {"direction": "up"})
    admin.post(move, {"direction": "up"})  # already first: stays
    assert order() == ["three", "one", "two"]
    admin.post(reverse("runs:prompt_move", kwargs={"prompt_id": three.pk}), {"direction": "down"})
    assert order() == ["one", "three", "two"]
    page = admin.get(reverse("runs:prompt_set", kwargs={"prompt_set_id": prompt_set.pk}))
    text = page.content.decode()
    assert (
        text.index("<code>one</code>")
        < text.index("<code>three</code>")
        < text.index("<code>two</code>")
    )


def test_it_archives_a_prompt_and_lists_it_apart(admin, world):
    admin.post(_url("prompt_archive", world))
    prompt = Prompt.objects.get()
    assert prompt.archived
    page = admin.get(_url("prompt_set", world)).content.decode()
    assert "Archived prompts" in page and "no prompts yet" in page


def test_it_renders_instructions_as_sanitized_markdown(admin, world):
    prompt = world["prompt"]
    prompt.instructions = "See **docs**. <script>alert('x')</script>"
    prompt.save()
    page = admin.get(_url("prompt_set", world)).content.decode()
    assert "<strong>docs</strong>" in page
    assert "alert('x')" not in page


def test_it_previews_markdown_for_htmx(admin):
    response = admin.post(
        reverse("runs:markdown_preview"),
        {"instructions": "# Title\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert '<div id="instructions-preview"' in body and "<h1>Title</h1>" in body
    assert "javascript:" not in body and "onerror" not in body
    assert "<html" not in body  # a fragment, not a page


def test_it_wires_the_prompt_form_to_the_preview(admin, world):
    page = admin.get(_url("prompt_edit", world)).content.decode()
    assert f'hx-post="{reverse("runs:markdown_preview")}"' in page
    assert (
        '<div id="instructions-preview" class="markdown preview" aria-live="polite"><p>Do it</p>'
        in page
    )


# -- Import and export ---------------------------------------------------------------------------


def _prompt_set_yaml(path, sha: str, name: str = "imported") -> str:
    return (
        f"name: {name}\n"
        "repositories:\n"
        f"  - name: app\n    url: {path}\n"
        "prompts:\n"
        f"  - key: first\n    title: First\n    repository: app\n    commit: {sha}\n"
        "    instructions: Do the first thing\n"
    )


def test_it_imports_a_prompt_set_file_and_reports_what_changed(admin, make_repo):
    path, sha = make_repo({"a.py": "x = 1\n"})
    upload = _upload("set.yaml", _prompt_set_yaml(path, sha))
    response = admin.post(reverse("runs:prompt_set_import"), {"file": upload})
    assert response.status_code == 302
    prompt_set = PromptSet.objects.get(name="imported")
    assert list(prompt_set.prompts.values_list("key", "commit")) == [("first", sha)]
    report = "\n".join(_messages(response))
    assert "created" in report and "first" in report


def test_it_shows_every_error_of_a_bad_file_and_stores_nothing(admin, make_repo):
    path, sha = make_repo({"a.py": "x = 1\n"})
    text = _prompt_set_yaml(path, sha).replace("    title: First\n", "    titel: First\n")
    response = admin.post(reverse("runs:prompt_set_import"), {"file": _upload("bad.yaml", text)})
    assert response.status_code == 400
    body = response.content.decode()
    assert "The file was not imported" in body and "bad.yaml" in body and "titel" in body
    assert not PromptSet.objects.exists()
    assert not Repository.objects.exists()


def test_it_rejects_an_upload_that_is_not_utf8(admin):
    upload = _upload("set.yaml", b"\xff\xfe name")
    response = admin.post(reverse("runs:prompt_set_import"), {"file": upload})
    assert response.status_code == 400
    assert "not UTF-8" in response.content.decode()


def test_it_downloads_a_prompt_set_as_yaml(admin, world):
    response = admin.get(_url("prompt_set_export", world))
    assert response["Content-Disposition"] == 'attachment; filename="backend.yaml"'
    assert "key: refunds" in response.content.decode()


def test_it_imports_and_exports_contestants(admin, world):
    text = (
        "models:\n"
        "  - name: local-qwen\n    provider: openai\n    base_url: http://127.0.0.1:9/v1\n"
        "    model: qwen\n"
        "contestants:\n"
        "  - name: qwen-builtin\n    harness: builtin\n    model: local-qwen\n"
        "    limits: {max_steps: 12}\n"
    )
    response = admin.post(reverse("runs:contestants_import"), {"file": _upload("c.yaml", text)})
    assert response.status_code == 302
    assert Contestant.objects.get(name="qwen-builtin").max_steps == 12
    assert "qwen-builtin" in "\n".join(_messages(response))
    exported = admin.get(reverse("runs:contestants_export"))
    assert exported["Content-Disposition"] == 'attachment; filename="contestants.yaml"'
    assert "qwen-builtin" in exported.content.decode()


def test_it_shows_contestant_file_errors_on_the_list(admin, world):
    text = "contestants:\n  - name: x\n    harness: telepathy\n    model: nobody\n"
    response = admin.post(reverse("runs:contestants_import"), {"file": _upload("c.yaml", text)})
    assert response.status_code == 400
    assert "telepathy" in response.content.decode()
    assert not Contestant.objects.filter(name="x").exists()


def _upload(name: str, content: str | bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = content.encode() if isinstance(content, str) else content
    return SimpleUploadedFile(name, data, content_type="application/yaml")


# -- Repositories --------------------------------------------------------------------------------


def test_it_adds_a_local_repository_and_enqueues_a_check(
    admin, make_repo, monkeypatch, django_capture_on_commit_callbacks
):
    from runs import tasks

    queued = []
    monkeypatch.setattr(
        tasks.check_repository, "apply_async", lambda args, **options: queued.extend(args)
    )
    path, _ = make_repo({"a.py": "x\n"})
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("runs:repository_create"), {"name": "app", "url": str(path)})
    assert response.status_code == 302
    repository = Repository.objects.get()
    assert repository.last_check["pending"] is True
    assert queued == [repository.pk]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ext::sh -c touch% /tmp/pwned", "not allowed"),
        ("-uhttps://example.com/x.git", "starts with '-'"),
        ("file:///etc/passwd-repo", "outside the allowed local roots"),
        ("/srv/elsewhere/repo", "outside the allowed local roots"),
        ("ftp://example.com/repo.git", "not allowed"),
    ],
)
def test_it_rejects_a_bad_repository_url_with_a_clear_message(admin, url, message):
    response = admin.post(reverse("runs:repository_create"), {"name": "bad", "url": url})
    assert response.status_code == 200
    errors = response.context["form"].errors["url"]
    assert len(errors) == 1
    assert errors[0].startswith("This repository URL is not allowed")
    assert message in errors[0]
    assert not Repository.objects.exists()


def test_it_polls_a_repository_check_until_it_finishes(admin, world):
    repository = world["repository"]
    response = admin.post(_url("repository_check", world), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert f'id="repository-status-{repository.pk}"' in body
    assert 'hx-trigger="every 2s"' in body and "checking" in body
    Repository.objects.filter(pk=repository.pk).update(
        last_check={
            "checked_at": "2026-01-01T00:00:00+00:00",
            "ok": False,
            "error": "could not read from remote",
            "prompts": [],
        }
    )
    body = admin.get(_url("repository_status", world)).content.decode()
    assert "hx-trigger" not in body
    assert "could not read from remote" in body


def test_it_redirects_a_plain_check_request_to_the_list(admin, world):
    response = admin.post(_url("repository_check", world))
    assert response["Location"] == reverse("runs:repositories")
    assert Repository.objects.get().last_check["pending"] is True


def test_it_checks_a_repository_and_every_prompt_commit(local_repo):
    repository, sha = local_repo
    prompt_set = PromptSet.objects.create(name="set")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="good",
        title="t",
        instructions="i",
        repository=repository,
        commit=sha,
    )
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="gone",
        title="t",
        instructions="i",
        repository=repository,
        commit="b" * 40,
    )
    checks.check_repository(repository.pk)
    check = Repository.objects.get().last_check
    assert check["ok"] is False and check["checked_at"]
    assert check["prompts"] == [
        {"key": "good", "commit": sha, "exists": True},
        {"key": "gone", "commit": "b" * 40, "exists": False},
    ]
    assert "gone" in check["error"]
    Prompt.objects.filter(key="gone").update(archived=True)
    checks.check_repository(repository.pk)
    assert Repository.objects.get().last_check["ok"] is True


def test_it_sees_commits_pushed_after_the_mirror_was_made(local_repo):
    repository, _ = local_repo
    checks.check_repository(repository.pk)  # makes the mirror
    origin = Path(repository.url)
    (origin / "new.py").write_text("y = 2\n")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "more")
    new_sha = git(origin, "rev-parse", "HEAD")
    prompt_set = PromptSet.objects.create(name="set")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="new",
        title="t",
        instructions="i",
        repository=repository,
        commit=new_sha,
    )
    checks.check_repository(repository.pk)
    check = Repository.objects.get().last_check
    assert check["ok"] is True and check["prompts"][0]["exists"] is True


def test_it_records_an_unreachable_repository(db, tmp_path):
    missing = tmp_path / "repos" / "nothing-here"
    repository = Repository.objects.create(name="gone", url=str(missing))
    checks.check_repository(repository.pk)
    check = Repository.objects.get().last_check
    assert check["ok"] is False and check["error"] and check["checked_at"]


# -- Models --------------------------------------------------------------------------------------


def _model_data(**overrides) -> dict:
    data = {
        "name": "local-qwen",
        "provider": "openai",
        "base_url": "http://127.0.0.1:11434/v1",
        "model_id": "qwen2.5-coder",
        "api_key": "",
        "api_key_env": "",
        "input_per_mtok": "0.5",
        "output_per_mtok": "1.5",
        "params": '{"temperature": 0}',
        "script": "",
    }
    data.update(overrides)
    return data


def test_it_creates_and_edits_a_model(admin):
    response = admin.post(reverse("runs:model_create"), _model_data())
    assert response.status_code == 302
    model = LanguageModel.objects.get()
    assert model.params == {"temperature": 0} and model.output_per_mtok == 1.5
    edit = reverse("runs:model_edit", kwargs={"model_id": model.pk})
    admin.post(edit, _model_data(model_id="qwen3-coder", params=""))
    model.refresh_from_db()
    assert model.model_id == "qwen3-coder" and model.params == {}


def test_it_rejects_params_that_are_not_a_json_object(admin):
    response = admin.post(reverse("runs:model_create"), _model_data(params="[1, 2]"))
    assert "Enter a JSON object" in response.content.decode()
    response = admin.post(reverse("runs:model_create"), _model_data(params="{temperature: 0"))
    assert "Enter a valid JSON" in response.content.decode()
    assert not LanguageModel.objects.exists()


def test_it_needs_a_base_url_and_model_id_for_a_real_provider(admin):
    response = admin.post(reverse("runs:model_create"), _model_data(base_url="", model_id=""))
    errors = response.context["form"].errors
    assert "base_url" in errors and "model_id" in errors


def test_it_validates_a_scripted_models_turns(admin):
    data = _model_data(name="demo", provider="scripted", base_url="", model_id="")
    data["script"] = "- text: hello\n- tool_calls: [{name: finish, argumnts: {}}]\n"
    response = admin.post(reverse("runs:model_create"), data)
    error = response.context["form"].errors["script"][0]
    assert "turn 2" in error and "argumnts" in error
    data["script"] = "- text: hello\n"
    assert admin.post(reverse("runs:model_create"), data).status_code == 302
    page = admin.get(reverse("runs:models")).content.decode()
    assert '<span class="badge scripted">(scripted)</span>' in page


def test_it_archives_a_model_instead_of_deleting_it(admin, world):
    admin.post(_url("model_archive", world))
    assert LanguageModel.objects.get().archived
    page = admin.get(reverse("runs:models")).content.decode()
    assert "Restore" in page and "Delete" not in page


def test_it_polls_a_model_test_until_it_finishes(
    admin, world, monkeypatch, django_capture_on_commit_callbacks
):
    from runs import tasks

    queued = []
    monkeypatch.setattr(
        tasks.check_model_connection, "apply_async", lambda args, **options: queued.extend(args)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(_url("model_test", world), headers={"HX-Request": "true"})
    assert queued == [world["model"].pk]
    assert 'hx-trigger="every 2s"' in response.content.decode()
    checks.check_model_connection(world["model"].pk)
    body = admin.get(_url("model_status", world)).content.decode()
    assert "hx-trigger" not in body and "works" in body


def test_it_tests_a_model_connection_against_a_live_endpoint(db):
    with FakeLLM([{"text": "OK"}]) as llm:
        model = LanguageModel.objects.create(
            name="fake",
            provider="openai",
            base_url=llm.base_url_openai,
            model_id="m",
            api_key="sk-test-0123456789abcdef",
        )
        checks.check_model_connection(model.pk)
        sent = llm.requests[0]
    check = LanguageModel.objects.get().connection_check
    assert check["ok"] is True and check["answer"] == "OK" and check["checked_at"]
    assert sent["headers"]["authorization"] == "Bearer sk-test-0123456789abcdef"


def test_it_records_a_failed_connection_without_the_key(db):
    with FakeLLM() as llm:
        llm.fail_next(401, times=5)
        model = LanguageModel.objects.create(
            name="fake",
            provider="anthropic",
            base_url=llm.base_url_anthropic,
            model_id="m",
            api_key="sk-ant-secret-4321",
        )
        checks.check_model_connection(model.pk)
    check = LanguageModel.objects.get().connection_check
    assert check["ok"] is False and "401" in check["error"]
    assert "sk-ant-secret" not in str(check)


# -- Contestants ---------------------------------------------------------------------------------


def _contestant_data(model: LanguageModel, **overrides) -> dict:
    data = {
        "name": "qwen-aider",
        "harness": "aider",
        "model": model.pk,
        "max_steps": "30",
        "max_cost_usd": "1.5",
        "time_limit": "900",
        "options": "{}",
        "benchmarks": '{"HumanEval": 87.0}',
    }
    data.update(overrides)
    return data


def test_it_creates_and_edits_a_contestant(admin, world):
    response = admin.post(reverse("runs:contestant_create"), _contestant_data(world["model"]))
    assert response.status_code == 302
    contestant = Contestant.objects.get(name="qwen-aider")
    assert contestant.benchmarks == {"HumanEval": 87.0} and contestant.max_cost_usd == 1.5
    edit = reverse("runs:contestant_edit", kwargs={"contestant_id": contestant.pk})
    admin.post(edit, _contestant_data(world["model"], max_steps="", harness="builtin"))
    contestant.refresh_from_db()
    assert contestant.max_steps is None and contestant.harness == "builtin"


def test_it_stores_sandbox_and_gateway_limits_from_the_form(admin, world):
    data = _contestant_data(
        world["model"],
        max_processes="128",
        max_memory_mb="2048",
        max_disk_mb="4096",
        max_tokens="500000",
        max_calls="80",
    )
    response = admin.post(reverse("runs:contestant_create"), data)
    assert response.status_code == 302, response.content.decode()
    limits = Contestant.objects.get(name="qwen-aider").snapshot()["limits"]
    assert limits == {
        "max_steps": 30,
        "max_cost_usd": 1.5,
        "time_limit": 900,
        "max_processes": 128,
        "max_memory_mb": 2048,
        "max_disk_mb": 4096,
        "max_tokens": 500000,
        "max_calls": 80,
    }


def test_it_refuses_a_limit_above_the_sites_cap_and_names_it(admin, world, settings):
    settings.MERGEABLE_RUN_MAX_DISK_MB = 1000
    form = admin.get(reverse("runs:contestant_create")).content.decode()
    assert "At most 1000, the site's cap" in form

    data = _contestant_data(world["model"], max_disk_mb="1001", max_processes="256")
    response = admin.post(reverse("runs:contestant_create"), data)

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "max_disk_mb": ["Must be at most 1000, the site's cap (MERGEABLE_RUN_MAX_DISK_MB)."]
    }
    assert not Contestant.objects.filter(name="qwen-aider").exists()


def test_it_refuses_a_limit_of_zero(admin, world):
    data = _contestant_data(world["model"], max_calls="0")
    response = admin.post(reverse("runs:contestant_create"), data)
    assert response.status_code == 200
    assert list(response.context["form"].errors) == ["max_calls"]
    assert not Contestant.objects.filter(name="qwen-aider").exists()


def test_it_rejects_benchmarks_that_are_not_numbers(admin, world):
    data = _contestant_data(world["model"], benchmarks='{"HumanEval": "high"}')
    response = admin.post(reverse("runs:contestant_create"), data)
    assert "must be a number" in response.content.decode()
    assert not Contestant.objects.filter(name="qwen-aider").exists()


def test_it_labels_scripted_contestants_everywhere(admin, world):
    listing = admin.get(reverse("runs:contestants")).content.decode()
    assert listing.count('<span class="badge scripted">(scripted)</span>') == 2
    form = admin.get(_url("contestant_edit", world)).content.decode()
    assert "demo-model (scripted)" in form and "(scripted)</span></h1>" in form


def test_it_archives_a_contestant_instead_of_deleting_it(admin, world):
    admin.post(_url("contestant_archive", world))
    assert Contestant.objects.get(pk=world["contestant"].pk).archived
    page = admin.get(reverse("runs:contestants")).content.decode()
    assert "Restore" in page and "Delete" not in page


def test_it_keeps_list_pages_to_a_fixed_number_of_queries(
    admin, world, django_assert_max_num_queries
):
    model = world["model"]
    for index in range(6):
        Contestant.objects.create(name=f"extra-{index}", model=model)
        Repository.objects.create(name=f"repo-{index}", url=f"https://example.com/{index}.git")
        PromptSet.objects.create(name=f"set-{index}")
        Prompt.objects.create(
            prompt_set=world["prompt_set"],
            key=f"p{index}",
            title="t",
            instructions="i",
            repository=world["repository"],
            commit="c" * 40,
        )
    for name in ("prompt_sets", "prompt_set", "repositories", "models", "contestants"):
        with django_assert_max_num_queries(8):
            assert admin.get(_url(name, world)).status_code == 200

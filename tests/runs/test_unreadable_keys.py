"""A model key that no longer decrypts (encryption keys replaced without rotate_keys).

The model says so where an admin looks, every other page keeps working, and a run of that model
errors with the reason instead of crashing.
"""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.urls import reverse

from runs import campaigns, checks, execution
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from tests.evalsite.test_permissions import all_url_names
from tests.world import build_world, kwarg_value

SECRET = "sk-unreadable-0123456789abcdef"
OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()
UNREADABLE = "key unreadable, enter it again"


@pytest.fixture
def lost_key(settings):
    """Store `model`'s key under one encryption key, then replace it as rotate_keys was not run."""

    def lose(model: LanguageModel) -> LanguageModel:
        settings.MERGEABLE_ENCRYPTION_KEYS = [OLD]
        model.api_key = SECRET
        model.save()
        settings.MERGEABLE_ENCRYPTION_KEYS = [NEW]
        return LanguageModel.objects.get(pk=model.pk)

    return lose


@pytest.fixture
def admin(client_for, admin_user):
    return client_for(admin_user)


def test_it_says_the_key_is_unreadable_in_the_models_list_row_and_on_its_page(
    admin, admin_user, lost_key
):
    world = build_world(admin_user)
    model = lost_key(world["model"])
    assert model.key_hint == UNREADABLE

    listing = admin.get(reverse("runs:models"))
    edit = admin.get(reverse("runs:model_edit", args=[model.pk]))

    assert listing.status_code == edit.status_code == 200
    row = listing.content.decode().split(f'href="/models/{model.pk}/')[1].split("</tr>")[0]
    assert UNREADABLE in row
    assert UNREADABLE in edit.content.decode()


def test_it_breaks_no_other_page(client, admin_user, lost_key):
    world = build_world(admin_user)
    lost_key(world["model"])
    client.force_login(admin_user)
    failures = []
    for name, kwarg_names in all_url_names():
        url = reverse(name, kwargs={k: kwarg_value(world, k) for k in kwarg_names})
        code = client.get(url).status_code
        if code >= 500:
            failures.append(f"GET {url} ({name}) -> {code}")
    assert not failures, "\n".join(failures)


def test_it_reads_again_once_the_key_is_entered_again(admin, admin_user, lost_key):
    world = build_world(admin_user)
    model = lost_key(world["model"])
    response = admin.post(
        reverse("runs:model_edit", args=[model.pk]),
        {
            "name": model.name,
            "provider": model.provider,
            "script": model.script,
            "api_key": "sk-entered-again-0123456789",
            "input_per_mtok": "0",
            "output_per_mtok": "0",
            "params": "{}",
        },
    )
    assert response.status_code == 302
    model.refresh_from_db()
    assert not model.key_unreadable
    assert model.api_key == "sk-entered-again-0123456789"


def test_it_records_the_reason_when_the_connection_is_tested(db, lost_key):
    model = lost_key(
        LanguageModel.objects.create(
            name="lost", provider="openai", base_url="http://127.0.0.1:9/v1", model_id="m"
        )
    )
    checks.check_model_connection(model.pk)
    check = LanguageModel.objects.get(pk=model.pk).connection_check
    assert check["ok"] is False
    assert UNREADABLE in check["error"]


def test_a_run_of_the_model_errors_with_the_reason(db, make_repo, lost_key):
    path, sha = make_repo({"calc.py": "def add(a, b):\n    return a - b\n"})
    repository = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="fix-add",
        title="Fix add",
        instructions="add() is wrong",
        repository=repository,
        commit=sha,
    )
    model = lost_key(
        LanguageModel.objects.create(
            name="lost", provider="openai", base_url="http://127.0.0.1:9/v1", model_id="m"
        )
    )
    contestant = Contestant.objects.create(name="lost-builtin", model=model)
    run = campaigns.launch(prompt_set=prompt_set, contestants=[contestant]).runs.get()

    assert execution.execute(run.pk) == Run.ERRORED

    run.refresh_from_db()
    # The environment's fault, said plainly: not an internal error of Mergeable's.
    assert run.status_reason.startswith(f"Model lost: {UNREADABLE}")
    assert SECRET not in run.status_reason + run.error

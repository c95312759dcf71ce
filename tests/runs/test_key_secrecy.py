"""API keys and repository credentials are write-only: no page, download or log ever shows them."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.urls import reverse

from runs import checks
from runs.models import LanguageModel, Repository
from tests.fake_llm import FakeLLM
from tests.runs.test_curation_views import CURATION_URLS
from tests.world import KWARG_OBJECTS, build_world

KEY = "sk-mergeable-Vq81xTzK3pLw0Qz9w8"
PASSWORD = "hunter2-Pz7qKx"


@pytest.fixture
def admin(client_for, admin_user):
    return client_for(admin_user)


@pytest.fixture
def debug_logs(caplog):
    """Capture every log record at DEBUG, SQL included (tests run with DEBUG off)."""
    for name in (None, "django", "django.db.backends", "runs", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    connection.force_debug_cursor = True
    yield caplog
    connection.force_debug_cursor = False


def _model_data(**overrides) -> dict:
    data = {
        "name": "secret-model",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "model_id": "m",
        "api_key": "",
        "api_key_env": "",
        "input_per_mtok": "0",
        "output_per_mtok": "0",
        "params": "{}",
        "script": "",
    }
    data.update(overrides)
    return data


def _every_page(client, world: dict) -> dict[str, str]:
    """GET every curation page that answers GET, for the world and for `world['model']`."""
    bodies = {}
    for name, (kwargs_needed, post_only) in CURATION_URLS.items():
        if post_only:
            continue
        kwargs = {k: world[KWARG_OBJECTS[k]].pk for k in kwargs_needed}
        url = reverse(f"runs:{name}", kwargs=kwargs)
        response = client.get(url)
        assert response.status_code == 200, url
        bodies[url] = response.content.decode()
    for url in (reverse("dashboard"), reverse("runs:model_edit", args=[world["model"].pk])):
        bodies[url] = client.get(url).content.decode()
    return bodies


def _raw_column(model_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM runs_languagemodel WHERE id = %s", [model_id])
        return cursor.fetchone()[0]


def test_it_never_shows_or_logs_the_api_key(admin, admin_user, debug_logs):
    world = build_world(admin_user)
    response = admin.post(reverse("runs:model_create"), _model_data(api_key=KEY))
    assert response.status_code == 302
    model = LanguageModel.objects.get(name="secret-model")
    assert model.api_key == KEY  # usable by the worker...
    raw = _raw_column(model.pk)
    assert raw and KEY not in raw  # ...but encrypted at rest

    # A contestant on the model, so the contestants export includes it.
    admin.post(
        reverse("runs:contestant_create"),
        {
            "name": "secret-builtin",
            "harness": "builtin",
            "model": model.pk,
            "options": "{}",
            "benchmarks": "{}",
        },
    )
    checks.check_model_connection(model.pk)  # fails (nothing listens on port 9): an error text
    assert LanguageModel.objects.get(pk=model.pk).connection_check["ok"] is False

    world["model"] = model
    bodies = _every_page(admin, world)
    assert reverse("runs:contestants_export") in bodies
    for url, body in bodies.items():
        assert KEY not in body, f"the key appears on {url}"
        assert KEY[-8:] not in body, f"more than the last four characters appear on {url}"
    models_page = bodies[reverse("runs:models")]
    assert f"ending …{KEY[-4:]}" in models_page
    assert "secret-builtin" in bodies[reverse("runs:contestants_export")]

    records = debug_logs.records
    assert any(r.name == "django.db.backends" for r in records), "SQL logging was not captured"
    for record in records:
        assert KEY not in record.getMessage(), f"the key was logged by {record.name}"
        assert KEY not in repr(record.args)


def test_it_never_renders_the_key_back_into_a_form(admin):
    response = admin.post(reverse("runs:model_create"), _model_data(api_key=KEY, params="[1]"))
    assert response.status_code == 200  # invalid params: the form is shown again
    body = response.content.decode()
    assert 'type="password" name="api_key"' in body
    assert KEY not in body
    assert not LanguageModel.objects.exists()


def test_it_keeps_the_key_when_the_field_is_left_blank(admin, db):
    admin.post(reverse("runs:model_create"), _model_data(api_key=KEY))
    model = LanguageModel.objects.get()
    edit = reverse("runs:model_edit", kwargs={"model_id": model.pk})
    page = admin.get(edit).content.decode()
    assert KEY not in page and f"ending …{KEY[-4:]}" in page
    admin.post(edit, _model_data(api_key="", model_id="m2"))
    model.refresh_from_db()
    assert model.model_id == "m2" and model.api_key == KEY


def test_it_replaces_and_clears_the_key(admin, db):
    admin.post(reverse("runs:model_create"), _model_data(api_key=KEY))
    model = LanguageModel.objects.get()
    edit = reverse("runs:model_edit", kwargs={"model_id": model.pk})
    admin.post(edit, _model_data(api_key="sk-another-key-ABCD1234"))
    model.refresh_from_db()
    assert model.api_key == "sk-another-key-ABCD1234"
    response = admin.post(edit, _model_data(api_key="sk-x", clear_api_key="on"))
    assert "not both" in response.content.decode()
    admin.post(edit, _model_data(clear_api_key="on"))
    model.refresh_from_db()
    assert model.api_key == "" and model.key_hint == "none"


def test_it_keeps_a_key_echoed_by_a_provider_out_of_the_check(db):
    with FakeLLM([{"text": f"your key is {KEY}"}]) as llm:
        model = LanguageModel.objects.create(
            name="echo", provider="openai", base_url=llm.base_url_openai, model_id="m", api_key=KEY
        )
        checks.check_model_connection(model.pk)
    check = LanguageModel.objects.get().connection_check
    assert check["ok"] is True and KEY not in str(check)


# -- Repository credentials ----------------------------------------------------------------------

CREDENTIAL_URL = f"https://deploy:{PASSWORD}@127.0.0.1:9/shop.git"


def _repository_pages(client, repository: Repository) -> dict[str, str]:
    urls = [
        reverse("runs:repositories"),
        reverse("runs:repository_edit", kwargs={"repository_id": repository.pk}),
        reverse("runs:repository_status", kwargs={"repository_id": repository.pk}),
    ]
    return {url: client.get(url).content.decode() for url in urls}


def test_it_never_shows_the_password_in_a_repository_url(admin, db, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = True  # the URL is on loopback
    response = admin.post(
        reverse("runs:repository_create"), {"name": "shop", "url": CREDENTIAL_URL}
    )
    assert response.status_code == 302
    repository = Repository.objects.get()
    assert repository.url == CREDENTIAL_URL
    checks.check_repository(repository.pk)  # fails to connect: its error must be redacted
    assert Repository.objects.get().last_check["error"]
    for url, body in _repository_pages(admin, repository).items():
        assert PASSWORD not in body, f"the password appears on {url}"
    edit_page = _repository_pages(admin, repository)[
        reverse("runs:repository_edit", kwargs={"repository_id": repository.pk})
    ]
    assert 'value="https://***@127.0.0.1:9/shop.git"' in edit_page


def test_it_keeps_stored_credentials_unless_a_new_url_is_typed(admin, db, settings):
    settings.MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = True  # the URL is on loopback
    admin.post(reverse("runs:repository_create"), {"name": "shop", "url": CREDENTIAL_URL})
    repository = Repository.objects.get()
    edit = reverse("runs:repository_edit", kwargs={"repository_id": repository.pk})
    admin.post(edit, {"name": "shop", "url": repository.display_url, "default_branch": "dev"})
    repository.refresh_from_db()
    assert repository.url == CREDENTIAL_URL and repository.default_branch == "dev"
    admin.post(edit, {"name": "shop", "url": "https://git.example.com/shop.git"})
    repository.refresh_from_db()
    assert repository.url == "https://git.example.com/shop.git"


def test_it_redacts_credentials_when_a_bad_url_is_shown_again(admin, db):
    bad = f"https://deploy:{PASSWORD}@/no-host.git"
    response = admin.post(reverse("runs:repository_create"), {"name": "shop", "url": bad})
    assert response.status_code == 200
    body = response.content.decode()
    assert "This repository URL is not allowed" in body
    assert PASSWORD not in body

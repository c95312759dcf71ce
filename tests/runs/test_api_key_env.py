"""api_key_env names only variables that look like keys, never one of Mergeable's own secrets.

Its value is sent to the model's endpoint, which whoever curates models controls: naming
SECRET_KEY or DATABASE_URL there would hand the site's secrets to that server.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.files.contestants import import_contestants
from runs.files.strict import FormatError
from runs.models import KeyUnavailable, LanguageModel

SITE_SECRETS = [
    "SECRET_KEY",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "REDIS_URL",
    "MERGEABLE_ENCRYPTION_KEYS",
    "MERGEABLE_API_KEY",
    "DJANGO_TOKEN",
    "OLD_SECRET_KEY",
]
NOT_KEYS = ["OLLAMA_KEY", "PATH", "openai_api_key", "_API_KEY", "OPENAI-API_KEY", "HF_TOKEN2"]
REFUSED = [(name, "may not name") for name in SITE_SECRETS] + [
    (name, "must name a variable ending in _API_KEY or _TOKEN") for name in NOT_KEYS
]
ACCEPTED = ["OPENAI_API_KEY", "OLLAMA_API_KEY", "HF_TOKEN", "GROQ2_API_KEY"]


def _model_data(api_key_env: str) -> dict:
    return {
        "name": "env-model",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "model_id": "m",
        "api_key": "",
        "api_key_env": api_key_env,
        "input_per_mtok": "0",
        "output_per_mtok": "0",
        "params": "{}",
        "script": "",
    }


def _contestants_file(api_key_env: str) -> str:
    return (
        "models:\n"
        "  - name: env-model\n"
        "    provider: openai\n"
        "    base_url: http://127.0.0.1:9/v1\n"
        "    model: m\n"
        f"    api_key_env: {api_key_env}\n"
    )


@pytest.fixture
def admin(client_for, admin_user):
    return client_for(admin_user)


@pytest.mark.parametrize(("name", "rule"), REFUSED)
def test_it_refuses_a_name_that_does_not_look_like_a_key_in_the_model_form(admin, name, rule):
    response = admin.post(reverse("runs:model_create"), _model_data(name))

    assert response.status_code == 200
    [error] = response.context["form"].errors["api_key_env"]
    assert error.startswith(f"api_key_env {rule}")
    assert error in response.content.decode().replace("&#x27;", "'")
    assert not LanguageModel.objects.exists()


@pytest.mark.parametrize("name", ACCEPTED)
def test_it_accepts_a_key_like_name_in_the_model_form(admin, name):
    response = admin.post(reverse("runs:model_create"), _model_data(name))

    assert response.status_code == 302
    assert LanguageModel.objects.get().api_key_env == name


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "rule"), REFUSED)
def test_it_refuses_a_name_that_does_not_look_like_a_key_in_a_contestants_file(name, rule):
    with pytest.raises(FormatError) as raised:
        import_contestants(_contestants_file(name), filename="c.yaml")

    [error] = raised.value.errors
    assert error.startswith(f"c.yaml: models[0] (name 'env-model'): api_key_env: {rule}")
    assert not LanguageModel.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ACCEPTED)
def test_it_accepts_a_key_like_name_in_a_contestants_file(name):
    import_contestants(_contestants_file(name), filename="c.yaml")
    assert LanguageModel.objects.get().api_key_env == name


@pytest.mark.django_db
def test_it_never_reads_a_refused_variable_a_model_stored_before_the_rule(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://mergeable:hunter2-db@db/mergeable")
    model = LanguageModel.objects.create(
        name="old",
        provider="openai",
        base_url="http://x/v1",
        model_id="m",
        api_key_env="DATABASE_URL",
    )

    with pytest.raises(KeyUnavailable, match="api_key_env may not name 'DATABASE_URL'") as raised:
        model.provider_config()

    assert "hunter2-db" not in str(raised.value)
    assert model.key_hint == "from $DATABASE_URL"


@pytest.mark.django_db
def test_it_reads_an_allowed_variable(monkeypatch):
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-from-the-environment")
    model = LanguageModel.objects.create(
        name="ok",
        provider="openai",
        base_url="http://x/v1",
        model_id="m",
        api_key_env="OLLAMA_API_KEY",
    )
    assert model.resolved_api_key() == "sk-from-the-environment"

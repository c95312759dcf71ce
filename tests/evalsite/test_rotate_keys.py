"""rotate_keys: re-encrypting stored API keys with the newest encryption key."""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection

from runs.models import LanguageModel

OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


def _raw(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM runs_languagemodel WHERE name = %s", [name])
        return cursor.fetchone()[0]


def _model(name: str, api_key: str = "") -> LanguageModel:
    return LanguageModel.objects.create(
        name=name,
        provider="openai",
        base_url="http://127.0.0.1:1/v1",
        model_id="m",
        api_key=api_key,
    )


def _rotate() -> str:
    out = StringIO()
    call_command("rotate_keys", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_re_encrypts_every_key_so_the_old_key_can_be_dropped(settings):
    settings.MERGEABLE_ENCRYPTION_KEYS = [OLD]
    _model("first", "sk-first-0123456789")
    _model("second", "sk-second-0123456789")
    _model("keyless")
    before = _raw("first")

    settings.MERGEABLE_ENCRYPTION_KEYS = [NEW, OLD]
    output = _rotate()

    assert output.strip() == "Rotated 2 API key(s) to the newest encryption key."
    assert "sk-first" not in output
    assert _raw("first") != before
    assert _raw("keyless") == ""
    settings.MERGEABLE_ENCRYPTION_KEYS = [NEW]
    assert LanguageModel.objects.get(name="first").api_key == "sk-first-0123456789"
    assert LanguageModel.objects.get(name="second").api_key == "sk-second-0123456789"


@pytest.mark.django_db
def test_it_needs_the_old_key_until_keys_are_rotated(settings):
    settings.MERGEABLE_ENCRYPTION_KEYS = [OLD]
    _model("first", "sk-first-0123456789")

    settings.MERGEABLE_ENCRYPTION_KEYS = [NEW]
    assert LanguageModel.objects.get(name="first").key_unreadable


@pytest.mark.django_db
def test_it_rotates_nothing_when_one_key_cannot_be_decrypted(settings):
    settings.MERGEABLE_ENCRYPTION_KEYS = [OLD]
    _model("readable", "sk-readable-0123456789")
    settings.MERGEABLE_ENCRYPTION_KEYS = [NEW]
    _model("lost", "sk-lost-0123456789")
    readable_before = _raw("readable")

    settings.MERGEABLE_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), OLD]
    with pytest.raises(CommandError, match="No key was rotated.*lost"):
        _rotate()

    assert _raw("readable") == readable_before

"""EncryptedTextField: plain text in Python, Fernet tokens in the database."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.db import connection

from evalsite.fields import DecryptionError, UnreadableSecret, _fernet, decrypt
from runs.models import LanguageModel

SECRET = "sk-live-0123456789abcdef"
OLD = Fernet.generate_key().decode()
NEW = Fernet.generate_key().decode()


@pytest.fixture
def keys(settings):
    """Set MERGEABLE_ENCRYPTION_KEYS (newest first) for the rest of the test."""

    def use(*keys: str) -> None:
        settings.MERGEABLE_ENCRYPTION_KEYS = list(keys)
        _fernet.cache_clear()

    yield use
    _fernet.cache_clear()


def _create(api_key: str) -> LanguageModel:
    return LanguageModel.objects.create(
        name="model",
        provider="openai",
        base_url="http://127.0.0.1:1/v1",
        model_id="m",
        api_key=api_key,
    )


def _raw(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM runs_languagemodel WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_it_reads_back_the_plain_text_it_stored(keys):
    keys(NEW)
    pk = _create(SECRET).pk
    assert LanguageModel.objects.get(pk=pk).api_key == SECRET


@pytest.mark.django_db
def test_it_never_stores_the_plain_text(keys):
    keys(NEW)
    pk = _create(SECRET).pk
    raw = _raw(pk)
    assert SECRET not in raw
    assert Fernet(NEW).decrypt(raw.encode()).decode() == SECRET


@pytest.mark.django_db
def test_it_stores_an_empty_key_as_empty(keys):
    keys(NEW)
    pk = _create("").pk
    assert _raw(pk) == ""
    assert LanguageModel.objects.get(pk=pk).api_key == ""


@pytest.mark.django_db
def test_it_reads_data_no_configured_key_opens_as_unreadable_never_as_text(keys):
    keys(OLD)
    pk = _create(SECRET).pk
    token = _raw(pk)
    keys(NEW)
    model = LanguageModel.objects.get(pk=pk)
    assert isinstance(model.api_key, UnreadableSecret)
    assert model.api_key and model.api_key != token and model.api_key != SECRET
    assert token not in repr(model.api_key) and token not in str(model.api_key)
    with pytest.raises(DecryptionError, match="MERGEABLE_ENCRYPTION_KEYS"):
        decrypt(token)


@pytest.mark.django_db
def test_it_saves_an_unreadable_value_back_unchanged_so_the_old_key_still_opens_it(keys):
    keys(OLD)
    pk = _create(SECRET).pk
    token = _raw(pk)
    keys(NEW)
    model = LanguageModel.objects.get(pk=pk)
    model.full_clean()
    model.model_id = "renamed"
    model.save()
    assert _raw(pk) == token
    keys(NEW, OLD)
    assert LanguageModel.objects.get(pk=pk).api_key == SECRET


@pytest.mark.django_db
def test_it_reads_data_written_with_an_older_key_listed_second(keys):
    keys(OLD)
    pk = _create(SECRET).pk
    keys(NEW, OLD)
    model = LanguageModel.objects.get(pk=pk)
    assert model.api_key == SECRET

    # The newest key encrypts what is written from now on.
    model.save()
    assert Fernet(NEW).decrypt(_raw(pk).encode()).decode() == SECRET

"""An encrypted text field over cryptography's MultiFernet.

Keys come from ``MERGEABLE_ENCRYPTION_KEYS``, newest first: the newest encrypts, all decrypt, so
keys rotate by prepending a new one and running ``manage.py rotate_keys``. Ciphertext is never
returned as if it were the plain text: ``decrypt`` raises ``DecryptionError`` on data no key opens,
and the field reads such a value as an ``UnreadableSecret`` (the keys were replaced without
rotate_keys), so every page that loads the row still works and only using the secret fails.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class DecryptionError(Exception):
    pass


class UnreadableSecret:
    """A stored secret that no key in MERGEABLE_ENCRYPTION_KEYS decrypts.

    Truthy (a secret is stored), never equal to any text, and saved back exactly as it was read,
    so editing other fields of the row keeps the token for when the right key comes back.
    """

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableSecret) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)

    def __repr__(self) -> str:
        return "<UnreadableSecret>"

    __str__ = __repr__


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.MERGEABLE_ENCRYPTION_KEYS))


def encrypt(plain: str) -> str:
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "A stored secret cannot be decrypted with any key in MERGEABLE_ENCRYPTION_KEYS"
        ) from None


def rotate(token: str) -> str:
    try:
        return fernet().rotate(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError(
            "A stored secret cannot be decrypted with any key in MERGEABLE_ENCRYPTION_KEYS"
        ) from None


class EncryptedTextField(models.TextField):
    """Stores Fernet tokens; Python code sees plain text. Empty stays empty (no secret set)."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        try:
            return decrypt(value)
        except DecryptionError:
            return UnreadableSecret(value)

    def to_python(self, value):
        if isinstance(value, UnreadableSecret):
            return value
        return super().to_python(value)

    def get_prep_value(self, value):
        if isinstance(value, UnreadableSecret):
            return value.token
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)

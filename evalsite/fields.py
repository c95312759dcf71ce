"""An encrypted text field over cryptography's MultiFernet.

Keys come from ``MERGEABLE_ENCRYPTION_KEYS``, newest first: the newest encrypts, all decrypt, so
keys rotate by prepending a new one and running ``manage.py rotate_keys``. Data that no key can
decrypt raises ``DecryptionError``; ciphertext is never returned as if it were the plain text.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class DecryptionError(Exception):
    pass


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
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)

"""Secrets scrubbed from what Mergeable stores and shows.

An agent can print its model's key, a test can dump its environment, a setup command can echo a
token: all of it lands in artifacts, columns and exports that reviewers read and teams share.
`scrub` replaces every secret the worker knows with "[redacted]", also in the JSON-escaped,
URL-encoded and base64 forms a secret takes in logs and transcripts.

The secrets are every model's key (stored keys that decrypt, and the values of the variables named
by api_key_env), SECRET_KEY (and its fallbacks) and every MERGEABLE_ENCRYPTION_KEYS entry. Listing
them reads and decrypts every model's key, so the list is kept for a few seconds: a model saved in
this process is picked up at once, a change made by another process within CACHE_SECONDS.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

REDACTED = "[redacted]"
MIN_LENGTH = 8  # shorter values ("none", "test") would redact ordinary words
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class _Known:
    secrets: frozenset[str]
    forms: tuple[str, ...]  # every spelling to replace, longest first
    expires: float


_known: _Known | None = None
_lock = threading.Lock()


def known_secrets() -> frozenset[str]:
    """Every secret the worker knows that is at least MIN_LENGTH characters long."""
    return _current().secrets


def scrub(text: str) -> str:
    """`text` with every known secret, in any of its spellings, replaced by "[redacted]"."""
    if not text:
        return text
    for form in _current().forms:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def scrub_data(value: Any) -> Any:
    """A copy of JSON-like data (dicts, lists, strings) with every string scrubbed."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub_data(key): scrub_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(item) for item in value]
    return value


def scrub_artifact(name: str, content: str | bytes) -> str | bytes:
    """An artifact's content scrubbed; bytes stay bytes (undecodable ones kept as they were)."""
    if isinstance(content, bytes):
        text = content.decode("utf-8", "surrogateescape")
        scrubbed = scrub_artifact(name, text)
        return content if scrubbed == text else scrubbed.encode("utf-8", "surrogateescape")
    scrubbed = scrub(content)
    if scrubbed == content or not name.endswith(".json"):
        return scrubbed
    # In JSON text a secret that happens to follow a backslash escape ("\n" + secret[1:] when the
    # secret starts with "n") takes the escape's letter with it; scrub the values instead.
    try:
        json.loads(scrubbed)
        return scrubbed
    except ValueError:
        pass
    try:
        return json.dumps(scrub_data(json.loads(content)), ensure_ascii=False)
    except ValueError:
        return scrubbed  # not JSON to begin with


def forget() -> None:
    """Drop the cached list: the next scrub reads every secret again."""
    global _known
    _known = None


def _current() -> _Known:
    global _known
    known = _known
    if known is not None and time.monotonic() < known.expires:
        return known
    with _lock:
        if _known is None or time.monotonic() >= _known.expires:
            secrets = frozenset(s for s in _read_secrets() if len(s) >= MIN_LENGTH)
            _known = _Known(secrets, _spellings(secrets), time.monotonic() + CACHE_SECONDS)
        return _known


def _read_secrets() -> set[str]:
    # By name: runs.models calls scrub, so importing it here would be a cycle.
    language_model = apps.get_model("runs", "LanguageModel")
    secrets = language_model.objects.api_keys()
    secrets.add(settings.SECRET_KEY)
    secrets.update(getattr(settings, "SECRET_KEY_FALLBACKS", []))
    secrets.update(settings.MERGEABLE_ENCRYPTION_KEYS)
    return secrets


def _spellings(secrets: frozenset[str]) -> tuple[str, ...]:
    forms: set[str] = set()
    for secret in secrets:
        forms.update(
            {
                secret,
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                quote(secret, safe=""),
                quote_plus(secret),
            }
        )
        # Base64 of the secret on its own: only the characters its whole 3-byte groups decide,
        # which are the same wherever the secret starts at a group boundary of a longer text.
        data = secret.encode()
        length = len(data) // 3 * 4
        forms.add(base64.b64encode(data)[:length].decode())
        forms.add(base64.urlsafe_b64encode(data)[:length].decode())
    return tuple(sorted((f for f in forms if len(f) >= MIN_LENGTH), key=len, reverse=True))


@receiver([post_save, post_delete], sender="runs.LanguageModel")
def _model_changed(**kwargs) -> None:
    forget()


@receiver(setting_changed)
def _setting_changed(setting: str, **kwargs) -> None:
    if setting in ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "MERGEABLE_ENCRYPTION_KEYS"):
        forget()

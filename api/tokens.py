"""Personal API tokens: made, recognised, used, revoked.

A token reads ``mgb_<prefix>_<secret>``: the prefix (public, shown on the user's page) finds the
row, the SHA-256 digest of the whole token proves it. The token itself is returned once, by
`create`, and never stored or shown again.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.utils import timezone

from api.models import ApiToken

SCHEME = "mgb"
# last_used_at is written at most this often per token: a busy CI job must not turn every
# request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(user, name: str) -> tuple[ApiToken, str]:
    """A new token for `user`: the row, and the token text (shown to the user once)."""
    name = name.strip()
    if not name:
        raise ValueError("Name the token, e.g. after the CI job that uses it.")
    while True:
        prefix = secrets.token_hex(4)
        if not ApiToken.objects.filter(prefix=prefix).exists():
            break
    token = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiToken.objects.create(user=user, name=name[:100], prefix=prefix, digest=digest(token))
    return row, token


def authenticate(token: str) -> ApiToken | None:
    """The active token row `token` is, with its user, or None. Records the use."""
    scheme, _, rest = token.strip().partition("_")
    prefix, _, secret = rest.partition("_")
    if scheme != SCHEME or not prefix or not secret:
        return None
    row = (
        ApiToken.objects.active()
        .select_related("user")
        .filter(prefix=prefix, user__is_active=True)
        .first()
    )
    if row is None or not hmac.compare_digest(row.digest, digest(token.strip())):
        return None
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now
    return row


def revoke(row: ApiToken) -> bool:
    """Revoke the token; False if it already was."""
    return bool(
        ApiToken.objects.filter(pk=row.pk, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
    )

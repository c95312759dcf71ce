"""Personal tokens: made on the user's page and shown once, hashed at rest, revocable, acting
with the user's current role, recording when they were last used."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from api import tokens
from api.models import ApiToken
from evalsite.roles import LEAD, set_role
from tests.api.conftest import ApiClient

TOKEN = re.compile(r"mgb_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}")


def _create_on_page(client, name: str = "CI nightly") -> tuple[str, str]:
    response = client.post(reverse("api:tokens"), {"name": name})
    assert response.status_code == 201
    body = response.content.decode()
    [token] = TOKEN.findall(body)
    return token, body


def test_it_shows_a_new_token_once_and_stores_only_its_hash(client_for, scorer):
    client = client_for(scorer)
    token, body = _create_on_page(client)
    assert "shown only this once" in body
    assert "no-store" in client.post(reverse("api:tokens"), {"name": "x"})["Cache-Control"]

    row = ApiToken.objects.get(user=scorer, name="CI nightly")
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    stored = [str(value) for value in ApiToken.objects.filter(pk=row.pk).values().get().values()]
    secret = token.split("_", 2)[2]  # the random part may itself contain "_"
    assert not any(token in value or secret in value for value in stored)

    listing = client.get(reverse("api:tokens")).content.decode()
    assert "CI nightly" in listing and f"mgb_{row.prefix}_" in listing
    assert token not in listing


def test_it_refuses_a_token_without_a_name(client_for, scorer):
    response = client_for(scorer).post(reverse("api:tokens"), {"name": ""})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_a_token_acts_as_its_user_and_records_its_last_use(client_for, scorer):
    token, _ = _create_on_page(client_for(scorer))
    row = ApiToken.objects.get(user=scorer)
    assert row.last_used_at is None

    response = ApiClient(token).get("/api/me")

    assert response.status_code == 200
    assert response.json() == {
        "username": "sam",
        "role": "scorer",
        "token_name": "CI nightly",
        "token_prefix": row.prefix,
    }
    row.refresh_from_db()
    assert timezone.now() - row.last_used_at < timedelta(seconds=5)
    listing = client_for(scorer).get(reverse("api:tokens")).content.decode()
    assert "never" not in listing


def test_a_revoked_token_stops_working(client_for, scorer):
    client = client_for(scorer)
    token, _ = _create_on_page(client)
    row = ApiToken.objects.get(user=scorer)
    assert ApiClient(token).get("/api/me").status_code == 200

    response = client.post(reverse("api:token_revoke", args=[row.pk]))

    assert response.status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    refused = ApiClient(token).get("/api/me")
    assert refused.status_code == 401
    assert refused.json()["errors"][0]["field"] == "Authorization"
    assert "revoked" in client.get(reverse("api:tokens")).content.decode()


def test_nobody_revokes_another_users_token(client_for, scorer, admin_user):
    row, token = tokens.create(scorer, "mine")
    response = client_for(admin_user).post(reverse("api:token_revoke", args=[row.pk]))
    assert response.status_code == 404
    assert ApiClient(token).get("/api/me").status_code == 200


def test_a_token_follows_its_users_role_and_account(scorer):
    row, token = tokens.create(scorer, "ci")
    client = ApiClient(token)
    assert client.get("/api/campaigns/1").status_code == 403

    set_role(scorer, LEAD)
    assert client.get("/api/me").json()["role"] == "lead"
    assert client.get("/api/campaigns/1").status_code == 404  # allowed now; no such campaign

    scorer.is_active = False
    scorer.save()
    assert client.get("/api/me").status_code == 401


def test_it_refuses_tokens_that_are_not_quite_right(scorer):
    row, token = tokens.create(scorer, "ci")
    wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for attempt in (wrong_secret, f"mgb_{row.prefix}_", "mgb_ffffffff_" + token[14:], "nonsense"):
        response = ApiClient(attempt).get("/api/me")
        assert response.status_code == 401, attempt
    assert ApiClient(None).get("/api/me").status_code == 401


def test_outsiders_get_no_token_page(client_for, outsider):
    assert client_for(outsider).get(reverse("api:tokens")).status_code == 403

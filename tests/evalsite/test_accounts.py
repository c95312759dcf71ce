"""Accounts: changing one's password, invite links (single use, expiring), an admin's reset."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.urls import reverse
from django.utils import timezone

from evalsite.accounts import create_invite
from evalsite.models import Invite
from evalsite.roles import LEAD, SCORER, role_of
from tests.conftest import PASSWORD

NEW_PASSWORD = "a new and long passphrase 42"


def test_it_lets_anyone_change_their_password(scorer, client_for):
    client = client_for(scorer)
    response = client.post(
        reverse("password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    scorer.refresh_from_db()
    assert scorer.check_password(NEW_PASSWORD)
    assert client.get(reverse("dashboard")).status_code == 200  # still signed in


def test_it_refuses_a_wrong_old_password(scorer, client_for):
    response = client_for(scorer).post(
        reverse("password_change"),
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()


def test_an_invite_link_creates_one_account_once(admin_user, client_for, client):
    response = client_for(admin_user).post(reverse("invites"), {"role": LEAD, "days": "7"})
    body = response.content.decode()
    link = body.split('id="invite-link">')[1].split("<")[0]
    assert link.startswith("http://testserver/invite/")
    token = link.rsplit("/", 2)[-2]
    assert not Invite.objects.filter(token_hash=token).exists()  # only the hash is stored
    client.logout()

    form = {"username": "newlead", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    response = client.post(link, form)
    assert response.status_code == 302
    user = get_user_model().objects.get(username="newlead")
    assert role_of(user) == LEAD
    assert client.get(reverse("dashboard")).status_code == 200  # signed in

    client.logout()
    again = client.post(link, {**form, "username": "second"})
    assert again.status_code == 410 and "has been used" in again.content.decode()
    assert not get_user_model().objects.filter(username="second").exists()


def test_an_expired_invite_does_nothing(admin_user, client):
    invite, token = create_invite(SCORER, 1, admin_user)
    Invite.objects.filter(pk=invite.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    url = reverse("invite_accept", args=[token])
    assert client.get(url).status_code == 410
    form = {"username": "late", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    assert client.post(url, form).status_code == 410
    assert not get_user_model().objects.filter(username="late").exists()


def test_an_invite_checks_the_password(admin_user, client):
    _, token = create_invite(SCORER, 1, admin_user)
    response = client.post(
        reverse("invite_accept", args=[token]),
        {"username": "weak", "password": "123", "password_again": "123"},
    )
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="weak").exists()


def test_only_admins_make_invites_and_reset_passwords(lead, scorer, client_for):
    client = client_for(lead)
    assert client.post(reverse("invites"), {"role": "admin", "days": "7"}).status_code == 403
    url = reverse("user_password_reset", args=[scorer.pk])
    assert client.post(url, {"new_password1": "x", "new_password2": "x"}).status_code == 403
    assert not Invite.objects.exists()


def test_an_admin_resets_a_password(admin_user, scorer, client_for):
    response = client_for(admin_user).post(
        reverse("user_password_reset", args=[scorer.pk]),
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    scorer.refresh_from_db()
    assert scorer.check_password(NEW_PASSWORD)

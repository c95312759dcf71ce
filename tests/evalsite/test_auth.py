"""Signing in and out, user management, and the Content-Security-Policy every page keeps."""

from __future__ import annotations

import os
import re
import select
import signal
import stat
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from evalsite.roles import ADMIN, LEAD, SCORER, role_of
from tests.conftest import PASSWORD
from tests.world import build_world

NEW_PASSWORD = "plum-kettle-orbit-92"


def _log_in(client, username: str, password: str):
    return client.post(reverse("login"), {"username": username, "password": password})


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def _fresh(user):
    return get_user_model().objects.get(pk=user.pk)


# --- Logging in and out --------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_shows_the_login_form_to_anonymous_visitors(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Log in to Mergeable" in page
    assert 'name="username"' in page and 'name="password"' in page


def test_it_lands_on_the_dashboard_after_logging_in(client, scorer):
    response = _log_in(client, "sam", PASSWORD)
    assert response.status_code == 302
    assert response.url == reverse("dashboard")
    dashboard = client.get(response.url)
    assert dashboard.status_code == 200
    assert "<h1>Dashboard</h1>" in dashboard.content.decode()


def test_it_returns_to_the_page_asked_for_after_logging_in(client, admin_user):
    wanted = reverse("users")
    response = client.post(
        reverse("login"), {"username": "ada", "password": PASSWORD, "next": wanted}
    )
    assert response.url == wanted


def test_it_rejects_a_wrong_password_with_an_error(client, scorer):
    response = _log_in(client, "sam", "not-the-password")
    assert response.status_code == 200
    alert = re.search(r'role="alert">(.*?)</p>', response.content.decode(), flags=re.DOTALL)
    assert alert and "Please enter a correct username and password" in alert[1]
    assert not _logged_in(client)


def test_it_locks_out_after_too_many_failures(client, scorer, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        _log_in(client, "sam", "guess")

    # Even the right password is refused now.
    response = _log_in(client, "sam", PASSWORD)
    assert response.status_code == 429
    assert not _logged_in(client)


def test_it_lets_a_user_in_before_the_failure_limit(client, scorer, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(2):
        _log_in(client, "sam", "guess")
    assert _log_in(client, "sam", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_it_ends_the_session_on_logout(client_for, scorer):
    client = client_for(scorer)
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert response.url == reverse("login")
    assert not _logged_in(client)
    assert client.get(reverse("dashboard")).status_code == 302


def test_it_does_not_log_out_on_a_get(client_for, scorer):
    client = client_for(scorer)
    assert client.get(reverse("logout")).status_code == 405
    assert _logged_in(client)


def test_a_session_ends_when_it_expires_and_a_forged_one_never_starts(client, scorer, settings):
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    assert _log_in(client, "sam", PASSWORD).status_code == 302
    assert client.get(reverse("scoring:queue")).status_code == 200
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    Session.objects.filter(session_key=key).update(expire_date=timezone.now())
    response = client.get(reverse("scoring:queue"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))

    assert _log_in(client, "sam", PASSWORD).status_code == 302
    client.cookies[settings.SESSION_COOKIE_NAME] = "x" * 32  # no such session
    response = client.get(reverse("scoring:queue"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_a_login_moves_the_session_to_a_new_key_and_the_old_key_signs_in_no_one(
    client, scorer, settings
):
    """Against session fixation: a key someone knew before the login (a planted cookie) is gone
    after it, and what the session held comes along under the new key."""
    from django.contrib.sessions.models import Session
    from django.test import Client

    session = client.session
    session["seen_intro"] = True
    session.save()
    planted = session.session_key
    assert _log_in(client, "sam", PASSWORD).status_code == 302

    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert key != planted
    assert not Session.objects.filter(session_key=planted).exists()
    held = Session.objects.get(session_key=key).get_decoded()
    assert held["_auth_user_id"] == str(scorer.pk) and held["seen_intro"] is True
    assert client.get(reverse("scoring:queue")).status_code == 200
    intruder = Client()
    intruder.cookies[settings.SESSION_COOKIE_NAME] = planted
    response = intruder.get(reverse("scoring:queue"))
    assert response.status_code == 302 and response.url.startswith(reverse("login"))


def test_it_checks_a_wrong_password_once(client, scorer, monkeypatch):
    # Two backends could check it (see evalsite.roles.RoleBackend); each check costs tens of
    # milliseconds of CPU on purpose.
    from django.contrib.auth.hashers import check_password

    checked = []
    monkeypatch.setattr(
        "django.contrib.auth.base_user.check_password",
        lambda *args, **kwargs: checked.append(args[0]) or check_password(*args, **kwargs),
    )
    assert _log_in(client, "sam", "not-the-password").status_code == 200
    assert checked == ["not-the-password"]
    assert not _logged_in(client)


def test_a_session_signed_in_before_the_role_backend_stays_signed_in(client, lead):
    client.force_login(lead, backend="django.contrib.auth.backends.ModelBackend")
    assert client.get(reverse("dashboard")).status_code == 200
    assert client.get(reverse("scoring:leaderboard")).status_code == 200  # a lead's page


def test_a_page_reads_the_user_and_their_role_in_one_query(client_for, lead):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(lead)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("scoring:leaderboard")).status_code == 200
    users = [q["sql"] for q in queries.captured_queries if '"username"' in q["sql"]]
    groups = [q["sql"] for q in queries.captured_queries if "auth_group" in q["sql"]]
    assert len(users) == 1 and groups == users


def test_a_role_taken_away_is_gone_on_the_next_page(client_for, lead):
    from evalsite.roles import set_role

    client = client_for(lead)
    assert client.get(reverse("scoring:leaderboard")).status_code == 200
    set_role(lead, SCORER)
    assert client.get(reverse("scoring:leaderboard")).status_code == 403
    set_role(lead, None)
    assert client.get(reverse("scoring:queue")).status_code == 403


@pytest.fixture
def production_hashers(settings):
    """The site's own hashers (the suite otherwise uses a fast one)."""
    from evalsite import settings as site_settings

    settings.PASSWORD_HASHERS = site_settings.PASSWORD_HASHERS


def test_it_stores_new_passwords_with_argon2id(production_hashers, db):
    user = get_user_model().objects.create_user(username="ari", password=PASSWORD)
    assert user.password.startswith("argon2$argon2id$")
    assert "m=24576,t=2,p=1" in user.password
    assert user.check_password(PASSWORD) and not user.check_password("wrong")


def test_it_rewrites_an_argon2_hash_of_other_parameters_on_the_next_login(
    production_hashers, client, db
):
    from django.contrib.auth.hashers import Argon2PasswordHasher

    older = Argon2PasswordHasher()
    older.memory_cost, older.parallelism = 32 * 1024, 2
    user = get_user_model().objects.create(
        username="two-lanes", password=older.encode(PASSWORD, older.salt())
    )
    assert "m=32768,t=2,p=2" in user.password
    assert _log_in(client, "two-lanes", PASSWORD).status_code == 302
    assert "m=24576,t=2,p=1" in _fresh(user).password


def test_it_upgrades_an_older_pbkdf2_hash_on_the_next_login(production_hashers, client, db):
    from django.contrib.auth.hashers import make_password

    user = get_user_model().objects.create(
        username="old-timer",
        password=make_password(PASSWORD, hasher="pbkdf2_sha256"),
    )
    assert user.password.startswith("pbkdf2_sha256$")
    assert _log_in(client, "old-timer", PASSWORD).status_code == 302
    assert _fresh(user).password.startswith("argon2$argon2id$")


def test_passwords_are_hashed_one_at_a_time_on_one_thread(production_hashers, monkeypatch):
    """Six logins at once in one process: each hash runs on the same thread, never two at once
    (a thread that hashes keeps 24 MiB of its own: see evalsite/hashers.py), and each login still
    gets its own answer."""
    from argon2 import _password_hasher as argon2_hasher
    from django.contrib.auth.hashers import check_password, make_password

    encoded = make_password(PASSWORD)
    threads, running, most = set(), [0], [0]
    lock = threading.Lock()
    verify_secret = argon2_hasher.verify_secret

    def watched(*args):
        with lock:
            threads.add(threading.get_ident())
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # long enough for the other logins to arrive meanwhile
            return verify_secret(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(argon2_hasher, "verify_secret", watched)  # what it calls
    passwords = [PASSWORD, "wrong"] * 3
    with ThreadPoolExecutor(max_workers=len(passwords)) as logins:
        answers = list(logins.map(lambda password: check_password(password, encoded), passwords))
    assert answers == [True, False] * 3
    assert most[0] == 1
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_a_forked_web_worker_hashes_on_a_thread_of_its_own(production_hashers):
    """gunicorn forks its workers from a master that has hashed (its warm-up): a child must not
    hand its logins to the parent's hashing thread, which it does not have."""
    from django.contrib.auth.hashers import check_password, make_password

    from evalsite import hashers

    hashers.warm_up()  # this process's hashing thread exists
    encoded = make_password(PASSWORD)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded, use of fork()"
        child = os.fork()
    if child == 0:  # pragma: no cover (the child reports through the pipe)
        try:
            os.write(write_end, b"yes" if check_password(PASSWORD, encoded) else b"no")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        assert ready, "the forked child's login never finished hashing"
        assert os.read(read_end, 3) == b"yes"
    finally:
        os.close(read_end)
        if not ready:
            os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["dashboard", "users", "user_create"])
def test_it_sends_anonymous_visitors_to_the_login_page(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url == f"{reverse('login')}?next={reverse(name)}"


# --- Management commands -------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_creates_a_user_with_a_role_from_the_command_line():
    out = StringIO()
    call_command("create_user", "carol", "--role", LEAD, stdout=out)
    user = get_user_model().objects.get(username="carol")
    assert role_of(user) == LEAD
    password = re.search(r"with password (\S+)", out.getvalue())[1]
    assert user.check_password(password)


@pytest.mark.django_db
def test_it_refuses_to_create_a_user_twice():
    call_command(
        "create_user", "carol", "--role", SCORER, "--password", NEW_PASSWORD, stdout=StringIO()
    )
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_user", "Carol", "--role", ADMIN, stdout=StringIO())
    assert get_user_model().objects.filter(username__iexact="carol").count() == 1
    assert role_of(get_user_model().objects.get(username="carol")) == SCORER


def _ensure_admin() -> str:
    out = StringIO()
    call_command("ensure_admin", stdout=out, no_color=True)
    return re.search(r"Mergeable login:\s+admin / (\S+)", out.getvalue())[1]


@pytest.mark.django_db
def test_it_prints_the_same_admin_login_on_every_run(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("MERGEABLE_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MERGEABLE_ADMIN_USER", raising=False)
    settings.VAR_DIR = tmp_path / "var"

    first = _ensure_admin()
    second = _ensure_admin()

    assert first == second
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(first)
    assert role_of(admin) == ADMIN
    stored = tmp_path / "var" / "admin-password"
    assert stored.read_text().strip() == first
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert get_user_model().objects.filter(username="admin").count() == 1


@pytest.mark.django_db
def test_it_uses_the_admin_password_from_the_environment(settings, tmp_path, monkeypatch):
    settings.VAR_DIR = tmp_path / "var"
    monkeypatch.setenv("MERGEABLE_ADMIN_PASSWORD", NEW_PASSWORD)
    assert _ensure_admin() == NEW_PASSWORD
    assert get_user_model().objects.get(username="admin").check_password(NEW_PASSWORD)
    assert not (tmp_path / "var" / "admin-password").exists()


# --- Managing users ------------------------------------------------------------------------------


def test_it_lets_an_admin_create_a_user_with_a_role(client_for, admin_user):
    client = client_for(admin_user)
    response = client.post(
        reverse("user_create"),
        {
            "username": "carol",
            "email": "carol@example.com",
            "role": SCORER,
            "password": NEW_PASSWORD,
        },
    )
    assert response.status_code == 302
    carol = get_user_model().objects.get(username="carol")
    assert role_of(carol) == SCORER
    assert carol.check_password(NEW_PASSWORD)
    assert "carol" in client.get(reverse("users")).content.decode()


def test_it_refuses_a_weak_password_for_a_new_user(client_for, admin_user):
    response = client_for(admin_user).post(
        reverse("user_create"), {"username": "carol", "role": SCORER, "password": "12345678"}
    )
    assert response.status_code == 200
    assert not get_user_model().objects.filter(username="carol").exists()


def test_it_lets_an_admin_change_a_role(client_for, admin_user, scorer):
    response = client_for(admin_user).post(
        reverse("user_edit", args=[scorer.pk]), {"role": LEAD, "is_active": "on"}
    )
    assert response.status_code == 302
    assert role_of(_fresh(scorer)) == LEAD


def test_it_keeps_an_admin_from_removing_their_own_admin_role(client_for, admin_user):
    response = client_for(admin_user).post(
        reverse("user_edit", args=[admin_user.pk]), {"role": LEAD, "is_active": "on"}
    )
    assert response.status_code == 200
    assert "You cannot remove your own admin role." in response.content.decode()
    assert role_of(_fresh(admin_user)) == ADMIN


def test_it_keeps_user_management_from_leads(client_for, lead, scorer):
    client = client_for(lead)
    assert client.get(reverse("users")).status_code == 403
    response = client.post(
        reverse("user_edit", args=[scorer.pk]), {"role": ADMIN, "is_active": "on"}
    )
    assert response.status_code == 403
    assert role_of(_fresh(scorer)) == SCORER


# --- Content-Security-Policy ---------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _csp_violations(response) -> list[str]:
    """What in this page a strict CSP would block or that needs 'unsafe-inline' to work."""
    policy = response.headers.get("Content-Security-Policy", "")
    nonce = re.search(r"'nonce-([^']+)'", policy)
    problems = [] if nonce else [f"no nonce in the policy {policy!r}"]
    if "unsafe-inline" in policy or "unsafe-eval" in policy:
        problems.append(f"unsafe source in {policy!r}")
    parser = _Tags()
    parser.feed(response.content.decode())
    for tag, attrs in parser.tags:
        if tag == "script" and (not nonce or attrs.get("nonce") != nonce[1]):
            problems.append(f"script without the nonce: {attrs}")
        if tag == "style":
            problems.append("inline <style> element")
        if "style" in attrs:
            problems.append(f"style attribute on <{tag}>")
        problems += [f"{name} handler on <{tag}>" for name in attrs if name.startswith("on")]
    return problems


@pytest.fixture
def pages(client_for, admin_user, scorer):
    """The foundation's pages as an admin sees them, over a world with runs and reviews."""
    build_world(admin_user)
    client = client_for(admin_user)
    return {
        "dashboard": lambda: client.get(reverse("dashboard")),
        "users": lambda: client.get(reverse("users")),
        "user_create": lambda: client.get(reverse("user_create")),
        "user_edit": lambda: client.get(reverse("user_edit", args=[scorer.pk])),
        "user_create_errors": lambda: client.post(reverse("user_create"), {"username": ""}),
    }


@pytest.mark.parametrize(
    "name", ["dashboard", "users", "user_create", "user_edit", "user_create_errors"]
)
def test_it_serves_pages_that_need_no_inline_script_or_style(pages, name):
    response = pages[name]()
    assert response.status_code == 200
    assert _csp_violations(response) == []


@pytest.mark.django_db
def test_it_serves_the_login_page_under_the_same_policy(client):
    assert _csp_violations(client.get(reverse("login"))) == []
    assert _csp_violations(_log_in(client, "nobody", "wrong")) == []


def test_it_sends_the_policy_on_error_pages_too(client_for, scorer):
    client = client_for(scorer)
    for response in (client.get(reverse("users")), client.get("/no-such-page/")):
        assert response.status_code in (403, 404)
        assert _csp_violations(response) == []


def test_it_uses_a_fresh_nonce_for_every_response(client_for, scorer):
    client = client_for(scorer)
    policies = {client.get(reverse("dashboard")).headers["Content-Security-Policy"] for _ in "ab"}
    assert len(policies) == 2

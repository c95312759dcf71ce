"""The permission matrix: every URL of the project, and what each role gets from it.

A URL pattern missing from MATRIX fails the test, so a new page cannot ship without a decision
about who may see it. Values: the least role that may use the page ("public" for everyone).
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.world import build_world, kwarg_value

MATRIX: dict[str, str] = {
    "login": "public",
    "logout": "public",
    "dashboard": "scorer",
    "users": "admin",
    "user_create": "admin",
    "user_edit": "admin",
    "user_password_reset": "admin",
    "invites": "admin",
    "invite_accept": "public",  # the invited person has no account yet
    "password_change": "scorer",  # any signed-in user; the matrix's least role
}
# Each area's views add their rows here (kept beside the area's own tests).
from tests.api.matrix import MATRIX as API_MATRIX  # noqa: E402
from tests.api.matrix import TOKEN_API_NAMESPACE  # noqa: E402
from tests.runs.matrix import MATRIX as RUNS_MATRIX  # noqa: E402
from tests.scoring.matrix import MATRIX as SCORING_MATRIX  # noqa: E402

MATRIX = {**MATRIX, **RUNS_MATRIX, **SCORING_MATRIX, **API_MATRIX}
RANK = {"public": 0, "scorer": 1, "lead": 2, "admin": 3}


def _walk(patterns, namespace=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == TOKEN_API_NAMESPACE:
                continue  # answers with JSON, not the login page: tests/api/test_roles.py
            ns = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _walk(entry.url_patterns, ns)
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{namespace}{entry.name}", list(entry.pattern.converters)


def all_url_names():
    return list(_walk(get_resolver().url_patterns))


def test_it_has_every_url_in_the_matrix():
    names = {name for name, _ in all_url_names()}
    missing = sorted(names - MATRIX.keys())
    assert not missing, f"URL patterns missing from the permission matrix: {missing}"
    stale = sorted(MATRIX.keys() - names)
    assert not stale, f"Matrix rows for URLs that no longer exist: {stale}"


def test_it_gives_each_role_what_the_matrix_says(client, admin_user, lead, scorer, outsider):
    world = build_world(scorer)
    people = {
        "anonymous": None,
        "outsider": outsider,
        "scorer": scorer,
        "lead": lead,
        "admin": admin_user,
    }
    ranks = {"anonymous": -1, "outsider": 0, "scorer": 1, "lead": 2, "admin": 3}
    failures = []
    for name, kwarg_names in all_url_names():
        kwargs = {k: kwarg_value(world, k) for k in kwarg_names}
        url = reverse(name, kwargs=kwargs)
        needed = RANK[MATRIX[name]]
        for who, user in people.items():
            client.logout()
            if user is not None:
                client.force_login(user)
            response = client.get(url)
            code = response.status_code
            to_login = code == 302 and response["Location"].startswith(reverse("login"))
            if needed == 0:
                ok = code < 400 or code == 405
            elif who == "anonymous":
                ok = to_login
            elif ranks[who] < needed:
                ok = code == 403
            else:
                ok = (code < 400 or code == 405) and not to_login
            if not ok:
                failures.append(f"{who} GET {url} ({name}) -> {code}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("role", ["scorer", "lead"])
def test_it_hides_admin_navigation_from_lower_roles(db, client, role, request):
    user = request.getfixturevalue("scorer" if role == "scorer" else "lead")
    client.force_login(user)
    body = client.get(reverse("dashboard")).content.decode()
    assert reverse("users") not in body

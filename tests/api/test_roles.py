"""Every operation of the token API asks for the role its page asks for: the role below gets a
403 in JSON, the role itself gets through, and no token at all gets a 401."""

from __future__ import annotations

import pytest

from api import series
from api.endpoints import api
from runs.models import RunImport

PROMPT_SET_FILE = "name: backend\nprompts: []\n"
CONTESTANTS_FILE = "models: []\ncontestants: []\n"


def _operations(world: dict) -> list[tuple[str, str, str, str, object]]:
    """(method, schema path, least role, concrete path, data) for every operation."""
    c = world["campaign"].pk
    s = world["series"].pk
    i = world["import"].pk
    return [
        ("GET", "/api/me", "scorer", "/api/me", None),
        ("POST", "/api/prompt-sets/import", "admin", "/api/prompt-sets/import", PROMPT_SET_FILE),
        ("GET", "/api/prompt-sets/{name}/export", "admin", "/api/prompt-sets/backend/export", None),
        ("POST", "/api/contestants/import", "admin", "/api/contestants/import", CONTESTANTS_FILE),
        ("GET", "/api/contestants/export", "admin", "/api/contestants/export", None),
        ("POST", "/api/campaigns", "lead", "/api/campaigns",
         {"prompt_set": "backend", "contestants": ["alpha"]}),
        ("GET", "/api/campaigns/{campaign_id}", "lead", f"/api/campaigns/{c}", None),
        ("GET", "/api/campaigns/{campaign_id}/results", "lead", f"/api/campaigns/{c}/results", None),
        ("POST", "/api/campaigns/{campaign_id}/rerun", "lead", f"/api/campaigns/{c}/rerun",
         {"contestant": "alpha", "model": "model-b"}),
        ("PUT", "/api/campaigns/{campaign_id}/schedule", "lead", f"/api/campaigns/{c}/schedule",
         {"every_weeks": 2}),
        ("DELETE", "/api/campaigns/{campaign_id}/schedule", "lead",
         f"/api/campaigns/{c}/schedule", None),
        ("GET", "/api/series/{series_id}", "lead", f"/api/series/{s}", None),
        ("POST", "/api/runs/import", "lead", "/api/runs/import", {}),
        ("GET", "/api/runs/import/{import_id}", "lead", f"/api/runs/import/{i}", None),
        ("GET", "/api/leaderboard", "lead", "/api/leaderboard", None),
    ]  # fmt: skip


BELOW = {"scorer": "outsider", "lead": "scorer", "admin": "lead"}


@pytest.fixture
def world(curated, lead):
    job = RunImport.objects.create(
        prompt=curated["prompt_set"].prompts.first(), contestant_name="x"
    )
    return {
        **curated,
        "series": series.series_for(curated["campaign"], user=lead),
        "import": job,
    }


def _send(client, method: str, path: str, data):
    if isinstance(data, str):
        return client.post(path, data, content_type="application/yaml")
    if path == "/api/runs/import":
        return client.post(path, data, content_type=None)
    return client.request(method, path, data)


def test_the_table_covers_every_operation(world):
    schema = api.get_openapi_schema(path_prefix="/api/")
    documented = {(m.upper(), p) for p, methods in schema["paths"].items() for m in methods}
    assert documented == {(method, path) for method, path, *_ in _operations(world)}


def test_every_operation_refuses_the_role_below_and_admits_its_own(
    world, api_as, admin_user, lead, scorer, outsider
):
    people = {"admin": admin_user, "lead": lead, "scorer": scorer, "outsider": outsider}
    failures = []
    for method, _template, role, path, data in _operations(world):
        below = _send(api_as(people[BELOW[role]]), method, path, data)
        if below.status_code != 403 or below.json()["errors"][0]["field"] is not None:
            failures.append(f"{BELOW[role]} {method} {path} -> {below.status_code}")
        elif role not in below.json()["errors"][0]["message"]:
            failures.append(f"{method} {path}: the 403 does not name the role {role}")
        allowed = _send(api_as(people[role]), method, path, data)
        if allowed.status_code in (401, 403) or allowed.status_code >= 500:
            failures.append(f"{role} {method} {path} -> {allowed.status_code}")
        anonymous = _send(api_as(None), method, path, data)
        if anonymous.status_code != 401 or "errors" not in anonymous.json():
            failures.append(f"anonymous {method} {path} -> {anonymous.status_code}")
    assert not failures, "\n".join(failures)


def test_the_openapi_descriptions_name_each_operations_role(world):
    schema = api.get_openapi_schema(path_prefix="/api/")
    for method, template, role, _path, _data in _operations(world):
        description = schema["paths"][template][method.lower()]["description"]
        assert f"Needs the **{role}** role." in description, (method, template)

"""What each operation of the token API does, and how it answers bad input: as JSON naming the
field, with the same rules as the pages and the management commands."""

from __future__ import annotations

import json

import yaml
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from runs.models import Campaign, Contestant, LanguageModel, PromptSet, RunImport
from scoring import exports
from tests.world import build_world

SECRET = "sk-live-secret-key-0123456789"


def _prompt_set_file(path, sha: str, **extra) -> str:
    prompt = {
        "key": "greet",
        "title": "Say hello",
        "repository": "origin",
        "commit": sha,
        "instructions": "Add a greeting.",
        **extra,
    }
    return yaml.safe_dump(
        {
            "name": "from-ci",
            "repositories": [{"name": "origin", "url": str(path)}],
            "prompts": [prompt],
        }
    )


def _fields(response) -> set[str | None]:
    return {error["field"] for error in response.json()["errors"]}


# -- Files ---------------------------------------------------------------------------------------


def test_it_imports_a_prompt_set_and_exports_it_unchanged(api_as, admin_user, make_repo):
    path, sha = make_repo({"README.md": "hi\n"})
    client = api_as(admin_user)

    response = client.post(
        "/api/prompt-sets/import", _prompt_set_file(path, sha[:10]), content_type="application/yaml"
    )

    assert response.status_code == 200, response.content
    report = response.json()
    assert "prompt set from-ci" in report["created"] and "prompt greet" in report["created"]
    assert PromptSet.objects.get(name="from-ci").prompts.get().commit == sha  # resolved
    exported = client.get("/api/prompt-sets/from-ci/export")
    assert exported["Content-Type"].startswith("application/yaml")
    again = client.post(
        "/api/prompt-sets/import", exported.content, content_type="application/yaml"
    ).json()
    assert again["created"] == [] and again["updated"] == []


def test_a_bad_prompt_set_file_stores_nothing_and_names_each_field(api_as, admin_user, make_repo):
    path, sha = make_repo({"README.md": "hi\n"})
    text = _prompt_set_file(path, sha, time_limit="soon", colour="blue")

    response = api_as(admin_user).post(
        "/api/prompt-sets/import", text, content_type="application/yaml"
    )

    assert response.status_code == 400
    assert {"time_limit", "colour"} <= _fields(response)
    assert all("prompts[0]" in e["message"] for e in response.json()["errors"])
    assert not PromptSet.objects.filter(name="from-ci").exists()


def test_a_file_that_is_not_yaml_is_an_error_about_the_body(api_as, admin_user):
    response = api_as(admin_user).post(
        "/api/prompt-sets/import", "name: [unclosed", content_type="application/yaml"
    )
    assert response.status_code == 400
    assert _fields(response) == {"body"}
    assert "invalid YAML" in response.json()["errors"][0]["message"]


def test_it_imports_and_exports_contestants_without_ever_showing_a_key(api_as, admin_user):
    client = api_as(admin_user)
    text = yaml.safe_dump(
        {
            "models": [
                {
                    "name": "remote",
                    "provider": "openai",
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "m",
                    "api_key": SECRET,
                }
            ],
            "contestants": [{"name": "remote-builtin", "harness": "builtin", "model": "remote"}],
        }
    )
    imported = client.post("/api/contestants/import", text, content_type="application/yaml")
    assert imported.status_code == 200
    assert imported.json()["created"] == ["model remote", "contestant remote-builtin"]
    assert LanguageModel.objects.get(name="remote").api_key == SECRET

    exported = client.get("/api/contestants/export", names="remote-builtin")
    assert exported.status_code == 200
    document = yaml.safe_load(exported.content)
    assert document["contestants"][0]["name"] == "remote-builtin"
    missing = client.get("/api/contestants/export", names="remote-builtin,ghost")
    assert missing.status_code == 404 and _fields(missing) == {"names"}

    bodies = [imported.content, exported.content, missing.content]
    bodies.append(client.get("/api/contestants/export").content)
    assert not any(SECRET.encode() in body for body in bodies)


def test_a_bad_contestants_file_names_the_field(api_as, admin_user):
    text = "contestants:\n  - {name: x, harness: builtin, model: nowhere}\n"
    response = api_as(admin_user).post(
        "/api/contestants/import", text, content_type="application/yaml"
    )
    assert response.status_code == 400
    assert _fields(response) == {"model"}
    assert not Contestant.objects.filter(name="x").exists()


# -- Campaigns -----------------------------------------------------------------------------------


def test_it_launches_a_campaign_and_reports_its_runs(api_as, lead, curated):
    response = api_as(lead).post(
        "/api/campaigns",
        {"prompt_set": "backend", "contestants": ["alpha", "beta"], "repeats": 2, "name": "CI"},
    )

    assert response.status_code == 201, response.content
    body = response.json()
    campaign = Campaign.objects.get(pk=body["id"])
    assert campaign.name == "CI" and campaign.created_by == lead
    assert body["progress"] == {"total": 8, "ended": 0, "counts": {"queued": 8}}
    assert len(body["runs"]) == 8 and {r["contestant"] for r in body["runs"]} == {"alpha", "beta"}
    assert body["url"].endswith(campaign.get_absolute_url())
    status = api_as(lead).get(f"/api/campaigns/{campaign.pk}").json()
    assert status["runs"] == body["runs"] and status["contestants"] == ["alpha", "beta"]


def test_launch_errors_name_their_field(api_as, lead, curated):
    client = api_as(lead)
    unknown = client.post("/api/campaigns", {"prompt_set": "nope", "contestants": ["ghost"]})
    assert unknown.status_code == 400 and _fields(unknown) == {"prompt_set", "contestants"}

    too_many = client.post(
        "/api/campaigns", {"prompt_set": "backend", "contestants": ["alpha"], "repeats": 50}
    )
    assert too_many.status_code == 400 and _fields(too_many) == {"repeats"}

    wrong_type = client.post(
        "/api/campaigns", {"prompt_set": "backend", "contestants": ["alpha"], "repeats": "many"}
    )
    assert wrong_type.status_code == 400 and _fields(wrong_type) == {"repeats"}

    missing = client.post("/api/campaigns", {"prompt_set": "backend"})
    assert missing.status_code == 400 and _fields(missing) == {"contestants"}

    Contestant.objects.filter(name="beta").update(archived=True)
    archived = client.post("/api/campaigns", {"prompt_set": "backend", "contestants": ["beta"]})
    assert archived.status_code == 400 and _fields(archived) == {"contestants"}

    not_json = client.post("/api/campaigns", "{", content_type="application/json")
    assert not_json.status_code == 400 and "errors" in not_json.json()
    assert Campaign.objects.count() == 1  # only the fixture's


def test_an_unknown_campaign_is_a_404_naming_the_id(api_as, lead, db):
    response = api_as(lead).get("/api/campaigns/999")
    assert response.status_code == 404 and _fields(response) == {"campaign_id"}


def test_results_are_the_export_results_document(api_as, lead, scorer):
    world = build_world(scorer)
    response = api_as(lead).get(f"/api/campaigns/{world['campaign'].pk}/results")
    assert response.status_code == 200
    body = response.json()
    expected = json.loads(json.dumps(exports.results(world["campaign"]), default=str))
    assert body == expected
    assert {"campaign", "runs", "comparisons", "leaderboard"} <= body.keys()
    assert body["runs"][0]["reviews"] or body["runs"][1]["reviews"]
    assert "transcript" not in body["runs"][0]
    with_transcripts = api_as(lead).get(
        f"/api/campaigns/{world['campaign'].pk}/results", transcripts="true"
    )
    assert "transcript" in with_transcripts.json()["runs"][0]


def test_the_leaderboard_is_the_pages_json_export(api_as, client_for, lead, scorer):
    world = build_world(scorer)
    query = {"campaign": str(world["campaign"].pk)}
    page = client_for(lead).get(reverse("scoring:leaderboard_export"), {**query, "format": "json"})
    response = api_as(lead).get("/api/leaderboard", **query)
    assert response.status_code == 200
    assert response.json() == json.loads(page.content)
    assert response.json()["leaderboard"][0]["merge_rate_ci"]

    bad = api_as(lead).get("/api/leaderboard", date_from="2026-02-01", date_to="2026-01-01")
    assert bad.status_code == 400 and "errors" in bad.json()
    wrong = api_as(lead).get("/api/leaderboard", verdict="loudest")
    assert wrong.status_code == 400 and _fields(wrong) == {"verdict"}


# -- Imported runs -------------------------------------------------------------------------------


PATCH = "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-hi\n+hello\n"


def test_it_queues_an_imported_run(api_as, lead, curated):
    response = api_as(lead).post(
        "/api/runs/import",
        {
            "prompt_set": "backend",
            "prompt": "refunds",
            "contestant": "aider-laptop",
            "patch": SimpleUploadedFile("change.diff", PATCH.encode()),
        },
        content_type=None,
    )

    assert response.status_code == 202, response.content
    body = response.json()
    job = RunImport.objects.get(pk=body["id"])
    assert job.contestant_name == "aider-laptop" and job.patch_name == "change.diff"
    assert body["status"] == "queued" and body["run"] is None
    status = api_as(lead).get(f"/api/runs/import/{job.pk}")
    assert status.json()["id"] == job.pk and body["url"].endswith(f"/api/runs/import/{job.pk}")


def test_import_errors_name_their_field(api_as, lead, curated):
    client = api_as(lead)

    def send(**fields):
        data = {"prompt_set": "backend", "prompt": "refunds", "contestant": "x", **fields}
        return client.post("/api/runs/import", data, content_type=None)

    assert _fields(send()) == {"patch"}  # neither a patch nor a branch
    assert _fields(send(prompt="nope", branch="main")) == {"prompt"}
    patch = SimpleUploadedFile("change.diff", PATCH.encode())
    assert _fields(send(contestant="has space", patch=patch)) == {"contestant"}
    transcript = SimpleUploadedFile("session.json", b"{not json")
    patch = SimpleUploadedFile("change.diff", PATCH.encode())
    assert _fields(send(patch=patch, transcripts=transcript)) == {"transcripts"}
    escaping = SimpleUploadedFile("evil.diff", PATCH.replace("README.md", "../x").encode())
    assert _fields(send(patch=escaping)) == {"patch"}
    missing = client.post("/api/runs/import", {"prompt": "refunds"}, content_type=None)
    assert missing.status_code == 400 and {"prompt_set", "contestant"} <= _fields(missing)
    assert not RunImport.objects.exists()


# -- Limits, schema, secrecy ---------------------------------------------------------------------


def test_it_limits_requests_per_token(api_as, scorer, settings):
    settings.MERGEABLE_API_RATE_PER_MINUTE = 3
    client = api_as(scorer)
    assert [client.get("/api/me").status_code for _ in range(3)] == [200, 200, 200]

    refused = client.get("/api/me")

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many requests" in refused.json()["errors"][0]["message"]
    assert api_as(scorer).get("/api/me").status_code == 200  # another token has its own count


def test_it_serves_the_openapi_schema_to_tokens_and_signed_in_users(api_as, client_for, scorer):
    schema = api_as(scorer).get("/api/openapi.json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert "/api/campaigns" in document["paths"]
    assert client_for(scorer).get("/api/openapi.json").status_code == 200

    assert Client().get("/api/openapi.json").status_code == 401
    assert api_as(None).get("/api/openapi.json").status_code == 401


def test_the_docs_page_lists_every_operation(client_for, scorer):
    body = client_for(scorer).get(reverse("api:docs")).content.decode()
    assert "POST /api/campaigns" in body and "GET /api/leaderboard" in body
    assert "Needs the <strong>lead</strong> role." in body
    assert reverse("api-v1:openapi-json") in body


def test_no_response_carries_a_models_key(api_as, admin_user, curated):
    client = api_as(admin_user)
    campaign = curated["campaign"]
    paths = [
        "/api/me",
        "/api/contestants/export",
        "/api/prompt-sets/backend/export",
        f"/api/campaigns/{campaign.pk}",
        f"/api/campaigns/{campaign.pk}/results",
        "/api/leaderboard",
        "/api/openapi.json",
    ]
    rerun = client.post(
        f"/api/campaigns/{campaign.pk}/rerun", {"contestant": "alpha", "model": "model-b"}
    )
    assert rerun.status_code == 201
    bodies = [client.get(path).content for path in paths] + [rerun.content]
    assert not any(SECRET.encode() in body for body in bodies)

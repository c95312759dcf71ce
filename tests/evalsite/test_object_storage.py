"""Artifacts in an S3-compatible bucket (evalsite/storage.py), on a real local S3 server
(tests/s3_server.py): nothing on the web's or the worker's disk, downloads only after the role
check, imports handed over through the bucket, the rendered diff made by the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from evalsite.storage import from_aws_environment, from_url
from runs import campaigns, diffs, execution, imports
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run, RunImport
from scoring import review_page
from tests.s3_server import object_names, object_storage_fixture, s3_server_fixture  # noqa: F401

FILES = {"calc.py": "def add(a, b):\n    return a - b\n"}
FIX = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""
SCRIPT = """\
- tool_calls: [{name: edit_file, arguments: {path: calc.py, old: "a - b", new: "a + b"}}]
- tool_calls: [{name: finish, arguments: {summary: fixed}}]
"""


# --- configuration -------------------------------------------------------------------------------


def test_it_reads_a_bucket_prefix_endpoint_and_region_from_the_url():
    entry = from_url("s3://Team-Artifacts/mergeable/prod?endpoint_url=http://minio:9000&region=eu")
    options = entry["OPTIONS"]
    assert entry["BACKEND"] == "storages.backends.s3.S3Storage"
    assert options["bucket_name"] == "Team-Artifacts" and options["location"] == "mergeable/prod"
    assert options["endpoint_url"] == "http://minio:9000" and options["region_name"] == "eu"
    assert options["file_overwrite"] is True and options["default_acl"] is None
    assert options["querystring_expire"] == 60


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("https://bucket/x", "must start with s3://"),
        ("s3://KEY:SECRET@bucket", "must not hold keys"),
        ("s3:///prefix", "names no bucket"),
        ("s3://bucket?endpoint=http://x", "unknown parameters endpoint"),
    ],
)
def test_it_refuses_a_storage_url_it_cannot_use_and_says_why(url, complaint):
    with pytest.raises(ImproperlyConfigured, match=complaint):
        from_url(url)


def test_it_takes_the_usual_aws_variables_too():
    assert from_aws_environment({}) is None
    options = from_aws_environment(
        {"AWS_STORAGE_BUCKET_NAME": "arts", "AWS_S3_ENDPOINT_URL": "http://minio:9000"}
    )["OPTIONS"]
    assert options["bucket_name"] == "arts" and options["endpoint_url"] == "http://minio:9000"


def _default_storage_in_a_fresh_process(**environ: str) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MERGEABLE_STORAGE_URL", "AWS_STORAGE_BUCKET_NAME")
    }
    code = (
        "import django; django.setup(); "
        "from django.core.files.storage import storages; "
        "print(type(storages['default']).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DEBUG": "true", "DJANGO_SETTINGS_MODULE": "evalsite.settings", **environ},
        cwd=django_settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_it_keeps_the_local_filesystem_unless_a_bucket_is_configured():
    assert _default_storage_in_a_fresh_process() == "FileSystemStorage"
    assert (
        _default_storage_in_a_fresh_process(MERGEABLE_STORAGE_URL="s3://arts?region=us-east-1")
        == "S3Storage"
    )


# --- artifacts in the bucket ---------------------------------------------------------------------


@pytest.fixture
def prompt(db, make_repo) -> Prompt:
    path, sha = make_repo(FILES)
    repo = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    return Prompt.objects.create(
        prompt_set=prompt_set,
        key="fix-add",
        title="Fix add",
        instructions="add() is wrong",
        repository=repo,
        commit=sha,
        test_command="grep -q 'a + b' calc.py",
        reference_patch=FIX,
    )


def _executed_run(prompt: Prompt) -> Run:
    model = LanguageModel.objects.create(name="s", provider="scripted", script=SCRIPT)
    contestant = Contestant.objects.create(name="fixer", model=model)
    run = campaigns.launch(prompt_set=prompt.prompt_set, contestants=[contestant]).runs.get()
    assert execution.execute(run.pk) == Run.FINISHED
    run.refresh_from_db()
    return run


def test_a_run_stores_every_artifact_in_the_bucket_and_nothing_on_disk(
    object_storage, prompt, settings
):
    run = _executed_run(prompt)
    stored = object_names(object_storage, f"runs/{run.pk}/")
    for name in ("diff.patch", "before.json", "after.json", "transcript.json", "test_output.txt"):
        assert f"runs/{run.pk}/{name}" in stored
    assert "+    return a + b" in run.diff  # read back from the bucket
    assert not settings.MEDIA_ROOT.exists()


def test_the_worker_renders_the_diff_once_so_the_first_scorer_does_not_wait(
    object_storage, prompt, scorer, client_for, monkeypatch
):
    run = _executed_run(prompt)
    stored = object_names(object_storage, f"runs/{run.pk}/")
    assert f"runs/{run.pk}/rendered_diff.json" in stored
    assert f"runs/{run.pk}/rendered_reference.json" in stored
    assert "render" in run.phase_timings

    def no_rendering(*args, **kwargs):
        raise AssertionError("the review page rendered a diff the worker had rendered")

    monkeypatch.setattr(diffs, "render_diff", no_rendering)
    review_page._RECENT.clear()  # what an earlier request of this process left
    page = client_for(scorer).get(reverse("scoring:review", args=[run.review_key]))
    assert page.status_code == 200
    assert "a + b" in page.content.decode()


def test_a_scorer_downloads_an_artifact_streamed_from_the_bucket(
    object_storage, prompt, scorer, outsider, client_for, client
):
    run = _executed_run(prompt)
    url = reverse("runs:run_artifact", args=[run.pk]) + "?name=diff"
    assert client.get(url).status_code == 302  # to the login page, nothing of the artifact
    assert client_for(outsider).get(url).status_code == 403
    response = client_for(scorer).get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"+    return a + b" in b"".join(response.streaming_content)


def test_with_signed_downloads_a_scorer_gets_a_link_that_expires_in_a_minute(
    object_storage, prompt, scorer, outsider, client_for, settings
):
    settings.MERGEABLE_STORAGE_SIGNED_DOWNLOADS = True
    run = _executed_run(prompt)
    url = reverse("runs:run_artifact", args=[run.pk]) + "?name=tests"
    refused = client_for(outsider).get(url)
    assert refused.status_code == 403 and "Location" not in refused
    response = client_for(scorer).get(url)
    assert response.status_code == 302
    signed = response["Location"]
    query = parse_qs(urlsplit(signed).query)
    assert query["X-Amz-Expires"] == ["60"] and "X-Amz-Signature" in query
    fetched = httpx.get(signed)
    assert fetched.status_code == 200 and fetched.headers["content-type"].startswith("text/plain")
    assert fetched.text == run.read_artifact("test_output.txt")


def test_an_import_from_the_page_reaches_the_worker_through_the_bucket(
    object_storage,
    prompt,
    lead,
    client_for,
    monkeypatch,
    settings,
    django_capture_on_commit_callbacks,
):
    from runs import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.import_run, "apply_async", lambda args, **o: queued.append(*args))
    with django_capture_on_commit_callbacks(execute=True):
        client_for(lead).post(
            reverse("runs:run_import"),
            {
                "prompt": prompt.pk,
                "contestant": "laptop-agent",
                "campaign": "",
                "patch": SimpleUploadedFile("fix.patch", FIX.encode()),
            },
        )
    job = RunImport.objects.get()
    assert queued == [job.pk]
    assert object_names(object_storage, "imports/") == [job.payload_name]
    assert json.loads(default_storage.open(job.payload_name).read())["patch"] == FIX

    # The worker: another process in production, which shares nothing with the web but the
    # database, the broker and this bucket.
    assert imports.run_queued_import(job.pk) == RunImport.DONE
    run = RunImport.objects.get().run
    assert object_names(object_storage, "imports/") == []  # handed over, then removed
    assert f"runs/{run.pk}/rendered_diff.json" in object_names(object_storage, f"runs/{run.pk}/")
    assert not settings.MEDIA_ROOT.exists()

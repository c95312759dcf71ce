"""The total upload limit: the files of one request together, MERGEABLE_MAX_UPLOAD_MB."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import multipartparser
from django.urls import reverse

from runs.models import PromptSet, RunImport
from tests.conftest import stored_files
from tests.runs.test_imports import FIX, post_import, prompt, queued  # noqa: F401 - fixtures

PART = 600 * 1024  # each file well under its own limit; two of them over a 1 MB total


def _transcripts() -> list[SimpleUploadedFile]:
    # Two ATIF-looking files: which content does not matter, the request is refused unread.
    return [SimpleUploadedFile(f"part-{n}.json", b"{" + b" " * PART + b"}") for n in range(2)]


def _stored(settings) -> list:
    return stored_files()


def test_it_refuses_an_import_whose_files_add_up_to_more_than_the_limit(
    prompt,  # noqa: F811
    queued,  # noqa: F811
    client_for,
    lead,
    settings,
    monkeypatch,
):
    settings.MERGEABLE_MAX_UPLOAD_MB = 1

    def never(*args, **kwargs):
        raise AssertionError("the body of a refused upload was read")

    monkeypatch.setattr(multipartparser.MultiPartParser, "parse", never)
    response = post_import(
        client_for(lead),
        prompt,
        patch=SimpleUploadedFile("fix.patch", FIX.encode()),
        transcripts=_transcripts(),
    )

    assert response.status_code == 413
    body = response.content.decode()
    assert "may add up to at most 1 MB (MERGEABLE_MAX_UPLOAD_MB)" in body
    assert "This upload is 1.2 MB" in body
    assert not RunImport.objects.exists()
    assert queued == []
    assert _stored(settings) == []


def test_it_takes_the_same_import_under_a_higher_limit(
    prompt,  # noqa: F811
    queued,  # noqa: F811
    client_for,
    lead,
    settings,
    django_capture_on_commit_callbacks,
):
    settings.MERGEABLE_MAX_UPLOAD_MB = 2
    with django_capture_on_commit_callbacks(execute=True):
        response = post_import(
            client_for(lead), prompt, patch=SimpleUploadedFile("fix.patch", FIX.encode())
        )

    assert response.status_code == 302
    assert queued == [RunImport.objects.get().pk]


def test_it_refuses_an_oversized_prompt_set_file_and_stores_nothing(
    client_for, admin_user, settings
):
    settings.MERGEABLE_MAX_UPLOAD_MB = 1
    upload = SimpleUploadedFile("tasks.yaml", b"name: big\n" + b"#" * (1024 * 1024) + b"\n")

    response = client_for(admin_user).post(reverse("runs:prompt_set_import"), {"file": upload})

    assert response.status_code == 413
    assert "MERGEABLE_MAX_UPLOAD_MB" in response.content.decode()
    assert not PromptSet.objects.exists()

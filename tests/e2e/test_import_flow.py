"""Importing a run from the page: the form hands the work to a worker, the page follows it."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from evalsite.roles import LEAD, set_role
from runs import imports, tasks
from runs.models import Prompt, PromptSet, Repository, Run, RunImport
from tests.conftest import PASSWORD
from tests.runs.test_imports import FILES, FIX

pytestmark = pytest.mark.browser


def test_it_follows_an_import_to_its_run(
    transactional_db, live_server, page, login, console_errors, make_repo, monkeypatch, tmp_path
):
    queued: list[int] = []
    monkeypatch.setattr(
        tasks.import_run, "apply_async", lambda args, **options: queued.extend(args)
    )
    path, sha = make_repo(FILES)
    repository = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="fix-add",
        title="Fix add",
        instructions="add() is wrong",
        repository=repository,
        commit=sha,
    )
    lead = get_user_model().objects.create_user(username="lena", password=PASSWORD)
    set_role(lead, LEAD)
    patch_file = tmp_path / "fix.patch"
    patch_file.write_text(FIX)
    login(page, live_server, lead)

    page.goto(f"{live_server.url}/runs/import/")
    page.get_by_label("Prompt").select_option(label="calc-tasks / fix-add: Fix add")
    page.get_by_label("Contestant").fill("aider-laptop")
    page.get_by_label("Patch").set_input_files(str(patch_file))
    page.get_by_role("button", name="Import").click()

    page.wait_for_url(re.compile(r"/runs/import/\d+/$"))
    expect(page.get_by_text("Waiting for a worker")).to_be_visible()
    job = RunImport.objects.get()
    assert queued == [job.pk]

    # The worker's part, while the page polls.
    assert imports.run_queued_import(job.pk) == RunImport.DONE
    run = Run.objects.get()
    page.wait_for_url(f"{live_server.url}{run.get_absolute_url()}")
    expect(page.get_by_text(f"Imported run {run.pk}: finished.")).to_be_visible()
    assert console_errors == []

"""Drafting from history in the browser: pick changes, watch the proof, edit, accept."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from evalsite.roles import ADMIN, set_role
from runs import checks, drafts, tasks
from runs.models import Prompt, PromptDraft, PromptSet, Repository
from tests.conftest import PASSWORD
from tests.runs.test_drafts import TEMPLATE, build_history

pytestmark = pytest.mark.browser


def test_an_admin_drafts_a_change_watches_it_proven_and_accepts_it(
    transactional_db, live_server, page, login, console_errors, monkeypatch, tmp_path
):
    queued: list[int] = []
    monkeypatch.setattr(tasks.prove_draft, "apply_async", lambda args, **_: queued.extend(args))
    history = build_history(tmp_path)
    repository = Repository.objects.create(
        name="calc", url=str(tmp_path / "repos" / "calc"), test_command_template=TEMPLATE
    )
    checks.check_repository(repository.pk)
    PromptSet.objects.create(name="calc-tasks")
    admin = get_user_model().objects.create_user(username="ada", password=PASSWORD)
    set_role(admin, ADMIN)
    login(page, live_server, admin)

    page.goto(f"{live_server.url}/repositories/")
    page.get_by_role("link", name="Draft from history").click()
    expect(page.get_by_role("heading", name="Draft from history: calc")).to_be_visible()
    expect(page.get_by_text("Merge pull request #7 from acme/feature-mul")).to_be_visible()
    page.get_by_label("Draft Fix add").check()
    page.get_by_role("button", name="Draft the selected changes").click()
    expect(page.get_by_text("Drafted 1 prompt(s)")).to_be_visible()
    draft = PromptDraft.objects.get()
    assert queued == [draft.pk]

    page.get_by_role("link", name="Fix add").click()
    page.wait_for_url(re.compile(rf"/drafts/{draft.pk}/$"))
    expect(page.get_by_text("waiting to be proven")).to_be_visible()
    # The worker's part, while the page polls.
    assert drafts.prove_draft(draft.pk) == PromptDraft.PROVEN
    expect(
        page.locator(f"#draft-status-{draft.pk}").get_by_text("proven", exact=True)
    ).to_be_visible()
    page.reload()

    page.get_by_label("Instructions").fill("add(2, 3) returns -1; it should return 5.")
    page.get_by_label("Prompt set").select_option(label="calc-tasks")
    page.get_by_label("Key").fill("fix-add")
    page.get_by_role("button", name="Accept into the prompt set").click()
    expect(page.get_by_text("Added fix-add to calc-tasks.")).to_be_visible()
    prompt = Prompt.objects.get()
    assert prompt.commit == history["initial"]
    assert prompt.instructions == "add(2, 3) returns -1; it should return 5."
    assert console_errors == []

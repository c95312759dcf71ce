"""The pages a team uses every day, in Chromium: line comments by keyboard, the lead's run page,
confirmations, the shortcuts dialog, the skip link, and axe-core on the main pages per role."""

from __future__ import annotations

import json

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from evalsite.roles import ADMIN, LEAD, set_role
from runs.models import Run
from scoring import reviews
from scoring.models import Review
from tests.conftest import PASSWORD
from tests.e2e.test_review_flow import build_campaign, scorer_named

pytestmark = pytest.mark.browser

ANSWERS = {"right_files": "yes", "conventions": "4", "recovered": "yes", "merge": "yes"}
# Moderate findings axe may report, each with the reason it is accepted. Anything critical or
# serious fails the test, and so does a moderate finding not listed here.
ACCEPTED_MODERATE: dict[str, str] = {
    # None so far: add a rule id here only with the reason it cannot be fixed.
}


def user_with_role(username: str, role: str):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    set_role(user, role)
    return user


def check_accessibility(page: Page) -> None:
    page.wait_for_load_state("networkidle")
    results = Axe().run(page)
    problems = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in results.response["violations"]
        if v["impact"] in ("critical", "serious")
        or (v["impact"] == "moderate" and v["id"] not in ACCEPTED_MODERATE)
    ]
    assert problems == [], f"{page.url}: {problems}"


def test_line_comments_by_keyboard_show_inline_and_can_be_removed(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    run = build_campaign(make_repo)[0]
    scorer = scorer_named("kim")
    login(page, live_server, scorer)
    page.goto(f"{live_server.url}/review/runs/{run.review_key}/")
    page.wait_for_load_state("load")

    cell = page.locator("section.diff td.no[data-side=new][data-line]:not(:empty)").last
    line = cell.get_attribute("data-line")
    cell.focus()
    expect(cell).to_be_focused()
    page.keyboard.press("c")
    box = page.locator("tr.line-comment.editing textarea")
    expect(box).to_be_focused()
    page.keyboard.type("Round <b>before</b> summing?")
    page.keyboard.press("Control+Enter")  # adds the comment; does not submit the review
    inline = page.locator("tr.line-comment.saved")
    expect(inline).to_contain_text("Round <b>before</b> summing?")  # as text, not markup
    expect(cell).to_be_focused()
    expect(page.locator("#draft-status")).to_contain_text("Draft saved")
    assert Review.objects.get(run=run, reviewer=scorer).line_comments == [
        {"path": "shop/cart.py", "line": int(line), "side": "new",
         "text": "Round <b>before</b> summing?"}
    ]  # fmt: skip

    page.reload()
    page.wait_for_load_state("load")
    expect(inline).to_contain_text("Round <b>before</b> summing?")
    inline.get_by_role("button", name="Remove").click()
    expect(inline).to_have_count(0)
    expect(page.locator("#comment-list")).to_contain_text("None yet.")
    page.wait_for_function(
        "() => document.getElementById('draft-status').textContent.includes('Draft saved ')"
    )
    assert Review.objects.get(run=run, reviewer=scorer).line_comments == []
    assert console_errors == []


def test_the_lead_sees_the_diff_reviews_and_comments_on_the_run_page(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    run = build_campaign(make_repo)[0]
    scorer = scorer_named("ana")
    comment = {"path": "shop/cart.py", "line": 5, "side": "new", "text": "Nice rounding."}
    reviews.submit_review(
        run, scorer, answers=ANSWERS, verdict="", notes="Merge it.",
        line_comments=json.dumps([comment]), time_spent_s="20", acceptance=[],
    )  # fmt: skip
    lead = user_with_role("lea", LEAD)
    login(page, live_server, lead)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    judgement = page.locator("#judgement")
    expect(judgement.locator("table.difftable")).to_be_visible()
    expect(judgement.locator("#run-reviews")).to_contain_text("ana: Yes")
    expect(judgement.locator("#run-reviews")).to_contain_text("Merge it.")
    expect(judgement.locator("tr.line-comment.saved")).to_contain_text("ana: Nice rounding.")
    expect(page.locator("#test-output")).to_contain_text("JUnit: 2 passed, 0 failed")
    page.get_by_role("link", name=f"Campaign: {run.campaign.name}").click()
    expect(page.locator(f"#run-{run.pk}")).to_be_visible()
    assert console_errors == []


def test_retry_asks_first(transactional_db, live_server, page, login, console_errors, make_repo):
    run = build_campaign(make_repo)[0]
    Run.objects.filter(pk=run.pk).update(status=Run.ERRORED, error="boom")
    lead = user_with_role("lee", LEAD)
    login(page, live_server, lead)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.wait_for_load_state("networkidle")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Retry").click()
    page.wait_for_timeout(300)
    run.refresh_from_db()
    assert run.status == Run.ERRORED  # dismissed: nothing happened

    messages = []
    page.once("dialog", lambda dialog: (messages.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".messages")).to_contain_text("Run requeued.")
    assert "Retry run" in messages[0]
    run.refresh_from_db()
    assert run.status == Run.QUEUED
    assert console_errors == []


def test_the_shortcuts_dialog_takes_focus_and_closes_and_the_skip_link_reaches_the_rubric(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    run = build_campaign(make_repo)[0]
    login(page, live_server, scorer_named("ola"))
    page.goto(f"{live_server.url}/review/runs/{run.review_key}/")
    page.wait_for_load_state("load")

    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the questions")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.locator("#review-form input[type=radio]").first).to_be_focused()

    opener = page.get_by_role("button", name="Shortcuts")
    opener.click()
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(dialog).to_be_visible()
    close = dialog.get_by_role("button", name="Close the shortcuts")
    expect(close).to_be_focused()
    close.click()
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    assert console_errors == []


# The audit is of the HTML, which the database does not change: run once (conftest.py).
@pytest.mark.single_pass
def test_the_main_pages_pass_axe_for_each_role(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    runs = build_campaign(make_repo)
    run = runs[0]
    scorer = scorer_named("axel")
    reviews.submit_review(
        runs[1], scorer, answers=ANSWERS, verdict="", notes="", line_comments="[]",
        time_spent_s="5", acceptance=[],
    )  # fmt: skip
    prompt_set_id = run.prompt.prompt_set_id
    pages = {
        scorer: ["/", "/review/", f"/review/runs/{run.review_key}/",
                 f"/review/runs/{runs[1].review_key}/", "/account/password/", "/compare/"],
        user_with_role("lena", LEAD): [
            "/campaigns/", f"/campaigns/{run.campaign_id}/", f"/runs/{run.pk}/",
            "/review/history/", "/rubrics/", "/leaderboard/", "/campaigns/new/",
        ],
        user_with_role("adam", ADMIN): [
            "/users/", "/users/invites/", "/models/", "/contestants/", "/prompt-sets/",
            f"/prompt-sets/{prompt_set_id}/", f"/prompt-sets/{prompt_set_id}/prompts/new/",
            "/repositories/", f"/repositories/{run.prompt.repository_id}/edit/",
        ],
    }  # fmt: skip
    visited = []
    for user, paths in pages.items():
        page.context.clear_cookies()
        login(page, live_server, user)
        for path in paths:
            page.goto(f"{live_server.url}{path}")
            check_accessibility(page)
            visited.append(page.url.removeprefix(live_server.url))
    # /compare/ hands the scorer a comparison: the page with both transcripts was checked.
    assert any(url.startswith("/compare/") and url != "/compare/" for url in visited), visited
    assert console_errors == []

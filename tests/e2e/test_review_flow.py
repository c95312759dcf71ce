"""Reviewing with the keyboard only, blind, then a pairwise vote, in a real browser.

The shortcuts are the ones the `?` overlay documents (static/js/review.js): y / n / 1-5 answer the
current question and move on, Shift+Y / S / N set the verdict, Ctrl+Enter submits and opens the
next run; on the compare page a / b / t / x vote and Ctrl+Enter saves the vote.
"""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import Page, expect

from evalsite.roles import SCORER, set_role
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from scoring.models import Comparison, Review
from tests.conftest import PASSWORD, git

pytestmark = pytest.mark.browser

CONTESTANTS = {"alpha-model": "alpha-llm-v1", "beta-model": "beta-llm-v2"}
# Everything that would tell a blind reviewer who made a run.
IDENTITY_WORDS = ["alpha-model", "beta-model", "alpha-llm", "beta-llm"]

CART = "def total(prices):\n    result = 0\n    for price in prices:\n        result += price\n"
CART += "    return result\n"
DISCOUNT = "def discount(amount):\n    return amount\n"
# prompt key -> (title, file, original text, {contestant: changed text})
TASKS = {
    "cart-total": (
        "Round the cart total",
        "shop/cart.py",
        CART,
        {
            "alpha-model": CART.replace("return result", "return round(result, 2)"),
            "beta-model": "def total(prices):\n    return round(sum(prices), 2)\n",
        },
    ),
    "discount": (
        "Ten percent discount",
        "shop/discount.py",
        DISCOUNT,
        {
            "alpha-model": DISCOUNT.replace("return amount", "return amount * 0.9"),
            "beta-model": DISCOUNT.replace("return amount", "return amount - amount / 10"),
        },
    ),
}


def _real_diff(repo, path: str, new_text: str) -> str:
    """`git diff` of one file changed in a real repository, which is then put back."""
    (repo / path).write_text(new_text)
    patch = git(repo, "diff", "--no-color") + "\n"
    git(repo, "checkout", "--", path)
    return patch


def build_campaign(make_repo) -> list[Run]:
    """Two contestants x two prompts, one finished run each, with real diff artifacts."""
    repo_path, sha = make_repo({spec[1]: spec[2] for spec in TASKS.values()})
    repository = Repository.objects.create(name="shop", url="https://git.example.com/shop.git")
    prompt_set = PromptSet.objects.create(name="shop tasks")
    contestants = []
    for name, model_id in CONTESTANTS.items():
        model = LanguageModel.objects.create(
            name=model_id.rsplit("-", 1)[0], provider="openai", model_id=model_id,
            base_url="http://127.0.0.1:1",
        )  # fmt: skip
        contestants.append(Contestant.objects.create(name=name, model=model))
    campaign = Campaign.objects.create(name="Spring eval", prompt_set=prompt_set)
    campaign.contestants.set(contestants)
    now = timezone.now()
    runs = []
    for position, (key, (title, path, before, changes)) in enumerate(TASKS.items()):
        prompt = Prompt.objects.create(
            prompt_set=prompt_set, key=key, title=title, instructions=f"Please: {title.lower()}.",
            repository=repository, commit=sha, expected_files=[path], test_command="pytest",
            position=position,
        )  # fmt: skip
        for contestant in contestants:
            run = Run.objects.create(
                campaign=campaign, prompt=prompt, contestant=contestant, status=Run.FINISHED,
                snapshot={"prompt": prompt.snapshot(), "contestant": contestant.snapshot()},
                test_exit_code=0, tests_passed=2, tests_failed=0, test_output_tail="2 passed",
                input_tokens=1200, output_tokens=80, cost_usd=0.0421,
                started_at=now, finished_at=now,
            )  # fmt: skip
            after = changes[contestant.name]
            run.save_artifact("diff.patch", _real_diff(repo_path, path, after))
            run.save_artifact("before.json", json.dumps({path: before}))
            run.save_artifact("after.json", json.dumps({path: after}))
            # An agent that names itself: the page must hide it while the review is blind.
            transcript = {
                "schema_version": "ATIF-v1.4",
                "agent": {"name": "builtin", "model_name": contestant.model.model_id},
                "steps": [
                    {"step_id": 1, "source": "user", "message": title},
                    {"step_id": 2, "source": "agent", "message": f"{contestant.name} here, done."},
                ],
            }
            run.save_artifact("transcript.json", json.dumps(transcript))
            runs.append(run)
    return runs


def page_html_without_messages(page: Page) -> str:
    """The whole page (text and attributes) minus the flash messages, lower-cased."""
    return page.evaluate(
        """() => {
            const copy = document.documentElement.cloneNode(true);
            copy.querySelectorAll('.messages').forEach((el) => el.remove());
            return copy.outerHTML.toLowerCase();
        }"""
    )


def assert_blind(page: Page) -> None:
    html = page_html_without_messages(page)
    leaked = [word for word in IDENTITY_WORDS if word in html]
    assert leaked == [], f"identity visible before submitting: {leaked}"


def run_on_page(page: Page) -> Run:
    match = re.search(r"/review/runs/(\d+)/", page.url)
    assert match, page.url
    return Run.objects.select_related("contestant").get(pk=int(match.group(1)))


def review_with_keys(page: Page, verdict_key: str) -> None:
    """Answer the default rubric and submit, keyboard only."""
    page.wait_for_load_state("load")  # review.js is deferred
    page.keyboard.press("y")  # Found the right files: Yes (first open question)
    page.keyboard.press("4")  # Conventions: 4
    page.keyboard.press("n")  # Recovered: No (a question is focused, so n answers)
    page.keyboard.press(f"Shift+{verdict_key}")
    form = page.locator("#review-form")
    expect(form.locator("input[name=answer-right_files][value=yes]")).to_be_checked()
    expect(form.locator("input[name=answer-conventions][value='4']")).to_be_checked()
    expect(form.locator("input[name=answer-recovered][value=no]")).to_be_checked()
    expect(page.locator("#notes")).to_be_focused()  # every question answered: on to the notes
    page.keyboard.press("Control+Enter")


def test_it_reviews_two_runs_blind_and_votes_pairwise_with_the_keyboard_only(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    runs = build_campaign(make_repo)
    scorer = get_user_model().objects.create_user(username="sam", password=PASSWORD)
    set_role(scorer, SCORER)
    login(page, live_server, scorer)

    page.goto(f"{live_server.url}/review/")
    page.get_by_role("link", name="Review next").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/review/runs/\d+/"))
    first = run_on_page(page)
    assert first.pk == runs[0].pk  # fewest reviews, then oldest
    expect(page.locator(".diff").first).to_contain_text("round(result, 2)")
    expect(page.get_by_text("[hidden] here, done.")).to_be_attached()
    assert_blind(page)

    # The help overlay opens and closes from the keyboard too.
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()

    review_with_keys(page, "Y")
    page.wait_for_url(lambda url: f"/review/runs/{first.pk}/" not in url)
    expect(page.locator(".messages")).to_contain_text(
        f"Review submitted. That run was by {first.contestant.label}."
    )
    second = run_on_page(page)
    assert second.pk == runs[1].pk
    assert second.contestant != first.contestant
    assert_blind(page)

    review_with_keys(page, "S")
    page.wait_for_url(lambda url: f"/review/runs/{second.pk}/" not in url)
    expect(page.locator(".messages")).to_contain_text(
        f"Review submitted. That run was by {second.contestant.label}."
    )

    reviews = {r.run_id: r for r in Review.objects.submitted().filter(reviewer=scorer)}
    assert set(reviews) == {first.pk, second.pk}
    assert reviews[first.pk].verdict == "yes"
    assert reviews[second.pk].verdict == "small_changes"
    assert reviews[first.pk].answers == {
        "right_files": "yes", "conventions": "4", "recovered": "no", "merge": "yes"
    }  # fmt: skip

    # Once submitted, the run's own page says who made it.
    page.goto(f"{live_server.url}/review/runs/{first.pk}/")
    expect(page.locator(".pagehead")).to_contain_text(f"By {first.contestant.label}")
    expect(page.get_by_text("alpha-model here, done.")).to_be_attached()

    # Pairwise: blind until the vote, then revealed.
    page.goto(f"{live_server.url}/compare/")
    page.wait_for_url(re.compile(r"/compare/\d+/"))
    assert_blind(page)
    comparison = Comparison.objects.get(reviewer=scorer, outcome="")
    page.keyboard.press("b")
    expect(page.locator("#vote-form input[name=choice][value=right]")).to_be_checked()
    page.keyboard.press("Control+Enter")
    page.wait_for_url(lambda url: f"/compare/{comparison.pk}/" not in url)

    comparison.refresh_from_db()
    right_won = Comparison.A if not comparison.a_shown_left else Comparison.B
    assert comparison.outcome == right_won
    assert comparison.decided_at is not None
    left_run, right_run = (
        (comparison.run_a, comparison.run_b)
        if comparison.a_shown_left
        else (comparison.run_b, comparison.run_a)
    )
    expect(page.locator(".messages")).to_contain_text(
        f"Left was {left_run.contestant.label}, right was {right_run.contestant.label}."
    )
    # The scripts ran under the real Content-Security-Policy, and every autosave succeeded.
    assert console_errors == []

"""Reviewing blind in a real browser: with the keyboard only, then a pairwise vote.

The shortcuts are the ones the `?` overlay documents (static/js/review.js): y / n / 1-5 answer the
current question and move on, Shift+Y / S / N set the verdict, Ctrl+Enter submits and, once the
run is revealed on its own page, opens the next run; on the compare page a / b / t / x vote and
Ctrl+Enter saves the vote, then opens the next pair.
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
BASE_URLS = {
    "alpha-model": "https://alpha-inference.example/serve/alpha-pool",
    "beta-model": "https://beta-inference.example/serve/beta-pool",
}
# Everything that would tell a blind reviewer who made a run: the contestants' names (and
# labels), the models' names and ids, the provider, the endpoints' hosts and paths.
IDENTITY_WORDS = [
    "alpha-model", "beta-model", "alpha-llm", "beta-llm", "openai",
    "alpha-inference", "beta-inference", "alpha-pool", "beta-pool",
]  # fmt: skip

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
            base_url=BASE_URLS[name],
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
                    {
                        "step_id": 3,
                        "source": "agent",
                        "message": (
                            f"Served by {contestant.model.name} ({contestant.model.model_id}) on "
                            f"OpenAI at {contestant.model.base_url}/v1."
                        ),
                    },
                ],
            }
            run.save_artifact("transcript.json", json.dumps(transcript))
            runs.append(run)
    return runs


def page_html(page: Page) -> str:
    """The whole page as the browser has it (text, attributes, messages), lower-cased."""
    return page.content().lower()


def assert_blind(page: Page) -> None:
    html = page_html(page)
    text = page.locator("body").inner_text().lower()
    leaked = [word for word in IDENTITY_WORDS if word in html or word in text]
    assert leaked == [], f"identity visible before submitting: {leaked}"


def run_on_page(page: Page) -> Run:
    match = re.search(r"/review/runs/([A-Za-z0-9_-]+)/", page.url)
    assert match, page.url
    return Run.objects.select_related("contestant").get(review_key=match.group(1))


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


def expect_revealed(page: Page, run: Run) -> None:
    """The page of ``run`` itself, now naming who made it."""
    page.wait_for_load_state("load")
    assert run_on_page(page) == run
    expect(page.locator("#reveal")).to_contain_text(f"This run was by {run.contestant.label}")
    expect(page.locator(".pagehead")).to_contain_text(f"By {run.contestant.label}")


def scorer_named(username: str):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    set_role(user, SCORER)
    return user


def test_it_shows_who_made_a_run_only_after_the_review_is_in(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    runs = build_campaign(make_repo)
    scorer = scorer_named("sam")
    login(page, live_server, scorer)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review").click()
    page.wait_for_url(f"{live_server.url}/review/")
    assert_blind(page)
    expect(page.get_by_role("heading", name="Waiting for review")).to_be_visible()
    page.get_by_role("link", name="Review next").click()
    page.wait_for_url(re.compile(r"/review/runs/[A-Za-z0-9_-]+/$"))
    reviewed = run_on_page(page)
    assert reviewed in runs
    segment = page.url.split("/review/runs/")[1].strip("/")
    assert segment == reviewed.review_key and not segment.isdigit()  # never the run's id
    expect(page.locator("#progress")).to_have_text("4 of 4 left")
    expect(page.get_by_text("[hidden] here, done.")).to_be_attached()
    expect(page.get_by_text("Served by [hidden] ([hidden]) on [hidden] at")).to_be_attached()
    assert_blind(page)

    for question, answer in (("right_files", "yes"), ("conventions", "3"), ("recovered", "yes")):
        page.locator(f"#review-form input[name=answer-{question}][value='{answer}']").check()
    page.locator("#review-form input[name=answer-merge][value=no]").check()
    page.get_by_role("button", name="Submit").click()

    # Only now, and on the page of the run just reviewed, the contestant is named.
    page.wait_for_url(re.compile(rf"/review/runs/{reviewed.review_key}/"))
    expect_revealed(page, reviewed)
    expect(page.locator("#reveal")).to_contain_text(reviewed.contestant.model.model_id)
    expect(page.get_by_text(f"{reviewed.contestant.name} here, done.")).to_be_attached()
    expect(page.locator("#progress")).to_have_text("3 of 4 left")
    assert Review.objects.get(run=reviewed, reviewer=scorer).verdict == "no"

    page.get_by_role("link", name="Next run").click()
    page.wait_for_url(lambda url: reviewed.review_key not in url)
    assert_blind(page)  # the next run's page, messages and all, names nobody
    assert console_errors == []


def test_it_reviews_two_runs_blind_and_votes_pairwise_with_the_keyboard_only(
    transactional_db, live_server, page, login, console_errors, make_repo
):
    build_campaign(make_repo)
    scorer = scorer_named("sam")
    login(page, live_server, scorer)

    page.goto(f"{live_server.url}/review/")
    page.get_by_role("link", name="Review next").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/review/runs/[A-Za-z0-9_-]+/"))
    first = run_on_page(page)
    expect(page.locator(".diff").first).to_be_attached()
    expect(page.get_by_text("[hidden] here, done.")).to_be_attached()
    assert_blind(page)

    # The help overlay opens and closes from the keyboard too.
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()

    review_with_keys(page, "Y")
    expect_revealed(page, first)
    page.keyboard.press("Control+Enter")  # on to the next run
    page.wait_for_url(lambda url: first.review_key not in url)
    second = run_on_page(page)
    # Each scorer's order deals the contestants out in turn.
    assert second.contestant != first.contestant
    assert_blind(page)

    review_with_keys(page, "S")
    expect_revealed(page, second)

    reviews = {r.run_id: r for r in Review.objects.submitted().filter(reviewer=scorer)}
    assert set(reviews) == {first.pk, second.pk}
    assert reviews[first.pk].verdict == "yes"
    assert reviews[second.pk].verdict == "small_changes"
    assert reviews[first.pk].answers == {
        "right_files": "yes", "conventions": "4", "recovered": "no", "merge": "yes"
    }  # fmt: skip

    # Pairwise: blind until the vote, then revealed on the same page.
    page.goto(f"{live_server.url}/compare/")
    page.wait_for_url(re.compile(r"/compare/\d+/"))
    assert_blind(page)
    comparison = Comparison.objects.get(reviewer=scorer, outcome="")
    page.wait_for_load_state("load")
    page.keyboard.press("b")
    expect(page.locator("#vote-form input[name=choice][value=right]")).to_be_checked()
    page.keyboard.press("Control+Enter")
    expect(page.locator("#reveal")).to_be_visible()
    assert f"/compare/{comparison.pk}/" in page.url

    comparison.refresh_from_db()
    right_won = Comparison.A if not comparison.a_shown_left else Comparison.B
    assert comparison.outcome == right_won
    assert comparison.decided_at is not None
    left_run, right_run = (
        (comparison.run_a, comparison.run_b)
        if comparison.a_shown_left
        else (comparison.run_b, comparison.run_a)
    )
    expect(page.locator("#reveal")).to_contain_text(
        f"Left (A) was {left_run.contestant.label}; right (B) was {right_run.contestant.label}"
    )
    page.keyboard.press("Control+Enter")  # on to the next pair, blind again
    page.wait_for_url(lambda url: f"/compare/{comparison.pk}/" not in url)
    assert_blind(page)
    # The scripts ran under the real Content-Security-Policy, and every autosave succeeded.
    assert console_errors == []

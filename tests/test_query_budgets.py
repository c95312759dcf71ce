"""Query budgets: every list page, and the run, pairwise and rubric pages, reads the database a
fixed number of times however many rows it shows.

Each test builds the page's rows at two sizes (SMALL, then LARGE) as the role that may see the
page, and asserts the same number of queries at both, under a budget. A query per row (an N+1)
makes the larger page cost more and fails the test, listing the queries.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from evalsite.roles import LEAD, SCORER, set_role
from runs.models import Campaign, Contestant, Prompt, PromptSet, Repository, Run
from scoring import pairing, reviews
from scoring.models import CampaignRubric, Criterion, ReviewHold, Rubric
from tests.scoring.test_review import ANSWERS, TRANSCRIPT, make_contestant, make_prompt, make_run

SMALL = 2
LARGE = 8

_serial = count(1)


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_serial)}"


def _queries(client, url: str) -> list[str]:
    # Cached pages would hide what they cost to build, so both sizes start from an empty cache.
    cache.clear()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return [query["sql"] for query in captured.captured_queries]


def assert_fixed_queries(client, url: str, add: Callable[[int], object], budget: int) -> None:
    """``add(n)`` adds n more of the page's rows, each with its related rows."""
    add(SMALL)
    small = _queries(client, url)
    add(LARGE - SMALL)
    large = _queries(client, url)
    listing = "\n".join(f"{n}. {sql}" for n, sql in enumerate(large, 1))
    assert len(large) == len(small), (
        f"{url}: {len(small)} queries for {SMALL} rows, {len(large)} for {LARGE}:\n{listing}"
    )
    assert len(large) <= budget, f"{url}: {len(large)} queries, over {budget}:\n{listing}"


def _user(role: str | None):
    user = get_user_model().objects.create_user(username=_name("user"), email="u@example.com")
    if role:
        set_role(user, role)
    return user


def _repository() -> Repository:
    name = _name("repo")
    return Repository.objects.create(name=name, url=f"https://git.example.com/{name}.git")


def _prompt(prompt_set: PromptSet | None = None) -> Prompt:
    prompt_set = prompt_set or PromptSet.objects.create(name=_name("set"))
    return make_prompt(prompt_set=prompt_set, key=_name("prompt"), repository=_repository())


def _contestant() -> Contestant:
    return make_contestant(_name("agent"), _name("model-id"))


def _finished_runs(n: int, campaign: Campaign | None = None, prompt: Prompt | None = None):
    """n finished runs, each by its own contestant and model, in one campaign."""
    prompt = prompt or (campaign.prompt_set.prompts.first() if campaign else _prompt())
    runs = [make_run(prompt, _contestant(), campaign=campaign)]
    campaign = runs[0].campaign
    runs += [make_run(prompt, _contestant(), campaign=campaign) for _ in range(n - 1)]
    return runs


def _vote(voter, choice: str) -> None:
    comparison = pairing.next_comparison_for(voter)
    assert comparison is not None, "no pair left to vote on"
    pairing.record_vote(comparison, choice, "cleaner")


def _reviewed(run: Run, reviewers: list) -> None:
    for reviewer in reviewers:
        reviews.submit_review(run, reviewer, ANSWERS, "", "looks fine", [], 30)


# -- evalsite ------------------------------------------------------------------------------------


def test_it_lists_users_in_fixed_queries(admin_user, client_for):
    def add(n: int) -> None:
        for index in range(n):
            _user((SCORER, LEAD, None)[index % 3])

    assert_fixed_queries(client_for(admin_user), reverse("users"), add, budget=5)


def test_it_shows_the_dashboard_in_fixed_queries(lead, scorer, client_for):
    reviewed = make_run()  # the campaign whose standings a lead sees

    def add(n: int) -> None:
        # Active runs, recent campaigns, and contestants on the latest standings.
        for _ in range(n):
            prompt = _prompt()
            campaign = Campaign.objects.create(
                name=_name("campaign"), prompt_set=prompt.prompt_set, created_by=lead
            )
            contestant = _contestant()
            make_run(prompt, contestant, campaign=campaign, status=Run.RUNNING)
            _reviewed(make_run(reviewed.prompt, contestant, campaign=reviewed.campaign), [scorer])

    assert_fixed_queries(client_for(lead), reverse("dashboard"), add, budget=17)


def test_it_shows_admins_the_workers_panel_in_fixed_queries(admin_user, client_for):
    from evalsite.models import WorkerHeartbeat

    def add(n: int) -> None:
        # Workers alive, each with a run in progress, and runs waiting in the queue.
        for _ in range(n):
            worker = f"{_name('worker')}@box:1"
            WorkerHeartbeat.objects.create(
                name=worker, slots=4, started_at=timezone.now(), seen_at=timezone.now()
            )
            make_run(_prompt(), _contestant(), status=Run.RUNNING, worker=worker)
            make_run(_prompt(), _contestant(), status=Run.QUEUED)

    assert_fixed_queries(client_for(admin_user), reverse("dashboard"), add, budget=20)


# -- runs: curation ------------------------------------------------------------------------------


def test_it_lists_prompt_sets_in_fixed_queries(admin_user, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            prompt = _prompt()
            Campaign.objects.create(name=_name("campaign"), prompt_set=prompt.prompt_set)

    assert_fixed_queries(client_for(admin_user), reverse("runs:prompt_sets"), add, budget=4)


def test_it_lists_a_prompt_sets_prompts_in_fixed_queries(admin_user, client_for):
    prompt_set = PromptSet.objects.create(name="backend")
    Campaign.objects.create(name="First", prompt_set=prompt_set)

    def add(n: int) -> None:
        for index in range(n):
            prompt = _prompt(prompt_set)
            if index % 2:
                Prompt.objects.filter(pk=prompt.pk).update(archived=True)

    url = reverse("runs:prompt_set", args=[prompt_set.pk])
    assert_fixed_queries(client_for(admin_user), url, add, budget=6)


def test_it_lists_repositories_in_fixed_queries(admin_user, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            _prompt()

    assert_fixed_queries(client_for(admin_user), reverse("runs:repositories"), add, budget=4)


def test_it_lists_models_in_fixed_queries(admin_user, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            _contestant()

    assert_fixed_queries(client_for(admin_user), reverse("runs:models"), add, budget=4)


def test_it_lists_contestants_in_fixed_queries(admin_user, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            _contestant()

    assert_fixed_queries(client_for(admin_user), reverse("runs:contestants"), add, budget=4)


# -- runs: campaigns, runs and imports -----------------------------------------------------------


def test_it_lists_campaigns_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            runs = _finished_runs(2)
            Campaign.objects.filter(pk=runs[0].campaign_id).update(created_by=_user(LEAD))
            CampaignRubric.objects.create(campaign=runs[0].campaign, rubric=Rubric.default())

    assert_fixed_queries(client_for(lead), reverse("runs:campaigns"), add, budget=4)


def test_it_shows_a_campaigns_runs_in_fixed_queries(lead, client_for):
    prompt = _prompt()
    campaign = Campaign.objects.create(name="March", prompt_set=prompt.prompt_set)

    def add(n: int) -> None:
        for _ in range(n):
            contestant = _contestant()
            make_run(prompt, contestant, campaign=campaign)
            make_run(_prompt(prompt.prompt_set), contestant, campaign=campaign, status=Run.QUEUED)

    url = reverse("runs:campaign", args=[campaign.pk])
    assert_fixed_queries(client_for(lead), url, add, budget=5)


def test_it_offers_prompt_sets_and_contestants_to_a_new_campaign_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            _prompt()
            _contestant()

    # The session and user (3), the sizes per prompt set, the prompt sets, the contestants and
    # the rubrics scoring adds to the form (scoring/launch_choices.py).
    assert_fixed_queries(client_for(lead), reverse("runs:campaign_create"), add, budget=7)


def test_it_shows_the_run_page_in_fixed_queries(lead, scorer, other_scorer, client_for):
    run = make_run(transcript=TRANSCRIPT)
    _reviewed(run, [scorer, other_scorer])

    def add(n: int) -> None:
        # What the page could grow with: the run's siblings and their reviews, its questions.
        for sibling in _finished_runs(n, campaign=run.campaign, prompt=run.prompt):
            _reviewed(sibling, [scorer])
        run.questions += [{"question": _name("why"), "answer": "because", "source": "lead"}] * n
        run.files_changed += [f"{_name('file')}.py" for _ in range(n)]
        run.save(update_fields=["questions", "files_changed"])

    url = reverse("runs:run", args=[run.pk])
    assert_fixed_queries(client_for(lead), url, add, budget=4)


def test_it_shows_the_blind_run_page_in_fixed_queries(scorer, client_for):
    # The agent's question is shown with its maker's names hidden, which reads the contestant.
    run = make_run(status=Run.AWAITING_ANSWER, transcript=TRANSCRIPT)

    def add(n: int) -> None:
        _finished_runs(n, campaign=run.campaign, prompt=run.prompt)
        answered = [{"question": _name("why"), "answer": "because", "source": "lead"}] * n
        run.questions = answered + [{"question": "Is zetacorp-agent right?", "answer": None}]
        run.save(update_fields=["questions"])

    url = reverse("runs:blind_run", args=[run.review_key])
    assert_fixed_queries(client_for(scorer), url, add, budget=4)


def test_it_offers_prompts_to_import_a_run_for_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            _prompt()

    assert_fixed_queries(client_for(lead), reverse("runs:run_import"), add, budget=4)


# -- scoring: reviews ----------------------------------------------------------------------------


def test_it_shows_the_queue_in_fixed_queries(scorer, other_scorer, client_for):
    def add(n: int) -> None:
        # Runs waiting, runs skipped and runs reviewed, across campaigns.
        for run in _finished_runs(n):
            make_run(run.prompt, run.contestant, campaign=run.campaign)
            ReviewHold.objects.create(run=run, reviewer=scorer, skipped_at=timezone.now())
        for run in _finished_runs(n):
            _reviewed(run, [scorer, other_scorer])

    assert_fixed_queries(client_for(scorer), reverse("scoring:queue"), add, budget=9)


def test_it_shows_review_history_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for run in _finished_runs(n + 1):  # n + 1 contestants make enough pairs for n votes
            reviewer = _user(SCORER)
            _reviewed(run, [reviewer])
            reviews.submit_review(run, reviewer, dict(ANSWERS, merge="no"), "", "v2", [], 5)
        voter = _user(SCORER)
        for _ in range(n):
            _vote(voter, "left")

    assert_fixed_queries(client_for(lead), reverse("scoring:review_history"), add, budget=9)


def test_it_shows_a_reviewed_run_in_fixed_queries(scorer, client_for):
    run = make_run(transcript=TRANSCRIPT)
    Campaign.objects.filter(pk=run.campaign_id).update(reviews_wanted=LARGE + 2)
    _reviewed(run, [scorer])  # not blind any more: everyone's reviews are shown

    def add(n: int) -> None:
        _reviewed(run, [_user(SCORER) for _ in range(n)])
        _finished_runs(n, campaign=run.campaign, prompt=run.prompt)

    url = reverse("scoring:review", kwargs={"review_key": run.review_key})
    assert_fixed_queries(client_for(scorer), url, add, budget=11)  # progress: left, then all


def test_it_shows_a_pairwise_comparison_in_fixed_queries(scorer, client_for):
    first = make_run(transcript=TRANSCRIPT)
    make_run(first.prompt, _contestant(), campaign=first.campaign)
    comparison = pairing.next_comparison_for(scorer)
    pairing.record_vote(comparison, "left", "cleaner")  # voted: who made which is shown

    def add(n: int) -> None:
        # More contestants in the campaign, and more votes by this scorer.
        _finished_runs(n, campaign=first.campaign, prompt=first.prompt)
        for _ in range(n):
            _vote(scorer, "tie")

    url = reverse("scoring:pairwise", args=[comparison.pk])
    assert_fixed_queries(client_for(scorer), url, add, budget=6)


# -- scoring: rubrics and the leaderboard's lists ------------------------------------------------


def _rubric_with_criteria(n: int) -> Rubric:
    rubric = Rubric.objects.create(name=_name("rubric"))
    for index in range(n):
        Criterion.objects.create(rubric=rubric, key=_name("q"), label="Q", position=index)
    return rubric


def test_it_lists_rubrics_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            rubric = _rubric_with_criteria(3)
            for run in _finished_runs(1):
                CampaignRubric.objects.create(campaign=run.campaign, rubric=rubric)

    # +1 over the rubrics: the campaigns per rubric, counted as the editor counts them.
    assert_fixed_queries(client_for(lead), reverse("scoring:rubrics"), add, budget=5)


@pytest.mark.parametrize("role", ["lead", "admin_user"])
def test_it_edits_a_rubrics_questions_in_fixed_queries(db, request, role, client_for):
    """Admins edit every question; leads see them read-only but for "may not apply"."""
    rubric = _rubric_with_criteria(0)
    for run in _finished_runs(1):
        CampaignRubric.objects.create(campaign=run.campaign, rubric=rubric)

    def add(n: int) -> None:
        for _ in range(n):
            Criterion.objects.create(
                rubric=rubric, key=_name("q"), label="Q", scale=Criterion.CHOICES,
                choices=[["a", "A"], ["b", "B"]], only_for_tag="ui",
            )  # fmt: skip

    client = client_for(request.getfixturevalue(role))
    url = reverse("scoring:rubric_edit", args=[rubric.pk])
    assert_fixed_queries(client, url, add, budget=6)


def test_it_lists_disagreements_in_fixed_queries(lead, client_for):
    prompt = _prompt()
    campaign = Campaign.objects.create(name="March", prompt_set=prompt.prompt_set)

    def add(n: int) -> None:
        for run in _finished_runs(n, campaign=campaign, prompt=prompt):
            for verdict in ("yes", "no"):
                reviews.submit_review(
                    run, _user(SCORER), dict(ANSWERS, merge=verdict), "", verdict, [], 5
                )

    url = reverse("scoring:leaderboard_disagreements") + f"?campaign={campaign.pk}"
    assert_fixed_queries(client_for(lead), url, add, budget=15)


def test_it_lists_leaderboard_history_in_fixed_queries(lead, client_for):
    def add(n: int) -> None:
        for _ in range(n):
            for run in _finished_runs(2):
                _reviewed(run, [_user(SCORER)])

    url = reverse("scoring:leaderboard_history")
    assert_fixed_queries(client_for(lead), url, add, budget=13)


# -- pages added since: invites, API tokens, series, drafts, judges ------------------------------


def test_it_lists_invites_in_fixed_queries(admin_user, client_for):
    from evalsite.accounts import create_invite

    def add(n: int) -> None:
        for index in range(n):
            invite, _token = create_invite((SCORER, LEAD)[index % 2], 7, admin_user, "")
            if index % 2:  # used ones name who used them
                invite.used_by, invite.used_at = _user(SCORER), timezone.now()
                invite.save()

    assert_fixed_queries(client_for(admin_user), reverse("invites"), add, budget=5)


def test_it_lists_a_users_api_tokens_in_fixed_queries(lead, client_for):
    from api import tokens

    def add(n: int) -> None:
        for _ in range(n):
            tokens.create(lead, _name("ci"))

    assert_fixed_queries(client_for(lead), reverse("api:tokens"), add, budget=5)


def test_it_lists_series_in_fixed_queries(lead, client_for):
    from api import series

    def add(n: int) -> None:
        for run in _finished_runs(n):
            series.series_for(Campaign.objects.create(prompt_set=run.prompt.prompt_set))

    assert_fixed_queries(client_for(lead), reverse("api:series_list"), add, budget=6)


def test_it_lists_a_repositorys_drafts_in_fixed_queries(admin_user, client_for):
    from runs.models import PromptDraft

    repository = _repository()
    serial = count(1)

    def add(n: int) -> None:
        for _ in range(n):
            number = next(serial)
            PromptDraft.objects.create(
                repository=repository,
                commit=f"{number:040x}",
                parent=f"{number + 1000:040x}",
                subject=f"Fix {number}",
                title=f"Fix {number}",
            )

    url = reverse("runs:drafts", args=[repository.pk])
    assert_fixed_queries(client_for(admin_user), url, add, budget=6)

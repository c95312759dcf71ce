"""The disagreements page (leads): runs whose reviewers disagree, side by side, and adjudication."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from runs.models import Run
from scoring import leaderboard
from scoring.leaderboard import Filters
from scoring.models import Adjudication, Review
from tests.scoring.test_leaderboard import Builder

DISAGREEMENTS = reverse("scoring:leaderboard_disagreements")
AGREEMENT = reverse("scoring:leaderboard_agreement")


def adjudicate_url(run: Run) -> str:
    return reverse("scoring:leaderboard_adjudicate", args=[run.pk])


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def build(db):
    return Builder()


def reviewed(build: Builder, campaign, key: str, answers: list[tuple[str, str, str]]) -> Run:
    """A run of the bot on prompt `key`, with one submitted review per (verdict, right_files,
    notes)."""
    run = build.run(campaign, build.prompt(key), build.contestant("bot"))
    for index, (verdict, right_files, notes) in enumerate(answers):
        Review.objects.create(
            run=run, reviewer=build.reviewer(index), verdict=verdict, notes=notes,
            answers={"merge": verdict, "right_files": right_files}, submitted_at=timezone.now(),
        )  # fmt: skip
    return run


@pytest.fixture
def disputes(build):
    campaign = build.campaign()
    runs = {
        "near": reviewed(
            build, campaign, "near", [("yes", "yes", ""), ("small_changes", "yes", "")]
        ),
        "apart": reviewed(
            build,
            campaign,
            "apart",
            [("yes", "yes", "Tests pass, ship it"), ("no", "yes", "Breaks the public API")],
        ),
        "outvoted": reviewed(
            build, campaign, "outvoted", [("yes", "yes", ""), ("yes", "yes", ""), ("no", "yes", "")]
        ),
        "files": reviewed(build, campaign, "files", [("yes", "yes", ""), ("yes", "no", "")]),
        "agreed": reviewed(build, campaign, "agreed", [("no", "no", ""), ("no", "no", "")]),
        "alone": reviewed(build, campaign, "alone", [("yes", "yes", "")]),
    }
    return campaign, runs


def shown_runs(html: str) -> list[int]:
    return [
        int(pk)
        for pk in re.findall(r'class="card dispute[^"]*" id="run-\d+" data-run="(\d+)"', html)
    ]


def test_it_lists_disputed_runs_most_divided_first(disputes, client_for, lead):
    campaign, runs = disputes

    response = client_for(lead).get(DISAGREEMENTS, {"campaign": campaign.pk})

    assert response.status_code == 200
    html = response.content.decode()
    # yes against no (half the reviewers outside the most common verdict), then yes against no
    # with one reviewer outvoted, then yes against after small changes, then a question only.
    order = [runs[key].pk for key in ("apart", "outvoted", "near", "files")]
    assert shown_runs(html) == order
    assert "4 runs in dispute, 0 adjudicated" in html


def test_it_shows_each_reviewers_answers_and_notes_side_by_side(disputes, client_for, lead):
    campaign, runs = disputes

    html = client_for(lead).get(DISAGREEMENTS, {"campaign": campaign.pk}).content.decode()

    card = html[html.index(f'id="run-{runs["apart"].pk}"') :]
    card = card[: card.index("</table>")]
    assert "<th>rev0</th><th>rev1</th>" in card
    verdicts = re.search(r'<tr class="disputed"><td>Would you merge it\?.*?</tr>', card).group(0)
    assert "<td>Yes, merge it</td><td>No</td>" in verdicts
    assert re.search(r"<tr><td>Found the right files</td><td>Yes</td><td>Yes</td></tr>", card)
    assert "<td>Tests pass, ship it</td><td>Breaks the public API</td>" in card
    files = html[html.index(f'id="run-{runs["files"].pk}"') :]
    assert re.search(
        r'<tr class="disputed"><td>Found the right files <span class="badge">differs</span></td>'
        r"<td>Yes</td><td>No</td></tr>",
        files,
    )


def test_it_adjudicates_a_run_and_the_board_uses_it(disputes, client_for, lead):
    campaign, runs = disputes
    client = client_for(lead)
    before = leaderboard.rows(Filters(campaign_id=campaign.pk))[0]
    query = f"campaign={campaign.pk}&tag=&verdict=majority&page=1"

    response = client.post(
        adjudicate_url(runs["apart"]),
        {"verdict": "no", "note": "Breaking the API is not a small change.", "query": query},
    )

    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == DISAGREEMENTS and location.fragment == f"run-{runs['apart'].pk}"
    assert parse_qs(location.query) == {
        "campaign": [str(campaign.pk)], "verdict": ["majority"], "page": ["1"],
    }  # fmt: skip
    adjudication = Adjudication.objects.get(run=runs["apart"])
    assert (adjudication.verdict, adjudication.decided_by) == ("no", lead)
    after = leaderboard.rows(Filters(campaign_id=campaign.pk))[0]
    assert after["adjudicated_runs"] == 1
    assert after["merges"] == pytest.approx(before["merges"] - 0.5)
    html = client.get(DISAGREEMENTS, {"campaign": campaign.pk}).content.decode()
    assert "adjudicated: No</span>" in html
    assert "Breaking the API is not a small change." in html
    assert "4 runs in dispute, 1 adjudicated" in html


def test_it_replaces_an_adjudication_when_a_lead_changes_it(disputes, client_for, lead):
    campaign, runs = disputes
    client = client_for(lead)
    client.post(adjudicate_url(runs["near"]), {"verdict": "yes", "note": "Fine as is."})

    client.post(adjudicate_url(runs["near"]), {"verdict": "small_changes", "note": "Rename x."})

    [adjudication] = Adjudication.objects.filter(run=runs["near"])
    assert (adjudication.verdict, adjudication.note) == ("small_changes", "Rename x.")


@pytest.mark.parametrize(
    "data", [{"verdict": "yes", "note": ""}, {"verdict": "ship", "note": "Why not"}, {"note": "x"}]
)
def test_it_refuses_an_adjudication_without_a_verdict_and_a_note(disputes, client_for, lead, data):
    _, runs = disputes

    response = client_for(lead).post(adjudicate_url(runs["apart"]), data, follow=True)

    assert not Adjudication.objects.exists()
    assert f"Run {runs['apart'].pk} was not adjudicated" in response.content.decode()


@pytest.mark.parametrize("status", [Run.ERRORED, Run.RUNNING])
def test_it_404s_for_runs_that_cannot_be_adjudicated(build, client_for, lead, status):
    run = build.run(build.campaign(), build.prompt("a"), build.contestant("bot"), status=status)

    response = client_for(lead).post(adjudicate_url(run), {"verdict": "yes", "note": "x"})

    assert response.status_code == 404
    assert not Adjudication.objects.exists()


def test_it_lets_only_leads_adjudicate(disputes, client_for, scorer):
    _, runs = disputes

    response = client_for(scorer).post(
        adjudicate_url(runs["apart"]), {"verdict": "no", "note": "x"}
    )

    assert response.status_code == 403
    assert not Adjudication.objects.exists()


def test_it_reports_agreement_before_and_after_adjudication(disputes, client_for, lead):
    campaign, runs = disputes
    client = client_for(lead)
    for key in ("apart", "outvoted", "near"):
        client.post(adjudicate_url(runs[key]), {"verdict": "yes", "note": "Settled."})

    [verdict, *_] = leaderboard.agreement(Filters(campaign_id=campaign.pk))["measures"]

    # Left: "files" and "agreed", on which reviewers agree, and the adjudicated three.
    assert verdict["alpha"] < 0.667
    assert verdict["after"]["alpha"] == 1.0
    html = client.get(AGREEMENT, {"campaign": campaign.pk}).content.decode()
    assert re.search(r'<td class="num alpha-after">1.00 <span class="muted small">reliable', html)
    assert "3 runs adjudicated" in html

"""Pairwise mode: balanced pairs, stable blind order, votes recorded as seen."""

from __future__ import annotations

import random

import pytest
from django.urls import reverse

from scoring import pairing
from scoring.models import Comparison
from tests.scoring.test_review import make_contestant, make_prompt, make_run


@pytest.fixture
def three_way(db):
    """One prompt (and a second one) run by three contestants in one campaign."""
    prompts = [make_prompt(), make_prompt(key="second", title="Second task")]
    contestants = [make_contestant(f"agent-{n}", f"model-{n}") for n in range(3)]
    first = make_run(prompts[0], contestants[0])
    runs = [first]
    for prompt in prompts:
        for contestant in contestants:
            if prompt == prompts[0] and contestant == contestants[0]:
                continue
            runs.append(make_run(prompt, contestant, campaign=first.campaign))
    return {"prompts": prompts, "contestants": contestants, "runs": runs}


def test_it_pairs_two_runs_of_one_prompt_by_different_contestants(three_way, scorer):
    comparison = pairing.next_comparison_for(scorer)
    assert comparison.run_a.prompt_id == comparison.run_b.prompt_id == comparison.prompt_id
    assert comparison.run_a.contestant_id != comparison.run_b.contestant_id
    assert comparison.outcome == ""


def test_it_shows_the_same_pair_in_the_same_order_until_voted(three_way, scorer, client_for):
    client = client_for(scorer)
    first = client.get(reverse("scoring:pairwise_next"))
    second = client.get(reverse("scoring:pairwise_next"))
    assert first["Location"] == second["Location"]
    assert Comparison.objects.filter(reviewer=scorer).count() == 1


def test_it_never_offers_a_pair_the_user_voted_on(three_way, scorer):
    seen = set()
    while (comparison := pairing.next_comparison_for(scorer)) is not None:
        pair = (comparison.run_a_id, comparison.run_b_id)
        assert pair not in seen
        seen.add(pair)
        pairing.record_vote(comparison, "tie")
    assert len(seen) == 6  # 3 contestant pairs x 2 prompts


def test_it_spreads_votes_across_contestant_pairs_then_prompts(three_way, scorer):
    votes = []
    for _ in range(3):
        comparison = pairing.next_comparison_for(scorer, rng=random.Random(1))
        votes.append(comparison)
        pairing.record_vote(comparison, "left")
    contestant_pairs = {frozenset((c.run_a.contestant_id, c.run_b.contestant_id)) for c in votes}
    assert len(contestant_pairs) == 3
    fourth = pairing.next_comparison_for(scorer, rng=random.Random(1))
    # Every contestant pair has one vote now; the prompt with fewer comparisons comes next.
    prompt_counts = {p.pk: sum(c.prompt_id == p.pk for c in votes) for p in three_way["prompts"]}
    assert prompt_counts[fourth.prompt_id] == min(prompt_counts.values())


@pytest.mark.parametrize("a_left", [True, False])
def test_it_records_the_vote_as_the_scorer_saw_it(three_way, scorer, client_for, a_left):
    comparison = pairing.next_comparison_for(scorer)
    Comparison.objects.filter(pk=comparison.pk).update(a_shown_left=a_left)
    client_for(scorer).post(
        reverse("scoring:pairwise_vote", kwargs={"comparison_id": comparison.pk}),
        {"choice": "left", "reason": "cleaner"},
    )
    comparison.refresh_from_db()
    assert comparison.outcome == (Comparison.A if a_left else Comparison.B)
    assert comparison.reason == "cleaner" and comparison.decided_at is not None


def test_it_hides_identities_until_the_vote(three_way, scorer, client_for):
    client = client_for(scorer)
    comparison = pairing.next_comparison_for(scorer)
    url = reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk})
    body = client.get(url).content.decode()
    assert "agent-" not in body and "model-" not in body
    client.post(
        reverse("scoring:pairwise_vote", kwargs={"comparison_id": comparison.pk}),
        {"choice": "both_bad", "then": "stay"},
    )
    body = client.get(url).content.decode()
    assert comparison.run_a.contestant.name in body and comparison.run_b.contestant.name in body


def test_it_keeps_comparisons_private_to_their_scorer(
    three_way, scorer, other_scorer, lead, client_for
):
    comparison = pairing.next_comparison_for(scorer)
    url = reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk})
    vote = reverse("scoring:pairwise_vote", kwargs={"comparison_id": comparison.pk})
    assert client_for(other_scorer).get(url).status_code == 404
    assert client_for(other_scorer).post(vote, {"choice": "left"}).status_code == 404
    page = client_for(lead).get(url)
    assert (
        page.status_code == 200
        and b"read-only" in page.content
        and b'name="choice"' not in page.content
    )
    assert client_for(lead).post(vote, {"choice": "left"}).status_code == 404
    comparison.refresh_from_db()
    assert comparison.outcome == ""


def test_it_says_when_there_is_nothing_to_compare(db, scorer, client_for):
    make_run()
    response = client_for(scorer).get(reverse("scoring:pairwise_next"))
    assert response.status_code == 200 and b"No pair left to compare" in response.content

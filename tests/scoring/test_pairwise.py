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
    response = client.post(
        reverse("scoring:pairwise_vote", kwargs={"comparison_id": comparison.pk}),
        {"choice": "both_bad"},
    )
    # The reveal is on the page of the pair just voted on, never on the next one.
    assert response.status_code == 302 and response["Location"] == url
    body = client.get(url).content.decode()
    assert comparison.run_a.contestant.name in body and comparison.run_b.contestant.name in body
    assert 'id="next-pair"' in body and 'name="choice"' not in body
    following = client.get(reverse("scoring:pairwise_next"), follow=True).content.decode()
    assert "agent-" not in following and "model-" not in following


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


def test_it_keeps_a_vote_final(three_way, scorer, client_for):
    comparison = pairing.next_comparison_for(scorer)
    pairing.record_vote(comparison, "left")
    with pytest.raises(ValueError, match="already voted"):
        pairing.record_vote(Comparison.objects.get(pk=comparison.pk), "right")
    comparison.refresh_from_db()
    assert pairing.shown_choice(comparison) == "left"


def test_it_stops_offering_pairs_when_the_wanted_votes_are_in(
    three_way, scorer, other_scorer, client_for
):
    campaign = three_way["runs"][0].campaign
    campaign.reviews_wanted = 1  # one vote per prompt and two contestants: six cells
    campaign.save()
    assert pairing.progress(campaign.pk) == {"wanted": 6, "decided": 0, "left": 6}
    for voter in (scorer, other_scorer, scorer, other_scorer, scorer, other_scorer):
        pairing.record_vote(pairing.next_comparison_for(voter), "tie")

    assert pairing.progress(campaign.pk) == {"wanted": 6, "decided": 6, "left": 0}
    assert pairing.next_comparison_for(scorer) is None
    assert pairing.next_comparison_for(other_scorer) is None
    page = client_for(scorer).get(reverse("scoring:pairwise_next")).content.decode()
    assert "All 6 votes wanted are in" in page


def test_it_does_not_offer_a_cell_someone_else_is_voting_on(three_way, scorer, other_scorer):
    campaign = three_way["runs"][0].campaign
    campaign.reviews_wanted = 1
    campaign.save()
    shown = [pairing.next_comparison_for(user) for user in (scorer, other_scorer)]
    cells = {
        (c.prompt_id, frozenset((c.run_a.contestant_id, c.run_b.contestant_id))) for c in shown
    }
    assert len(cells) == 2


def test_it_says_how_many_votes_are_left(three_way, scorer, client_for):
    client = client_for(scorer)
    first = client.get(reverse("scoring:pairwise_next"), follow=True).content.decode()
    assert "12 of 12 votes left" in first
    comparison = Comparison.objects.get(reviewer=scorer)
    client.post(reverse("scoring:pairwise_vote", args=[comparison.pk]), {"choice": "left"})
    voted = client.get(reverse("scoring:pairwise", args=[comparison.pk])).content.decode()
    assert "11 of 12 votes left" in voted


def test_it_keeps_the_compare_page_within_a_query_budget(
    three_way, scorer, client_for, django_assert_max_num_queries
):
    client = client_for(scorer)
    url = client.get(reverse("scoring:pairwise_next"))["Location"]
    client.get(url)  # warm the diff caches
    with django_assert_max_num_queries(6):
        assert client.get(url).status_code == 200

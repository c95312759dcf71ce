"""The review queue: places held on runs, skipping, each scorer's own order, what is left."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from runs.models import Campaign, Run
from scoring import queue, reviews
from scoring.models import Review, ReviewHold
from tests.scoring.test_review import ANSWERS, make_contestant, make_prompt, make_run, post_answers


def first_in_queue(user):
    """The run at the head of `user`'s queue, looked at without taking a place on it."""
    runs = queue.in_order_for(user, queue.needing_review(user))
    return runs[0] if runs else None


def review_url(run) -> str:
    return reverse("scoring:review", args=[run.review_key])


@pytest.fixture
def one_wanted(db):
    """A run whose campaign wants one review, and a second run beside it."""
    prompt = make_prompt()
    run = make_run(prompt)
    run.campaign.reviews_wanted = 1
    run.campaign.save()
    other = make_run(prompt, make_contestant("other-agent", "other-1"), campaign=run.campaign)
    return run, other


def test_it_holds_a_run_for_no_more_scorers_than_it_wants(
    one_wanted, scorer, other_scorer, client_for
):
    run, other = one_wanted
    client_for(scorer).get(review_url(run))  # sam takes the only place
    assert ReviewHold.objects.live().filter(run=run, reviewer=scorer).exists()

    client = client_for(other_scorer)
    assert list(queue.needing_review(other_scorer)) == [other]
    page = client.get(review_url(run)).content.decode()
    assert "already has the 1 review it wants" in page
    assert 'id="submit-review"' not in page

    response = client.post(reverse("scoring:review_submit", args=[run.review_key]),
                           post_answers(ANSWERS))  # fmt: skip
    assert response.status_code == 409
    assert "already has the 1 review it wants" in response.content.decode()
    assert not Review.objects.filter(run=run, reviewer=other_scorer, submitted_at__isnull=False)


def test_it_lets_an_unused_hold_lapse_after_half_an_hour(one_wanted, scorer, other_scorer):
    run, _ = one_wanted
    assert queue.hold(run, scorer)
    assert not queue.hold(run, other_scorer)
    ReviewHold.objects.filter(run=run, reviewer=scorer).update(
        held_at=timezone.now() - ReviewHold.LAPSES_AFTER - timedelta(minutes=1)
    )
    assert queue.hold(run, other_scorer)
    assert not queue.hold(run, scorer)  # the place is taken now


def test_it_refuses_a_review_beyond_those_wanted_until_a_lead_asks_for_another(
    one_wanted, scorer, other_scorer, lead, client_for
):
    run, _ = one_wanted
    reviews.submit_review(run, scorer, ANSWERS, "", "", [], 5)
    with pytest.raises(queue.NoPlaceLeft, match="A lead can ask for another review"):
        reviews.submit_review(run, other_scorer, ANSWERS, "", "", [], 5)
    ask = reverse("scoring:review_ask_another", args=[run.review_key])
    assert client_for(scorer).post(ask).status_code == 403

    response = client_for(lead).post(ask)

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.extra_reviews_wanted == 1 and run.reviews_wanted == 2
    assert list(queue.needing_review(other_scorer)) != []
    review = reviews.submit_review(run, other_scorer, ANSWERS, "", "", [], 5)
    assert review.is_submitted
    # Changing a submitted review is not another review: it is never refused.
    reviews.submit_review(run, scorer, dict(ANSWERS, merge="no"), "", "changed", [], 5)


def test_it_frees_the_place_when_the_review_is_in(one_wanted, scorer):
    run, _ = one_wanted
    queue.hold(run, scorer)
    reviews.submit_review(run, scorer, ANSWERS, "", "", [], 5)
    assert not ReviewHold.objects.filter(run=run).exists()


def test_it_lets_a_scorer_skip_a_run(one_wanted, scorer, client_for):
    run, other = one_wanted
    client = client_for(scorer)
    client.get(review_url(run))

    response = client.post(reverse("scoring:review_skip", args=[run.review_key]), follow=True)

    assert response.redirect_chain[-1][0] == review_url(other)
    assert list(queue.needing_review(scorer)) == [other]
    assert not ReviewHold.objects.live().filter(run=run).exists()  # the place is free again
    listed = client.get(reverse("scoring:queue")).content.decode()
    assert "Skipped" in listed and review_url(run) in listed
    client.get(review_url(run))  # opening it again takes it up again
    assert run in queue.needing_review(scorer)


def test_it_brings_an_interrupted_review_back_first(db, scorer):
    prompt = make_prompt()
    runs = [make_run(prompt)]
    for n in range(3):
        runs.append(
            make_run(prompt, make_contestant(f"c-{n}", f"m-{n}"), campaign=runs[0].campaign)
        )
    started = first_in_queue(scorer)
    later = next(run for run in runs if run != started)
    reviews.save_draft(later, scorer, {"answers": {"right_files": "yes"}})
    assert first_in_queue(scorer) == later


@pytest.fixture
def grid(db):
    """Three contestants, four prompts: twelve runs in one campaign."""
    contestants = [make_contestant(f"agent-{n}", f"model-{n}") for n in range(3)]
    prompts = [make_prompt(key=f"task-{n}", title=f"Task {n}") for n in range(4)]
    first = make_run(prompts[0], contestants[0])
    runs = [first] + [
        make_run(prompt, contestant, campaign=first.campaign)
        for prompt in prompts
        for contestant in contestants
        if (prompt, contestant) != (prompts[0], contestants[0])
    ]
    return runs


def test_it_gives_each_scorer_an_order_of_their_own(grid, scorer, other_scorer):
    campaign_id = grid[0].campaign_id
    mine = queue.personal_order(scorer, [campaign_id])
    again = queue.personal_order(scorer, [campaign_id])
    theirs = queue.personal_order(other_scorer, [campaign_id])
    assert mine == again  # stable across visits
    assert sorted(mine, key=mine.get) != sorted(theirs, key=theirs.get)
    assert sorted(mine, key=mine.get) != sorted(run.pk for run in grid)


def test_it_deals_runs_out_evenly_across_contestants(grid, scorer):
    contestant_of = {run.pk: run.contestant_id for run in grid}
    order = queue.personal_order(scorer, [grid[0].campaign_id])
    sequence = [contestant_of[pk] for pk in sorted(order, key=order.get)]
    for end in range(3, len(sequence) + 1, 3):  # every round of three has each contestant once
        assert set(Counter(sequence[:end]).values()) == {end // 3}


def test_it_walks_the_queue_in_that_order(grid, scorer):
    order = queue.personal_order(scorer, [grid[0].campaign_id])
    seen = []
    while (run := first_in_queue(scorer)) is not None:
        seen.append(run.pk)
        reviews.submit_review(run, scorer, ANSWERS, "", "", [], 5)
    assert seen == sorted(order, key=order.get)


def test_review_next_passes_over_a_run_whose_last_place_was_just_taken(
    grid, scorer, other_scorer, client_for, monkeypatch
):
    """Both scorers are offered the same last place; the one who comes second is sent on to
    the next run in their order, not to a page they cannot submit."""
    Campaign.objects.filter(pk=grid[0].campaign_id).update(reviews_wanted=1)
    expected = queue.in_order_for(scorer, queue.needing_review(scorer))
    hold = queue.hold

    def other_scorer_takes_it_meanwhile(run, user):
        if user == scorer and run == expected[0]:
            assert hold(run, other_scorer)  # between the scorer's query and their hold
        return hold(run, user)

    monkeypatch.setattr(queue, "hold", other_scorer_takes_it_meanwhile)
    client = client_for(scorer)

    response = client.get(reverse("scoring:review_next"))

    assert response.status_code == 302 and response.url == review_url(expected[1])
    monkeypatch.undo()
    page = client.get(response.url).content.decode()
    submitted = client.post(
        reverse("scoring:review_submit", args=[expected[1].review_key]), post_answers(ANSWERS)
    )
    assert submitted.status_code == 302, page
    assert Review.objects.get(run=expected[1], reviewer=scorer).submitted_at is not None


def test_review_next_never_says_nothing_is_left_when_it_only_lost_races(
    grid, scorer, client_for, monkeypatch
):
    expected = queue.in_order_for(scorer, queue.needing_review(scorer))
    monkeypatch.setattr(queue, "hold", lambda run, user: False)  # every place went meanwhile

    response = client_for(scorer).get(reverse("scoring:review_next"))

    assert response.status_code == 302 and response.url == review_url(expected[0])


def test_it_offers_runs_nobody_is_on_before_runs_someone_holds(grid, scorer, other_scorer):
    first = first_in_queue(other_scorer)
    queue.hold(first, other_scorer)
    offered = queue.in_order_for(scorer, queue.needing_review(scorer))
    assert len(offered) == 12 and offered[-1] == first


def test_it_says_how_many_are_left(grid, scorer, client_for):
    client = client_for(scorer)
    run = first_in_queue(scorer)
    assert "12 of 12 left" in client.get(review_url(run)).content.decode()
    client.post(reverse("scoring:review_submit", args=[run.review_key]), post_answers(ANSWERS))
    assert "11 of 12 left" in client.get(review_url(run)).content.decode()


def the_rule(user, campaign_id: int | None) -> list[tuple]:
    """The queue's rule, worked out run by run from the rows: QUEUE_COLUMNS of each run waiting
    for `user`, sorted."""
    since = ReviewHold.live_since()
    rows = []
    for run in Run.objects.reviewable().select_related("campaign"):
        if campaign_id is not None and run.campaign_id != campaign_id:
            continue
        reviews, holds = list(run.reviews.all()), list(run.holds.all())
        submitted = sum(1 for review in reviews if review.submitted_at)
        live = [hold for hold in holds if hold.skipped_at is None and hold.held_at >= since]
        held_by_me = any(hold.reviewer_id == user.pk for hold in live)
        held_by_others = sum(1 for hold in live if hold.reviewer_id != user.pk)
        if any(r.reviewer_id == user.pk and r.submitted_at for r in reviews) or any(
            hold.reviewer_id == user.pk and hold.skipped_at for hold in holds
        ):
            continue
        wanted = run.reviews_wanted
        if submitted < wanted and (held_by_me or wanted > submitted + held_by_others):
            has_draft = any(r.reviewer_id == user.pk and not r.submitted_at for r in reviews)
            rows.append((run.pk, run.campaign_id, int(held_by_me), int(has_draft), submitted,
                         held_by_others, wanted, run.review_key))  # fmt: skip
    return sorted(rows)


def test_the_queue_finds_the_runs_its_rule_names(grid, scorer, other_scorer):
    """Whatever the reviews, drafts, holds (live or lapsed) and skips, and a lead's extra
    review, the queue's SQL finds the runs, places and counts the rule names, for each scorer,
    over all campaigns and one at a time."""
    Campaign.objects.filter(pk=grid[0].campaign_id).update(reviews_wanted=1)
    elsewhere = make_run(make_prompt(key="elsewhere"))  # a campaign of its own
    reviews.submit_review(grid[0], scorer, ANSWERS, "", "", [], 5)
    reviews.save_draft(grid[1], scorer, {"answers": {"right_files": "yes"}})
    assert queue.hold(grid[2], other_scorer) and queue.hold(grid[3], scorer)
    assert queue.skip(grid[4], scorer)
    assert queue.hold(grid[5], other_scorer)
    ReviewHold.objects.filter(run=grid[5]).update(
        held_at=timezone.now() - ReviewHold.LAPSES_AFTER - timedelta(minutes=1)
    )
    queue.ask_for_another_review(grid[2])
    assert queue.hold(grid[2], scorer)  # the extra place
    for user in (scorer, other_scorer):
        for campaign_id in (None, grid[0].campaign_id, elsewhere.campaign_id):
            rows = sorted(
                (*(int(v) for v in row[:-1]), row[-1])
                for row in queue.waiting_rows(user, campaign_id)
            )
            assert rows == the_rule(user, campaign_id)
            assert queue.pending_reviews_for(user, campaign_id) == len(rows)
    waiting = {row[0] for row in queue.waiting_rows(scorer)}
    assert waiting == {run.pk for run in grid[1:] if run != grid[4]} | {elsewhere.pk}
    assert {run.pk for run in queue.needing_review(scorer)} == waiting


def test_holds_lapse_by_each_calls_clock(one_wanted, scorer, other_scorer, monkeypatch):
    run, other = one_wanted
    assert queue.hold(run, other_scorer)
    assert [row[0] for row in queue.waiting_rows(scorer)] == [other.pk]
    later = timezone.now() + ReviewHold.LAPSES_AFTER + timedelta(minutes=1)
    monkeypatch.setattr(timezone, "now", lambda: later)
    assert sorted(row[0] for row in queue.waiting_rows(scorer)) == sorted([run.pk, other.pk])

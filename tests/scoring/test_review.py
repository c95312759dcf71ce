"""The review queue and the blind review page: what a scorer sees, drafts, submitting."""

from __future__ import annotations

import json
import operator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from runs import diffs
from runs.identity import IDENTITY_FIELDS
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from scoring import review_page, reviews
from scoring.models import Criterion, Review, ReviewVersion

BEFORE = "".join(f"line {n}\n" for n in range(1, 21))
AFTER = BEFORE.replace("line 15\n", "line fifteen\n")
DIFF = (
    "diff --git a/app.py b/app.py\n"
    "index 1111111..2222222 100644\n"
    "--- a/app.py\n"
    "+++ b/app.py\n"
    "@@ -12,7 +12,7 @@\n"
    " line 12\n line 13\n line 14\n-line 15\n+line fifteen\n line 16\n line 17\n line 18\n"
)
LOCKFILE_DIFF = (
    "diff --git a/package-lock.json b/package-lock.json\n"
    "--- a/package-lock.json\n"
    "+++ b/package-lock.json\n"
    "@@ -1 +1 @@\n"
    '-{"lockfileVersion": 2}\n'
    '+{"lockfileVersion": 3}\n'
)
TRANSCRIPT = {
    "schema_version": "ATIF-v1.4",
    "agent": {"name": "mergeable-builtin", "version": "1", "model_name": "zeta-9000"},
    "steps": [
        {"step_id": 1, "source": "user", "message": "Fix line 15"},
        {
            "step_id": 2,
            "source": "agent",
            "message": "I am Zeta-9000 by zetacorp-agent, editing now.",
            "tool_calls": [
                {
                    "tool_call_id": "c1",
                    "function_name": "run_command",
                    "arguments": {"command": "pytest -q"},
                },
            ],
            "observation": {"results": [{"source_call_id": "c1", "content": "exit 0\n3 passed"}]},
            "metrics": {"prompt_tokens": 1234, "completion_tokens": 56, "cost_usd": 0.98765},
        },
    ],
    "final_metrics": {"total_prompt_tokens": 1234, "total_cost_usd": 0.98765},
}


def make_prompt(**overrides) -> Prompt:
    repo, _ = Repository.objects.get_or_create(
        name="shop", defaults={"url": "https://git.example.com/shop.git"}
    )
    prompt_set, _ = PromptSet.objects.get_or_create(name="backend")
    fields = {
        "prompt_set": prompt_set,
        "key": "fix-15",
        "title": "Fix line fifteen",
        "instructions": "Change **line 15**.",
        "repository": repo,
        "commit": "a" * 40,
        "acceptance_criteria": ["Line 15 reads fifteen"],
        "test_command": "pytest",
    }
    fields.update(overrides)
    return Prompt.objects.create(**fields)


def make_contestant(
    name: str = "zetacorp-agent",
    model_id: str = "zeta-9000",
    *,
    base_url: str = "http://127.0.0.1:1",
    harness: str = Contestant.BUILTIN,
    provider: str = LanguageModel.OPENAI,
    **fields,
) -> Contestant:
    model = LanguageModel.objects.create(
        name=f"{name}-model", provider=provider, model_id=model_id, base_url=base_url
    )
    return Contestant.objects.create(name=name, model=model, harness=harness, **fields)


def make_run(
    prompt: Prompt | None = None,
    contestant: Contestant | None = None,
    *,
    campaign: Campaign | None = None,
    status: str = Run.FINISHED,
    diff: str = DIFF,
    before: dict | None = None,
    after: dict | None = None,
    transcript: dict | None = None,
    **fields,
) -> Run:
    prompt = prompt or make_prompt()
    contestant = contestant or make_contestant()
    if campaign is None:
        campaign = Campaign.objects.create(name="C", prompt_set=prompt.prompt_set)
    campaign.contestants.add(contestant)
    now = timezone.now()
    defaults = {
        "cost_usd": 0.98765,
        "test_exit_code": 0,
        "tests_passed": 3,
        "tests_failed": 0,
        "test_output_tail": "3 passed",
        "started_at": now,
        "finished_at": now,
    }
    run = Run.objects.create(
        campaign=campaign,
        prompt=prompt,
        contestant=contestant,
        status=status,
        repeat=Run.objects.filter(campaign=campaign, prompt=prompt, contestant=contestant).count(),
        snapshot={"prompt": prompt.snapshot(), "contestant": contestant.snapshot()},
        **{**defaults, **fields},
    )
    run.save_artifact("diff.patch", diff)
    run.save_artifact(
        "before.json", json.dumps(before if before is not None else {"app.py": BEFORE})
    )
    run.save_artifact("after.json", json.dumps(after if after is not None else {"app.py": AFTER}))
    if transcript is not None:
        run.save_artifact("transcript.json", json.dumps(transcript))
    return run


ANSWERS = {"right_files": "yes", "conventions": "4", "recovered": "yes", "merge": "yes"}


def post_answers(answers: dict, **extra) -> dict:
    data = {f"answer-{key}": value for key, value in answers.items()}
    data.update({"notes": "", "line_comments": "[]", "time_spent_s": "30"})
    data.update(extra)
    return data


@pytest.fixture
def run(db):
    return make_run(transcript=TRANSCRIPT)


def test_it_hides_who_made_the_run_until_the_reviewer_submits(run, scorer, client_for):
    client = client_for(scorer)
    url = reverse("scoring:review", kwargs={"review_key": run.review_key})
    body = client.get(url).content.decode()
    assert "fifteen</span>" in body  # the diff itself
    assert "zetacorp" not in body.lower()
    assert "zeta-9000" not in body.lower()
    assert "0.98" not in body  # no cost, per step or in total
    assert "1234" in body  # tokens are fine

    response = client.post(
        reverse("scoring:review_submit", kwargs={"review_key": run.review_key}),
        post_answers(ANSWERS),
    )
    # The reveal is on the page of the run just reviewed.
    assert response.status_code == 302 and response["Location"] == url
    body = client.get(url).content.decode()
    assert "This run was by zetacorp-agent" in body
    assert "zeta-9000" in body and "OpenAI-compatible" in body


def test_it_names_runs_by_an_opaque_key_never_their_id(run, scorer, client_for):
    client = client_for(scorer)
    assert len(run.review_key) >= 16 and str(run.pk) != run.review_key
    assert client.get(f"/review/runs/{run.pk}/").status_code == 404
    body = client.get(reverse("scoring:review", args=[run.review_key])).content.decode()
    assert f"/runs/{run.pk}/" not in body and f"Run {run.pk}" not in body


def test_it_hides_provider_harness_and_endpoint_in_what_the_agent_wrote(db, scorer, client_for):
    contestant = make_contestant(
        "acme-coder",
        "acme/coder-large-2",
        base_url="https://llm.acme-labs.example:8443/proxy/acme-v1",
        harness=Contestant.AIDER,
        provider=LanguageModel.ANTHROPIC,
    )
    said = (
        "I am acme-coder (acme-coder-model, acme/coder-large-2) via Aider on anthropic, calling "
        "https://llm.acme-labs.example:8443/proxy/acme-v1/v1/messages. builtins are fine."
    )
    transcript = {"steps": [{"step_id": 1, "source": "agent", "message": said}]}
    run = make_run(contestant=contestant, transcript=transcript, test_output_tail="aider: ok")

    body = client_for(scorer).get(reverse("scoring:review", args=[run.review_key]))

    text = body.content.decode()
    for word in ("acme", "coder-large", "aider", "anthropic", "llm.acme-labs", "/proxy/"):
        assert word not in text.lower(), word
    assert "I am [hidden] ([hidden], [hidden]) via [hidden] on [hidden], calling" in text
    assert "builtins are fine." in text  # whole words only: ordinary words stay readable


def test_it_hides_the_program_a_command_harness_runs(db, scorer, client_for):
    contestant = make_contestant(
        "cli-bot",
        "m-1",
        harness=Contestant.COMMAND,
        options={"command": "npx turbo-agent --repo {workspace} --task-file {prompt_file}"},
    )
    transcript = {"steps": [{"step_id": 1, "source": "agent", "message": "turbo-agent v3 ran"}]}
    run = make_run(contestant=contestant, transcript=transcript)

    text = client_for(scorer).get(reverse("scoring:review", args=[run.review_key])).content
    assert b"turbo-agent" not in text and b"[hidden] v3 ran" in text


def test_it_shows_other_reviews_only_after_submitting(run, scorer, other_scorer, client_for):
    Review.objects.create(
        run=run,
        reviewer=other_scorer,
        verdict="no",
        notes="Breaks the build badly",
        answers={"merge": "no"},
        submitted_at=timezone.now(),
    )
    client = client_for(scorer)
    url = reverse("scoring:review", kwargs={"review_key": run.review_key})
    blind = client.get(url).content.decode()
    assert "Breaks the build badly" not in blind
    assert f"<h3>{other_scorer.username}: " not in blind
    client.post(
        reverse("scoring:review_submit", kwargs={"review_key": run.review_key}),
        post_answers(ANSWERS),
    )
    revealed = client.get(url).content.decode()
    assert "Breaks the build badly" in revealed
    assert f"<h3>{other_scorer.username}: No</h3>" in revealed  # named, with their verdict


def test_it_renders_the_transcript_as_a_timeline_with_tool_calls(run, scorer, client_for):
    body = client_for(scorer).get(reverse("scoring:review", kwargs={"review_key": run.review_key}))
    text = body.content.decode()
    assert "<details" in text
    assert "pytest -q" in text
    assert "3 passed" in text
    assert "I am [hidden] by [hidden], editing now." in text


def test_it_refuses_an_incomplete_review_and_keeps_what_was_entered(run, scorer, client_for):
    client = client_for(scorer)
    response = client.post(
        reverse("scoring:review_submit", kwargs={"review_key": run.review_key}),
        post_answers({"right_files": "yes", "merge": "no"}, notes="half done"),
    )
    assert response.status_code == 400
    assert "Please answer this." in response.content.decode()
    assert "half done" in response.content.decode()
    assert not Review.objects.submitted().filter(run=run).exists()


def test_it_takes_the_verdict_from_the_merge_answer(run, scorer):
    review = reviews.submit_review(run, scorer, dict(ANSWERS, merge="small_changes"), "", "", [], 5)
    assert review.verdict == "small_changes"
    assert review.is_submitted


def test_it_rejects_an_answer_that_is_not_an_option(run, scorer):
    with pytest.raises(reviews.ReviewInvalid) as caught:
        reviews.submit_review(run, scorer, dict(ANSWERS, conventions="7"), "", "", [], 5)
    assert "conventions" in caught.value.errors


def test_it_keeps_the_previous_submission_when_a_review_changes(run, scorer, client_for):
    client = client_for(scorer)
    submit = reverse("scoring:review_submit", kwargs={"review_key": run.review_key})
    client.post(submit, post_answers(ANSWERS, notes="first"))
    client.post(submit, post_answers(dict(ANSWERS, merge="no"), notes="second thoughts"))
    review = Review.objects.get(run=run, reviewer=scorer)
    assert review.verdict == "no"
    versions = list(ReviewVersion.objects.filter(review=review))
    assert [(v.verdict, v.notes) for v in versions] == [("yes", "first")]


def test_it_saves_a_draft_and_shows_it_again(run, scorer, client_for):
    client = client_for(scorer)
    response = client.post(
        reverse("scoring:review_draft", kwargs={"review_key": run.review_key}),
        post_answers({"right_files": "no"}, notes="still reading"),
        headers={"X-Mergeable-Autosave": "1"},
    )
    assert response.json()["saved"] is True
    review = Review.objects.get(run=run, reviewer=scorer)
    assert review.answers == {"right_files": "no"} and not review.is_submitted
    body = client.get(
        reverse("scoring:review", kwargs={"review_key": run.review_key})
    ).content.decode()
    assert "still reading" in body
    assert 'value="no" checked' in body


def test_it_never_lets_a_draft_overwrite_a_submitted_review(run, scorer):
    reviews.submit_review(run, scorer, ANSWERS, "", "final", [], 5)
    reviews.save_draft(run, scorer, {"answers": {"merge": "no"}, "notes": "oops"})
    review = Review.objects.get(run=run, reviewer=scorer)
    assert (review.verdict, review.notes) == ("yes", "final")


def test_it_stores_line_comments(run, scorer, client_for):
    comments = [{"path": "app.py", "line": 15, "side": "new", "text": "Why fifteen?"}]
    client_for(scorer).post(
        reverse("scoring:review_submit", kwargs={"review_key": run.review_key}),
        post_answers(ANSWERS, line_comments=json.dumps(comments)),
    )
    assert Review.objects.get(run=run).line_comments == comments


@pytest.mark.parametrize("status", [Run.RUNNING, Run.ERRORED, Run.QUEUED])
def test_it_404s_for_runs_that_cannot_be_reviewed(db, scorer, client_for, status):
    run = make_run(status=status)
    response = client_for(scorer).get(
        reverse("scoring:review", kwargs={"review_key": run.review_key})
    )
    assert response.status_code == 404


def test_it_renders_the_diff_once_and_caches_it(run, monkeypatch):
    calls = []
    real = diffs.render_diff

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(diffs, "render_diff", counting)
    first = review_page.rendered_diff(run)
    second = review_page.rendered_diff(Run.objects.get(pk=run.pk))
    assert len(calls) == 1
    assert first == second
    assert run.read_json_artifact("rendered_diff.json")["diff"]["totals"]["additions"] == 1


def test_it_expands_context_from_the_stored_text(run, scorer, client_for):
    client = client_for(scorer)
    page = client.get(
        reverse("scoring:review", kwargs={"review_key": run.review_key})
    ).content.decode()
    assert "Show 11 unchanged lines" in page
    response = client.get(
        reverse("scoring:review_context", kwargs={"review_key": run.review_key}),
        {"file": 1, "start": 1, "end": 11, "delta": 0, "view": "split"},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert 'data-line="1"' in body and 'data-line="11"' in body
    assert 'data-line="12"' not in body
    assert body.count("<tr") == 11


def test_it_loads_a_collapsed_generated_file_on_demand(db, scorer, client_for):
    run = make_run(diff=DIFF + LOCKFILE_DIFF)
    client = client_for(scorer)
    page = client.get(
        reverse("scoring:review", kwargs={"review_key": run.review_key})
    ).content.decode()
    assert "lockfileVersion&quot;: 3" not in page and "Load the diff" in page
    url = reverse("scoring:review_file", kwargs={"review_key": run.review_key})
    fragment = client.get(url, {"file": 2}, headers={"HX-Request": "true"}).content.decode()
    assert "lockfileVersion" in fragment and "<html" not in fragment
    fallback = client.get(url, {"file": 2})
    assert fallback.status_code == 302 and "expand=2" in fallback["Location"]
    assert "lockfileVersion" in client.get(fallback["Location"]).content.decode()


def test_it_names_binary_files_without_showing_them(db, scorer, client_for):
    binary = "diff --git a/logo.png b/logo.png\nindex 1..2 100644\nBinary files a/logo.png and b/logo.png differ\n"
    run = make_run(diff=binary)
    body = (
        client_for(scorer)
        .get(reverse("scoring:review", kwargs={"review_key": run.review_key}))
        .content
    )
    assert b"logo.png" in body and b"Binary file: not shown." in body


def test_it_shows_the_reference_patch_behind_a_toggle(db, scorer, client_for):
    prompt = make_prompt(reference_patch=DIFF.replace("line fifteen", "line 15 (fixed)"))
    run = make_run(prompt)
    body = (
        client_for(scorer)
        .get(reverse("scoring:review", kwargs={"review_key": run.review_key}))
        .content
    )
    assert b"What we would have written" in body and b"fixed" in body


def test_it_reveals_on_the_reviewed_runs_page_then_moves_on_blind(db, scorer, client_for):
    prompt = make_prompt()
    first = make_run(prompt)
    second = make_run(prompt, make_contestant("other-agent", "other-1"), campaign=first.campaign)
    client = client_for(scorer)
    client.get(reverse("scoring:review", args=[first.review_key]))

    submitted = client.post(
        reverse("scoring:review_submit", args=[first.review_key]),
        post_answers(ANSWERS),
        follow=True,
    )

    assert submitted.redirect_chain[-1][0] == reverse("scoring:review", args=[first.review_key])
    revealed = submitted.content.decode()
    assert "This run was by zetacorp-agent" in revealed and 'id="next-run"' in revealed
    following = client.get(reverse("scoring:review_next"), follow=True)
    assert following.redirect_chain[-1][0] == reverse("scoring:review", args=[second.review_key])
    blind = following.content.decode().lower()
    assert "zetacorp" not in blind and "other-agent" not in blind and "zeta-9000" not in blind


def test_its_pages_never_read_the_models_api_key(db, scorer, client_for):
    # A review page names the model once revealed, and hides it while blind, without its key:
    # the key is neither selected (and decrypted) nor needed to hide or show who made the run.
    contestant = make_contestant()
    contestant.model.api_key = "sk-never-on-a-review-page-1234"
    contestant.model.save()
    run = make_run(contestant=contestant)
    client = client_for(scorer)
    page = reverse("scoring:review", args=[run.review_key])

    with CaptureQueriesContext(connection) as queries:
        blind = client.get(page).content.decode()
        revealed = client.post(
            reverse("scoring:review_submit", args=[run.review_key]),
            post_answers(ANSWERS),
            follow=True,
        )

    assert "zeta-9000" not in blind and "zetacorp" not in blind
    assert "This run was by zetacorp-agent" in revealed.content.decode()
    assert "zeta-9000" in revealed.content.decode()
    read = [query["sql"] for query in queries.captured_queries if "api_key" in query["sql"]]
    assert read == [], read


def test_the_page_reads_the_run_and_who_made_it_as_the_orm_does(db):
    """The page's written-out statement (`page_run`) loads what the ORM would: every field of
    the run of its type (JSON decoded, dates, decimals and booleans as such on SQLite too), the
    campaign's reviews wanted, and who made the run; the model's key is left unread."""
    contestant = make_contestant(options={"max_steps": 7, "flags": ["--fast"]})
    run = make_run(
        contestant=contestant,
        cancel_requested=False,
        questions=["Which file?"],
        phase_timings={"checkout": 1.5},
    )
    stored = Run.objects.select_related("campaign", "contestant__model").get(pk=run.pk)

    loaded = review_page.page_run(run.review_key)

    for field in Run._meta.concrete_fields:
        value, expected = getattr(loaded, field.attname), getattr(stored, field.attname)
        assert (type(value), value) == (type(expected), expected), field.name
    assert loaded.campaign.reviews_wanted == stored.campaign.reviews_wanted
    for path in IDENTITY_FIELDS:
        read = operator.attrgetter(path.replace("__", "."))
        assert (type(read(loaded)), read(loaded)) == (type(read(stored)), read(stored)), path
    assert loaded.contestant.options == {"max_steps": 7, "flags": ["--fast"]}
    assert "api_key" in loaded.contestant.model.get_deferred_fields()

    assert review_page.page_run("no-such-key") is None
    Run.objects.filter(pk=run.pk).update(status=Run.RUNNING)
    assert review_page.page_run(run.review_key) is None  # not reviewable while it runs


def test_it_lists_the_queue_blind_with_counts(db, scorer, client_for):
    run = make_run()
    body = client_for(scorer).get(reverse("scoring:queue")).content.decode()
    assert "Fix line fifteen" in body
    assert reverse("scoring:review", kwargs={"review_key": run.review_key}) in body
    assert "zetacorp" not in body and f"run {run.pk}" not in body


def test_it_sends_review_next_back_to_the_queue_when_nothing_is_left(db, scorer, client_for):
    response = client_for(scorer).get(reverse("scoring:review_next"), follow=True)
    assert response.redirect_chain[-1][0] == reverse("scoring:queue")
    assert "Nothing left to review" in response.content.decode()


def test_it_shows_history_with_versions_to_leads(run, scorer, lead, client_for):
    reviews.submit_review(run, scorer, ANSWERS, "", "v1 notes", [], 5)
    reviews.submit_review(run, scorer, dict(ANSWERS, merge="no"), "", "v2 notes", [], 5)
    body = client_for(lead).get(reverse("scoring:review_history")).content.decode()
    assert "v1 notes" in body and "v2 notes" in body and "zetacorp-agent" in body


def test_it_keeps_the_review_page_within_a_query_budget(
    db, scorer, other_scorer, client_for, django_assert_max_num_queries
):
    prompt = make_prompt()
    run = make_run(prompt, transcript=TRANSCRIPT)
    blind = make_run(prompt, make_contestant("blind-one", "b-1"), campaign=run.campaign)
    for n in range(5):
        make_run(prompt, make_contestant(f"extra-{n}", f"m-{n}"), campaign=run.campaign)
    reviews.submit_review(run, other_scorer, ANSWERS, "", "", [], 5)
    reviews.submit_review(run, scorer, ANSWERS, "", "", [], 5)  # not blind: other reviews load
    client = client_for(scorer)
    submitted_url = reverse("scoring:review", kwargs={"review_key": run.review_key})
    blind_url = reverse("scoring:review", kwargs={"review_key": blind.review_key})
    client.get(submitted_url)  # warm the diff caches, and take a place on the blind run
    client.get(blind_url)

    # The progress line ("3 of 12 left") is one query: the runs left, and all of them.
    # The session, then the user with their role (one query), then the page's own.
    with django_assert_max_num_queries(7):
        assert client.get(submitted_url).status_code == 200
    with django_assert_max_num_queries(7):  # keeping the place is one UPDATE
        assert client.get(blind_url).status_code == 200
    # The runs waiting, then those runs with their campaigns and prompts.
    with django_assert_max_num_queries(9):
        assert client.get(reverse("scoring:queue")).status_code == 200


def test_it_accepts_n_a_only_where_a_criterion_may_not_apply(run, scorer, client_for):
    Criterion.objects.filter(key="recovered").update(may_not_apply=True)
    page = client_for(scorer).get(reverse("scoring:review", args=[run.review_key]))
    assert 'name="answer-recovered" value="n/a"' in page.content.decode()
    assert 'name="answer-conventions" value="n/a"' not in page.content.decode()
    with pytest.raises(reviews.ReviewInvalid) as caught:
        reviews.submit_review(run, scorer, dict(ANSWERS, conventions="n/a"), "", "", [], 5)
    assert "conventions" in caught.value.errors

    review = reviews.submit_review(run, scorer, dict(ANSWERS, recovered="n/a"), "", "", [], 5)

    assert review.answers["recovered"] == Criterion.NOT_APPLICABLE
    recovered = Criterion.objects.get(key="recovered", rubric__is_default=True)
    assert recovered.numeric("n/a") is None  # left out of means, not counted as "no"
    assert recovered.numeric("no") == 0.0


def test_it_saves_the_acceptance_criteria_ticked_with_the_review(db, scorer, client_for):
    prompt = make_prompt(acceptance_criteria=["Line 15 reads fifteen", "Nothing else changes"])
    run = make_run(prompt)
    client = client_for(scorer)
    url = reverse("scoring:review", args=[run.review_key])
    client.post(
        reverse("scoring:review_draft", args=[run.review_key]),
        post_answers({}, acceptance=["2"]),
        headers={"X-Mergeable-Autosave": "1"},
    )
    assert Review.objects.get(run=run).acceptance_met == ["Nothing else changes"]
    assert (
        'name="acceptance" value="2" form="review-form" checked' in client.get(url).content.decode()
    )

    client.post(
        reverse("scoring:review_submit", args=[run.review_key]),
        post_answers(ANSWERS, acceptance=["1", "2", "9", "x"]),
    )

    review = Review.objects.get(run=run)
    assert review.is_submitted
    assert review.acceptance_met == ["Line 15 reads fifteen", "Nothing else changes"]


def test_it_warns_the_reviewer_when_the_agent_changed_its_tests(client_for, scorer):
    run = make_run(test_files_modified=["tests/test_calc.py"], test_exit_code=0)

    text = client_for(scorer).get(reverse("scoring:review", args=[run.review_key])).content
    text = text.decode()

    assert "The agent changed protected test files" in text
    assert "tests/test_calc.py" in text
    clean = make_run(run.prompt, run.contestant, campaign=run.campaign, test_exit_code=0)
    text = client_for(scorer).get(reverse("scoring:review", args=[clean.review_key])).content
    assert b"The agent changed protected test files" not in text

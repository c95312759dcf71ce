"""Campaign and run pages: launching, watching live, cancelling, retrying, answering."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from runs import execution
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run

SCRIPT = """\
- tool_calls: [{name: write_file, arguments: {path: hello.txt, content: "hi\\n"}}]
- tool_calls: [{name: finish, arguments: {summary: wrote hello}}]
"""


@pytest.fixture
def curated(db, make_repo):
    path, sha = make_repo({"README.md": "hello\n"})
    repo = Repository.objects.create(name="r", url=str(path))
    prompt_set = PromptSet.objects.create(name="tasks")
    for key in ("one", "two"):
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=key,
            title=key.title(),
            instructions="Say hi",
            repository=repo,
            commit=sha,
        )
    model = LanguageModel.objects.create(name="scripted-model", provider="scripted", script=SCRIPT)
    contestants = [Contestant.objects.create(name=n, model=model) for n in ("alpha", "beta")]
    return prompt_set, contestants


def test_it_launches_a_campaign_from_the_form(client_for, lead, curated):
    prompt_set, contestants = curated
    client = client_for(lead)
    response = client.post(
        reverse("runs:campaign_create"),
        {
            "name": "Nightly",
            "prompt_set": prompt_set.pk,
            "contestants": [c.pk for c in contestants],
            "repeats": 2,
            "reviews_wanted": 3,
        },
    )
    campaign = Campaign.objects.get(name="Nightly")
    assert response.status_code == 302 and response["Location"] == campaign.get_absolute_url()
    assert campaign.runs.count() == 2 * 2 * 2
    assert campaign.reviews_wanted == 3 and campaign.created_by == lead
    run = campaign.runs.first()
    assert run.snapshot["prompt"]["instructions"] == "Say hi"
    assert run.snapshot["contestant"]["scripted"] is True


def test_it_rejects_a_campaign_without_contestants(client_for, lead, curated):
    prompt_set, _ = curated
    response = client_for(lead).post(
        reverse("runs:campaign_create"),
        {"prompt_set": prompt_set.pk, "repeats": 1, "reviews_wanted": 2},
    )
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    assert not Campaign.objects.exists()


def test_it_shows_a_live_grid_that_stops_polling_when_done(client_for, lead, curated):
    prompt_set, contestants = curated
    client = client_for(lead)
    client.post(
        reverse("runs:campaign_create"),
        {
            "prompt_set": prompt_set.pk,
            "contestants": [contestants[0].pk],
            "repeats": 1,
            "reviews_wanted": 2,
        },
    )
    campaign = Campaign.objects.get()
    url = reverse("runs:campaign", args=[campaign.pk])
    page = client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in page and "0 of 2" in page
    assert "alpha" in page and "scripted" in page
    for run in campaign.runs.all():
        execution.execute(run.pk)
    fragment = client.get(url, HTTP_HX_REQUEST="true")
    body = fragment.content.decode()
    assert "<html" not in body and 'id="grid"' in body
    assert "2 of 2" in body and "every 2s" not in body
    assert fragment["Vary"] and "HX-Request" in fragment["Vary"]


def test_its_grid_links_each_run_in_its_prompts_row_and_contestants_column(
    client_for, lead, curated
):
    prompt_set, contestants = curated
    client = client_for(lead)
    client.post(
        reverse("runs:campaign_create"),
        {
            "prompt_set": prompt_set.pk,
            "contestants": [c.pk for c in contestants],
            "repeats": 1,
            "reviews_wanted": 2,
        },
    )
    campaign = Campaign.objects.get()
    done = campaign.runs.get(prompt__key="two", contestant__name="beta")
    execution.execute(done.pk)
    page = client.get(reverse("runs:campaign", args=[campaign.pk])).content.decode()

    tbody = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    link = r'<a href="([^"]+)" id="run-(\d+)" class="status status-(\w+)"[^>]*>([^<]+)</a>'
    grid = {}
    for row in re.findall(r"<tr>(.*?)</tr>", tbody, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        for contestant, cell in zip(["prompt", "alpha", "beta"], cells, strict=True):
            grid[(cells[0], contestant)] = re.findall(link, cell)
    for run in campaign.runs.select_related("prompt", "contestant"):
        status, label = ("finished", "finished") if run == done else ("queued", "queued")
        url = reverse("runs:run", args=[run.pk])
        assert grid[(run.prompt.key, run.contestant.name)] == [(url, str(run.pk), status, label)]
    assert "1 of 4" in page


def test_it_sends_scorers_from_the_run_page_to_the_blind_review(client_for, scorer, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1])
    run = campaign.runs.first()
    execution.execute(run.pk)
    response = client_for(scorer).get(reverse("runs:run", args=[run.pk]), follow=True)
    assert response.redirect_chain == [(f"/review/runs/{run.review_key}/", 302)]
    for_scorer = response.content.decode()
    assert "alpha" not in for_scorer and "Blind review" in for_scorer
    assert "hello.txt" in for_scorer
    for_lead = client_for(lead).get(reverse("runs:run", args=[run.pk])).content.decode()
    assert "alpha" in for_lead


def test_it_shows_gateway_usage_beside_what_the_harness_reported(client_for, scorer, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()
    Run.objects.filter(pk=run.pk).update(
        status=Run.FINISHED,
        input_tokens=1200,
        output_tokens=300,
        cache_read_tokens=800,
        cache_write_tokens=150,
        model_calls=7,
        cost_usd=0.25,
        reported_usage={"input_tokens": 1000, "output_tokens": 250, "cost_usd": 0.1875},
        caps={
            "processes": {"limit": 256, "how": "cgroup v1 pids"},
            "memory_mb": {"limit": 4096, "how": "<script>alert(1)</script>"},
        },
    )
    url = reverse("runs:run", args=[run.pk])

    for_lead = client_for(lead).get(url).content.decode()
    for_scorer = client_for(scorer).get(url, follow=True).content.decode()

    assert "7 through the run's model gateway" in for_lead
    assert "800 read from cache · 150 written to cache" in for_lead
    assert "the harness reported 1250 tokens / $0.1875" in for_lead
    assert "processes 256 (cgroup v1 pids)" in for_lead
    assert "memory_mb 4096 (&lt;script&gt;alert(1)&lt;/script&gt;)" in for_lead
    assert "<script>alert(1)" not in for_lead
    # Cost can give a blind review away: scorers see the tokens, never the dollars.
    assert "1200 in / 300 out" in for_scorer
    assert "0.1875" not in for_scorer and "0.25" not in for_scorer


def test_it_leaves_out_usage_a_run_does_not_have(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()

    page = client_for(lead).get(reverse("runs:run", args=[run.pk])).content.decode()

    assert "Model calls" not in page and "from cache" not in page
    assert "harness reported" not in page and "Sandbox caps" not in page


def test_it_warns_when_the_agent_changed_the_files_that_grade_it(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()
    url = reverse("runs:run", args=[run.pk])
    client = client_for(lead)
    assert "changed files that grade it" not in client.get(url).content.decode()
    Run.objects.filter(pk=run.pk).update(
        status=Run.FAILED, test_files_modified=["tests/test_<b>x</b>.py", "conftest.py"]
    )

    page = client.get(url).content.decode()

    assert "The agent changed files that grade it" in page
    assert "tests/test_&lt;b&gt;x&lt;/b&gt;.py, conftest.py" in page


def test_it_lets_a_scorer_answer_a_waiting_question(client_for, scorer, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()
    Run.objects.filter(pk=run.pk).update(
        status=Run.AWAITING_ANSWER,
        questions=[{"question": "Which <b>file</b>?", "answer": None}],
    )
    client = client_for(scorer)
    response = client.get(reverse("runs:run", args=[run.pk]), follow=True)
    blind_url = reverse("runs:blind_run", args=[run.review_key])
    assert response.redirect_chain == [(blind_url, 302)]
    page = response.content.decode()
    assert "Which &lt;b&gt;file&lt;/b&gt;?" in page and "alpha" not in page
    assert (
        client.post(reverse("runs:run_answer", args=[run.pk]), {"answer": "x"}).status_code == 403
    )
    response = client.post(blind_url, {"answer": "README.md"})
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.questions[0]["answer"] == "README.md"
    assert run.questions[0]["answered_by"] == "sam"


def test_it_hides_who_asks_in_a_waiting_question(client_for, scorer, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()
    question = "I am alpha on scripted-model: which file?"
    Run.objects.filter(pk=run.pk).update(
        status=Run.AWAITING_ANSWER, questions=[{"question": question, "answer": None}]
    )
    page = client_for(scorer).get(reverse("runs:blind_run", args=[run.review_key]))
    body = page.content.decode()
    assert "I am [hidden] on [hidden]: which file?" in body
    assert "alpha" not in body and "scripted-model" not in body


def test_it_cancels_queued_runs_and_retries_errored_ones(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants)
    client = client_for(lead)
    first, *rest = campaign.runs.order_by("id")
    client.post(reverse("runs:run_cancel", args=[first.pk]))
    first.refresh_from_db()
    assert first.status == Run.CANCELLED
    Run.objects.filter(pk=rest[0].pk).update(
        status=Run.ERRORED, error="disk full", finished_at=timezone.now(), attempts=3
    )
    client.post(reverse("runs:campaign_retry", args=[campaign.pk]))
    rest[0].refresh_from_db()
    assert rest[0].status == Run.QUEUED and rest[0].attempts == 0
    client.post(reverse("runs:campaign_cancel", args=[campaign.pk]))
    assert not campaign.runs.active().exists()
    assert Campaign.objects.get(pk=campaign.pk).state == Campaign.CANCELLED


def test_it_asks_before_cancelling_a_campaign(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants)
    client = client_for(lead)
    url = reverse("runs:campaign_cancel", args=[campaign.pk])
    detail = client.get(reverse("runs:campaign", args=[campaign.pk])).content.decode()
    assert f'href="{url}"' in detail and f'hx-get="{url}"' in detail

    page = client.get(url)
    fragment = client.get(url, headers={"HX-Request": "true"}).content.decode()

    assert page.status_code == 200 and "Yes, cancel 4 runs" in page.content.decode()
    assert fragment.lstrip().startswith('<section id="cancel-confirm"') and "<html" not in fragment
    assert set(campaign.runs.values_list("status", flat=True)) == {Run.QUEUED}  # asked, not done


def test_it_cancels_only_runs_that_have_not_ended_and_says_how_many(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants)
    finished, running, *queued = campaign.runs.order_by("id")
    Run.objects.filter(pk=finished.pk).update(status=Run.FINISHED, finished_at=timezone.now())
    Run.objects.filter(pk=running.pk).update(status=Run.RUNNING, worker="elsewhere:1")

    response = client_for(lead).post(
        reverse("runs:campaign_cancel", args=[campaign.pk]), follow=True
    )

    text = response.content.decode()
    assert "Cancelled 2 runs that had not started; 1 run under way is being stopped." in text
    statuses = dict(campaign.runs.values_list("pk", "status"))
    assert statuses[finished.pk] == Run.FINISHED
    assert statuses[running.pk] == Run.RUNNING  # its worker ends it
    assert Run.objects.get(pk=running.pk).cancel_requested
    assert {statuses[run.pk] for run in queued} == {Run.CANCELLED}
    assert Campaign.objects.get(pk=campaign.pk).state == Campaign.CANCELLED
    again = campaigns.cancel_campaign(campaign)
    assert (again.cancelled, again.stopping) == (0, 0)  # nothing is counted twice


def test_it_never_relabels_a_finished_campaign_cancelled(client_for, lead, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants)
    campaign.runs.update(status=Run.FINISHED, finished_at=timezone.now())
    Campaign.objects.filter(pk=campaign.pk).update(state=Campaign.FINISHED)
    client = client_for(lead)
    url = reverse("runs:campaign_cancel", args=[campaign.pk])
    assert "Nothing to cancel" in client.get(url).content.decode()

    response = client.post(url, follow=True)

    assert "Nothing to cancel" in response.content.decode()
    assert Campaign.objects.get(pk=campaign.pk).state == Campaign.FINISHED
    assert set(campaign.runs.values_list("status", flat=True)) == {Run.FINISHED}


def test_it_makes_runs_in_a_shuffled_order_each_with_its_own_review_key(db, make_repo):
    from runs import campaigns

    path, sha = make_repo({"README.md": "hello\n"})
    repo = Repository.objects.create(name="r", url=str(path))
    prompt_set = PromptSet.objects.create(name="many")
    for n in range(4):
        Prompt.objects.create(prompt_set=prompt_set, key=f"p{n}", title=f"P{n}",
                              instructions="x", repository=repo, commit=sha, position=n)  # fmt: skip
    model = LanguageModel.objects.create(name="m", provider="scripted", script=SCRIPT)
    contestants = [Contestant.objects.create(name=f"c{n}", model=model) for n in range(4)]

    campaign = campaigns.launch(prompt_set=prompt_set, contestants=contestants, repeats=2)

    runs = list(campaign.runs.order_by("id").select_related("prompt", "contestant"))
    made = [(run.repeat, run.prompt.position, run.contestant.name) for run in runs]
    # In order, the 32 runs would be made repeat by repeat, prompt by prompt, contestant by
    # contestant; shuffled, that order comes up once in 32! launches.
    assert made != sorted(made) and len(set(made)) == 32
    keys = {run.review_key for run in runs}
    assert len(keys) == 32 and all(len(key) >= 16 for key in keys)


def test_it_serves_raw_artifacts_as_plain_text(client_for, scorer, curated):
    from runs import campaigns

    prompt_set, contestants = curated
    run = campaigns.launch(prompt_set=prompt_set, contestants=contestants[:1]).runs.first()
    run.save_artifact("diff.patch", "<script>alert(1)</script>")
    response = client_for(scorer).get(reverse("runs:run_artifact", args=[run.pk]) + "?name=diff")
    assert response["Content-Type"].startswith("text/plain")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert (
        client_for(scorer)
        .get(reverse("runs:run_artifact", args=[run.pk]) + "?name=../../etc/passwd")
        .status_code
        == 404
    )


def test_it_lists_campaigns_with_their_progress(
    client_for, lead, curated, django_assert_max_num_queries
):
    from runs import campaigns

    prompt_set, contestants = curated
    for _ in range(3):
        campaigns.launch(prompt_set=prompt_set, contestants=contestants)
    client = client_for(lead)
    with django_assert_max_num_queries(6):
        page = client.get(reverse("runs:campaigns")).content.decode()
    assert page.count("tasks") >= 3


def test_it_runs_a_campaign_from_the_command_line_and_waits(curated, settings):
    settings.EMBEDDED_QUEUE = True
    out = io.StringIO()
    with redirect_stdout(out):
        call_command(
            "run_campaign",
            "--prompt-set",
            "tasks",
            "--contestants",
            "alpha,beta",
            "--name",
            "cli",
            "--wait",
            stdout=out,
        )
    text = out.getvalue()
    campaign = Campaign.objects.get(name="cli")
    assert text.startswith(f"Campaign {campaign.pk}")
    assert "4/4 ended" in text
    assert set(campaign.runs.values_list("status", flat=True)) == {Run.FINISHED}


def test_it_names_unknown_contestants_on_the_command_line(curated):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Unknown contestants: gamma"):
        call_command("run_campaign", "--prompt-set", "tasks", "--contestants", "alpha,gamma")
    assert not Campaign.objects.exists()


def _finished_run(campaign: Campaign, prompt: Prompt, contestant: Contestant, cost: float) -> Run:
    return Run.objects.create(
        campaign=campaign, prompt=prompt, contestant=contestant, status=Run.FINISHED, cost_usd=cost,
        repeat=campaign.runs.count(),
    )  # fmt: skip


def test_it_asks_before_launching_over_the_budget_and_launches_once_confirmed(
    client_for, lead, curated
):
    prompt_set, (alpha, beta) = curated
    Contestant.objects.filter(pk=alpha.pk).update(max_cost_usd=1.5)
    gamma = Contestant.objects.create(name="gamma", model=alpha.model)
    earlier = Campaign.objects.create(name="Earlier", prompt_set=prompt_set)
    prompt = prompt_set.prompts.first()
    _finished_run(earlier, prompt, beta, 0.25)
    _finished_run(earlier, prompt, beta, 0.75)
    client = client_for(lead)
    data = {
        "name": "Pricey",
        "prompt_set": prompt_set.pk,
        "contestants": [alpha.pk, beta.pk, gamma.pk],
        "repeats": 1,
        "reviews_wanted": 2,
        "budget_usd": "3",
    }

    body = client.post(reverse("runs:campaign_create"), data).content.decode()
    # 2 prompts: alpha at its $1.50 cap, beta at its $0.50 mean; gamma has neither.
    assert "Estimated cost $4.00 or more, over the budget of $3.00" in body
    assert "2 runs of alpha at its cap of $1.50: $3.00" in body
    assert "2 runs of beta at its mean so far of $0.50: $1.00" in body
    assert "2 runs of gamma: unknown" in body
    assert "Launch anyway" in body
    assert not Campaign.objects.filter(name="Pricey").exists()

    # A confirmation covers the estimate shown, not a bigger launch changed in the same submit.
    confirmed = {**data, "confirm_over_budget": "on", "confirmed_estimate_usd": "4.00"}
    client.post(reverse("runs:campaign_create"), {**confirmed, "repeats": 2})
    assert not Campaign.objects.filter(name="Pricey").exists()

    response = client.post(reverse("runs:campaign_create"), confirmed)
    campaign = Campaign.objects.get(name="Pricey")
    assert response.status_code == 302 and campaign.runs.count() == 6
    assert campaign.budget_usd == 3.0


def test_it_launches_within_the_budget_without_asking(client_for, lead, curated):
    prompt_set, (alpha, _) = curated
    Contestant.objects.filter(pk=alpha.pk).update(max_cost_usd=0.5)
    response = client_for(lead).post(
        reverse("runs:campaign_create"),
        {"name": "Cheap", "prompt_set": prompt_set.pk, "contestants": [alpha.pk], "repeats": 1,
         "reviews_wanted": 2, "budget_usd": "1"},
    )  # fmt: skip
    assert response.status_code == 302
    assert Campaign.objects.get(name="Cheap").runs.count() == 2

"""Series: a campaign on a schedule (django-celery-beat's database scheduler), each tick a new
campaign of the series; "re-run with another model"; and the series' history page."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from api import series as workflows
from api import tasks
from api.models import Series, SeriesCampaign
from evalsite.celery import app
from runs.models import Campaign, Contestant, Run
from scoring.models import Review

# -- Scheduling ----------------------------------------------------------------------------------


def test_a_lead_puts_a_campaign_on_a_schedule_from_its_page(client_for, lead, curated):
    campaign = curated["campaign"]
    client = client_for(lead)
    page = client.get(reverse("runs:campaign", args=[campaign.pk])).content.decode()
    assert reverse("api:campaign_schedule", args=[campaign.pk]) in page
    assert reverse("api:campaign_rerun", args=[campaign.pk]) in page

    response = client.post(reverse("api:campaign_schedule", args=[campaign.pk]), {"every_weeks": 2})

    series = Series.objects.get(template=campaign)
    assert response.status_code == 302 and response["Location"] == series.get_absolute_url()
    task = PeriodicTask.objects.get()
    assert series.periodic_task == task and task.enabled
    assert task.task == "api.tasks.rerun_series" and json.loads(task.args) == [series.pk]
    assert (task.interval.every, task.interval.period) == (14, "days")
    assert task.queue == "bookkeeping"
    assert series.schedule_text == "every 2 weeks"
    assert "every 2 weeks" in client.get(series.get_absolute_url()).content.decode()


def test_a_cron_schedule_replaces_the_previous_one(api_as, lead, curated):
    campaign = curated["campaign"]
    client = api_as(lead)
    client.put(f"/api/campaigns/{campaign.pk}/schedule", {"every_weeks": 13})

    response = client.put(f"/api/campaigns/{campaign.pk}/schedule", {"cron": "0 6 1 */3 *"})

    assert response.status_code == 200
    assert response.json()["schedule"] == "cron 0 6 1 */3 * (UTC)"
    task = PeriodicTask.objects.get()
    assert task.interval is None
    crontab = task.crontab
    assert (crontab.minute, crontab.hour, crontab.day_of_month, crontab.month_of_year) == (
        "0", "6", "1", "*/3",
    )  # fmt: skip


def test_schedule_errors_name_their_field(api_as, client_for, lead, curated):
    campaign = curated["campaign"]
    url = f"/api/campaigns/{campaign.pk}/schedule"
    client = api_as(lead)
    bad_cron = client.put(url, {"cron": "0 25 * * *"})
    assert bad_cron.status_code == 400
    assert [e["field"] for e in bad_cron.json()["errors"]] == ["cron"]
    short_cron = client.put(url, {"cron": "0 6 *"})
    assert "five fields" in short_cron.json()["errors"][0]["message"]
    both = client.put(url, {"cron": "0 6 * * 1", "every_weeks": 2})
    assert [e["field"] for e in both.json()["errors"]] == ["every_weeks"]
    assert [e["field"] for e in client.put(url, {}).json()["errors"]] == ["every_weeks"]
    too_rare = client.put(url, {"every_weeks": 53})
    assert [e["field"] for e in too_rare.json()["errors"]] == ["every_weeks"]

    page = client_for(lead).post(
        reverse("api:campaign_schedule", args=[campaign.pk]), {"cron": "61 * * * *"}
    )
    assert page.status_code == 400 and "Not a valid cron expression" in page.content.decode()
    assert not PeriodicTask.objects.exists()


# Transactional: the scheduler closes old database connections, as beat does between ticks.
@pytest.mark.django_db(transaction=True)
def test_beats_database_scheduler_sends_the_schedule(api_as, lead, curated):
    api_as(lead).put(f"/api/campaigns/{curated['campaign'].pk}/schedule", {"every_weeks": 1})
    series = Series.objects.get()

    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()  # what beat does when it starts
    entries = scheduler.all_as_schedule()

    entry = entries[series.periodic_task.name]
    assert entry.task == "api.tasks.rerun_series" and entry.args == [series.pk]
    assert entry.schedule.run_every == timedelta(days=7)
    assert entry.options["queue"] == "bookkeeping"
    assert "api.tasks.rerun_series" in app.tasks
    # The settings' own schedule is copied in, its "drop a late tick" included.
    reaper = entries["reap-stale-runs"]
    assert reaper.options["expires"] == 10


def test_a_tick_launches_a_new_campaign_in_the_series(api_as, lead, curated):
    template = curated["campaign"]
    api_as(lead).put(f"/api/campaigns/{template.pk}/schedule", {"every_weeks": 13})
    series = Series.objects.get()

    tasks.rerun_series(series.pk)

    rerun = Campaign.objects.exclude(pk=template.pk).get()
    assert rerun.prompt_set == template.prompt_set
    assert set(rerun.contestants.all()) == set(template.contestants.all())
    assert (rerun.repeats, rerun.reviews_wanted) == (2, 3)
    assert rerun.created_by == lead
    assert rerun.runs.count() == 2 * 2 * 2
    link = SeriesCampaign.objects.get(campaign=rerun)
    assert link.series == series and link.scheduled
    status = api_as(lead).get(f"/api/campaigns/{rerun.pk}").json()
    assert status["series"] == series.pk


def test_a_tick_delivered_twice_launches_once(lead, curated):
    series = workflows.schedule(curated["campaign"], every_weeks=1, user=lead)
    assert workflows.rerun(series.pk) is not None
    assert workflows.rerun(series.pk) is None
    assert Campaign.objects.count() == 2

    Series.objects.filter(pk=series.pk).update(last_rerun_at=timezone.now() - timedelta(hours=1))
    assert workflows.rerun(series.pk) is not None
    assert Campaign.objects.count() == 3


def test_a_tick_that_cannot_launch_says_why_on_the_series_page(client_for, lead, curated):
    series = workflows.schedule(curated["campaign"], every_weeks=1, user=lead)
    Contestant.objects.filter(name="beta").update(archived=True)

    assert workflows.rerun(series.pk) is None

    assert Campaign.objects.count() == 1
    series.refresh_from_db()
    assert "Archived contestants cannot run: beta" in series.last_error
    page = client_for(lead).get(series.get_absolute_url()).content.decode()
    assert "could not launch" in page and "beta" in page


def test_a_schedule_can_be_stopped(api_as, client_for, lead, curated):
    campaign = curated["campaign"]
    client = api_as(lead)
    client.put(f"/api/campaigns/{campaign.pk}/schedule", {"every_weeks": 1})

    response = client.delete(f"/api/campaigns/{campaign.pk}/schedule")

    assert response.status_code == 200 and response.json()["schedule"] == ""
    assert not PeriodicTask.objects.exists()
    assert Series.objects.get().members.count() == 1
    again = client.delete(f"/api/campaigns/{campaign.pk}/schedule")
    assert again.status_code == 404

    series = workflows.schedule(campaign, every_weeks=1, user=lead)
    client_for(lead).post(reverse("api:series_unschedule", args=[series.pk]))
    assert not PeriodicTask.objects.exists()


# -- Re-run with another model -------------------------------------------------------------------


def test_rerun_with_another_model_swaps_one_contestants_model(client_for, lead, curated):
    campaign = curated["campaign"]
    response = client_for(lead).post(
        reverse("api:campaign_rerun", args=[campaign.pk]),
        {"contestant": "alpha", "model": "model-b"},
    )

    clone = Campaign.objects.exclude(pk=campaign.pk).get()
    assert response.status_code == 302 and response["Location"] == clone.get_absolute_url()
    swapped = Contestant.objects.get(name="alpha-model-b")
    assert set(clone.contestants.values_list("name", flat=True)) == {"alpha-model-b", "beta"}
    assert swapped.model == curated["other_model"]
    assert (swapped.harness, swapped.options, swapped.max_steps) == ("builtin", {"x": 1}, 7)
    assert (clone.prompt_set, clone.repeats, clone.reviews_wanted) == (campaign.prompt_set, 2, 3)
    assert clone.runs.filter(contestant=swapped).count() == 2 * 2
    assert clone.series_link.series == campaign.series_link.series


def test_rerun_with_another_model_through_the_api(api_as, lead, curated):
    campaign = curated["campaign"]
    client = api_as(lead)
    url = f"/api/campaigns/{campaign.pk}/rerun"

    first = client.post(url, {"contestant": "alpha", "model": "model-b"})
    second = client.post(url, {"contestant": "alpha", "model": "model-b"})

    assert first.status_code == second.status_code == 201
    assert first.json()["contestants"] == second.json()["contestants"] == ["alpha-model-b", "beta"]
    assert Contestant.objects.filter(model=curated["other_model"]).count() == 1  # reused
    assert first.json()["series"] == second.json()["series"] is not None

    def fields(response):
        return [error["field"] for error in response.json()["errors"]]

    assert fields(client.post(url, {"contestant": "ghost", "model": "model-b"})) == ["contestant"]
    assert fields(client.post(url, {"contestant": "alpha", "model": "ghost"})) == ["model"]
    assert fields(client.post(url, {"contestant": "alpha", "model": "model-a"})) == ["model"]
    assert fields(client.post(url, {"contestant": "alpha"})) == ["model"]


# -- History -------------------------------------------------------------------------------------


def _review_all(campaign: Campaign, reviewer, verdicts: dict[str, str]) -> None:
    now = timezone.now()
    campaign.runs.update(status=Run.FINISHED, started_at=now, finished_at=now)
    for run in campaign.runs.select_related("contestant"):
        Review.objects.create(
            run=run, reviewer=reviewer, verdict=verdicts[run.contestant.name], submitted_at=now
        )


def test_the_history_page_shows_each_contestant_over_the_series(client_for, lead, scorer, curated):
    series = workflows.schedule(curated["campaign"], every_weeks=1, user=lead)
    scheduled = workflows.rerun(series.pk)
    clone = workflows.rerun_with_model(
        scheduled, contestant=curated["contestants"][0], model=curated["other_model"], user=lead
    )
    _review_all(scheduled, scorer, {"alpha": "yes", "beta": "no"})
    _review_all(clone, scorer, {"alpha-model-b": "yes", "beta": "yes"})

    history = workflows.history(series)

    assert [c["id"] for c in history["campaigns"]] == [
        curated["campaign"].pk,
        scheduled.pk,
        clone.pk,
    ]
    rows = {row["label"]: row["points"] for row in history["contestants"]}
    assert rows["alpha (scripted)"][0] is None and rows["alpha (scripted)"][2] is None
    assert rows["alpha (scripted)"][1]["merge_rate"] == 1.0
    assert rows["beta (scripted)"][1]["merge_rate"] == 0.0
    assert rows["beta (scripted)"][2]["merge_rate"] == 1.0
    low, high = rows["beta (scripted)"][2]["merge_rate_ci"]
    assert low < 1.0 <= high

    page = client_for(lead).get(series.get_absolute_url())
    body = page.content.decode()
    assert page.status_code == 200
    assert rows["beta (scripted)"][1]["text"] in body and "alpha-model-b" in body
    assert client_for(lead).get(reverse("api:series_list")).status_code == 200
    assert series.name in client_for(lead).get(reverse("api:series_list")).content.decode()
    api = client_for(lead)  # session: the JSON needs a token
    assert api.get(f"/api/series/{series.pk}").status_code == 401


def test_the_series_list_costs_the_same_for_many_series(
    client_for, lead, curated, django_assert_max_num_queries
):
    campaign = curated["campaign"]
    workflows.schedule(campaign, cron="0 6 * * 1", user=lead)
    for n in range(5):
        other = Campaign.objects.create(name=f"C{n}", prompt_set=campaign.prompt_set)
        workflows.schedule(other, every_weeks=n + 1, user=lead)
    client = client_for(lead)
    with django_assert_max_num_queries(6):
        body = client.get(reverse("api:series_list")).content.decode()
    assert "cron 0 6 * * 1" in body and "every 5 weeks" in body

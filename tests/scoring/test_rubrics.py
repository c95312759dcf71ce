"""Editing rubrics (admins), and reviews following the rubric that applies."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Campaign, Contestant, LanguageModel, PromptSet, Repository
from scoring import reviews
from scoring.models import CampaignRubric, Criterion, Rubric
from tests.scoring.test_review import make_prompt, make_run


def formset_data(rubric: Rubric, **changes) -> dict:
    criteria = list(rubric.criteria.all())
    data = {
        "name": rubric.name,
        "description": rubric.description,
        "is_default": "on" if rubric.is_default else "",
        "criteria-TOTAL_FORMS": str(len(criteria) + 1),
        "criteria-INITIAL_FORMS": str(len(criteria)),
        "criteria-MIN_NUM_FORMS": "0",
        "criteria-MAX_NUM_FORMS": "1000",
    }
    for i, c in enumerate(criteria):
        data.update(
            {
                f"criteria-{i}-id": str(c.pk),
                f"criteria-{i}-key": c.key,
                f"criteria-{i}-label": c.label,
                f"criteria-{i}-help": c.help,
                f"criteria-{i}-scale": c.scale,
                f"criteria-{i}-only_for_tag": c.only_for_tag,
                f"criteria-{i}-position": str(c.position),
                f"criteria-{i}-choices_text": "\n".join(f"{v} = {lbl}" for v, lbl in c.choices),
            }
        )
    # The empty extra form as a browser sends it: its initial values, so it counts as unchanged.
    n = len(criteria)
    data.update({f"criteria-{n}-scale": "yes_no", f"criteria-{n}-position": "0"})
    data.update(changes)
    return data


@pytest.fixture
def rubric(db):
    return Rubric.default()


def test_it_lists_rubrics_for_admins(rubric, admin_user, client_for):
    body = client_for(admin_user).get(reverse("scoring:rubrics")).content.decode()
    assert "Default" in body and reverse("scoring:rubric_edit", args=[rubric.pk]) in body


def test_it_edits_a_question_and_its_choices(rubric, admin_user, client_for):
    index = [c.key for c in rubric.criteria.all()].index("conventions")
    data = formset_data(
        rubric,
        **{
            f"criteria-{index}-label": "Reads like our code",
            f"criteria-{index}-scale": "choices",
            f"criteria-{index}-choices_text": "good = Good\nmeh = Meh\nbad = Bad",
        },
    )
    response = client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)
    assert response.status_code == 302
    criterion = rubric.criteria.get(key="conventions")
    assert criterion.label == "Reads like our code"
    assert criterion.options() == [("good", "Good"), ("meh", "Meh"), ("bad", "Bad")]


def test_it_adds_a_tag_limited_question(rubric, admin_user, client_for):
    n = rubric.criteria.count()
    data = formset_data(
        rubric,
        **{
            f"criteria-{n}-key": "migration_safe",
            f"criteria-{n}-label": "Is the migration safe?",
            f"criteria-{n}-scale": "yes_no",
            f"criteria-{n}-only_for_tag": "database",
            f"criteria-{n}-position": "9",
        },
    )
    client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)
    assert rubric.criteria.filter(key="migration_safe", only_for_tag="database").exists()


def test_it_refuses_merge_choices_that_are_not_verdicts(rubric, admin_user, client_for):
    index = [c.key for c in rubric.criteria.all()].index("merge")
    data = formset_data(rubric, **{f"criteria-{index}-choices_text": "ship = Ship it\nnope = Nope"})
    response = client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)
    assert response.status_code == 200
    assert "merge question" in response.content.decode()
    assert rubric.criteria.get(key="merge").options()[0][0] == "yes"


def test_it_creates_a_rubric_from_the_default_questions(rubric, admin_user, client_for):
    response = client_for(admin_user).post(
        reverse("scoring:rubric_create"), {"name": "Frontend", "copy_default": "on"}
    )
    created = Rubric.objects.get(name="Frontend")
    assert response["Location"] == reverse("scoring:rubric_edit", args=[created.pk])
    assert set(created.criteria.values_list("key", flat=True)) == set(
        rubric.criteria.values_list("key", flat=True)
    )
    assert Rubric.default() == rubric


def test_it_reviews_against_the_campaigns_own_rubric(db, scorer, client_for):
    run = make_run(make_prompt(tags=["ui"]))
    custom = Rubric.objects.create(name="UI")
    Criterion.objects.create(rubric=custom, key="looks_right", label="Looks right", scale="yes_no")
    Criterion.objects.create(
        rubric=custom, key="a11y", label="Accessible", scale="yes_no", only_for_tag="ui"
    )
    Criterion.objects.create(
        rubric=custom, key="backend_only", label="Backend", scale="yes_no", only_for_tag="backend"
    )
    Criterion.objects.create(
        rubric=custom,
        key="merge",
        label="Merge?",
        scale="choices",
        choices=[["yes", "Yes"], ["no", "No"]],
    )
    CampaignRubric.objects.create(campaign=run.campaign, rubric=custom)
    body = client_for(scorer).get(reverse("scoring:review", args=[run.review_key])).content.decode()
    assert "Accessible" in body and "Backend" not in body and "Found the right files" not in body
    with pytest.raises(reviews.ReviewInvalid):
        reviews.submit_review(run, scorer, {"looks_right": "yes", "merge": "yes"}, "", "", [], 1)
    review = reviews.submit_review(
        run, scorer, {"looks_right": "yes", "a11y": "no", "merge": "yes"}, "", "", [], 1
    )
    assert review.verdict == "yes"


@pytest.mark.parametrize(("posted", "saved"), [("0.25", 0.25), ("", 0.5)])
def test_it_sets_what_after_small_changes_counts_as(rubric, admin_user, client_for, posted, saved):
    data = formset_data(rubric, small_changes_value=posted)

    response = client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)

    assert response.status_code == 302
    rubric.refresh_from_db()
    assert rubric.small_changes_value == saved


def test_it_keeps_after_small_changes_between_no_and_yes(rubric, admin_user, client_for):
    data = formset_data(rubric, small_changes_value="1.5")

    response = client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)

    assert response.status_code == 200
    rubric.refresh_from_db()
    assert rubric.small_changes_value == 0.5


def test_it_lets_a_lead_mark_a_question_that_may_not_apply_and_nothing_else(
    rubric, lead, client_for
):
    index = [c.key for c in rubric.criteria.all()].index("recovered")
    data = formset_data(
        rubric,
        **{
            f"criteria-{index}-may_not_apply": "on",
            f"criteria-{index}-label": "Renamed by a lead",
            "name": "Renamed rubric",
        },
    )
    response = client_for(lead).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)
    assert response.status_code == 302
    recovered = rubric.criteria.get(key="recovered")
    assert recovered.may_not_apply
    assert recovered.label == "Recovered when tests failed"  # only admins change the rest
    assert Rubric.objects.get(pk=rubric.pk).name == rubric.name
    assert ("n/a", "N/A") in recovered.options()
    assert client_for(lead).get(reverse("scoring:rubric_create")).status_code == 403


def test_it_refuses_n_a_for_the_merge_question(rubric, admin_user, client_for):
    index = [c.key for c in rubric.criteria.all()].index("merge")
    data = formset_data(rubric, **{f"criteria-{index}-may_not_apply": "on"})
    response = client_for(admin_user).post(reverse("scoring:rubric_edit", args=[rubric.pk]), data)
    assert response.status_code == 200
    assert "Every review needs a verdict" in response.content.decode()
    assert not rubric.criteria.get(key="merge").may_not_apply


def test_the_list_and_the_editor_count_the_campaigns_using_a_rubric_alike(rubric, lead, client_for):
    """Campaigns linked to no rubric use the default one: both pages count them for it."""
    custom = Rubric.objects.create(name="Custom")
    unused = Rubric.objects.create(name="Unused")
    prompt_set = PromptSet.objects.create(name="set")
    linked, *_ = (Campaign.objects.create(name=n, prompt_set=prompt_set) for n in "abc")
    CampaignRubric.objects.create(campaign=linked, rubric=custom)
    assert Rubric.default() == rubric and Rubric.for_campaign(linked) == custom
    client = client_for(lead)

    body = client.get(reverse("scoring:rubrics")).content.decode()
    for name, count in ((rubric.name, 2), ("Custom", 1), ("Unused", 0)):
        row = body[body.index(f">{name}</a>") :].split("</tr>")[0]
        campaigns_cell = row.split('<td class="num">')[-1]  # the last number: Campaigns
        assert campaigns_cell.startswith(f"{count}</td>"), row

    def editor(r: Rubric) -> str:
        return client.get(reverse("scoring:rubric_edit", args=[r.pk])).content.decode()

    assert "This rubric is used by 2 campaigns" in editor(rubric)
    assert "This rubric is used by 1 campaign:" in editor(custom)
    assert "This rubric is used by" not in editor(unused)


def test_the_campaign_form_picks_the_rubric(rubric, lead, client_for, make_repo):
    custom = Rubric.objects.create(name="Custom")
    path, sha = make_repo({"README.md": "hi\n"})
    repository = Repository.objects.create(name="app", url=str(path))
    prompt_set = PromptSet.objects.create(name="set")
    make_prompt(prompt_set=prompt_set, repository=repository, commit=sha)
    model = LanguageModel.objects.create(name="m", provider="scripted", script="- text: hi\n")
    contestant = Contestant.objects.create(name="c", model=model)
    client = client_for(lead)
    url = reverse("runs:campaign_create")

    body = client.get(url).content.decode()
    assert '<option value="" selected>The default rubric, whichever it is when' in body
    assert f'<option value="{rubric.pk}">{rubric.name} (the default now)</option>' in body
    assert f'<option value="{custom.pk}">Custom</option>' in body

    data = {"prompt_set": prompt_set.pk, "contestants": [contestant.pk], "repeats": 1,
            "reviews_wanted": 1}  # fmt: skip
    client.post(url, {**data, "name": "Custom one", "rubric": custom.pk})
    client.post(url, {**data, "name": "Default one", "rubric": ""})
    assert Rubric.for_campaign(Campaign.objects.get(name="Custom one")) == custom
    assert not CampaignRubric.objects.filter(campaign__name="Default one").exists()
    Rubric.objects.filter(pk=custom.pk).update(is_default=True)
    Rubric.objects.filter(pk=rubric.pk).update(is_default=False)
    # Left empty, the campaign follows whichever rubric is the default.
    assert Rubric.for_campaign(Campaign.objects.get(name="Default one")) == custom


def test_a_campaign_s_criteria_are_those_of_the_rubric_it_uses(rubric, db):
    """The linked rubric's questions, else the default rubric's, else the oldest rubric's: the
    review page reads them in one query, and they are always the ones `for_campaign` names."""
    prompt_set = PromptSet.objects.create(name="set")
    linked, unlinked = (Campaign.objects.create(name=n, prompt_set=prompt_set) for n in "ab")
    custom = Rubric.objects.create(name="Custom")
    Criterion.objects.create(rubric=custom, key="tests", label="Tests pass?", position=2)
    Criterion.objects.create(rubric=custom, key="merge", label="Merge?", position=1)
    CampaignRubric.objects.create(campaign=linked, rubric=custom)

    def keys(campaign: Campaign) -> list[str]:
        keys = [c.key for c in Rubric.criteria_of_campaign(campaign.pk)]
        assert keys == [c.key for c in Rubric.for_campaign(campaign).criteria.all()]
        return keys

    assert keys(linked) == ["merge", "tests"]
    assert keys(unlinked) == [c.key for c in rubric.criteria.all()] and "conventions" in keys(
        unlinked
    )
    Rubric.objects.filter(pk=rubric.pk).update(is_default=False)  # no default: the oldest one
    assert keys(unlinked) == [c.key for c in rubric.criteria.all()]
    Rubric.objects.filter(pk=custom.pk).update(is_default=True)
    assert keys(unlinked) == ["merge", "tests"]

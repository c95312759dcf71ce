"""Forms that prevent broken setups: models, contestants and the campaign form."""

from __future__ import annotations

from django.urls import reverse

from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository


def model_form_data(**overrides) -> dict:
    data = {
        "name": "local", "provider": LanguageModel.OPENAI, "base_url": "http://127.0.0.1:9/v1",
        "model_id": "m", "api_key": "", "api_key_env": "", "input_per_mtok": "0",
        "output_per_mtok": "0", "params": "", "script": "",
    }  # fmt: skip
    return {**data, **overrides}


def test_a_new_model_form_has_no_null_text_and_no_key_removal(admin_user, client_for):
    body = client_for(admin_user).get(reverse("runs:model_create")).content.decode()
    assert ">null</textarea>" not in body
    assert "Remove the stored key" not in body


def test_a_model_with_a_key_offers_its_removal_with_a_confirmation(admin_user, client_for):
    model = LanguageModel.objects.create(
        name="keyed", provider=LanguageModel.OPENAI, model_id="m", api_key="sk-" + "x" * 20
    )
    body = client_for(admin_user).get(reverse("runs:model_edit", args=[model.pk])).content.decode()
    assert "Remove the stored key" in body
    assert 'data-confirm-when-checked="Remove the stored API key?' in body
    assert ">null</textarea>" not in body


def test_a_command_contestant_needs_a_command_with_known_placeholders(admin_user, client_for):
    model = LanguageModel.objects.create(name="m", provider=LanguageModel.OPENAI, model_id="m")
    client = client_for(admin_user)
    data = {"name": "cli", "harness": Contestant.COMMAND, "model": model.pk, "benchmarks": ""}
    response = client.post(reverse("runs:contestant_create"), {**data, "options": ""})
    assert response.status_code == 200
    assert "The command harness needs options" in response.content.decode()
    response = client.post(
        reverse("runs:contestant_create"),
        {**data, "options": '{"command": "agent --repo {repo}"}'},
    )
    assert "Unknown placeholder {repo}" in response.content.decode()
    assert not Contestant.objects.exists()
    response = client.post(
        reverse("runs:contestant_create"),
        {**data, "options": '{"command": "agent --repo {workspace} --model {model}"}'},
    )
    assert response.status_code == 302
    assert Contestant.objects.get().options["command"].startswith("agent")


def test_the_campaign_form_warns_about_a_model_that_failed_its_check(lead, client_for):
    PromptSet.objects.create(name="set")
    broken = LanguageModel.objects.create(
        name="broken", provider=LanguageModel.OPENAI, model_id="b",
        connection_check={"ok": False, "error": "401 Unauthorized", "checked_at": "x"},
    )  # fmt: skip
    fine = LanguageModel.objects.create(
        name="fine", provider=LanguageModel.OPENAI, model_id="f", connection_check={"ok": True}
    )
    Contestant.objects.create(name="bad-one", model=broken)
    Contestant.objects.create(name="good-one", model=fine)
    body = client_for(lead).get(reverse("runs:campaign_create")).content.decode()
    assert "bad-one: warning, its model failed its connection check (401 Unauthorized)" in body
    assert "good-one: warning" not in body


def test_the_prompt_form_offers_tags_in_use_and_takes_new_slugs(admin_user, client_for, make_repo):
    path, sha = make_repo({"README.md": "hi\n"})
    repository = Repository.objects.create(name="app", url=str(path))
    prompt_set = PromptSet.objects.create(name="set")
    Prompt.objects.create(
        prompt_set=prompt_set, key="old", title="Old", instructions="x", repository=repository,
        commit=sha, tags=["multi-file", "ambiguous-spec"],
    )  # fmt: skip
    client = client_for(admin_user)
    url = reverse("runs:prompt_create", kwargs={"prompt_set_id": prompt_set.pk})

    body = client.get(url).content.decode()
    assert '<datalist id="id_tags-known"><option value="ambiguous-spec"></option>' in body
    assert '<option value="multi-file"></option></datalist>' in body
    assert body.count('list="id_tags-known"') == 2  # two blank boxes on a new prompt

    data = {
        "title": "New", "key": "new", "repository": repository.pk, "commit": sha,
        "instructions": "Do it", "tags": ["multi-file", "", "needs-db"],
    }  # fmt: skip
    response = client.post(url, {**data, "tags": ["multi-file", "two words"]})
    assert response.status_code == 200
    assert "&#x27;two words&#x27; is not a valid tag" in response.content.decode()
    assert not Prompt.objects.filter(key="new").exists()

    assert client.post(url, data).status_code == 302
    prompt = Prompt.objects.get(key="new")
    assert prompt.tags == ["multi-file", "needs-db"]
    edit = client.get(reverse("runs:prompt_edit", kwargs={"prompt_id": prompt.pk})).content
    assert b'value="needs-db" list="id_tags-known"' in edit

"""Every YAML input refuses anchors and aliases: prompt sets, contestants files, model scripts."""

from __future__ import annotations

import time

import pytest
import yaml
from django.urls import reverse

from runs import yaml_loader
from runs.files.contestants import import_contestants
from runs.files.prompt_sets import import_prompt_set
from runs.files.strict import FormatError
from runs.models import LanguageModel, PromptSet
from runs.providers import load_script

# Nine levels of nine aliases: a few hundred bytes that stand for 9**9 (387 million) strings.
BILLION_LAUGHS = (
    "models:\n"
    "  - name: lol\n"
    "    provider: openai\n"
    "    base_url: http://llm.example.com/v1\n"
    "    model: m\n"
    "    params:\n"
    '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(
        f"      {name}: &{name} [{','.join([f'*{previous}'] * 9)}]\n"
        for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
)


def test_the_billion_laughs_file_is_what_it_claims():
    assert len(BILLION_LAUGHS.encode()) < 700
    events = list(yaml.parse(BILLION_LAUGHS, Loader=yaml.SafeLoader))
    assert sum(isinstance(e, yaml.AliasEvent) for e in events) == 8 * 9


@pytest.mark.django_db
def test_it_refuses_the_billion_laughs_contestants_file_at_once():
    started = time.monotonic()
    with pytest.raises(FormatError) as raised:
        import_contestants(BILLION_LAUGHS, filename="lol.yaml")

    assert time.monotonic() - started < 1.0
    assert raised.value.errors == [
        "lol.yaml: line 7, column 10: invalid YAML: an anchor (&a) is not allowed: "
        "anchors and aliases are refused"
    ]
    assert not LanguageModel.objects.exists()


@pytest.mark.django_db
def test_it_refuses_an_alias_in_a_prompt_set_file_naming_its_line():
    text = (
        "name: tasks\n"
        "prompts:\n"
        "  - key: a\n"
        "    title: A\n"
        "    repository: shop\n"
        "    commit: abcd\n"
        "    instructions: x\n"
        "    tags: *shared\n"
    )
    with pytest.raises(FormatError) as raised:
        import_prompt_set(text, filename="tasks.yaml")

    assert raised.value.errors == [
        "tasks.yaml: line 8, column 11: invalid YAML: an alias (*shared) is not allowed: "
        "write the value out in full"
    ]
    assert not PromptSet.objects.exists()


@pytest.mark.django_db
def test_it_refuses_a_merge_of_an_anchored_mapping():
    text = (
        "models:\n"
        "  - &base {name: one, provider: openai, base_url: 'http://x/v1', model: m}\n"
        "  - <<: *base\n"
        "    name: two\n"
    )
    with pytest.raises(FormatError, match="line 2, column 5: invalid YAML: an anchor"):
        import_contestants(text, filename="c.yaml")


def test_it_still_reads_plain_yaml_and_refuses_duplicate_keys():
    assert yaml_loader.load("a: [1, {b: c}]\nd: 'e & f *g'\n") == {
        "a": [1, {"b": "c"}],
        "d": "e & f *g",
    }
    with pytest.raises(yaml.MarkedYAMLError, match="duplicate key 'a'"):
        yaml_loader.load("a: 1\na: 2\n")


def test_it_refuses_anchors_in_a_model_script():
    script = "- &turn {text: hello}\n- *turn\n"
    started = time.monotonic()
    with pytest.raises(ValueError) as raised:
        load_script(script)
    assert time.monotonic() - started < 1.0
    assert "an anchor (&turn) is not allowed" in str(raised.value)
    assert "line 1" in str(raised.value)


def test_it_refuses_anchors_in_a_model_script_typed_into_the_form(client_for, admin_user):
    response = client_for(admin_user).post(
        reverse("runs:model_create"),
        {
            "name": "scripted",
            "provider": "scripted",
            "script": "- &turn {text: hello}\n- *turn\n",
            "input_per_mtok": "0",
            "output_per_mtok": "0",
            "params": "{}",
        },
    )

    assert response.status_code == 200
    [error] = response.context["form"].errors["script"]
    assert "anchor (&turn) is not allowed" in error
    assert not LanguageModel.objects.exists()

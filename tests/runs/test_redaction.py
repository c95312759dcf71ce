"""Secrets scrubbed from everything a run stores and every page and export that shows it."""

from __future__ import annotations

import base64
import io
import json
import time

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.urls import reverse

from runs import campaigns, execution, redaction
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run, save_file
from tests.fake_llm import FakeLLM

# Printed by the run from two halves each, so neither appears whole in what was configured.
MODEL_KEY = ("sk-model-key-Q8v2", "Lx0pTz7mN4w")
SITE_SECRET = ("site-secret-key-Hq3V", "n81xWk0pZr")
PRINT_BOTH = (
    "printf 'key=%s%s\\n' {0} {1}; printf 'site=%s%s\\n' {2} {3}; "
    "printf '%s%s' {0} {1} | base64".format(*MODEL_KEY, *SITE_SECRET)
)


def _whole(halves: tuple[str, str]) -> str:
    return "".join(halves)


def _leaks(text: str) -> list[str]:
    key, secret = _whole(MODEL_KEY), _whole(SITE_SECRET)
    encoded = base64.b64encode(key.encode()).decode()[: len(key) // 3 * 4]
    return [s for s in (key, secret, encoded) if s in text]


@pytest.fixture(autouse=True)
def _fresh_secrets(settings):
    settings.SECRET_KEY = _whole(SITE_SECRET)
    redaction.forget()
    yield
    redaction.forget()


@pytest.fixture
def model_endpoint():
    with FakeLLM() as llm:  # the command never calls it, but a run checks it is there
        yield llm


@pytest.fixture
def printed_run(db, make_repo, model_endpoint):
    """A finished run of a command harness whose agent, test command and diff all print the
    model's key and SECRET_KEY."""
    path, sha = make_repo({"calc.py": "def add(a, b):\n    return a - b\n"})
    repository = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="fix-add",
        title="Fix add",
        instructions="add() is wrong",
        repository=repository,
        commit=sha,
        test_command=PRINT_BOTH,
    )
    model = LanguageModel.objects.create(
        name="leaky",
        provider="openai",
        base_url=model_endpoint.base_url_openai,
        model_id="m",
        api_key=_whole(MODEL_KEY),
    )
    writes_the_key = "printf '%s%s\\n' {} {} > leaked.txt".format(*MODEL_KEY)
    contestant = Contestant.objects.create(
        name="leaky-command",
        harness=Contestant.COMMAND,
        model=model,
        options={"command": f"{PRINT_BOTH}; {writes_the_key}"},
    )
    run = campaigns.launch(prompt_set=prompt_set, contestants=[contestant]).runs.get()
    assert execution.execute(run.pk) == Run.FINISHED, Run.objects.get(pk=run.pk).status_reason
    run.refresh_from_db()
    return run


def test_it_stores_no_secret_the_run_printed_in_any_artifact(printed_run):
    artifacts = {
        name: printed_run.read_artifact(name)
        for name in (
            "transcript.json",
            "raw/command.log",
            "test_output.txt",
            "diff.patch",
            "after.json",
        )
    }
    for name, text in artifacts.items():
        assert text, f"{name} is empty: the run did not print what this test expects"
        assert not _leaks(text), name
    assert "key=[redacted]" in artifacts["raw/command.log"]
    assert "site=[redacted]" in artifacts["test_output.txt"]
    assert "[redacted]" in artifacts["diff.patch"]
    json.loads(artifacts["transcript.json"])  # still a readable transcript


def test_it_keeps_secrets_out_of_the_run_columns(printed_run):
    assert "[redacted]" in printed_run.test_output_tail
    assert not _leaks(printed_run.test_output_tail)


def test_it_keeps_secrets_out_of_an_errored_runs_reason(printed_run):
    prompt = Prompt.objects.get()
    prompt.setup_command = f"{PRINT_BOTH}; exit 3"
    prompt.save()
    run = campaigns.launch(
        prompt_set=prompt.prompt_set, contestants=[printed_run.contestant]
    ).runs.get()

    assert execution.execute(run.pk) == Run.ERRORED

    run.refresh_from_db()
    assert "[redacted]" in run.status_reason + run.error
    assert not _leaks(run.status_reason + run.error)


def test_it_shows_redacted_on_the_run_page(printed_run, client_for, lead):
    body = client_for(lead).get(printed_run.get_absolute_url()).content.decode()
    assert "key=[redacted]" in body
    assert not _leaks(body)


def test_it_shows_redacted_on_the_review_page(printed_run, client_for, scorer):
    url = reverse("scoring:review", kwargs={"review_key": printed_run.review_key})
    body = client_for(scorer).get(url).content.decode()
    assert "key=[redacted]" in body
    assert not _leaks(body)


def test_it_exports_no_secret_even_from_runs_stored_before_scrubbing(printed_run):
    # As a run stored before this change would have it: the artifacts and columns as printed.
    raw = "key={}{} site={}{}".format(*MODEL_KEY, *SITE_SECRET)
    transcript = {"schema_version": "ATIF-v1.4", "steps": [{"step_id": 1, "message": raw}]}
    save_file(printed_run.artifact_name("transcript.json"), json.dumps(transcript))
    save_file(printed_run.artifact_name("diff.patch"), f"+{raw}\n")
    Run.objects.filter(pk=printed_run.pk).update(test_output_tail=raw, error=raw)
    out = io.StringIO()

    call_command("export_results", str(printed_run.campaign_id), "--transcripts", stdout=out)

    exported = json.loads(out.getvalue())
    assert (
        exported["runs"][0]["transcript"]["steps"][0]["message"] == "key=[redacted] site=[redacted]"
    )
    assert exported["runs"][0]["diff"] == "+key=[redacted] site=[redacted]\n"
    assert not _leaks(out.getvalue())


def test_it_knows_every_key_the_worker_knows(db, settings, monkeypatch):
    encryption_keys = [Fernet.generate_key().decode(), Fernet.generate_key().decode()]
    settings.MERGEABLE_ENCRYPTION_KEYS = encryption_keys
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("SHORT_API_KEY", "short")
    LanguageModel.objects.create(name="stored", provider="openai", api_key="sk-stored-0123456789")
    LanguageModel.objects.create(name="env", provider="openai", api_key_env="OLLAMA_API_KEY")
    LanguageModel.objects.create(name="short", provider="openai", api_key_env="SHORT_API_KEY")
    LanguageModel.objects.create(name="none", provider="openai")

    assert redaction.known_secrets() == {
        "sk-stored-0123456789",
        "sk-from-the-environment",
        _whole(SITE_SECRET),
        *encryption_keys,
    }


def test_it_redacts_the_longest_secret_first_and_encoded_forms(db, monkeypatch):
    LanguageModel.objects.create(name="short", provider="openai", api_key="sk-abc-12345")
    LanguageModel.objects.create(name="long", provider="openai", api_key="sk-abc-12345-more")
    quoted = LanguageModel.objects.create(name="q", provider="openai", api_key='pa"ss/wo rd+1')

    assert redaction.scrub("a sk-abc-12345-more b sk-abc-12345 c") == (
        "a [redacted] b [redacted] c"
    )
    assert redaction.scrub(json.dumps({"k": quoted.api_key})) == '{"k": "[redacted]"}'
    assert redaction.scrub("?key=pa%22ss%2Fwo%20rd%2B1&x") == "?key=[redacted]&x"
    assert redaction.scrub("Basic " + base64.b64encode(b"sk-abc-12345-more").decode()) == (
        "Basic [redacted]"
        + base64.b64encode(b"sk-abc-12345-more").decode()[len(b"sk-abc-12345-more") // 3 * 4 :]
    )
    assert redaction.scrub("nothing secret here") == "nothing secret here"


def test_it_picks_up_a_changed_key_at_once_in_this_process(db):
    model = LanguageModel.objects.create(name="m", provider="openai", api_key="sk-first-0123456")
    assert redaction.scrub("sk-first-0123456") == "[redacted]"

    model.api_key = "sk-second-0123456"
    model.save()

    assert redaction.scrub("sk-second-0123456") == "[redacted]"


def test_it_picks_up_a_change_made_elsewhere_within_seconds(db, monkeypatch):
    monkeypatch.setattr(redaction, "CACHE_SECONDS", 0.2)
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-before-0123456")
    LanguageModel.objects.create(name="env", provider="openai", api_key_env="OLLAMA_API_KEY")
    assert redaction.scrub("sk-before-0123456") == "[redacted]"

    # Another process rotates the variable; this one is not told.
    monkeypatch.setenv("OLLAMA_API_KEY", "sk-after-0123456")
    assert redaction.scrub("sk-after-0123456") == "sk-after-0123456"  # cached: no query
    time.sleep(0.3)

    assert redaction.scrub("sk-after-0123456") == "[redacted]"


def test_it_caches_the_list_instead_of_querying_for_every_scrub(db, django_assert_num_queries):
    LanguageModel.objects.create(name="m", provider="openai", api_key="sk-cached-0123456")
    with django_assert_num_queries(1):
        for _ in range(50):
            assert redaction.scrub("sk-cached-0123456") == "[redacted]"


def test_it_keeps_a_json_artifact_readable_when_a_secret_follows_an_escape(db):
    LanguageModel.objects.create(name="n", provider="openai", api_key="nXq8v2Lx0pTz")
    text = json.dumps({"said": "line\nXq8v2Lx0pTz", "key": "nXq8v2Lx0pTz"})
    assert "nXq8v2Lx0pTz" in text.replace('"nXq8v2Lx0pTz"', "")  # the escape's n, then the rest

    scrubbed = redaction.scrub_artifact("transcript.json", text)

    assert json.loads(scrubbed) == {"said": "line\nXq8v2Lx0pTz", "key": "[redacted]"}


def test_it_scrubs_bytes_and_keeps_the_bytes_it_cannot_decode(db):
    LanguageModel.objects.create(name="b", provider="openai", api_key="sk-bytes-0123456")
    scrubbed = redaction.scrub_artifact("raw/log.txt", b"\xff\xfe sk-bytes-0123456 \xff")
    assert scrubbed == b"\xff\xfe [redacted] \xff"

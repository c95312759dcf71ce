"""Runs produced elsewhere: imported from a patch or a branch, tested, stored like any other run."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from runs import imports
from runs.imports import ImportProblem, import_run
from runs.models import (
    Campaign,
    Contestant,
    LanguageModel,
    Prompt,
    PromptSet,
    Repository,
    Run,
    RunImport,
)
from tests.conftest import git

FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
TEST_COMMAND = "python -m pytest -q -p no:cacheprovider --junitxml=.mergeable-junit.xml"

FIX = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""
NOTES_ONLY = """\
diff --git a/NOTES.md b/NOTES.md
new file mode 100644
--- /dev/null
+++ b/NOTES.md
@@ -0,0 +1 @@
+I looked at it.
"""
STALE = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(x, y):
-    return x - y
+    return x + y
"""


@pytest.fixture
def prompt(db, make_repo) -> Prompt:
    path, sha = make_repo(FILES)
    repo = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    return Prompt.objects.create(
        prompt_set=prompt_set,
        key="fix-add",
        title="Fix add",
        instructions="add() is wrong",
        repository=repo,
        commit=sha,
        test_command=TEST_COMMAND,
        expected_files=["calc.py"],
    )


def counts() -> tuple:
    stored = settings.MEDIA_ROOT / "runs"
    files = sorted(p for p in stored.rglob("*") if p.is_file()) if stored.exists() else []
    return (
        Run.objects.count(),
        Contestant.objects.count(),
        Campaign.objects.count(),
        LanguageModel.objects.count(),
        len(files),
    )


def importing(prompt, **kwargs) -> Run:
    kwargs.setdefault("campaign_name", None)
    kwargs.setdefault("contestant_name", "claude-code-laptop")
    return import_run(prompt=prompt, **kwargs)


# --- patches ----------------------------------------------------------------------------------


def test_it_imports_a_clean_patch_tests_it_and_stores_a_run_like_any_other(prompt, lead):
    run = importing(prompt, patch=FIX, user=lead)

    run.refresh_from_db()
    assert run.imported is True
    assert run.status == Run.FINISHED and run.status_reason == "Imported"
    assert run.files_changed == ["calc.py"] and (run.additions, run.deletions) == (1, 1)
    assert "+    return a + b" in run.diff
    assert run.read_json_artifact("before.json")["calc.py"] == FILES["calc.py"]
    assert "a + b" in run.read_json_artifact("after.json")["calc.py"]
    assert run.test_exit_code == 0 and (run.tests_passed, run.tests_failed) == (1, 0)
    assert "1 passed" in run.read_artifact("test_output.txt")
    assert run.expected_files_recall == 1.0
    assert run.snapshot["prompt"]["commit"] == prompt.commit
    assert run.snapshot["contestant"]["name"] == "claude-code-laptop"
    assert run.snapshot["import"]["imported_by"] == "lena"
    # It joins the review queue and its campaign like an executed run.
    assert Run.objects.reviewable().filter(pk=run.pk).exists()
    campaign = run.campaign
    assert campaign.name == "Imported runs" and campaign.prompt_set == prompt.prompt_set
    assert campaign.state == Campaign.FINISHED and campaign.created_by == lead
    assert list(campaign.contestants.all()) == [run.contestant]
    contestant = run.contestant
    assert contestant.harness == "command" and contestant.model.name == "external"
    assert contestant.model.base_url == "" and not contestant.is_scripted


def test_it_marks_a_patch_whose_tests_fail_as_failed(prompt):
    run = importing(prompt, patch=NOTES_ONLY)
    assert run.status == Run.FAILED
    assert run.status_reason.startswith("Imported") and "tests failed" in run.status_reason
    assert run.tests_failed == 1 and run.files_changed == ["NOTES.md"]


NEUTERED_TEST = """\
diff --git a/test_calc.py b/test_calc.py
--- a/test_calc.py
+++ b/test_calc.py
@@ -4,2 +4,2 @@ from calc import add
 def test_add():
-    assert add(2, 3) == 5
+    assert True
"""


def test_it_tests_an_import_with_the_prompts_own_and_hidden_tests(prompt):
    from pathlib import Path

    repo = Path(prompt.repository.url)
    (repo / "test_hidden.py").write_text(
        "from calc import add\n\n\ndef test_negatives():\n    assert add(-1, -2) == -3\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hidden test")
    Prompt.objects.filter(pk=prompt.pk).update(
        test_files=["test_*.py"],
        hidden_tests_commit=git(repo, "rev-parse", "HEAD"),
        hidden_tests_paths=["test_hidden.py"],
    )
    prompt.refresh_from_db()

    gamed = importing(prompt, patch=NEUTERED_TEST)
    fixed = importing(prompt, patch=FIX)

    assert gamed.status == Run.FAILED and gamed.test_files_modified == ["test_calc.py"]
    assert (gamed.tests_passed, gamed.tests_failed) == (0, 2)
    assert fixed.status == Run.FINISHED and fixed.test_files_modified == []
    assert (fixed.tests_passed, fixed.tests_failed) == (2, 0)


def test_it_adds_repeated_imports_to_the_named_campaign_as_repeats(prompt):
    first = importing(prompt, patch=FIX, campaign_name="Laptop runs")
    second = importing(prompt, patch=NOTES_ONLY, campaign_name="Laptop runs")
    assert first.campaign_id == second.campaign_id
    assert (first.repeat, second.repeat) == (0, 1)
    assert Campaign.objects.get(pk=first.campaign_id).repeats == 2


def test_it_uses_an_existing_contestant(prompt):
    model = LanguageModel.objects.create(name="real", provider="openai", model_id="gpt")
    existing = Contestant.objects.create(name="gpt-builtin", model=model)
    run = importing(prompt, patch=FIX, contestant_name="gpt-builtin")
    assert run.contestant == existing
    assert not LanguageModel.objects.filter(name="external").exists()


def test_it_refuses_a_patch_that_does_not_apply_and_stores_nothing(prompt):
    before = counts()
    with pytest.raises(ImportProblem, match="does not apply cleanly"):
        importing(prompt, patch=STALE)
    assert counts() == before
    assert not list((settings.MERGEABLE_CHECKOUT_ROOT / "imports").iterdir())


@pytest.mark.parametrize(
    ("patch", "problem"),
    [
        (NOTES_ONLY.replace("NOTES.md", "../outside.txt"), "'..'"),
        ("--- /dev/null\n+++ /etc/passwd\n@@ -0,0 +1 @@\n+root::0:0::/:/bin/sh\n", "absolute"),
        (NOTES_ONLY.replace("a/NOTES.md", "a//etc/x").replace("b/NOTES.md", "b//etc/x"), "empty"),
        (NOTES_ONLY.replace("NOTES.md", ".git/hooks/post-checkout"), "git's own directory"),
        (NOTES_ONLY.replace("NOTES.md", "src/.GIT/config"), "git's own directory"),
        (
            'diff --git "a/x/../../y" "b/x/../../y"\nnew file mode 100644\n--- /dev/null\n'
            '+++ "b/x/../../y"\n@@ -0,0 +1 @@\n+z\n',
            "'..'",
        ),
        (FIX + "diff --git a/a b/a\nrename from calc.py\nrename to ../calc.py\n", "'..'"),
    ],
)
def test_it_refuses_a_patch_touching_paths_outside_the_repository(prompt, patch, problem):
    before = counts()
    with pytest.raises(ImportProblem, match=problem):
        importing(prompt, patch=patch)
    assert counts() == before


def test_it_reads_a_removed_line_that_looks_like_a_header_as_content(prompt, make_repo):
    # "-- SQL comment" removed shows as "--- SQL comment": not a file header.
    assert imports.patch_paths(
        "--- a/q.sql\n+++ b/q.sql\n@@ -1,2 +1,1 @@\n--- /etc/passwd\n x\n"
    ) == ["a/q.sql", "b/q.sql"]


def test_it_refuses_a_patch_writing_through_a_symlink(db, make_repo):
    path, sha = make_repo({"calc.py": "x = 1\n"}, name="linked")
    (path / "out").symlink_to("/tmp")
    git(path, "add", "out")
    git(path, "commit", "-q", "-m", "link")
    sha = git(path, "rev-parse", "HEAD")
    repo = Repository.objects.create(name="linked", url=str(path))
    prompt = Prompt.objects.create(
        prompt_set=PromptSet.objects.create(name="s"),
        key="k",
        title="t",
        instructions="i",
        repository=repo,
        commit=sha,
    )
    with pytest.raises(ImportProblem, match="symbolic link"):
        importing(prompt, patch=NOTES_ONLY.replace("NOTES.md", "out/escaped.txt"))
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "either a patch or a branch"),
        ({"patch": FIX, "branch": "main"}, "either a patch or a branch"),
        ({"patch": FIX, "contestant_name": "not a slug!"}, "letters, digits"),
        ({"patch": "   \n"}, "The patch is empty"),
        ({"patch": "this is not a diff\n"}, "does not apply"),
        ({"branch": "--upload-pack=evil"}, "not a valid branch name"),
    ],
)
def test_it_refuses_unusable_input_with_a_clear_message(prompt, kwargs, message):
    before = counts()
    with pytest.raises(ImportProblem, match=message):
        importing(prompt, **kwargs)
    assert counts() == before


# --- branches -----------------------------------------------------------------------------------


def test_it_imports_a_branch_of_the_prompts_repository(prompt):
    origin = prompt.repository.url
    git(origin, "checkout", "-q", "-b", "agent/fix-add")
    (origin_path := __import__("pathlib").Path(origin) / "calc.py").write_text(
        "def add(a, b):\n    return a + b\n"
    )
    assert origin_path.exists()
    git(origin, "commit", "-q", "-am", "Fix add")
    head = git(origin, "rev-parse", "HEAD")
    git(origin, "checkout", "-q", "main")

    run = importing(prompt, branch="agent/fix-add")
    assert run.status == Run.FINISHED and run.files_changed == ["calc.py"]
    assert "+    return a + b" in run.diff
    assert run.snapshot["import"]["branch_commit"] == head


def test_it_refuses_a_branch_that_does_not_exist(prompt):
    before = counts()
    with pytest.raises(ImportProblem, match="was not found"):
        importing(prompt, branch="no-such-branch")
    assert counts() == before


# --- transcripts ----------------------------------------------------------------------------------

ATIF_SAMPLE = {
    "schema_version": "ATIF-v1.4",
    "session_id": "s-1",
    "agent": {"name": "claude-code", "version": "2.0", "model_name": "claude-sonnet"},
    "steps": [
        {
            "step_id": 1,
            "source": "user",
            "timestamp": "2026-01-05T10:00:00+00:00",
            "message": "Fix add",
        },
        {
            "step_id": 2,
            "source": "agent",
            "timestamp": "2026-01-05T10:03:00+00:00",
            "message": "Done.",
            "metrics": {"prompt_tokens": 1200, "completion_tokens": 80, "cost_usd": 0.01},
        },
    ],
    "final_metrics": {},
}

AIDER_SAMPLE = """\

# aider chat started at 2026-01-05 10:00:00

> /usr/local/bin/aider --model openai/qwen --edit-format diff calc.py
> Aider v0.86.1
> Model: openai/qwen with diff edit format
> Added calc.py to the chat.

#### add() subtracts. Make it add.

The function uses `-` where it should use `+`.

calc.py
```python
<<<<<<< SEARCH
    return a - b
=======
    return a + b
>>>>>>> REPLACE
```

> Tokens: 2.4k sent, 183 received. Cost: $0.0090 message, $0.0090 session.
> Applied edit to calc.py

#### thanks

You're welcome.

> Tokens: 2.7k sent, 12 received. Cost: $0.0010 message, $0.0100 session.
"""

MSWEA_SAMPLE = {
    "info": {
        "model_stats": {"instance_cost": 0.0123, "api_calls": 2},
        "config": {"model": {"model_name": "openai/qwen"}, "agent_type": "DefaultAgent"},
        "mini_version": "2.4.6",
        "exit_status": "Submitted",
        "submission": "",
    },
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "<task>Fix add</task>"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "bash", "arguments": '{"command": "cat calc.py"}'},
                }
            ],
            "extra": {
                "actions": [{"command": "cat calc.py", "tool_call_id": "call_1"}],
                "response": {"usage": {"prompt_tokens": 900, "completion_tokens": 40}},
                "cost": 0.006,
                "timestamp": 1767607200.0,
            },
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "<returncode>0</returncode>\n"
            "<output>def add(a, b):\n    return a - b\n</output>",
            "extra": {"returncode": 0, "timestamp": 1767607201.0},
        },
        {
            "role": "assistant",
            "content": "Fixing and submitting.",
            "tool_calls": [
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {
                        "name": "bash",
                        "arguments": '{"command": "sed -i s/-/+/ calc.py && echo '
                        'COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}',
                    },
                }
            ],
            "extra": {
                "response": {"usage": {"prompt_tokens": 1000, "completion_tokens": 60}},
                "cost": 0.0063,
                "timestamp": 1767607260.0,
            },
        },
        {"role": "exit", "content": "", "extra": {"exit_status": "Submitted", "submission": ""}},
    ],
    "trajectory_format": "mini-swe-agent-1.1",
}

ROO_API = [
    {
        "role": "user",
        "content": [{"type": "text", "text": "<task>\nFix add\n</task>"}],
        "ts": 1767607200000,
    },
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I'll read the file."},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "read_file",
                "input": {"path": "calc.py"},
            },
        ],
        "ts": 1767607205000,
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "1 | def add(a, b):\n2 |     return a - b"}],
            },
        ],
    },
    {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_2",
                "name": "attempt_completion",
                "input": {"result": "Fixed add."},
            },
        ],
    },
]
ROO_UI = [
    {"ts": 1767607200000, "type": "say", "say": "text", "text": "Fix add"},
    {
        "ts": 1767607201000,
        "type": "say",
        "say": "api_req_started",
        "text": json.dumps({"request": "...", "tokensIn": 1500, "tokensOut": 90, "cost": 0.02}),
    },
    {
        "ts": 1767607230000,
        "type": "say",
        "say": "api_req_started",
        "text": json.dumps({"request": "...", "tokensIn": 1700, "tokensOut": 30, "cost": 0.01}),
    },
    {"ts": 1767607260000, "type": "say", "say": "completion_result", "text": "Fixed add."},
]


def test_it_imports_an_atif_transcript_with_its_usage(prompt):
    text = json.dumps(ATIF_SAMPLE)
    run = importing(prompt, patch=FIX, transcript_text=text, transcript_filename="trajectory.json")
    assert run.transcript["agent"]["name"] == "claude-code"
    assert (run.input_tokens, run.output_tokens) == (1200, 80)
    assert run.cost_usd == pytest.approx(0.01) and run.steps == 1
    assert run.duration_s == 180
    assert run.read_artifact("raw/trajectory.json") == text


def test_it_imports_an_aider_chat_history(prompt):
    run = importing(
        prompt,
        patch=FIX,
        transcript_text=AIDER_SAMPLE,
        transcript_filename=".aider.chat.history.md",
    )
    steps = run.transcript["steps"]
    assert [s["source"] for s in steps] == ["system", "user", "agent", "user", "agent"]
    assert steps[1]["message"] == "add() subtracts. Make it add."
    [edit] = steps[2]["tool_calls"]
    assert edit["function_name"] == "edit_file"
    assert edit["arguments"] == {
        "path": "calc.py",
        "old": "    return a - b",
        "new": "    return a + b",
    }
    assert steps[2]["observation"]["results"][0]["content"] == "Applied edit to calc.py"
    assert (run.input_tokens, run.output_tokens) == (5100, 195)
    assert run.cost_usd == pytest.approx(0.01)
    assert run.read_artifact("raw/.aider.chat.history.md") == AIDER_SAMPLE


def test_it_imports_a_mini_swe_agent_trajectory(prompt):
    run = importing(
        prompt, patch=FIX, transcript_text=json.dumps(MSWEA_SAMPLE), transcript_filename="traj.json"
    )
    transcript = run.transcript
    assert transcript["agent"]["model_name"] == "openai/qwen"
    agent_steps = [s for s in transcript["steps"] if s["source"] == "agent"]
    assert [s["tool_calls"][0]["arguments"]["command"] for s in agent_steps][0] == "cat calc.py"
    assert "return a - b" in agent_steps[0]["observation"]["results"][0]["content"]
    assert run.agent_status == "finished"
    assert (run.input_tokens, run.output_tokens, run.steps) == (1900, 100, 2)
    assert run.cost_usd == pytest.approx(0.0123)


def test_it_imports_a_roo_code_task_folder(prompt):
    run = importing(
        prompt,
        patch=FIX,
        transcript_text=json.dumps(ROO_API),
        transcript_filename="api_conversation_history.json",
        extra_files={"ui_messages.json": json.dumps(ROO_UI)},
    )
    steps = run.transcript["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent"]
    assert steps[1]["tool_calls"][0]["function_name"] == "read_file"
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]
    assert (run.input_tokens, run.output_tokens) == (3200, 120)
    assert run.cost_usd == pytest.approx(0.03) and run.agent_status == "finished"
    assert run.duration_s == 60
    assert run.read_artifact("raw/ui_messages.json") == json.dumps(ROO_UI)


def test_it_imports_roo_code_ui_messages_alone(prompt):
    run = importing(
        prompt,
        patch=FIX,
        transcript_text=json.dumps(ROO_UI),
        transcript_filename="ui_messages.json",
    )
    assert [s["source"] for s in run.transcript["steps"]] == ["user", "agent"]
    assert run.input_tokens == 3200


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("trajectory.json", '{"schema_version": "ATIF-v1.4", "steps": {}}', "steps must be a list"),
        (
            "trajectory.json",
            '{"schema_version": "ATIF-v1.4", "steps": [{"source": "robot"}]}',
            "step 1 has no valid source",
        ),
        ("trajectory.json", '{"schema_version": "ATIF', "not valid JSON"),
        (".aider.chat.history.md", "#### hello\n\nhi\n", "no '# aider chat started at' line"),
        (
            ".aider.chat.history.md",
            "# aider chat started at 2026-01-05 10:00:00\n\n",
            "no messages",
        ),
        ("traj.json", '{"info": {}, "messages": {"role": "user"}}', "'messages' must be a list"),
        ("traj.json", '{"info": {}, "messages": [{"content": "x"}]}', "message 1 has no role"),
        (
            "api_conversation_history.json",
            '[{"role": "robot", "content": "x"}]',
            "message 1 needs a role",
        ),
        ("api_conversation_history.json", '{"role": "user"}', "expected a list"),
        ("ui_messages.json", '[{"ts": 1, "type": "shout"}]', "type of say or ask"),
        ("notes.txt", "just some words", "not valid JSON"),
        ("notes.json", '{"hello": "world"}', "not a transcript format"),
    ],
)
def test_it_refuses_a_malformed_transcript_naming_the_file_and_stores_nothing(
    prompt, filename, text, message
):
    before = counts()
    with pytest.raises(ImportProblem, match=message) as caught:
        importing(prompt, patch=FIX, transcript_text=text, transcript_filename=filename)
    assert str(caught.value).startswith(filename)
    assert counts() == before


# --- the page and the command -----------------------------------------------------------------


def test_it_shows_the_import_form_to_leads_only(prompt, client_for, lead, scorer):
    url = reverse("runs:run_import")
    page = client_for(lead).get(url)
    assert page.status_code == 200 and b"fix-add" in page.content
    assert client_for(scorer).get(url).status_code == 403


@pytest.fixture
def queued(monkeypatch):
    """Import ids handed to the task queue (after the request's transaction commits)."""
    from runs import tasks

    ids: list[int] = []
    monkeypatch.setattr(tasks.import_run, "delay", ids.append)
    return ids


def post_import(client, prompt, **fields):
    data = {"prompt": prompt.pk, "contestant": "aider-laptop", "campaign": "", **fields}
    return client.post(reverse("runs:run_import"), data)


def test_it_imports_from_the_page_in_the_background_then_leads_to_the_run(
    prompt, client_for, lead, queued, django_capture_on_commit_callbacks
):
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        response = post_import(
            client,
            prompt,
            patch=SimpleUploadedFile("fix.patch", FIX.encode()),
            transcripts=[
                SimpleUploadedFile("api_conversation_history.json", json.dumps(ROO_API).encode()),
                SimpleUploadedFile("ui_messages.json", json.dumps(ROO_UI).encode()),
            ],
        )
    job = RunImport.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert queued == [job.pk] and not Run.objects.exists()

    waiting = client.get(job.get_absolute_url())
    assert waiting.status_code == 200
    assert b"Waiting for a worker" in waiting.content and b"fix.patch" in waiting.content
    assert b'hx-trigger="every 1s"' in waiting.content  # the page follows the worker

    assert imports.run_queued_import(job.pk) == RunImport.DONE
    run = Run.objects.get()
    assert run.imported and run.contestant.name == "aider-laptop"
    assert run.transcript["extra"]["source_format"] == "roo-code" and run.input_tokens == 3200
    assert not default_storage.exists(job.payload_name)  # the upload is not kept twice
    polled = client.get(job.get_absolute_url(), headers={"HX-Request": "true"})
    assert polled["HX-Redirect"] == run.get_absolute_url()
    followed = client.get(job.get_absolute_url())
    assert followed.status_code == 302 and followed["Location"] == run.get_absolute_url()
    assert imports.run_queued_import(job.pk) is None  # a redelivered task does nothing


def test_it_keeps_a_patch_byte_for_byte_through_the_queue(
    prompt, client_for, lead, queued, django_capture_on_commit_callbacks
):
    latin = FIX.replace("return a + b", "return a + b  # caf\xe9").encode("latin-1")
    with django_capture_on_commit_callbacks(execute=True):
        post_import(client_for(lead), prompt, patch=SimpleUploadedFile("fix.patch", latin))
    assert imports.run_queued_import(queued[0]) == RunImport.DONE
    # The stored diff is text (é shows as a replacement character), but its index line names the
    # blob git made of the applied file: it has the latin-1 byte.
    applied = b"def add(a, b):\n    return a + b  # caf\xe9\n"
    blob = hashlib.sha1(b"blob %d\0" % len(applied) + applied).hexdigest()  # noqa: S324
    assert f"..{blob[:7]} 100644" in Run.objects.get().diff


def test_it_shows_why_the_worker_refused_an_import_and_stores_nothing(
    prompt, client_for, lead, queued, django_capture_on_commit_callbacks
):
    before = counts()
    client = client_for(lead)
    with django_capture_on_commit_callbacks(execute=True):
        post_import(client, prompt, patch=SimpleUploadedFile("stale.patch", STALE.encode()))
    job = RunImport.objects.get()
    assert imports.run_queued_import(job.pk) == RunImport.FAILED
    assert counts() == before
    assert not default_storage.exists(job.payload_name)
    page = client.get(job.get_absolute_url(), headers={"HX-Request": "true"})
    assert page.status_code == 200 and "HX-Redirect" not in page
    assert b"does not apply cleanly" in page.content and b"Nothing was stored" in page.content
    assert b"hx-trigger" not in page.content  # polling stops


def test_it_refuses_at_once_what_needs_no_repository(prompt, client_for, lead, queued):
    response = post_import(
        client_for(lead),
        prompt,
        patch=SimpleUploadedFile("fix.patch", FIX.encode()),
        transcripts=[SimpleUploadedFile("notes.json", b'{"hello": "world"}')],
    )
    assert response.status_code == 400
    assert b"notes.json" in response.content and b"not a transcript format" in response.content
    assert not RunImport.objects.exists() and queued == []


def test_it_reports_an_import_whose_worker_died(prompt, settings):
    job = RunImport.objects.create(prompt=prompt, contestant_name="x", status=RunImport.RUNNING)
    default_storage.save(job.payload_name, ContentFile(b"{}"))
    RunImport.objects.filter(pk=job.pk).update(
        started_at=timezone.now() - timedelta(seconds=imports.STALE_IMPORT_SECONDS + 1)
    )
    fresh = RunImport.objects.create(
        prompt=prompt, contestant_name="y", status=RunImport.RUNNING, started_at=timezone.now()
    )
    assert imports.reap_stale_imports() == [job.pk]
    job.refresh_from_db()
    assert job.status == RunImport.FAILED and "worker stopped" in job.error
    assert not default_storage.exists(job.payload_name)
    assert RunImport.objects.get(pk=fresh.pk).status == RunImport.RUNNING


def test_it_refuses_a_post_from_a_scorer(prompt, client_for, scorer):
    response = client_for(scorer).post(
        reverse("runs:run_import"),
        {
            "prompt": prompt.pk,
            "contestant": "x",
            "patch": SimpleUploadedFile("fix.patch", FIX.encode()),
        },
    )
    assert response.status_code == 403 and Run.objects.count() == 0


def test_it_imports_from_the_command_line(prompt, tmp_path):
    patch = tmp_path / "fix.patch"
    patch.write_text(FIX)
    transcript = tmp_path / "traj.json"
    transcript.write_text(json.dumps(MSWEA_SAMPLE))
    out = StringIO()
    call_command(
        "import_run",
        "--prompt-set",
        "calc-tasks",
        "--prompt",
        "fix-add",
        "--contestant",
        "mini-laptop",
        "--patch",
        str(patch),
        "--transcript",
        str(transcript),
        stdout=out,
    )
    run = Run.objects.get()
    assert out.getvalue().strip() == f"Run {run.pk} (imported): finished"
    assert run.agent_status == "finished"


def test_it_reports_a_refused_import_on_the_command_line(prompt, tmp_path):
    patch = tmp_path / "stale.patch"
    patch.write_text(STALE)
    with pytest.raises(CommandError, match="does not apply cleanly"):
        call_command(
            "import_run",
            "--prompt-set",
            "calc-tasks",
            "--prompt",
            "fix-add",
            "--contestant",
            "x",
            "--patch",
            str(patch),
        )
    with pytest.raises(CommandError, match="No prompt"):
        call_command(
            "import_run",
            "--prompt-set",
            "nope",
            "--prompt",
            "fix-add",
            "--contestant",
            "x",
            "--patch",
            str(patch),
        )
    assert Run.objects.count() == 0


ENVIRONMENT = (
    "<environment_details>\n# Current Mode\ncode\n# Current Cost\n$0.42\n"
    "# Model\nclaude-secret-model-id\n</environment_details>"
)


def test_it_drops_roo_codes_environment_details_which_name_the_model(prompt):
    api = json.loads(json.dumps(ROO_API))
    api[0]["content"].append({"type": "text", "text": ENVIRONMENT})
    api[2]["content"][0]["content"].append({"type": "text", "text": ENVIRONMENT})
    run = importing(
        prompt,
        patch=FIX,
        transcript_text=json.dumps(api),
        transcript_filename="api_conversation_history.json",
    )
    shown = json.dumps(run.transcript)
    assert "claude-secret-model-id" not in shown and "environment_details" not in shown
    steps = run.transcript["steps"]
    assert steps[0]["message"] == "<task>\nFix add\n</task>"
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]

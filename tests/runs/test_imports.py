"""Runs produced elsewhere: imported from a patch or a branch, tested, stored like any other run."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

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
from tests.conftest import git, stored_files

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
    files = stored_files("runs")
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
        (
            NOTES_ONLY.replace("a/NOTES.md", "a//etc/x").replace("b/NOTES.md", "b//etc/x"),
            "absolute",
        ),
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
    ) == ["q.sql"]


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

FIXTURES = Path(__file__).parent / "fixtures"


def task_folder(name: str) -> dict[str, str]:
    """A task folder's files as an upload gives them: base name -> text."""
    return {path.name: path.read_text() for path in sorted((FIXTURES / name).iterdir())}


ROO_NATIVE = task_folder("roo-code/native")
ROO_API = ROO_NATIVE["api_conversation_history.json"]
ROO_UI = ROO_NATIVE["ui_messages.json"]


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
    main, text, others = imports.split_transcript_files(ROO_NATIVE)
    run = importing(
        prompt, patch=FIX, transcript_text=text, transcript_filename=main, extra_files=others
    )
    transcript = run.transcript
    steps = transcript["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent", "agent"]
    assert steps[0]["message"] == "add() subtracts. Make it add."
    assert [c["function_name"] for s in steps[1:] for c in s["tool_calls"]] == [
        "read_file",
        "apply_diff",
        "attempt_completion",
    ]
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]
    # Reasoning stays reasoning; the Gemini thought signature is not text to read.
    assert steps[1]["reasoning_content"].startswith("The user wants add() fixed")
    assert steps[1]["message"] == "I'll read calc.py."
    assert "CsQBAXLI" not in json.dumps(transcript) and "thoughtSignature" not in json.dumps(steps)
    # Each reply's usage from the panel's requests; the totals from history_item.json.
    assert steps[2]["metrics"] == {
        "prompt_tokens": 1700,
        "completion_tokens": 60,
        "cached_tokens": 1200,
        "cost_usd": 0.01,
    }
    assert transcript["final_metrics"]["total_cached_tokens"] == 2500
    assert (run.input_tokens, run.output_tokens) == (5000, 180)
    assert run.cost_usd == pytest.approx(0.035) and run.agent_status == "finished"
    assert transcript["extra"]["mode"] == "code"
    assert transcript["extra"]["files_in_context"][0] == {"path": "calc.py", "source": "read_tool"}
    assert transcript["schema_version"] == "ATIF-v1.6" and transcript["agent"]["version"]
    assert run.duration_s == 60
    assert run.read_artifact("raw/ui_messages.json") == ROO_UI


def test_it_imports_roo_code_ui_messages_alone_with_the_tools_real_names(prompt):
    run = importing(
        prompt, patch=FIX, transcript_text=ROO_UI, transcript_filename="ui_messages.json"
    )
    steps = run.transcript["steps"]
    assert steps[0]["source"] == "user" and steps[0]["message"] == "add() subtracts. Make it add."
    calls = [c["function_name"] for s in steps for c in s.get("tool_calls", [])]
    assert calls == ["read_file", "apply_diff", "attempt_completion"]  # not readFile, appliedDiff
    assert steps[1]["reasoning_content"].startswith("The user wants add() fixed")
    assert run.input_tokens == 5000 and run.agent_status == "finished"


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
    monkeypatch.setattr(tasks.import_run, "apply_async", lambda args, **options: ids.append(*args))
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
                SimpleUploadedFile("api_conversation_history.json", ROO_API.encode()),
                SimpleUploadedFile("ui_messages.json", ROO_UI.encode()),
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
    assert run.transcript["extra"]["source_format"] == "roo-code" and run.input_tokens == 5000
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


def test_it_drops_roo_codes_environment_details_which_name_the_model(prompt):
    run = importing(
        prompt,
        patch=FIX,
        transcript_text=ROO_API,
        transcript_filename="api_conversation_history.json",
    )
    shown = json.dumps(run.transcript)
    assert "claude-sonnet-4-5" in ROO_API and "Current Cost" in ROO_API
    assert "claude-sonnet-4-5" not in shown and "environment_details" not in shown
    assert "Current Cost" not in shown
    steps = run.transcript["steps"]
    assert steps[0]["message"] == "add() subtracts. Make it add."
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]


# --- each format's reader, on files in its real shape --------------------------------------------


def read_folder(name: str) -> imports.ImportedTranscript:
    main, text, others = imports.split_transcript_files(task_folder(name))
    return imports.parse_transcript(text, main, others)


def calls_of(steps: list[dict]) -> list[str]:
    return [call["function_name"] for step in steps for call in step.get("tool_calls", [])]


def test_it_reads_roo_codes_xml_tool_calls_of_tasks_before_native_tool_calling():
    read = read_folder("roo-code/xml")
    steps = read.document["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent", "agent"]
    assert steps[0]["message"] == "add() subtracts. Make it add."
    assert calls_of(steps) == ["read_file", "apply_diff", "attempt_completion"]
    diff_call = steps[2]["tool_calls"][0]
    assert diff_call["arguments"]["path"] == "calc.py"
    assert "+    return a + b" not in diff_call["arguments"]["diff"]  # a SEARCH/REPLACE block
    assert "    return a + b\n>>>>>>> REPLACE" in diff_call["arguments"]["diff"]
    assert steps[2]["message"] == "The operator is wrong."  # the XML is a call, not text
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]
    assert steps[2]["observation"]["results"][0]["content"].startswith("Changes successfully")
    assert steps[1]["reasoning_content"] == "I need to see calc.py before changing it."
    assert "<thinking>" not in json.dumps(steps) and "deepseek-chat" not in json.dumps(steps)
    assert read.end_status == "finished"


def test_it_marks_roo_codes_condensed_and_truncated_history_as_copied_context():
    steps = read_folder("roo-code/condensed").document["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "system", "agent", "system", "agent"]
    summary, marker = steps[2], steps[4]
    assert summary["is_copied_context"] and summary["message"].startswith("## Conversation Summary")
    assert marker["is_copied_context"] and "truncation" in marker["message"]
    # Nothing the tool wrote for the model reads as a turn of the user.
    assert not any("Conversation Summary" in s["message"] for s in steps if s["source"] == "user")
    assert "Current Cost" not in summary["message"]
    # What was condensed away stays, in order, tagged with what hid it from the model.
    assert steps[1]["extra"]["condenseParent"] == summary["extra"]["condensed_summary"]
    assert calls_of(steps) == ["read_file", "apply_diff", "attempt_completion"]


def test_it_joins_a_roo_code_subtask_to_its_parent_where_the_parent_waited_for_it():
    read = read_folder("roo-code/subtask")
    steps = read.document["steps"]
    assert calls_of(steps) == ["new_task", "apply_diff", "attempt_completion", "attempt_completion"]
    child = [s for s in steps if (s.get("extra") or {}).get("subtask") == "019b8e2b-child"]
    assert [s["step_id"] for s in child] == [3, 4, 5]  # between new_task and the parent's end
    assert child[0]["message"] == "Fix add() in calc.py so it adds."
    assert steps[1]["observation"]["results"][0]["content"].startswith("Subtask 019b8e2b-child")
    # The totals are the parent's and the subtask's together.
    assert (read.input_tokens, read.output_tokens) == (5000, 150)
    assert read.cost_usd == pytest.approx(0.03)
    assert read.document["final_metrics"]["total_cached_tokens"] == 1500
    assert read.document["extra"]["subtasks"] == ["019b8e2b-child"]


def test_it_reads_roo_codes_exported_task_markdown():
    path = FIXTURES / "roo-code" / "roo_task_jan-5-2026_10-01-00-am.md"
    read = imports.parse_transcript(path.read_text(), path.name)
    steps = read.document["steps"]
    assert read.format == "roo-code"
    assert steps[0]["source"] == "user" and steps[0]["message"] == "add() subtracts. Make it add."
    assert calls_of(steps) == ["read_file", "apply_diff", "attempt_completion"]
    assert steps[1]["tool_calls"][0]["arguments"] == {"path": "calc.py"}
    assert steps[2]["tool_calls"][0]["arguments"]["diff"].endswith(">>>>>>> REPLACE")
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]
    assert "read calc.py first" in steps[1]["reasoning_content"]
    assert "claude-sonnet-4-5" not in json.dumps(read.document)


def test_it_counts_a_roo_code_completion_only_when_the_task_really_ended():
    ui = json.loads(ROO_UI)
    ui += [
        {"ts": 1767607270000, "type": "say", "say": "user_feedback", "text": "Also add a test."},
        {"ts": 1767607271000, "type": "say", "say": "api_req_started", "text": '{"tokensIn": 10}'},
        {"ts": 1767607280000, "type": "say", "say": "text", "text": "Adding a test."},
    ]
    read = imports.parse_transcript(json.dumps(ui), "ui_messages.json")
    assert read.end_status == ""
    assert read.document["steps"][-2]["message"] == "Also add a test."


def test_it_reads_a_cline_task_folder_with_its_own_token_counting():
    read = read_folder("cline")
    document = read.document
    assert read.format == "cline"
    assert document["agent"]["name"] == "cline" and document["agent"]["version"] == "3.36.0"
    steps = document["steps"]
    assert steps[0]["message"] == "add() subtracts. Make it add."
    assert calls_of(steps) == ["read_file", "replace_in_file", "attempt_completion"]
    assert steps[1]["model_name"] == "claude-sonnet-4-5-20250929"
    assert steps[1]["reasoning_content"] == "Look at calc.py first."
    # Cline's tokensIn leaves out cached input: the prompt is tokensIn + cache reads and writes.
    assert steps[2]["metrics"]["prompt_tokens"] == 65 + 85 + 9800
    assert steps[2]["metrics"]["cached_tokens"] == 9800
    assert (read.input_tokens, read.output_tokens) == (29850, 185)
    assert document["final_metrics"]["total_cached_tokens"] == 19750
    assert read.cost_usd == pytest.approx(0.0465) and read.end_status == "finished"
    assert "Context Window Usage" not in json.dumps(steps)


def test_it_tells_cline_from_roo_code_by_what_only_cline_writes():
    cline = task_folder("cline")
    assert imports.detect_format(cline["ui_messages.json"], "ui_messages.json") == "cline"
    assert imports.detect_format(ROO_UI, "ui_messages.json") == "roo-code"
    assert imports.detect_format("**User:**\n\nhi\n", "cline_task_jan-5-2026.md") == "cline"
    assert imports.detect_format("# aider chat started at x\n", "chat.md") == "aider"


# --- ATIF ----------------------------------------------------------------------------------------


def atif(version: str, steps: list[dict], **fields) -> str:
    return json.dumps(
        {
            "schema_version": version,
            "session_id": "s-1",
            "agent": {"name": "some-agent", "version": "1.0", "model_name": "m"},
            "steps": steps,
            **fields,
        }
    )


AGENT_STEP = {
    "step_id": 2,
    "source": "agent",
    "message": "Reading.",
    "model_name": "m-2",
    "reasoning_content": "First look.",
    "tool_calls": [{"tool_call_id": "c1", "function_name": "read", "arguments": {"p": "x"}}],
    "observation": {"results": [{"source_call_id": "c1", "content": "x = 1"}]},
    "metrics": {"prompt_tokens": 10, "completion_tokens": 2, "cached_tokens": 4, "cost_usd": 0.1},
}


@pytest.mark.parametrize("version", ["ATIF-v1.4", "ATIF-v1.5", "ATIF-v1.6", "ATIF-v1.7"])
def test_it_reads_atif_from_v1_4_to_v1_7(version):
    text = atif(version, [{"step_id": 1, "source": "user", "message": "Fix add"}, AGENT_STEP])
    read = imports.parse_transcript(text, "trajectory.json")
    assert read.format == "atif" and read.steps == 1
    assert (read.input_tokens, read.output_tokens) == (10, 2)


def test_it_reads_atif_content_part_messages_as_text():
    parts = [
        {"type": "text", "text": "Fix add, see the screenshot:"},
        {"type": "image", "source": {"media_type": "image/png", "path": "images/shot.png"}},
    ]
    result = {"source_call_id": "c1", "content": [{"type": "text", "text": "x = 1"}]}
    agent = {**AGENT_STEP, "observation": {"results": [result]}}
    text = atif(
        "ATIF-v1.7",
        [{"step_id": 1, "source": "user", "message": parts}, agent],
        trajectory_id="t-1",
        agent={"name": "a", "version": "2", "tool_definitions": [{"type": "function"}]},
    )
    steps = imports.parse_transcript(text, "trajectory.json").document["steps"]
    assert steps[0]["message"] == "Fix add, see the screenshot:\n[image images/shot.png]"
    assert steps[1]["observation"]["results"][0]["content"] == "x = 1"


@pytest.mark.parametrize(
    ("steps", "version", "message"),
    [
        ([{"step_id": 2, "source": "user", "message": "x"}], "ATIF-v1.6", "step ids must run"),
        (
            [{"step_id": 1, "source": "user", "message": "x", "metrics": {"prompt_tokens": 1}}],
            "ATIF-v1.6",
            "step 1 is a user step but has metrics",
        ),
        (
            [{"step_id": 1, "source": "system", "message": "x", "model_name": "m"}],
            "ATIF-v1.6",
            "only agent steps may",
        ),
        (
            [{**AGENT_STEP, "step_id": 1, "observation": {"results": [{"source_call_id": "zz"}]}}],
            "ATIF-v1.6",
            "answers 'zz', which is not a tool call of that step",
        ),
        (
            [{**AGENT_STEP, "step_id": 1, "tool_calls": [{"tool_call_id": "c1"}]}],
            "ATIF-v1.6",
            "tool call 1 has no function_name",
        ),
        (
            [{"step_id": 1, "source": "user", "message": [{"type": "text", "text": "x"}]}],
            "ATIF-v1.4",
            "allows from v1.6 on",
        ),
        (
            [{"step_id": 1, "source": "user", "message": "x", "timestamp": "yesterday"}],
            "ATIF-v1.6",
            "not ISO 8601",
        ),
        ([], "ATIF-v2.0", "not one Mergeable reads"),
    ],
)
def test_it_names_what_is_wrong_with_an_atif_document(steps, version, message):
    with pytest.raises(ImportProblem, match=message) as caught:
        imports.parse_transcript(atif(version, steps), "trajectory.json")
    assert str(caught.value).startswith("trajectory.json: ")


def test_it_writes_current_atif_with_agent_only_fields_on_agent_steps():
    from runs.transcript import TranscriptWriter, validate

    writer = TranscriptWriter(
        agent_name="builtin",
        agent_version="",
        model_name="qwen",
        tool_definitions=[{"type": "function", "function": {"name": "bash"}}],
    )
    writer.add_step("user", "Fix add")
    writer.add_step(
        "agent",
        "Done.",
        model_name="qwen-2",
        reasoning_content="Easy.",
        metrics={"prompt_tokens": 5, "completion_tokens": 1, "cached_tokens": 3},
    )
    with pytest.raises(ValueError, match="agent steps"):
        writer.add_step("user", "x", metrics={"prompt_tokens": 1})
    writer.finish(prompt_tokens=5, completion_tokens=1, cost_usd=0.0, cached_tokens=3)
    document = validate(writer.document)
    assert document["schema_version"] == "ATIF-v1.6"
    assert document["agent"]["version"] == "unknown"  # ATIF requires one
    assert document["agent"]["tool_definitions"][0]["function"]["name"] == "bash"
    assert document["steps"][1]["model_name"] == "qwen-2"
    assert document["final_metrics"]["total_cached_tokens"] == 3


# --- one converter per format, shared by the harness and the import ------------------------------


def mini_trajectory(exit_status: str, *, cost_limit: float = 0.0, cost: float = 0.5) -> dict:
    return {
        "info": {
            "exit_status": exit_status,
            "model_stats": {"instance_cost": cost, "api_calls": 2},
            "config": {"agent": {"step_limit": 2, "cost_limit": cost_limit}},
        },
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "Fix add"},
            {
                "role": "assistant",
                "content": "THOUGHT: look\n```bash\nls\n```\n```bash\ncat calc.py\n```",
                "extra": {
                    "actions": [{"command": "ls"}, {"command": "cat calc.py"}],
                    "response": {"usage": {"prompt_tokens": 100, "completion_tokens": 10}},
                    "cost": 0.25,
                },
            },
            {"role": "user", "content": "<output>calc.py</output>", "extra": {"returncode": 0}},
            {"role": "user", "content": "<output>def add</output>", "extra": {"returncode": 0}},
            {"role": "exit", "content": exit_status, "extra": {"exit_status": exit_status}},
        ],
    }


def test_mini_swe_agents_trajectory_reads_the_same_in_a_run_and_an_import():
    from runs.agents import base, mini_swe_agent
    from runs.transcript import TranscriptWriter

    trajectory = mini_trajectory("Submitted")
    imported = imports.parse_transcript(json.dumps(trajectory), "traj.json").document["steps"]
    ran = TranscriptWriter(agent_name="mini-swe-agent", agent_version="2", model_name="m")
    context = base.AgentContext(
        workspace=Path("."),
        instructions="",
        title="",
        limits=base.Limits(max_steps=2),
        transcript=ran,
        run_command=lambda *a: (0, ""),
        ask_user=lambda q: "",
        cancel=None,
        model=type("Model", (), {"cost": staticmethod(lambda p, c: (p + c) / 1000)})(),
    )
    outcome = mini_swe_agent.convert(trajectory, context)

    def shape(steps):
        return [
            (s["source"], s["message"], s.get("tool_calls"), s.get("observation")) for s in steps
        ]

    assert shape(ran.steps) == shape(imported)
    [agent] = [s for s in imported if s["source"] == "agent"]
    assert [c["tool_call_id"] for c in agent["tool_calls"]] == ["action-1", "action-2"]
    assert [r["content"] for r in agent["observation"]["results"]] == [
        "<output>calc.py</output>",
        "<output>def add</output>",
    ]
    assert outcome.end_status == base.FINISHED and outcome.steps == 2


@pytest.mark.parametrize(
    ("cost_limit", "expected"), [(0.0, "max_steps"), (0.4, "max_cost"), (2.0, "max_steps")]
)
def test_it_maps_mini_swe_agents_limit_to_the_limit_it_hit(cost_limit, expected):
    trajectory = mini_trajectory("LimitsExceeded", cost_limit=cost_limit)
    read = imports.parse_transcript(json.dumps(trajectory), "traj.json")
    assert read.end_status == expected


def test_aiders_edits_are_numbered_the_same_in_a_run_and_an_import():
    from runs.agents import aider

    reply = AIDER_SAMPLE.split("#### add() subtracts. Make it add.\n\n", 1)[1].split("\n> ", 1)[0]
    assert [c["id"] for c in aider.edit_calls(reply)] == ["edit-1"]
    imported = imports.parse_transcript(AIDER_SAMPLE, ".aider.chat.history.md").document
    [edit] = imported["steps"][2]["tool_calls"]
    assert edit["tool_call_id"] == "edit-1" and edit["arguments"]["path"] == "calc.py"


def test_it_reads_roo_codes_questions_answers_and_errors_from_the_panel():
    ui = [
        {"ts": 1767607200000, "type": "say", "say": "text", "text": "Fix add"},
        {"ts": 1767607201000, "type": "say", "say": "api_req_started", "text": '{"tokensIn": 9}'},
        {
            "ts": 1767607202000,
            "type": "ask",
            "ask": "followup",
            "text": json.dumps(
                {"question": "Should add() add?", "suggest": [{"answer": "Yes"}, {"answer": "No"}]}
            ),
        },
        {"ts": 1767607203000, "type": "say", "say": "user_feedback", "text": "Yes."},
        {"ts": 1767607204000, "type": "say", "say": "error", "text": "Roo tried to use apply_diff"},
        {"ts": 1767607205000, "type": "ask", "ask": "command", "text": "pytest -q"},
        {"ts": 1767607206000, "type": "ask", "ask": "command_output", "text": "1 passed"},
    ]
    read = imports.parse_transcript(json.dumps(ui), "ui_messages.json")
    steps = read.document["steps"]
    question = steps[1]["tool_calls"][0]
    assert question["function_name"] == "ask_followup_question"
    assert question["arguments"]["question"] == "Should add() add?"
    assert steps[1]["observation"]["results"][0]["content"] == "Yes."
    assert steps[2] == {
        **steps[2],
        "source": "system",
        "message": "Error: Roo tried to use apply_diff",
    }
    assert steps[3]["tool_calls"][0]["arguments"] == {"command": "pytest -q"}
    assert steps[3]["observation"]["results"][0]["content"] == "1 passed"
    assert read.end_status == ""  # it never completed


def test_a_format_whose_module_is_missing_does_not_stop_the_others(monkeypatch):
    monkeypatch.setattr(
        imports, "FORMATS", {"ghost": "runs.agents.no_such_agent", **imports.FORMATS}
    )
    read = imports.parse_transcript(json.dumps(MSWEA_SAMPLE), "traj.json")
    assert read.format == "mini-swe-agent"
    with pytest.raises(ImportProblem, match="cannot be read here"):
        imports.format_module("ghost")

"""Drafting prompts from history: candidates, drafts, the sandbox proof, the forge, the pages.

The repository is real: a history with a fix and its test, a merged branch, a change whose
tests already passed, a flaky test, a test the change does not fix, and changes that touch only
code or only tests.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from runs import checks, drafts
from runs.files.prompt_sets import export_prompt_set
from runs.models import Prompt, PromptDraft, PromptSet, Repository
from tests.conftest import git

TEMPLATE = "python -m pytest -q -p no:cacheprovider {tests}"

FLAKY_TEST = """\
from pathlib import Path


def test_sometimes():
    counter = Path(__file__).parent / ".runs"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    assert n % 2 == 1
"""


def commit(path: Path, files: dict[str, str], message: str, date: str) -> str:
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    env_date = f"{date}T12:00:00+00:00"
    git(path, "-c", "user.name=Test", "commit", "-q", "-m", message, f"--date={env_date}")
    return git(path, "rev-parse", "HEAD")


def build_history(root: Path) -> dict[str, str]:
    """The repository's history; returns the sha of each named change."""
    path = root / "repos" / "calc"
    path.mkdir(parents=True)
    git(path, "init", "-q")
    shas = {}
    shas["initial"] = commit(
        path,
        {
            "calc/__init__.py": "",
            "calc/ops.py": "def add(x, y):\n    return x - y\n\n\ndef sub(x, y):\n    return x - y\n",
            "README.md": "calc\n",
        },
        "initial",
        "2024-01-01",
    )
    shas["fix"] = commit(
        path,
        {
            "calc/ops.py": "def add(x, y):\n    return x + y\n\n\ndef sub(x, y):\n    return x - y\n",
            "tests/test_add.py": "from calc.ops import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        },
        "Fix add\n\nadd() subtracted its arguments instead of adding them.\n\nFixes #12",
        "2024-02-01",
    )
    shas["code_only"] = commit(path, {"calc/extra.py": "X = 1\n"}, "Add a constant", "2024-02-02")
    shas["tests_only"] = commit(
        path,
        {
            "tests/test_more.py": "from calc.ops import add\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
        },
        "More tests",
        "2024-02-03",
    )
    git(path, "checkout", "-q", "-b", "feature-mul")
    commit(
        path,
        {"calc/mul.py": "def multiply_numbers(x, y):\n    return x * y\n"},
        "Add mul",
        "2024-03-01",
    )
    commit(
        path,
        {
            "tests/test_mul.py": "from calc.mul import multiply_numbers\n\n\n"
            "def test_mul():\n    assert multiply_numbers(2, 3) == 6\n"
        },
        "Test mul",
        "2024-03-02",
    )
    git(path, "checkout", "-q", "main")
    git(
        path,
        "-c",
        "user.name=Test",
        "merge",
        "-q",
        "--no-ff",
        "feature-mul",
        "-m",
        "Merge pull request #7 from acme/feature-mul\n\nMultiply two numbers",
    )
    git(path, "commit", "-q", "--amend", "--no-edit", "--date=2024-03-03T12:00:00+00:00")
    shas["merge"] = git(path, "rev-parse", "HEAD")
    shas["passes_already"] = commit(
        path,
        {
            "calc/ops.py": "def add(x, y):\n    return x + y\n\n\ndef sub(x, y):\n"
            "    # the difference\n    return x - y\n",
            "tests/test_sub.py": "from calc.ops import sub\n\n\ndef test_sub():\n    assert sub(5, 3) == 2\n",
        },
        "Document sub",
        "2024-04-01",
    )
    shas["flaky"] = commit(
        path,
        {"calc/div.py": "def div(x, y):\n    return x / y\n", "tests/test_flaky.py": FLAKY_TEST},
        "Add div",
        "2024-05-01",
    )
    shas["not_fixed"] = commit(
        path,
        {
            "calc/neg.py": "def neg(x):\n    return x\n",
            "tests/test_neg.py": "from calc.neg import neg\n\n\ndef test_neg():\n    assert neg(1) == -1\n",
        },
        "Add neg",
        "2024-06-01",
    )
    return shas


@pytest.fixture
def history(tmp_path) -> dict[str, str]:
    return build_history(tmp_path)


@pytest.fixture
def repository(db, tmp_path, history) -> Repository:
    return Repository.objects.create(
        name="calc", url=str(tmp_path / "repos" / "calc"), test_command_template=TEMPLATE
    )


@pytest.fixture
def admin(client_for, admin_user):
    return client_for(admin_user)


@pytest.fixture
def no_queue(monkeypatch):
    """The proof tasks that would be sent to the broker, by draft id."""
    from runs import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.prove_draft, "apply_async", lambda args, **_: queued.extend(args))
    return queued


# -- Candidates ----------------------------------------------------------------------------------


def test_it_lists_the_changes_of_code_and_tests_newest_first(repository, history):
    found = drafts.candidates(repository)

    assert [c.sha for c in found] == [
        history[name] for name in ("not_fixed", "flaky", "passes_already", "merge", "fix")
    ]
    merge = found[3]
    assert merge.is_merge and merge.subject.startswith("Merge pull request #7")
    assert merge.tests == ["tests/test_mul.py"] and merge.code_files == ["calc/mul.py"]
    fix = found[4]
    assert (len(fix.files), fix.additions, fix.deletions) == (2, 6, 1)
    assert fix.tests == ["tests/test_add.py"]
    assert fix.author_date.date().isoformat() == "2024-02-01"


def test_it_filters_candidates_by_date_paths_and_count(repository, history):
    assert [c.sha for c in drafts.candidates(repository, since="2024-04-15")] == [
        history["not_fixed"],
        history["flaky"],
    ]
    assert [c.sha for c in drafts.candidates(repository, paths="calc/mul.py")] == [history["merge"]]
    assert len(drafts.candidates(repository, limit=2)) == 2
    with pytest.raises(drafts.DraftingError, match="not in the repository"):
        drafts.candidates(repository, branch="no-such-branch")


def test_the_command_lists_candidates_and_says_what_is_wrong(repository, history, capsys):
    call_command("draft_prompts", "--repository", "calc", "--since", "2024-03-15", "--limit", "3")
    out = capsys.readouterr().out
    assert "Add neg" in out and "Add div" in out and "Document sub" in out
    assert "Fix add" not in out
    assert "3 candidate(s) in calc." in out
    assert "tests: tests/test_neg.py" in out

    call_command("draft_prompts", "--repository", "calc", "--json", "--paths", "tests/test_add.py")
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["sha"], r["files"], r["tests"]) for r in rows] == [
        (history["fix"], 2, ["tests/test_add.py"])
    ]

    with pytest.raises(CommandError, match="No repository 'nope'"):
        call_command("draft_prompts", "--repository", "nope")
    with pytest.raises(CommandError, match="not in the repository"):
        call_command("draft_prompts", "--repository", "calc", "--branch", "gone")


# -- Drafts --------------------------------------------------------------------------------------


def test_a_draft_starts_at_the_parent_with_the_change_split_into_code_and_tests(
    repository, history, no_queue, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        draft = drafts.draft_from_candidate(repository, history["fix"][:10])

    assert draft.commit == history["fix"] and draft.parent == history["initial"]
    assert draft.title == "Fix add"
    assert draft.instructions.startswith("add() subtracted its arguments")
    assert draft.instructions_source == "commit message"
    assert draft.expected_files == ["calc/ops.py"]
    assert draft.hidden_tests_paths == ["tests/test_add.py"]
    assert "calc/ops.py" in draft.reference_patch and "test_add" not in draft.reference_patch
    assert "+    return x + y" in draft.reference_patch
    assert draft.test_command == "python -m pytest -q -p no:cacheprovider tests/test_add.py"
    assert draft.tags == ["small", "calc"]
    assert draft.proof_status == PromptDraft.PENDING
    assert no_queue == [draft.pk]


def test_a_merge_is_drafted_as_the_whole_merged_branch(repository, history, no_queue):
    draft = drafts.draft_from_candidate(repository, history["merge"])
    assert draft.parent == history["tests_only"]
    assert draft.title == "Multiply two numbers"
    assert "Add mul" in draft.instructions and "Test mul" in draft.instructions
    assert draft.expected_files == ["calc/mul.py"]
    assert draft.hidden_tests_paths == ["tests/test_mul.py"]


def test_a_change_without_tests_is_refused_with_a_reason(repository, history, no_queue):
    with pytest.raises(drafts.DraftingError, match="does not change both code and tests"):
        drafts.draft_from_candidate(repository, history["code_only"])
    with pytest.raises(drafts.DraftingError, match="not in the repository"):
        drafts.draft_from_candidate(repository, "f" * 40)
    assert not PromptDraft.objects.exists()


# -- Proof ---------------------------------------------------------------------------------------


def test_proof_in_the_sandbox_says_which_drafts_hold_and_why_the_others_do_not(
    repository, history, no_queue
):
    made = {
        name: drafts.draft_from_candidate(repository, history[name])
        for name in ("fix", "merge", "passes_already", "flaky", "not_fixed")
    }
    results = {name: drafts.prove_draft(draft.pk) for name, draft in made.items()}

    assert results == {
        "fix": PromptDraft.PROVEN,
        "merge": PromptDraft.PROVEN,
        "passes_already": PromptDraft.PASSES_ALREADY,
        "flaky": PromptDraft.FLAKY,
        "not_fixed": PromptDraft.NOT_FIXED,
    }
    fix = PromptDraft.objects.get(pk=made["fix"].pk)
    assert [check["exit_code"] != 0 for check in fix.proof["checks"]] == [True, True, False, False]
    assert "1 failed" in fix.proof["checks"][0]["output_tail"]
    assert fix.proof["step"] == fix.proof["steps"]
    flaky = PromptDraft.objects.get(pk=made["flaky"].pk)
    assert "changed their mind" in flaky.proof["reason"]
    assert "already pass" in PromptDraft.objects.get(pk=made["passes_already"].pk).proof["reason"]
    # Never dropped: every draft is still there, with its reason.
    assert PromptDraft.objects.count() == 5


def test_a_draft_without_a_test_command_is_marked_not_dropped(repository, history, no_queue):
    repository.test_command_template = ""
    repository.save()
    draft = drafts.draft_from_candidate(repository, history["fix"])
    assert drafts.prove_draft(draft.pk) == PromptDraft.UNPROVABLE
    draft.refresh_from_db()
    assert "test command template" in draft.proof["reason"]


def test_a_reference_patch_that_does_not_apply_is_the_reason(repository, history, no_queue):
    draft = drafts.draft_from_candidate(repository, history["fix"])
    PromptDraft.objects.filter(pk=draft.pk).update(reference_patch="--- a/nope\n+++ b/nope\n@@ x\n")
    assert drafts.prove_draft(draft.pk) == PromptDraft.UNPROVABLE
    draft.refresh_from_db()
    assert "does not apply" in draft.proof["reason"]


@pytest.mark.parametrize(
    ("before", "after", "status"),
    [
        ([1, 1], [0, 0], PromptDraft.PROVEN),
        ([0, 0], [0, 0], PromptDraft.PASSES_ALREADY),
        ([1, 1], [1, 1], PromptDraft.NOT_FIXED),
        ([1, 0], [0, 0], PromptDraft.FLAKY),
        ([1, 1], [0, 1], PromptDraft.FLAKY),
    ],
)
def test_judging_exit_codes(before, after, status):
    assert drafts.judge(before, after)[0] == status


def test_the_command_drafts_and_proves(repository, history, capsys):
    call_command(
        "draft_prompts",
        "--repository",
        "calc",
        "--paths",
        "tests/test_add.py",
        "--draft",
        "--prove-now",
    )
    out = capsys.readouterr().out
    assert "Drafted" in out and "proven: The tests fail at the parent" in out
    assert PromptDraft.objects.get().proof_status == PromptDraft.PROVEN


# -- The forge -----------------------------------------------------------------------------------


class FakeForge(ThreadingHTTPServer):
    def __init__(self, issues: dict[str, dict]):
        self.issues = issues
        self.seen: list[tuple[str, dict]] = []
        super().__init__(("127.0.0.1", 0), _ForgeHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ForgeHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        issue = self.server.issues.get(self.path)
        body = json.dumps(issue or {"message": "Not Found"}).encode()
        self.send_response(200 if issue else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def forge():
    server = FakeForge(
        {
            "/api/v3/repos/acme/calc/issues/12": {
                "title": "add() is broken",
                "body": "Adding 2 and 3 gives -1. <script>alert(1)</script>",
            },
            "/api/v4/projects/acme%2Fcalc/merge_requests/7": {
                "title": "Multiplication",
                "description": "We need to multiply.",
            },
        }
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_instructions_come_from_the_github_issue_the_commit_fixes(
    repository, history, forge, no_queue
):
    repository.forge, repository.forge_url = "github", f"{forge.url}/acme/calc"
    repository.forge_token = "ghp-secret-token"
    repository.save()
    draft = drafts.draft_from_candidate(repository, history["fix"])
    assert draft.instructions.startswith("add() is broken\n\nAdding 2 and 3 gives -1.")
    assert draft.instructions_source == "GitHub #12"
    path, headers = forge.seen[0]
    assert path == "/api/v3/repos/acme/calc/issues/12"
    assert headers["authorization"] == "Bearer ghp-secret-token"
    # Stored encrypted, like model keys.
    with connection.cursor() as cursor:
        cursor.execute("SELECT forge_token FROM runs_repository WHERE id = %s", [repository.pk])
        assert "ghp-secret-token" not in cursor.fetchone()[0]


def test_gitlab_merge_requests_are_read_with_the_private_token_header(forge):
    from runs import forges

    found, problems = forges.first_text(
        "gitlab", f"{forge.url}/acme/calc", "glpat-x", "Merge branch 'mul' into 'main'\n\nSee !7"
    )
    assert (found.title, found.body, problems) == ("Multiplication", "We need to multiply.", [])
    assert forge.seen[0][1]["private-token"] == "glpat-x"


def test_a_forge_that_fails_leaves_the_commit_message(repository, history, forge, no_queue):
    repository.forge, repository.forge_url = "github", f"{forge.url}/acme/other"
    repository.save()
    draft = drafts.draft_from_candidate(repository, history["fix"])
    assert draft.instructions.startswith("add() subtracted")
    assert draft.proof["notes"] == ["the forge answered 404 for #12"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://forge.example.com/acme/calc", "plain http is allowed only to this machine"),
        ("https://user:pw@github.com/acme/calc", "holds credentials"),
        ("ftp://github.com/acme/calc", "https://"),
        ("https://github.com/acme", "must name the project"),
    ],
)
def test_a_bad_forge_url_is_refused_with_a_reason(admin, repository, url, message):
    response = admin.post(
        reverse("runs:drafting_settings", args=[repository.pk]),
        {"test_command_template": TEMPLATE, "forge": "github", "forge_url": url},
    )
    assert response.status_code == 400
    assert message in response.content.decode()


# -- Pages ---------------------------------------------------------------------------------------


def test_drafting_pages_are_for_admins_only(client_for, lead, repository, history, no_queue):
    draft = drafts.draft_from_candidate(repository, history["fix"])
    client = client_for(lead)
    for url in (
        reverse("runs:drafts", args=[repository.pk]),
        reverse("runs:draft", args=[draft.pk]),
        reverse("runs:draft_status", args=[draft.pk]),
    ):
        assert client.get(url).status_code == 403
    response = client.post(
        reverse("runs:draft_create", args=[repository.pk]), {"commit": history["fix"]}
    )
    assert response.status_code == 403


def test_the_page_asks_to_fetch_a_repository_it_has_no_copy_of(
    admin, repository, monkeypatch, django_capture_on_commit_callbacks
):
    from runs import tasks

    queued = []
    monkeypatch.setattr(
        tasks.check_repository, "apply_async", lambda args, **_: queued.extend(args)
    )
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "There is no copy of this repository here yet" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(reverse("runs:drafts_fetch", args=[repository.pk]))
    assert response.status_code == 302 and queued == [repository.pk]
    checks.check_repository(repository.pk)  # what the worker does
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "Add neg" in page


def test_the_page_lists_candidates_and_drafts_the_picked_ones(
    admin, repository, history, no_queue, django_capture_on_commit_callbacks
):
    checks.check_repository(repository.pk)
    response = admin.get(reverse("runs:drafts", args=[repository.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Add neg" in page and "Multiply" not in page  # the merge's subject is shown as is
    assert "Merge pull request #7 from acme/feature-mul" in page
    assert "tests/test_mul.py" in page and "Add a constant" not in page

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(
            reverse("runs:draft_create", args=[repository.pk]),
            {"commit": [history["fix"], history["merge"]]},
        )
    assert response.status_code == 302
    assert PromptDraft.objects.count() == 2
    assert sorted(no_queue) == sorted(PromptDraft.objects.values_list("pk", flat=True))
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "waiting to be proven" in page


def test_the_settings_keep_the_token_write_only(admin, repository):
    url = reverse("runs:drafting_settings", args=[repository.pk])
    response = admin.post(
        url,
        {
            "test_command_template": TEMPLATE,
            "forge": "github",
            "forge_url": "https://github.com/acme/calc",
            "forge_token": "ghp-never-shown",
        },
    )
    assert response.status_code == 302
    repository.refresh_from_db()
    assert repository.forge_token == "ghp-never-shown"
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "ghp-never-shown" not in page and "A token is stored" in page
    # Saving again without a token keeps it.
    admin.post(
        url,
        {
            "test_command_template": TEMPLATE,
            "forge": "github",
            "forge_url": "https://github.com/acme/calc",
        },
    )
    repository.refresh_from_db()
    assert repository.forge_token == "ghp-never-shown"


def test_the_editor_flags_answers_given_away_and_names_never_mentioned(
    admin, repository, history, no_queue
):
    draft = drafts.draft_from_candidate(repository, history["merge"])
    PromptDraft.objects.filter(pk=draft.pk).update(
        instructions="Multiply two numbers.\nWrite def multiply_numbers(x, y):\n<b>bold</b>"
    )
    page = admin.get(reverse("runs:draft", args=[draft.pk])).content.decode()
    assert (
        '<mark title="quotes the reference patch">Write def multiply_numbers(x, y):</mark>' in page
    )
    assert "1 instruction line quotes code from the reference patch" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page

    PromptDraft.objects.filter(pk=draft.pk).update(instructions="Multiply two numbers.")
    page = admin.get(reverse("runs:draft", args=[draft.pk])).content.decode()
    assert "use names the instructions never mention: <code>multiply_numbers</code>" in page
    assert "No instruction line quotes the reference patch" in page


def test_only_a_proven_edited_draft_is_accepted_and_it_exports_like_any_prompt(
    admin, repository, history, no_queue
):
    prompt_set = PromptSet.objects.create(name="calc-tasks")
    draft = drafts.draft_from_candidate(repository, history["fix"])
    form = {
        "title": "Make add add",
        "instructions": "add(2, 3) should be 5.",
        "tags": "small, calc",
        "expected_files": "calc/ops.py",
        "test_command": draft.test_command,
        "hidden_tests_paths": "tests/test_add.py",
        "prompt_set": prompt_set.pk,
        "key": "fix-add",
        "action": "accept",
    }
    url = reverse("runs:draft", args=[draft.pk])
    response = admin.post(url, form)
    assert response.status_code == 400
    assert "Only a proven draft can be accepted" in response.content.decode()
    assert not Prompt.objects.exists()

    assert drafts.prove_draft(draft.pk) == PromptDraft.PROVEN
    response = admin.post(url, form)
    assert response.status_code == 302
    prompt = Prompt.objects.get()
    assert (prompt.key, prompt.title, prompt.commit) == (
        "fix-add",
        "Make add add",
        history["initial"],
    )
    assert prompt.hidden_tests == {"commit": history["fix"], "paths": ["tests/test_add.py"]}
    exported = yaml.safe_load(export_prompt_set(prompt_set))["prompts"][0]
    assert exported["hidden_tests"] == {"commit": history["fix"], "paths": ["tests/test_add.py"]}
    assert exported["commit"] == history["initial"]
    assert "+    return x + y" in exported["reference_patch"]
    assert exported["test"] == draft.test_command
    draft.refresh_from_db()
    assert draft.prompt == prompt


def test_changing_the_tests_of_a_proven_draft_proves_it_again(admin, repository, history, no_queue):
    draft = drafts.draft_from_candidate(repository, history["fix"])
    PromptDraft.objects.filter(pk=draft.pk).update(proof_status=PromptDraft.PROVEN)
    no_queue.clear()
    response = admin.post(
        reverse("runs:draft", args=[draft.pk]),
        {
            "title": draft.title,
            "instructions": draft.instructions,
            "test_command": "python -m pytest -q tests/test_add.py tests/test_more.py",
            "hidden_tests_paths": "tests/test_add.py",
            "action": "save",
        },
    )
    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.proof_status == PromptDraft.PENDING


def test_the_status_fragment_polls_while_proving_and_escapes_the_reason(
    admin, repository, history, no_queue
):
    draft = drafts.draft_from_candidate(repository, history["fix"])
    PromptDraft.objects.filter(pk=draft.pk).update(
        proof_status=PromptDraft.PROVING,
        proof={"step": 2, "steps": 6, "message": "Running the tests"},
    )
    fragment = admin.get(reverse("runs:draft_status", args=[draft.pk])).content.decode()
    assert 'hx-trigger="every 2s"' in fragment and "step 2 of 6" in fragment
    PromptDraft.objects.filter(pk=draft.pk).update(
        proof_status=PromptDraft.NOT_FIXED, proof={"reason": "<img src=x>"}
    )
    fragment = admin.get(reverse("runs:draft_status", args=[draft.pk])).content.decode()
    assert "hx-trigger" not in fragment and "&lt;img src=x&gt;" in fragment


def test_the_subject_of_a_commit_is_escaped(admin, repository, history, tmp_path):
    path = tmp_path / "repos" / "calc"
    commit(
        path,
        {"calc/x.py": "Y = 2\n", "tests/test_x.py": "def test_x():\n    pass\n"},
        "<script>alert('x')</script>",
        "2024-07-01",
    )
    checks.check_repository(repository.pk)
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "Add a constant" not in page and "&lt;script&gt;alert" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


def test_the_pages_never_reach_for_a_remote_the_machine_has_no_copy_of(admin, db):
    repository = Repository.objects.create(name="shop", url="https://git.example.com/shop.git")
    draft = PromptDraft.objects.create(
        repository=repository, commit="b" * 40, parent="a" * 40, subject="Fix", title="Fix"
    )
    page = admin.get(reverse("runs:drafts", args=[repository.pk])).content.decode()
    assert "There is no copy of this repository here yet" in page
    response = admin.get(reverse("runs:draft", args=[draft.pk]))
    assert response.status_code == 200 and "waiting to be proven" in response.content.decode()

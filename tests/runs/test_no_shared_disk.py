"""The drill: workers on other machines share no disk with the web or with each other.

Two real Celery workers, each with its own var directory, workspace (git mirrors, checkouts) and
a MEDIA_ROOT that must never be made, reach the web only through PostgreSQL, Redis and a bucket
on a real S3 server. A lead launches a campaign and imports a run through the web; one worker is
killed mid-run and the run finishes on the other; a scorer reviews; the leaderboard and its
exports work. Afterwards no process has written an artifact to its own disk.

The repository the prompts point at is a local path standing in for a git server: each worker
clones its own mirror of it, as it would of a remote.

Runs in bin/test's PostgreSQL + Redis pass: on SQLite and the embedded queue the database and
the queue are themselves shared files.
"""

from __future__ import annotations

import json
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from runs import execution
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run, RunImport
from scoring.models import Review
from tests.conftest import git
from tests.runs.test_distributed import Worker, _purge_broker, _wait_until
from tests.s3_server import object_names, object_storage_fixture, s3_server_fixture  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    pytest.mark.services_only,
    pytest.mark.django_db(transaction=True),
]

FILES = {"calc.py": "def add(a, b):\n    return a - b\n", "slow": "this commit's run takes long\n"}
# The agent sleeps only at the commit that has the file `slow`: that run is the one to kill.
SCRIPT = """\
- tool_calls: [{name: run_command, arguments: {command: "if [ -f slow ]; then sleep %(sleep)s; fi"}}]
- tool_calls: [{name: edit_file, arguments: {path: calc.py, old: "a - b", new: "a + b"}}]
- tool_calls: [{name: finish, arguments: {summary: fixed}}]
"""
FIX = """\
diff --git a/calc.py b/calc.py
--- a/calc.py
+++ b/calc.py
@@ -1,2 +1,2 @@
 def add(a, b):
-    return a - b
+    return a + b
"""
ANSWERS = {"right_files": "yes", "conventions": "4", "recovered": "yes", "merge": "yes"}


@pytest.fixture
def machines(tmp_path, settings, object_storage):
    """Start a worker "machine" by name: its own directories, nothing shared with the web."""
    _purge_broker()
    started: list[Worker] = []

    def start(name: str) -> Worker:
        home = tmp_path / f"machine-{name}"
        home.mkdir()
        worker = Worker(
            name,
            home / "workspaces",
            home / "media",
            env={
                "MERGEABLE_VAR_DIR": str(home / "var"),
                "MERGEABLE_CHECKOUT_ROOT": str(home / "checkouts"),
            },
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def _world(make_repo) -> tuple[PromptSet, Prompt, Prompt]:
    path, slow_commit = make_repo(FILES)
    git(path, "rm", "-q", "slow")
    git(path, "commit", "-q", "-m", "quick")
    quick_commit = git(path, "rev-parse", "HEAD")
    repo = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="drill")
    prompts = [
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=key,
            title=key,
            instructions="add() is wrong",
            repository=repo,
            commit=commit,
            test_command="grep -q 'a + b' calc.py",
            position=position,
        )
        for position, (key, commit) in enumerate([("slow", slow_commit), ("quick", quick_commit)])
    ]
    model = LanguageModel.objects.create(
        name="scripted", provider="scripted", script=SCRIPT % {"sleep": 60}
    )
    Contestant.objects.create(name="fixer", model=model)
    return prompt_set, *prompts


def test_two_workers_on_separate_machines_need_only_database_broker_and_bucket(
    machines, make_repo, tmp_path, settings, object_storage, client_for, lead, scorer
):
    settings.MERGEABLE_STALE_AFTER_SECONDS = 3
    prompt_set, slow_prompt, quick_prompt = _world(make_repo)
    workers = {name: machines(name) for name in ("east", "west")}

    # A lead launches a campaign through the web.
    web = client_for(lead)
    launched = web.post(
        reverse("runs:campaign_create"),
        {
            "name": "drill",
            "prompt_set": prompt_set.pk,
            "contestants": [Contestant.objects.get().pk],
            "repeats": 1,
            "reviews_wanted": 1,
        },
    )
    assert launched.status_code == 302
    slow = Run.objects.get(prompt=slow_prompt)
    quick = Run.objects.get(prompt=quick_prompt)
    logs = list(workers.values())
    _wait_until(
        lambda: (
            Run.objects.filter(pk=slow.pk, process_group__isnull=False).exists()
            and Run.objects.filter(pk=quick.pk, status=Run.FINISHED).exists()
        ),
        180,
        "one worker to be mid-run and the other to finish its run",
        logs,
    )
    slow.refresh_from_db()
    quick.refresh_from_db()
    doomed = slow.worker.split("@")[0]
    survivor = "west" if doomed == "east" else "east"
    assert quick.worker.startswith(f"{survivor}@")  # both machines took work

    # The machine running the slow run dies; the run finishes on the other one.
    workers[doomed].kill()
    time.sleep(settings.MERGEABLE_STALE_AFTER_SECONDS + 1)
    assert execution.reap_stale_runs() == [slow.pk]
    LanguageModel.objects.update(script=SCRIPT % {"sleep": 0})
    _wait_until(
        lambda: Run.objects.get(pk=slow.pk).status in Run.ENDED_STATUSES,
        120,
        "the requeued run to finish on the surviving worker",
        logs,
    )
    slow.refresh_from_db()
    assert slow.status == Run.FINISHED, slow.status_reason
    assert slow.attempts == 2 and slow.worker.startswith(f"{survivor}@")

    # An import uploaded to the web reaches the surviving worker through the bucket.
    web.post(
        reverse("runs:run_import"),
        {
            "prompt": quick_prompt.pk,
            "contestant": "laptop-agent",
            "campaign": "",
            "patch": SimpleUploadedFile("fix.patch", FIX.encode()),
        },
    )
    job = RunImport.objects.get()
    _wait_until(
        lambda: RunImport.objects.get(pk=job.pk).status in (RunImport.DONE, RunImport.FAILED),
        120,
        "the import to be applied and tested",
        logs,
    )
    job.refresh_from_db()
    assert job.status == RunImport.DONE, job.error
    imported = job.run
    assert imported.tests_ok and imported.files_changed == ["calc.py"]

    # Every artifact is in the bucket, the rendered diffs already made by the workers.
    for run in (slow, quick, imported):
        stored = object_names(object_storage, f"runs/{run.pk}/")
        for name in ("diff.patch", "before.json", "after.json", "rendered_diff.json"):
            assert f"runs/{run.pk}/{name}" in stored, stored
    assert object_names(object_storage, "imports/") == []

    # A scorer reviews all three through the web and downloads a raw diff.
    reviewer = client_for(scorer)
    for run in (slow, quick, imported):
        page = reviewer.get(reverse("scoring:review", args=[run.review_key]))
        assert page.status_code == 200 and "calc.py" in page.content.decode()
        answers = {f"answer-{key}": value for key, value in ANSWERS.items()}
        submitted = reviewer.post(
            reverse("scoring:review_submit", args=[run.review_key]),
            {**answers, "notes": "", "line_comments": "[]", "time_spent_s": "30"},
        )
        assert submitted.status_code == 302
    assert Review.objects.submitted().count() == 3
    raw = reviewer.get(reverse("runs:run_artifact", args=[slow.pk]) + "?name=diff")
    assert b"+    return a + b" in b"".join(raw.streaming_content)

    # The lead's leaderboard and its exports, for the campaign and for the imported run (one
    # test client: log the lead back in).
    web = client_for(lead)
    for campaign, contestant in ((slow.campaign, "fixer"), (imported.campaign, "laptop-agent")):
        query = f"?campaign={campaign.pk}"
        board = web.get(reverse("scoring:leaderboard") + query)
        assert board.status_code == 200 and contestant in board.content.decode()
        export = reverse("scoring:leaderboard_export") + query
        [row] = json.loads(web.get(export + "&format=json").content)["leaderboard"]
        assert row["contestant"] == contestant and row["merge_rate"] == 1.0
        assert row["reviewed_runs"] == row["runs"] == (2 if contestant == "fixer" else 1)
        csv = web.get(export + "&format=csv")
        assert csv.status_code == 200 and contestant in csv.content.decode()

    # No machine kept an artifact on its own disk; each has its own git mirror.
    assert not settings.MEDIA_ROOT.exists()
    for name in workers:
        home = tmp_path / f"machine-{name}"
        assert not (home / "media").exists()
        assert any((home / "workspaces").iterdir()), f"{name} made no mirror of its own"

"""The run engine end to end: a real git repository, a real HTTP model endpoint, the sandbox."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from django.utils import timezone

from runs import campaigns, execution, test_results
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from tests.fake_llm import FakeLLM

FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
TEST_COMMAND = "python -m pytest -q --junitxml=.mergeable-junit.xml"


def call(name, **arguments):
    return {"name": name, "arguments": arguments}


FIXING_REPLIES = [
    {
        "text": "Reading.",
        "tool_calls": [call("read_file", path="calc.py")],
        "usage": {"input_tokens": 100, "output_tokens": 10},
    },
    {
        "tool_calls": [call("edit_file", path="calc.py", old="a - b", new="a + b")],
        "usage": {"input_tokens": 200, "output_tokens": 20},
    },
    {
        "tool_calls": [call("run_command", command="python -m pytest -q")],
        "usage": {"input_tokens": 300, "output_tokens": 30},
    },
    {
        "tool_calls": [call("finish", summary="Fixed add.")],
        "usage": {"input_tokens": 400, "output_tokens": 40},
    },
]


@pytest.fixture
def world(db, make_repo):
    def build(base_url: str, provider: str = "openai", answer: str = "", **prompt_fields):
        path, sha = make_repo(FILES)
        repo = Repository.objects.create(name="calc", url=str(path))
        prompt_set = PromptSet.objects.create(name="calc-tasks")
        prompt = Prompt.objects.create(
            prompt_set=prompt_set,
            key="fix-add",
            title="Fix add",
            instructions="add() is wrong",
            repository=repo,
            commit=sha,
            test_command=TEST_COMMAND,
            expected_files=["calc.py"],
            clarification_answer=answer,
            **prompt_fields,
        )
        model = LanguageModel.objects.create(
            name="local",
            provider=provider,
            base_url=base_url,
            model_id="qwen",
            api_key="sk-test-key-do-not-leak-1234",
            input_per_mtok=1.0,
            output_per_mtok=2.0,
        )
        contestant = Contestant.objects.create(name="qwen-builtin", model=model, max_steps=10)
        return prompt_set, prompt, contestant

    return build


def launch_one(prompt_set, contestant, **kwargs) -> Run:
    campaign = campaigns.launch(prompt_set=prompt_set, contestants=[contestant], **kwargs)
    return campaign.runs.get()


def test_it_runs_an_agent_against_an_openai_endpoint_and_captures_everything(world):
    with FakeLLM(FIXING_REPLIES) as llm:
        prompt_set, prompt, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
        sent = llm.requests[0]
    run.refresh_from_db()
    assert run.agent_status == "finished"
    assert run.files_changed == ["calc.py"]
    assert "+    return a + b" in run.diff
    assert run.test_exit_code == 0
    assert (run.tests_passed, run.tests_failed) == (1, 0)
    assert (run.input_tokens, run.output_tokens, run.steps) == (1000, 100, 4)
    assert run.cost_usd == pytest.approx(1000 * 1.0 / 1e6 + 100 * 2.0 / 1e6)
    assert run.expected_files_recall == 1.0
    transcript = run.transcript
    assert transcript["schema_version"] == "ATIF-v1.6"
    agent_steps = [s for s in transcript["steps"] if s["source"] == "agent"]
    assert [s["tool_calls"][0]["function_name"] for s in agent_steps] == [
        "read_file",
        "edit_file",
        "run_command",
        "finish",
    ]
    assert "a - b" in agent_steps[0]["observation"]["results"][0]["content"]
    assert transcript["final_metrics"]["total_prompt_tokens"] == 1000
    # The key went only to the provider, never into the transcript.
    assert sent["headers"]["authorization"] == "Bearer sk-test-key-do-not-leak-1234"
    assert "do-not-leak" not in json.dumps(transcript)
    assert set(run.phase_timings) >= {"prepare", "agent", "capture", "test"}
    assert (
        run.campaign.state == Campaign.FINISHED
        or Campaign.objects.get(pk=run.campaign_id).state == Campaign.FINISHED
    )


def test_it_checks_out_under_the_checkout_root_and_keeps_only_the_mirror(world, settings):
    seen = []

    class Watching(FakeLLM):
        def _next(self):
            # While the agent works, its checkout exists under the checkout root.
            seen.extend(p.name for p in settings.MERGEABLE_CHECKOUT_ROOT.iterdir())
            return super()._next()

    with Watching(FIXING_REPLIES) as llm:
        prompt_set, _prompt, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
    assert f"{run.pk}-1" in seen
    assert not list(settings.MERGEABLE_CHECKOUT_ROOT.iterdir())  # removed after the run
    mirrors = list(settings.MERGEABLE_WORKSPACE_ROOT.rglob("HEAD"))
    assert mirrors, "the mirror stays under the workspace root for the next run"
    assert not any(settings.MERGEABLE_CHECKOUT_ROOT in p.parents for p in mirrors)


def test_it_removes_the_checkout_a_killed_worker_left_behind(world, settings):
    with FakeLLM(FIXING_REPLIES) as llm:
        prompt_set, _prompt, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        # Attempt 1 died with its worker (SIGKILL): its checkout is still there, read-only parts
        # and all, and the reaper has requeued the run.
        left = settings.MERGEABLE_CHECKOUT_ROOT / f"{run.pk}-1"
        (left / "work" / "locked").mkdir(parents=True)
        (left / "work" / "locked").chmod(0o500)
        Run.objects.filter(pk=run.pk).update(attempts=1)
        assert execution.execute(run.pk) == Run.FINISHED
    assert Run.objects.get(pk=run.pk).attempts == 2
    assert not left.exists()


def test_it_removes_only_checkouts_no_live_attempt_owns(world, settings):
    prompt_set, _prompt, contestant = world("http://127.0.0.1:9/v1")
    ended = launch_one(prompt_set, contestant)
    Run.objects.filter(pk=ended.pk).update(status=Run.FINISHED, attempts=1)
    live = launch_one(prompt_set, contestant)
    Run.objects.filter(pk=live.pk).update(status=Run.RUNNING, attempts=2)
    root = settings.MERGEABLE_CHECKOUT_ROOT
    names = [f"{ended.pk}-1", f"{live.pk}-1", f"{live.pk}-2", "999999-1", "imports", "notes-1"]
    for name in names:
        (root / name / "work").mkdir(parents=True)

    removed = execution.remove_abandoned_checkouts(root)

    assert sorted(removed) == sorted([f"{ended.pk}-1", f"{live.pk}-1", "999999-1"])
    assert sorted(p.name for p in root.iterdir()) == sorted([f"{live.pk}-2", "imports", "notes-1"])
    assert execution.remove_abandoned_checkouts(root / "missing") == []


def test_a_starting_worker_removes_what_killed_workers_left(world, settings):
    from celery.signals import worker_ready

    prompt_set, _prompt, contestant = world("http://127.0.0.1:9/v1")
    ended = launch_one(prompt_set, contestant)
    Run.objects.filter(pk=ended.pk).update(status=Run.ERRORED, attempts=3)
    left = settings.MERGEABLE_CHECKOUT_ROOT / f"{ended.pk}-3"
    (left / "work").mkdir(parents=True)
    worker_ready.send(sender=None)
    assert not left.exists()


def test_it_runs_against_an_anthropic_endpoint(world):
    with FakeLLM(FIXING_REPLIES) as llm:
        prompt_set, prompt, contestant = world(llm.base_url_anthropic, provider="anthropic")
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
        assert llm.requests[0]["path"] == "/v1/messages"
    run.refresh_from_db()
    assert run.test_exit_code == 0 and run.files_changed == ["calc.py"]


def test_it_marks_failing_tests_as_the_contestants_fault(world):
    replies = [
        {"tool_calls": [call("write_file", path="notes.txt", content="hi\n")]},
        {"tool_calls": [call("finish", summary="done")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FAILED
    run.refresh_from_db()
    assert "Tests failed" in run.status_reason
    assert run.tests_failed == 1
    assert run.files_changed == ["notes.txt"]


def test_it_errors_when_the_model_is_unreachable_and_can_be_retried(world, settings):
    prompt_set, _, contestant = world("http://127.0.0.1:9/v1")
    LanguageModel.objects.update(params={})
    run = launch_one(prompt_set, contestant)
    from runs import providers

    original = providers._sleep
    providers._sleep = lambda s: None
    try:
        assert execution.execute(run.pk) == Run.ERRORED
    finally:
        providers._sleep = original
    run.refresh_from_db()
    assert "Could not reach the model" in run.error
    assert campaigns.retry_run(run)
    run.refresh_from_db()
    assert run.status == Run.QUEUED and run.attempts == 0


def test_it_stops_at_the_step_limit(world):
    looping = [{"tool_calls": [call("list_files")]} for _ in range(20)]
    with FakeLLM(looping) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        Contestant.objects.filter(pk=contestant.pk).update(max_steps=3)
        contestant.refresh_from_db()
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FAILED
        assert len(llm.requests) == 3
    run.refresh_from_db()
    assert run.agent_status == "max_steps" and "steps limit" in run.status_reason


def test_it_answers_a_clarifying_question_from_the_prepared_answer(world):
    replies = [
        {"tool_calls": [call("ask_user", question="Which sign?")]},
        {"tool_calls": [call("finish", summary="ok")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai, answer="Use plus.")
        run = launch_one(prompt_set, contestant)
        execution.execute(run.pk)
        second_request = llm.requests[1]["body"]["messages"]
    run.refresh_from_db()
    assert run.questions[0]["question"] == "Which sign?"
    assert run.questions[0]["answer"] == "Use plus." and run.questions[0]["source"] == "prepared"
    assert (
        second_request[-1] == {"role": "tool", "tool_call_id": "call_0", "content": "Use plus."}
        or second_request[-1]["content"] == "Use plus."
    )


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_a_human_answer(world, scorer):
    replies = [
        {"tool_calls": [call("ask_user", question="Which sign?")]},
        {"tool_calls": [call("finish", summary="ok")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        thread = threading.Thread(target=execution.execute, args=(run.pk,))
        thread.start()
        deadline = time.monotonic() + 30
        while Run.objects.get(pk=run.pk).status != Run.AWAITING_ANSWER:
            assert time.monotonic() < deadline, "the run never asked"
            time.sleep(0.1)
        assert campaigns.answer_question(Run.objects.get(pk=run.pk), "Plus, please.", scorer)
        thread.join(30)
        assert llm.requests[1]["body"]["messages"][-1]["content"] == "Plus, please."
    run.refresh_from_db()
    assert run.questions[0]["source"] == "human" and run.questions[0]["answered_by"] == "sam"
    assert run.status in (Run.FINISHED, Run.FAILED)


def test_it_tells_the_agent_to_use_its_judgement_after_the_answer_timeout(world, settings):
    settings.MERGEABLE_ANSWER_TIMEOUT_SECONDS = 0
    replies = [
        {"tool_calls": [call("ask_user", question="Which sign?")]},
        {"tool_calls": [call("finish", summary="ok")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        execution.execute(run.pk)
        assert "best judgement" in llm.requests[1]["body"]["messages"][-1]["content"]
    run.refresh_from_db()
    assert run.questions[0]["source"] == "timeout"


def test_it_lets_only_one_worker_claim_a_run(world):
    prompt_set, _, contestant = world("http://127.0.0.1:9/v1")
    run = launch_one(prompt_set, contestant)
    assert execution.claim(run.pk, "w1")
    assert not execution.claim(run.pk, "w2")
    assert execution.execute(run.pk, worker="w3") is None
    run.refresh_from_db()
    assert run.worker == "w1" and run.attempts == 1


def test_it_requeues_stale_runs_and_gives_up_after_max_attempts(world, settings):
    prompt_set, _, contestant = world("http://127.0.0.1:9/v1")
    run = launch_one(prompt_set, contestant)
    settings.MERGEABLE_MAX_ATTEMPTS = 2
    stale = timezone.now() - timezone.timedelta(hours=1)
    assert execution.claim(run.pk, "dead-worker")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert execution.reap_stale_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.QUEUED and "stopped responding" in run.status_reason
    assert execution.claim(run.pk, "dead-again")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert execution.reap_stale_runs() == []
    run.refresh_from_db()
    assert run.status == Run.ERRORED and "gave up after 2 attempts" in run.status_reason


def test_it_cancels_queued_runs_when_the_budget_is_spent(world):
    with FakeLLM(FIXING_REPLIES * 2) as llm:
        prompt_set, prompt, contestant = world(llm.base_url_openai)
        campaign = campaigns.launch(
            prompt_set=prompt_set, contestants=[contestant], repeats=2, budget_usd=0.0005
        )
        first, second = campaign.runs.order_by("id")
        execution.execute(first.pk)
    second.refresh_from_db()
    assert second.status == Run.CANCELLED
    assert "budget" in second.status_reason


def test_it_grades_the_sources_the_agent_left_not_bytecode_compiled_before_its_edit(world):
    # The agent imports calc (Python caches its bytecode), fixes it with an edit of the same
    # length and sets the file's mtime back: the cache still looks fresh to Python.
    fix = (
        "python -c 'import calc' && cp -p calc.py .t && sed -i 's/a - b/a + b/' calc.py"
        " && touch -r .t calc.py && rm .t && ls __pycache__"
    )
    replies = [
        {"tool_calls": [call("run_command", command=fix)]},
        {"tool_calls": [call("finish", summary="Fixed add.")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
        assert "calc.cpython" in str(llm.requests[-1]["body"]["messages"][-1])
    run.refresh_from_db()
    assert run.test_exit_code == 0 and run.files_changed == ["calc.py"]


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_running_command_by_killing_its_process_group(world, settings):
    settings.MERGEABLE_HEARTBEAT_SECONDS = 1
    replies = [
        {"tool_calls": [call("run_command", command="sleep 600", timeout=600)]},
        {"tool_calls": [call("finish", summary="ok")]},
    ]
    with FakeLLM(replies) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = launch_one(prompt_set, contestant)
        result = {}
        thread = threading.Thread(target=lambda: result.update(s=execution.execute(run.pk)))
        started = time.monotonic()
        thread.start()
        deadline = time.monotonic() + 30
        while not Run.objects.get(pk=run.pk).process_group:
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.1)
        assert campaigns.cancel_run(Run.objects.get(pk=run.pk))
        thread.join(60)
    assert result["s"] == Run.CANCELLED
    assert time.monotonic() - started < 60


JUNIT = '<testsuite tests="{tests}" failures="1" errors="0" skipped="1"></testsuite>'


def test_it_reads_pass_and_fail_counts_from_junit_xml(tmp_path):
    (tmp_path / test_results.JUNIT_FILE).write_text(JUNIT.format(tests=12))
    assert test_results.parse_junit(tmp_path) == (10, 1)
    (tmp_path / test_results.JUNIT_FILE).unlink()
    (tmp_path / "report-junit.xml").write_text(f"<testsuites>{JUNIT.format(tests=5)}</testsuites>")
    assert test_results.parse_junit(tmp_path) == (3, 1)


@pytest.mark.parametrize(
    "planted",
    [
        "symlink",  # to a file of the host's: never read
        '<testsuite tests="many"/>',
        '<testsuite tests="1" failures="5"/>',
        "not xml at all",
        "fifo",  # would block a reader forever
    ],
)
def test_it_ignores_junit_files_it_cannot_trust(tmp_path, planted):
    outside = tmp_path / "outside.xml"
    outside.write_text(JUNIT.format(tests=12))
    work = tmp_path / "work"
    work.mkdir()
    target = work / test_results.JUNIT_FILE
    if planted == "symlink":
        target.symlink_to(outside)
    elif planted == "fifo":
        os.mkfifo(target)
    else:
        target.write_text(planted)
    assert test_results.parse_junit(work) == (None, None)


# -- Tests that cannot be gamed ------------------------------------------------------------------

GAMING_REPLIES = [
    {
        "tool_calls": [
            call("write_file", path="test_calc.py", content="def test_add():\n    pass\n")
        ]
    },
    {
        "tool_calls": [
            call("write_file", path="test_extra.py", content="def test_ok():\n    pass\n")
        ]
    },
    {"tool_calls": [call("finish", summary="The tests pass.")]},
]


def test_it_runs_the_tests_against_the_prompts_own_test_files(world):
    with FakeLLM(GAMING_REPLIES) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai, test_files=["test_*.py"])
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FAILED
    run.refresh_from_db()
    # add() is still wrong: the prompt's test fails, and the agent's own test never ran.
    assert (run.test_exit_code, run.tests_passed, run.tests_failed) == (1, 0, 1)
    assert run.test_files_modified == ["test_calc.py", "test_extra.py"]
    assert "+    pass" in run.diff  # reviewers still see what the agent did to the tests


def test_it_flags_no_test_files_when_the_agent_left_them_alone(world):
    with FakeLLM(FIXING_REPLIES) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai, test_files=["test_*.py"])
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
    run.refresh_from_db()
    assert run.test_files_modified == [] and run.tests_passed == 1


HIDDEN_TEST = (
    "from calc import add\n\n\n"
    "def test_negatives():  # HIDDEN-MARKER\n    assert add(-1, -2) == -3\n"
)


def _commit_hidden_test(prompt: Prompt) -> str:
    """A later commit of the prompt's repository that adds test_hidden.py; its sha."""
    from pathlib import Path

    from tests.conftest import git

    repo = Path(prompt.repository.url)
    (repo / "test_hidden.py").write_text(HIDDEN_TEST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "hidden test")
    return git(repo, "rev-parse", "HEAD")


def test_it_adds_hidden_tests_only_after_the_agent_has_ended(world):
    looking = "test -e test_hidden.py && echo VISIBLE || echo ABSENT; " + (
        "git cat-file --batch-all-objects --batch | grep -c HIDDEN-MARKER"
    )
    replies = [*FIXING_REPLIES[:2], {"tool_calls": [call("run_command", command=looking)]}]
    replies.append(FIXING_REPLIES[-1])
    with FakeLLM(replies) as llm:
        prompt_set, prompt, contestant = world(llm.base_url_openai)
        hidden = _commit_hidden_test(prompt)
        Prompt.objects.filter(pk=prompt.pk).update(
            hidden_tests_commit=hidden, hidden_tests_paths=["test_hidden.py"]
        )
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.FINISHED
    run.refresh_from_db()
    seen = [
        result["content"]
        for step in run.transcript["steps"]
        for result in (step.get("observation") or {}).get("results", [])
    ][2]
    assert "ABSENT" in seen and "VISIBLE" not in seen
    assert "\n0" in seen  # not one object of the agent's repository holds the hidden test
    assert (run.tests_passed, run.tests_failed) == (2, 0)
    assert run.files_changed == ["calc.py"]


@pytest.mark.parametrize(
    ("missing", "named"),
    [("commit", "0123456789abcdef"), ("path", "'tests/test_nowhere.py'")],
)
def test_it_errors_naming_a_hidden_commit_or_path_that_is_not_there(world, missing, named):
    with FakeLLM(FIXING_REPLIES) as llm:
        prompt_set, prompt, contestant = world(llm.base_url_openai)
        Prompt.objects.filter(pk=prompt.pk).update(
            hidden_tests_commit="0123456789abcdef" * 2 + "01234567"
            if missing == "commit"
            else prompt.commit,
            hidden_tests_paths=["tests/test_nowhere.py"],
        )
        run = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk) == Run.ERRORED
    run.refresh_from_db()
    assert named in run.status_reason
    assert run.test_exit_code is None  # the tests never ran without them


# -- A lost claim writes nothing -----------------------------------------------------------------


def _hand_over(run: Run, worker: str) -> None:
    """The reaper finds the run's heartbeat stale and requeues it; `worker` claims it."""
    stale = timezone.now() - timezone.timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale)
    assert execution.reap_stale_runs() == [run.pk]
    assert execution.claim(run.pk, worker)


def test_it_writes_nothing_to_a_run_another_worker_has_taken(world):
    prompt_set, _, contestant = world("http://127.0.0.1:9/v1")
    run = launch_one(prompt_set, contestant)
    assert execution.claim(run.pk, "old-worker")
    old = Run.objects.get(pk=run.pk)
    _hand_over(run, "new-worker")
    taken = Run.objects.filter(pk=run.pk).values().get()

    cancel = execution._Cancel()
    assert not execution._set(old, cancel, status=Run.TESTING, steps=7, test_exit_code=0)
    assert cancel.is_set() and cancel.claim_lost
    asked = execution._Cancel()
    started = time.monotonic()
    execution.ask_user(old, "Which sign?", asked, deadline=time.monotonic() + 60)
    assert asked.claim_lost and time.monotonic() - started < 5  # no waiting for an answer
    execution._end(old, Run.FINISHED, reason="Finished by the old worker", timings={"agent": 1})

    assert Run.objects.filter(pk=run.pk).values().get() == taken
    assert taken["worker"] == "new-worker" and taken["status"] == Run.PREPARING


def test_it_stops_a_command_of_a_run_it_has_lost(world, settings, tmp_path):
    from runs import workspace

    prompt_set, prompt, contestant = world("http://127.0.0.1:9/v1")
    run = launch_one(prompt_set, contestant)
    assert execution.claim(run.pk, "old-worker")
    old = Run.objects.get(pk=run.pk)
    cancel = execution._Cancel()
    checkout = workspace.checkout_commit(
        prompt.repository.url,
        settings.MERGEABLE_WORKSPACE_ROOT,
        prompt.commit,
        tmp_path / "run",
        owner=execution._run_uid(old),
    )
    box = execution._Box.open(old, checkout, cancel)
    try:
        _hand_over(run, "new-worker")
        started = time.monotonic()
        result = box.run("sleep 60", 120)
    finally:
        box.close()
        workspace.cleanup(checkout)
    assert result.cancelled and time.monotonic() - started < 30
    assert cancel.claim_lost
    row = Run.objects.get(pk=run.pk)
    assert (row.worker, row.process_group) == ("new-worker", None)


@pytest.mark.django_db(transaction=True)
def test_it_stops_and_reports_nothing_when_its_run_is_taken_midway(world):
    from django.db import connection

    taken = {}

    class TakenAtFirstCall(FakeLLM):
        def _next(self):
            if "run" in taken and "row" not in taken:
                _hand_over(taken["run"], "new-worker")
                taken["row"] = Run.objects.filter(pk=taken["run"].pk).values().get()
                connection.close()  # this server thread's own connection
            return super()._next()

    with TakenAtFirstCall(FIXING_REPLIES) as llm:
        prompt_set, _, contestant = world(llm.base_url_openai)
        run = taken["run"] = launch_one(prompt_set, contestant)
        assert execution.execute(run.pk, worker="old-worker") is None
        assert len(llm.requests) == 1
    assert Run.objects.filter(pk=run.pk).values().get() == taken["row"]
    assert taken["row"]["steps"] == 0 and taken["row"]["worker"] == "new-worker"
    assert Run.objects.get(pk=run.pk).diff == ""  # the old worker's capture was not stored

"""The Codex CLI harness for real: `codex exec --json` in the sandbox, behind the run's gateway,
against FakeLLM, through the run engine; and its stream converter on streams it printed.

The runs need Codex installed (`make agents`); without it they skip and say so.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from runs import campaigns, execution
from runs.agents import base, codex
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from runs.transcript import TranscriptWriter, validate
from tests.conftest import needs
from tests.fake_llm import FakeLLM

# What these check is the harness's (its command line, stream and sandbox), not the database's:
# the SQLite pass runs them (conftest.py).
pytestmark = pytest.mark.single_pass

FIXTURES = Path(__file__).parent / "fixtures" / "codex"
KEY = "sk-codex-test-key-do-not-leak"
FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
TEST_COMMAND = "python -m pytest -q --junitxml=.mergeable-junit.xml"
FIX = "sed -i 's/a - b/a + b/' calc.py"

needs_codex = needs(
    codex.binary().is_file(),
    f"the Codex CLI is not installed at {codex.binary()}: run `make agents`",
)


def shell(command: str, text: str = "", usage: tuple[int, int] = (100, 10), **more) -> dict:
    """A reply calling Codex's shell tool, exec_command, as its request's `tools` declares it."""
    return {
        "text": text,
        "tool_calls": [{"name": "exec_command", "arguments": {"cmd": command}}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1], **more},
    }


def say(text: str, usage: tuple[int, int] = (100, 10)) -> dict:
    return {"text": text, "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}}


@pytest.fixture
def world(db, make_repo):
    def build(
        base_url: str,
        answer: str = "",
        params: dict | None = None,
        provider: str = "openai",
        **contestant_fields,
    ):
        path, sha = make_repo(FILES)
        repo = Repository.objects.create(name="calc", url=str(path))
        prompt_set = PromptSet.objects.create(name="calc-tasks")
        Prompt.objects.create(
            prompt_set=prompt_set,
            key="fix-add",
            title="Fix add",
            instructions="add() subtracts; make it add.",
            repository=repo,
            commit=sha,
            test_command=TEST_COMMAND,
            clarification_answer=answer,
        )
        model = LanguageModel.objects.create(
            name="local",
            provider=provider,
            base_url=base_url,
            model_id="qwen",
            api_key=KEY,
            input_per_mtok=1.0,
            output_per_mtok=2.0,
            params=params or {},
        )
        contestant = Contestant.objects.create(
            name="qwen-codex",
            harness="codex",
            model=model,
            **{"max_steps": 10, **contestant_fields},
        )
        campaign = campaigns.launch(prompt_set=prompt_set, contestants=[contestant])
        return campaign.runs.get()

    return build


def agent_steps(run: Run) -> list[dict]:
    return [step for step in run.transcript["steps"] if step["source"] == "agent"]


# --- Runs --------------------------------------------------------------------------------------


@needs_codex
def test_it_fixes_a_bug_with_codex_through_the_gateway(world):
    # An endpoint that speaks the Responses API itself: the gateway forwards Codex's calls as
    # they are, streams included.
    replies = [
        shell('cat calc.py; echo "token=[$MERGEABLE_MODEL_TOKEN]"', "Let me look.", (500, 20),
              cache_read_tokens=100),
        shell(FIX, usage=(700, 30)),
        say("Fixed add(): it adds now.", (900, 5)),
    ]  # fmt: skip
    with FakeLLM(replies) as llm:
        run = world(llm.base_url_openai, params={"wire_api": "responses"})
        assert execution.execute(run.pk) == Run.FINISHED
        sent = llm.requests

    run.refresh_from_db()
    assert run.agent_status == "finished"
    assert run.files_changed == ["calc.py"]
    assert "+    return a + b" in run.diff
    assert run.test_exit_code == 0
    # Metered by the gateway, and reported alike by the stream.
    assert (run.model_calls, run.input_tokens, run.output_tokens) == (3, 2100, 55)
    assert run.cache_read_tokens == 100
    assert run.cost_usd == pytest.approx(2100 / 1e6 + 55 * 2 / 1e6)
    assert run.reported_usage["input_tokens"] == 2100
    assert run.steps == 3

    steps = agent_steps(run)
    assert [s["message"] for s in steps] == ["Let me look.", "", "Fixed add(): it adds now."]
    look = steps[0]
    assert look["tool_calls"][0]["function_name"] == "shell"
    assert "cat calc.py" in look["tool_calls"][0]["arguments"]["command"]
    result = look["observation"]["results"][0]
    assert result["source_call_id"] == look["tool_calls"][0]["tool_call_id"]
    # The file as it was, and the commands Codex runs do not see its token.
    assert "return a - b" in result["content"] and "token=[]" in result["content"]
    assert "sed -i" in steps[1]["tool_calls"][0]["arguments"]["command"]
    assert steps[2]["metrics"] == {
        "prompt_tokens": 2100,
        "completion_tokens": 55,
        "cached_tokens": 100,
        "cost_usd": 0.00221,
    }
    assert run.transcript["steps"][0]["source"] == "user"
    assert "add() subtracts" in run.transcript["steps"][0]["message"]

    # Codex spoke the Responses API to the gateway, which put the real key in for the token.
    assert {request["path"] for request in sent} == {"/v1/responses"}
    assert all(request["body"]["stream"] for request in sent)
    assert sent[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert "exec_command" in [tool.get("name") for tool in sent[0]["body"]["tools"]]
    assert not any(tool.get("type") == "web_search" for tool in sent[0]["body"]["tools"])
    assert '"analytics_enabled":false' in sent[0]["headers"]["x-codex-turn-metadata"]
    assert "add() subtracts" in json.dumps(sent[0]["body"]["input"])
    events = run.read_artifact("raw/codex/events.jsonl")
    assert '"type":"turn.completed"' in events
    assert KEY not in json.dumps(run.transcript) and KEY not in events


@needs_codex
def test_it_drives_codex_with_an_anthropic_model_through_the_gateway(world):
    # Codex speaks the Responses API; the model only Anthropic Messages: the gateway translates
    # Codex's shell calls, their results and the streams both ways.
    replies = [shell(FIX, "Fixing it.", (700, 30)), say("Fixed add(): it adds now.", (900, 5))]
    with FakeLLM(replies) as llm:
        run = world(llm.base_url_anthropic, provider="anthropic")
        assert execution.execute(run.pk) == Run.FINISHED
        sent = llm.requests

    run.refresh_from_db()
    assert {request["path"] for request in sent} == {"/v1/messages"}
    assert sent[0]["headers"]["x-api-key"] == KEY
    # The shell call's output went back to the model as an Anthropic tool result.
    assert '"tool_result"' in json.dumps(sent[1]["body"]["messages"])
    assert run.files_changed == ["calc.py"] and "+    return a + b" in run.diff
    assert run.test_exit_code == 0
    assert (run.model_calls, run.input_tokens, run.output_tokens) == (2, 1600, 35)


@needs_codex
def test_it_asks_the_question_codex_ends_on_and_resumes_the_same_thread(world):
    # An endpoint that speaks chat completions, as most do: the gateway translates.
    question = "Should add() really add, or is subtraction intended?"
    replies = [say(question, (300, 15)), shell(FIX, usage=(400, 20)), say("Done.", (500, 5))]
    with FakeLLM(replies) as llm:
        run = world(llm.base_url_openai, answer="Yes: add() must add.")
        assert execution.execute(run.pk) == Run.FINISHED
        sent = llm.requests

    run.refresh_from_db()
    assert [(q["question"], q["answer"], q["source"]) for q in run.questions] == [
        (question, "Yes: add() must add.", "prepared")
    ]
    assert "+    return a + b" in run.diff
    # The same thread, resumed: the model saw its question and the answer in one history.
    assert [request["path"] for request in sent] == ["/v1/chat/completions"] * 3
    assert sent[1]["headers"]["thread-id"] == sent[0]["headers"]["thread-id"]
    history = json.dumps(sent[1]["body"]["messages"])
    assert question in history and "Yes: add() must add." in history
    events = [json.loads(line) for line in run.read_artifact("raw/codex/events.jsonl").splitlines()]
    threads = [e["thread_id"] for e in events if e["type"] == "thread.started"]
    assert len(threads) == 2 and threads[0] == threads[1]

    flow = [(s["source"], s["message"]) for s in run.transcript["steps"] if s["source"] != "system"]
    assert flow[1:] == [
        ("agent", question),
        ("user", "Yes: add() must add."),
        ("agent", ""),
        ("agent", "Done."),
    ]
    # The resumed turn's usage is its own, though Codex reports the thread's so far.
    assert [s["metrics"]["prompt_tokens"] for s in agent_steps(run) if "metrics" in s] == [300, 900]
    assert run.reported_usage["input_tokens"] == run.input_tokens == 1200


@needs_codex
def test_it_stops_codex_at_the_step_limit(world):
    # The agent tries to lift its limit: the guard that counts its steps is read-only to it.
    lift = 'echo pass > "$CODEX_HOME/../../codex-step-guard.py" && echo LIFTED || echo REFUSED'
    with FakeLLM([shell(lift)] + [shell(f"echo step {n}") for n in range(1, 8)]) as llm:
        run = world(llm.base_url_openai, max_steps=2)
        assert execution.execute(run.pk) == Run.FAILED
        calls = len(llm.requests)

    run.refresh_from_db()
    assert run.agent_status == "max_steps"
    assert "steps limit" in run.status_reason
    steps = agent_steps(run)
    assert "REFUSED" in steps[0]["observation"]["results"][0]["content"]
    commands = [c["arguments"]["command"] for s in steps for c in s["tool_calls"]]
    assert len(commands) == 2 and "echo step 1" in commands[1]
    assert calls <= 3  # stopped as its next call began, if not before


@needs_codex
def test_it_fails_the_run_when_the_gateway_refuses_further_calls(world):
    with FakeLLM([shell(f"echo step {n}") for n in range(8)]) as llm:
        run = world(llm.base_url_openai, max_calls=2)
        assert execution.execute(run.pk) == Run.FAILED
        calls = len(llm.requests)

    run.refresh_from_db()
    assert calls == 2
    assert "limit of 2 model calls is reached" in run.status_reason
    assert run.model_calls == 2


@needs_codex
def test_it_errors_when_the_endpoint_rejects_every_call(world):
    with FakeLLM() as llm:
        llm.fail_next(401, times=10)
        run = world(llm.base_url_openai)
        assert execution.execute(run.pk) == Run.ERRORED
    run.refresh_from_db()
    assert "Could not reach the model" in run.error and "401" in run.error


def test_it_refuses_to_run_a_missing_codex(tmp_path, settings):
    settings.MERGEABLE_CODEX_BIN = tmp_path / "nowhere" / "codex"
    context = base.AgentContext(
        workspace=tmp_path, instructions="x", title="", limits=base.Limits(),
        transcript=TranscriptWriter(agent_name="codex", agent_version="", model_name=""),
        run_command=lambda command, timeout: (0, ""), ask_user=lambda question: "",
        cancel=None, run_sandboxed=lambda *a, **k: None, scratch=tmp_path,
    )  # fmt: skip
    with pytest.raises(base.HarnessUnavailable, match="make agents"):
        codex.run(context)


# --- Its configuration ---------------------------------------------------------------------------


def test_its_config_keeps_codex_on_the_gateway_whatever_the_options_say(tmp_path):
    from runs import providers

    context = base.AgentContext(
        workspace=tmp_path, instructions="x", title="", limits=base.Limits(),
        transcript=TranscriptWriter(agent_name="codex", agent_version="", model_name=""),
        run_command=lambda command, timeout: (0, ""), ask_user=lambda question: "",
        cancel=None, options={"config": {
            "model_reasoning_effort": "high", "model_provider": "openai",
            "notify": ["say", 'a "quoted" \\ value\x7f'],
        }},
        model=providers.ModelConfig(provider="openai", model="qwen",
                                    base_url="http://127.0.0.1:4000/v1/", api_key="token"),
    )  # fmt: skip
    config = tomllib.loads(codex.toml(codex.settings(context)))
    assert config["model_reasoning_effort"] == "high"
    assert config["notify"] == ["say", 'a "quoted" \\ value\x7f']
    assert config["model_provider"] == "mergeable"
    provider = config["model_providers"]["mergeable"]
    assert provider["base_url"] == "http://127.0.0.1:4000/v1"
    assert provider["wire_api"] == "responses"
    assert provider["env_key"] == "MERGEABLE_MODEL_TOKEN"
    assert "token" not in json.dumps(config).replace("MODEL_TOKEN", "")
    assert config["web_search"] == "disabled" and config["analytics"] == {"enabled": False}
    assert config["shell_environment_policy"]["exclude"] == ["MERGEABLE_MODEL_TOKEN"]


# --- Reading its stream ------------------------------------------------------------------------


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_it_imports_a_stream_codex_printed_while_fixing_a_bug():
    document = validate(codex.import_transcript(fixture("fix.jsonl"), "fix.jsonl", {}))

    steps = document["steps"]
    agent = [s for s in steps if s["source"] == "agent"]
    assert [s["message"] for s in agent] == ["Let me look.", "", "Fixed add(): it adds now."]
    assert [c["function_name"] for s in agent for c in s.get("tool_calls", [])] == ["shell"] * 2
    assert "return a - b" in agent[0]["observation"]["results"][0]["content"]
    assert agent[2]["metrics"]["prompt_tokens"] == 2100
    assert "timestamp" not in steps[0]  # the stream has none; the import's time is not the run's
    assert document["final_metrics"]["total_prompt_tokens"] == 2100
    assert document["final_metrics"]["total_completion_tokens"] == 55
    assert document["extra"]["end_status"] == "finished"
    assert document["extra"]["source_format"] == "codex"
    system = [s["message"] for s in steps if s["source"] == "system"]
    assert any("Model metadata for `qwen` not found" in m for m in system)


def test_it_groups_a_replys_text_reasoning_and_tool_calls_into_one_step():
    def item(kind: str, item_id: str, **fields) -> dict:
        return {"id": item_id, "type": kind, **fields}

    command = {"aggregated_output": "", "exit_code": None, "status": "in_progress"}
    events = [
        {"type": "thread.started", "thread_id": "t1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": item("reasoning", "i0", text="Two checks.")},
        {"type": "item.completed", "item": item("agent_message", "i1", text="Both at once.")},
        {"type": "item.started", "item": item("command_execution", "i2", command="ls", **command)},
        {"type": "item.started", "item": item("command_execution", "i3", command="false", **command)},
        {"type": "item.completed", "item": item("command_execution", "i2", command="ls",
                                                aggregated_output="calc.py\n", exit_code=0)},
        {"type": "item.completed", "item": item("command_execution", "i3", command="false",
                                                aggregated_output="", exit_code=1)},
        {"type": "item.completed", "item": item("file_change", "i4", status="completed",
                                                changes=[{"path": "calc.py", "kind": "update"}])},
        {"type": "item.completed", "item": item("agent_message", "i5", text="Done.")},
        {"type": "turn.completed", "usage": {"input_tokens": 50, "cached_input_tokens": 20,
                                             "output_tokens": 7}},
    ]  # fmt: skip
    text = "\n".join(json.dumps(event) for event in events)
    document = validate(codex.import_transcript(text, "events.jsonl", {}))

    agent = [s for s in document["steps"] if s["source"] == "agent"]
    assert [s["message"] for s in agent] == ["Both at once.", "", "Done."]
    assert agent[0]["reasoning_content"] == "Two checks."
    assert [c["arguments"] for c in agent[0]["tool_calls"]] == [
        {"command": "ls"},
        {"command": "false"},
    ]
    assert [r["content"] for r in agent[0]["observation"]["results"]] == [
        "calc.py\n",
        "\n[exit code 1]",
    ]
    assert agent[1]["tool_calls"][0]["function_name"] == "apply_patch"
    assert agent[1]["observation"]["results"][0]["content"] == "completed: update calc.py"
    assert agent[2]["metrics"] == {"prompt_tokens": 50, "completion_tokens": 7, "cached_tokens": 20}
    assert document["final_metrics"]["total_cached_tokens"] == 20


def test_it_counts_a_resumed_threads_usage_once():
    document = validate(codex.import_transcript(fixture("question.jsonl"), "question.jsonl", {}))
    agent = [s for s in document["steps"] if s["source"] == "agent"]
    assert [s.get("metrics", {}).get("prompt_tokens") for s in agent] == [300, None, 900]
    assert document["final_metrics"]["total_prompt_tokens"] == 1200
    # Item ids start again in a resumed `codex exec`; the transcript's call ids do not repeat.
    ids = [c["tool_call_id"] for s in agent for c in s.get("tool_calls", [])]
    assert len(ids) == len(set(ids)) == 1


def test_it_reads_a_stream_cut_off_at_the_step_limit_as_stopped():
    document = codex.import_transcript(fixture("max_steps.jsonl"), "max_steps.jsonl", {})
    agent = [s for s in document["steps"] if s["source"] == "agent"]
    assert len(agent) == 2 and all("observation" in s for s in agent)
    assert document["extra"]["end_status"] == "stopped"


def test_it_reads_a_failed_turn_as_the_model_unreachable_or_the_budget_spent():
    def failed(message: str) -> str:
        events = [
            {"type": "thread.started", "thread_id": "t1"},
            {"type": "turn.started"},
            {"type": "error", "message": "Reconnecting... 1/2"},
            {"type": "turn.failed", "error": {"message": message}},
        ]
        return "\n".join(json.dumps(e) for e in events)

    refused = (
        "unexpected status 403 Forbidden: Mergeable gateway: this run's limit of 2 model calls"
    )
    assert codex.import_transcript(failed(refused), "a", {})["extra"]["end_status"] == "max_cost"
    unauthorized = "unexpected status 401 Unauthorized: bad key"
    document = codex.import_transcript(failed(unauthorized), "b", {})
    assert document["extra"]["end_status"] == "model_unreachable"


def test_it_recognizes_codex_streams_and_nothing_else():
    assert codex.looks_like(fixture("fix.jsonl"), "events.jsonl")
    assert codex.looks_like(fixture("question.jsonl"), "anything.txt")
    assert not codex.looks_like('{"schema_version": "ATIF-v1.4", "steps": []}', "t.json")
    assert not codex.looks_like('{"info": {}, "messages": []}', "traj.json")
    assert not codex.looks_like("# aider chat started at 2026-01-01\n", "chat.md")
    assert not codex.looks_like('{"type": "error", "message": "x"}\n', "e.jsonl")


def test_it_names_the_line_of_an_import_that_is_not_an_event():
    text = fixture("fix.jsonl").replace("\n", "\nnot json\n", 1)
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2 is not a Codex JSON event"):
        codex.import_transcript(text, "broken.jsonl", {})
    with pytest.raises(ValueError, match="no Codex events"):
        codex.import_transcript("\n\n", "empty.jsonl", {})

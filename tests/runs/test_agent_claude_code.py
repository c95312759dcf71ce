"""The Claude Code harness: for real through the run engine (the sandbox, the run's gateway, a
real git repository) against FakeLLM speaking Anthropic Messages, and its stream converter on
streams captured from those runs (tests/runs/fixtures/claude-code/).

The end-to-end tests need Claude Code installed (`make agents`); without it they skip and say so.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from runs import campaigns, execution, providers
from runs.agents import base, claude_code
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from runs.transcript import TranscriptWriter, parse_time, validate
from tests.conftest import needs
from tests.fake_llm import FakeLLM

# What these check is the harness's (its command line, stream and sandbox), not the database's:
# the SQLite pass runs them (conftest.py).
pytestmark = pytest.mark.single_pass

FIXTURES = Path(__file__).parent / "fixtures" / "claude-code"
FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
REAL_KEY = "sk-ant-test-key-do-not-leak-1234"

needs_claude = needs(
    claude_code.binary().is_file(),
    f"Claude Code is not installed at {claude_code.binary()}: run `make agents`",
)


def tool(name: str, text: str = "", usage: tuple[int, int] = (100, 10), **arguments) -> dict:
    """A scripted model reply calling one of Claude Code's tools with its real input schema."""
    return {
        "text": text,
        "tool_calls": [{"name": name, "arguments": arguments}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


@pytest.fixture
def world(db, make_repo, settings):
    """A prompt on a real repository and a claude-code contestant whose model is FakeLLM."""

    def build(
        llm: FakeLLM, answer: str = "", provider: str = "anthropic", **limits
    ) -> tuple[Run, Path]:
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
            test_command="python -m pytest -q --junitxml=.mergeable-junit.xml",
            expected_files=["calc.py"],
            clarification_answer=answer,
        )
        model = LanguageModel.objects.create(
            name="claude-fake",
            provider=provider,
            base_url=llm.base_url_anthropic if provider == "anthropic" else llm.base_url_openai,
            model_id="claude-fake-1",
            api_key=REAL_KEY,
            input_per_mtok=3.0,
            output_per_mtok=15.0,
        )
        contestant = Contestant.objects.create(
            name="claude-code-fake", harness="claude-code", model=model, **limits
        )
        campaign = campaigns.launch(prompt_set=prompt_set, contestants=[contestant])
        run = campaign.runs.get()
        # Claude Code's file tools take absolute paths: the workspace's, as the worker makes it.
        work = Path(settings.MERGEABLE_CHECKOUT_ROOT) / f"{run.pk}-1" / "work"
        return run, work

    return build


def execute(run: Run) -> str:
    """Run it through the engine, as a worker would, and reload it."""
    status = execution.execute(run.pk)
    run.refresh_from_db()
    assert status, "another worker had the run"
    return status


def why(run: Run) -> str:
    return (
        f"{run.status}: {run.status_reason} {run.error}\n"
        f"{run.read_artifact('raw/claude-code/stderr.txt')[-2000:]}\n"
        f"{run.read_artifact('raw/claude-code/stream.jsonl')[-3000:]}"
    )


def calls_to_messages(llm: FakeLLM) -> list[dict]:
    return [r for r in llm.requests if r["path"] == "/v1/messages"]


# --- End to end ----------------------------------------------------------------------------


@needs_claude
def test_it_fixes_a_bug_with_claude_codes_tools_and_the_run_shows_it(world):
    with FakeLLM() as llm:
        run, work = world(llm)
        llm.queue(
            {
                **tool("Read", "Let me look.", file_path=str(work / "calc.py")),
                "usage": {"input_tokens": 1000, "output_tokens": 20, "cache_read_tokens": 400},
            },
            tool(
                "Edit",
                usage=(1200, 30),
                file_path=str(work / "calc.py"),
                old_string="return a - b",
                new_string="return a + b",
            ),
            tool(
                "Bash",
                usage=(1300, 15),
                command='echo "key=[$ANTHROPIC_API_KEY]"; python -m pytest -q',
                description="Run the tests",
            ),
            {
                "text": "Fixed add(): it now adds.",
                "usage": {"input_tokens": 1500, "output_tokens": 10},
            },
        )
        assert execute(run) == Run.FINISHED, why(run)
        requests = calls_to_messages(llm)

    assert run.agent_status == base.FINISHED
    assert run.files_changed == ["calc.py"]  # Claude Code's home and config stayed out of it
    assert "+    return a + b" in run.diff
    assert (run.test_exit_code, run.tests_passed, run.tests_failed) == (0, 1, 0)
    # Metered by the gateway: every scripted call, the cached input counted as input.
    assert (run.input_tokens, run.output_tokens, run.model_calls) == (5000, 75, 4)
    assert run.cache_read_tokens == 400
    assert run.cost_usd == pytest.approx(5000 * 3 / 1e6 + 75 * 15 / 1e6)
    assert run.steps == 4
    assert run.reported_usage == {
        "input_tokens": 5000,
        "output_tokens": 75,
        "cost_usd": pytest.approx(run.cost_usd),
    }

    # The model got the task and the gateway's key swap: the CLI held only the run's token.
    assert all(r["headers"]["x-api-key"] == REAL_KEY for r in requests)
    assert all(r["body"]["model"] == "claude-fake-1" for r in requests)
    assert "add() subtracts" in json.dumps(requests[0]["body"]["messages"])

    transcript = run.transcript
    validate(transcript)
    steps = transcript["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent", "agent", "agent"]
    assert steps[0]["message"].startswith("# Task: Fix add")
    read, edit, bash, final = steps[1:]
    assert read["message"] == "Let me look."
    assert read["tool_calls"][0]["function_name"] == "Read"
    assert read["tool_calls"][0]["arguments"] == {"file_path": str(work / "calc.py")}
    assert "return a - b" in read["observation"]["results"][0]["content"]
    assert (
        read["observation"]["results"][0]["source_call_id"]
        == (read["tool_calls"][0]["tool_call_id"])
    )
    # Per call: the output tokens of its message_delta, not the stream's placeholder of 1.
    assert read["metrics"] == {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "cached_tokens": 400,
        "cost_usd": round(1000 * 3 / 1e6 + 20 * 15 / 1e6, 6),
    }
    assert edit["tool_calls"][0]["arguments"]["new_string"] == "return a + b"
    assert "updated successfully" in edit["observation"]["results"][0]["content"]
    # What the commands the model runs can see is the run's token, never the key.
    output = bash["observation"]["results"][0]["content"]
    assert "key=[" in output and REAL_KEY not in output and "1 passed" in output
    assert final["message"] == "Fixed add(): it now adds."
    assert final["metrics"]["completion_tokens"] == 10
    assert transcript["extra"]["end_status"] == base.FINISHED
    assert transcript["extra"]["summary"] == "Fixed add(): it now adds."
    assert REAL_KEY not in json.dumps(transcript)

    stream = run.read_artifact("raw/claude-code/stream.jsonl")
    assert '"type":"result"' in stream and '"subtype":"init"' in stream
    assert REAL_KEY not in stream
    assert "Fix add" in run.read_artifact("raw/claude-code/session.jsonl")


@needs_claude
def test_it_drives_claude_code_with_an_openai_compatible_model_through_the_gateway(world):
    """Claude Code speaks Anthropic Messages; the model only chat completions: the run's
    gateway translates both ways, streaming and tool calls included."""
    with FakeLLM() as llm:
        run, work = world(llm, provider="openai")
        llm.queue(
            tool(
                "Edit",
                usage=(1200, 30),
                file_path=str(work / "calc.py"),
                old_string="return a - b",
                new_string="return a + b",
            ),
            {
                "text": "Fixed add(): it now adds.",
                "usage": {"input_tokens": 1500, "output_tokens": 10},
            },
        )
        assert execute(run) == Run.FINISHED, why(run)
        paths = {r["path"] for r in llm.requests}
        chat_bodies = [r["body"] for r in llm.requests if r["path"].endswith("/chat/completions")]

    assert paths <= {"/v1/chat/completions", "/chat/completions", "/v1/models", "/models"}
    assert any(
        message.get("role") == "tool" for body in chat_bodies for message in body["messages"]
    )  # Claude Code's tool result went back as a chat tool message
    assert run.files_changed == ["calc.py"] and "+    return a + b" in run.diff
    assert (run.tests_passed, run.tests_failed) == (1, 0)
    assert (run.input_tokens, run.output_tokens, run.model_calls) == (2700, 40, 2)


@needs_claude
def test_it_asks_the_question_claude_code_ends_on_and_resumes_the_same_session(world):
    question = "Should add() really add, or is subtraction intended?"
    with FakeLLM() as llm:
        run, work = world(llm, answer="Addition, please.")
        llm.queue(
            {"text": f"Before I change anything:\n\n{question}"},
            tool("Read", file_path=str(work / "calc.py")),
            tool(
                "Edit",
                file_path=str(work / "calc.py"),
                old_string="return a - b",
                new_string="return a + b",
            ),
            {"text": "Done: add() adds."},
        )
        assert execute(run) == Run.FINISHED, why(run)
        resumed = calls_to_messages(llm)[1]["body"]["messages"]

    assert len(run.questions) == 1
    assert run.questions[0]["question"].endswith(question)
    assert run.questions[0]["answer"] == "Addition, please."
    assert run.questions[0]["source"] == "prepared"
    assert run.files_changed == ["calc.py"] and "+    return a + b" in run.diff
    # The second invocation continued the first session: its question and the answer are there.
    history = json.dumps(resumed)
    assert question in history and "Addition, please." in history
    steps = run.transcript["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "user", "agent", "agent", "agent"]
    assert steps[2]["message"] == "Addition, please."
    sessions = {steps[0]["extra"]["claude_code_session"], steps[2]["extra"]["claude_code_session"]}
    assert len(sessions) == 1
    assert run.steps == 4
    stream = run.read_artifact("raw/claude-code/stream.jsonl")
    assert [json.loads(line)["session_id"] for line in stream.splitlines() if '"init"' in line] == [
        *sessions,
        *sessions,
    ]


@needs_claude
def test_it_stops_claude_code_at_the_step_limit(world):
    with FakeLLM([tool("Bash", command="ls", description="List files")] * 6) as llm:
        run, _ = world(llm, max_steps=2)
        assert execute(run) == Run.FAILED, why(run)
        calls = len(calls_to_messages(llm))
    assert calls == 2
    assert run.agent_status == base.MAX_STEPS
    assert run.status_reason == "The agent hit its steps limit"
    assert run.steps == 2


@needs_claude
def test_it_fails_the_run_naming_the_gateways_call_limit(world):
    with FakeLLM([tool("Bash", command="ls", description="List files")] * 6) as llm:
        run, _ = world(llm, max_calls=2)
        assert execute(run) == Run.FAILED, why(run)
        forwarded = len(calls_to_messages(llm))
    assert forwarded == 2  # the third call was refused by the gateway, never forwarded
    assert "limit of 2 model calls" in run.status_reason
    assert run.model_calls == 2


@needs_claude
def test_it_stops_claude_code_when_the_run_is_out_of_time(world):
    with FakeLLM(
        [tool("Bash", command="python -c 'import time; time.sleep(60)'", description="Wait")]
    ) as llm:
        run, _ = world(llm, time_limit=8)
        assert execute(run) == Run.TIMED_OUT, why(run)
    assert run.agent_status == base.TIMED_OUT
    assert run.status_reason == "The agent ran out of time"
    assert run.phase_timings["agent"] < 20


def test_it_refuses_to_run_a_missing_claude_code(tmp_path, settings):
    settings.MERGEABLE_CLAUDE_CODE_BIN = tmp_path / "nowhere" / "claude"
    context = _offline_context(tmp_path, provider="anthropic")
    with pytest.raises(base.HarnessUnavailable, match="make agents"):
        claude_code.run(context)


@needs_claude
def test_it_refuses_a_model_that_is_not_served_in_anthropic_messages(tmp_path):
    # The engine hands Claude Code the gateway in Anthropic's format whatever the model speaks
    # (SPEAKS); anything else, a scripted model say, cannot drive it.
    context = _offline_context(tmp_path, provider="scripted")
    with pytest.raises(base.HarnessUnavailable, match="not 'scripted'"):
        claude_code.run(context)


def _offline_context(tmp_path: Path, provider: str) -> base.AgentContext:
    def never(*args, **kwargs):
        raise AssertionError("nothing may run")

    return base.AgentContext(
        workspace=tmp_path,
        instructions="x",
        title="",
        limits=base.Limits(),
        transcript=TranscriptWriter(agent_name="x", agent_version="1", model_name="m"),
        run_command=never,
        ask_user=never,
        cancel=threading.Event(),
        model=providers.ModelConfig(provider=provider, model="m", base_url="http://127.0.0.1:9"),
        run_sandboxed=never,
        scratch=tmp_path,
    )


# --- The converter, on captured streams -----------------------------------------------------


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def stream_of(name: str) -> claude_code.Stream:
    return claude_code.parse_stream(fixture(name))


def test_it_reads_calls_results_and_per_call_usage_from_a_captured_stream():
    stream = stream_of("fix.stream.jsonl")

    assert [e.source for e in stream.entries] == ["agent"] * 4
    read, edit, bash, final = stream.entries
    assert read.message == "Let me look at calc.py."
    assert [c["name"] for e in stream.entries for c in e.tool_calls] == ["Read", "Edit", "Bash"]
    assert read.tool_calls[0]["arguments"]["file_path"].endswith("/work/calc.py")
    assert [call_id for call_id, _ in read.results] == [read.tool_calls[0]["id"]]
    assert "return a - b" in read.results[0][1]
    assert "1 passed" in bash.results[0][1]
    assert final.message == "Fixed add(): it now adds." and not final.tool_calls
    # Each call's usage: its message_start's input and cache, its message_delta's output.
    usage = read.usage
    assert (usage.input_tokens, usage.cache_read_tokens, usage.cache_write_tokens) == (
        500,
        400,
        100,
    )
    assert (usage.prompt_tokens, usage.output_tokens) == (1000, 20)
    assert [e.usage.output_tokens for e in stream.entries] == [20, 30, 15, 10]
    assert (stream.model_calls, stream.input_tokens, stream.output_tokens) == (4, 5000, 75)
    assert stream.cached_tokens == 400
    assert stream.model == "claude-fake-1" and stream.version == "2.1.332"
    assert (
        stream.session_id == json.loads(fixture("fix.stream.jsonl").splitlines()[0])["session_id"]
    )
    assert claude_code.end_status(stream.result) == (base.FINISHED, "")
    assert stream.result["result"] == "Fixed add(): it now adds."


def test_it_falls_back_on_the_results_totals_without_partial_messages():
    # Without --include-partial-messages, a call's output tokens are its message_start's 1.
    plain = "\n".join(
        line for line in fixture("fix.stream.jsonl").splitlines() if '"stream_event"' not in line
    )
    stream = claude_code.parse_stream(plain)
    assert [e.usage.output_tokens for e in stream.entries] == [1, 1, 1, 1]
    assert (stream.input_tokens, stream.output_tokens) == (5000, 75)


def test_it_writes_atif_steps_priced_at_the_models_rates_and_timed_by_the_stream():
    writer = TranscriptWriter(agent_name="claude-code", agent_version="x", model_name="m")
    stream = stream_of("fix.stream.jsonl")
    claude_code.write_steps(writer, stream, price=lambda i, o: i * 3 / 1e6 + o * 15 / 1e6)

    validate(writer.document)
    first = writer.steps[0]
    assert first["metrics"] == {
        "prompt_tokens": 1000,
        "completion_tokens": 20,
        "cached_tokens": 400,
        "extra": {"cache_write_tokens": 100},
        "cost_usd": round(1000 * 3 / 1e6 + 20 * 15 / 1e6, 6),
    }
    assert first["tool_calls"][0]["function_name"] == "Read"
    assert (
        first["observation"]["results"][0]["source_call_id"]
        == (first["tool_calls"][0]["tool_call_id"])
    )
    stamps = [
        json.loads(line).get("timestamp") for line in fixture("fix.stream.jsonl").splitlines()
    ]
    assert parse_time(first["timestamp"]) in [parse_time(t) for t in stamps if t]


def test_it_imports_a_stream_as_atif_with_claude_codes_own_cost():
    document = claude_code.import_transcript(fixture("fix.stream.jsonl"), "run.jsonl", {})

    validate(document)
    assert document["agent"] == {
        "name": "claude-code",
        "version": "2.1.332",
        "model_name": "claude-fake-1",
    }
    assert [s["source"] for s in document["steps"]] == ["agent"] * 4
    assert all("cost_usd" not in s["metrics"] for s in document["steps"])
    assert all(s["timestamp"].startswith("20") for s in document["steps"])
    assert document["final_metrics"] == {
        "total_prompt_tokens": 5000,
        "total_completion_tokens": 75,
        "total_cost_usd": 0.02008,
        "total_steps": 4,
        "total_cached_tokens": 400,
    }
    assert document["extra"]["end_status"] == base.FINISHED
    assert document["extra"]["source_format"] == "claude-code"
    assert document["extra"]["source_file"] == "run.jsonl"


def test_it_imports_a_session_file_with_the_prompt_and_each_calls_final_usage():
    document = claude_code.import_transcript(fixture("fix.session.jsonl"), "abc.jsonl", {})

    validate(document)
    steps = document["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent", "agent", "agent"]
    assert steps[0]["message"].startswith("# Task: Fix add")
    assert [s["metrics"]["completion_tokens"] for s in steps[1:]] == [20, 30, 15, 10]
    assert "return a - b" in steps[1]["observation"]["results"][0]["content"]
    assert document["final_metrics"]["total_prompt_tokens"] == 5000
    assert document["final_metrics"]["total_completion_tokens"] == 75
    assert document["extra"]["end_status"] == ""  # a session file does not say how it ended
    same_run = claude_code.parse_stream(fixture("fix.stream.jsonl")).session_id
    assert document["session_id"] == same_run


def test_it_reads_both_invocations_of_a_resumed_session():
    stream = stream_of("question.stream.jsonl")

    assert [e.message for e in stream.entries] == [
        "Should add() really add, or is subtraction intended?",
        "",
        "Done: add() adds.",
    ]
    assert stream.entries[1].tool_calls[0]["name"] == "Bash"
    assert len(stream.results) == 2
    # Each result counts its own invocation; together they are the session's.
    assert (stream.input_tokens, stream.output_tokens) == (900 + 1000 + 1100, 12 + 25 + 6)
    assert claude_code.end_status(stream.result) == (base.FINISHED, "")


def test_it_reads_the_turn_limit_and_a_model_it_could_not_use_as_end_statuses():
    assert claude_code.end_status(stream_of("max-turns.stream.jsonl").result) == (
        base.MAX_STEPS,
        "",
    )
    unauthorized = stream_of("unauthorized.stream.jsonl")
    status, error = claude_code.end_status(unauthorized.result)
    assert status == base.MODEL_UNREACHABLE and "401" in error
    # Its retries and the error it gave up with are notes, not model calls.
    assert unauthorized.model_calls == 0
    assert {e.source for e in unauthorized.entries} == {"system"}
    assert any("401" in e.message for e in unauthorized.entries)


def test_it_takes_a_result_it_cannot_explain_as_a_failure_of_the_cli():
    with pytest.raises(
        base.HarnessUnavailable, match=r"Claude Code failed \(error_during_execution\): boom"
    ):
        claude_code.end_status(
            {"type": "result", "subtype": "error_during_execution", "is_error": True,
             "errors": ["boom"]}
        )  # fmt: skip


def test_it_skips_what_is_not_an_event_in_the_stream():
    noisy = '[claude-code:unrecognized_model] {"model":"x"}\n{not json\n' + fixture(
        "fix.stream.jsonl"
    )
    assert claude_code.parse_stream(noisy).model_calls == 4


def test_it_recognizes_claude_code_files_and_nothing_else():
    assert claude_code.looks_like(fixture("fix.stream.jsonl"), "stream.jsonl")
    assert claude_code.looks_like(fixture("fix.session.jsonl"), "0c5b.jsonl")
    assert claude_code.looks_like(fixture("unauthorized.stream.jsonl"), "out.txt")
    others = [
        json.dumps({"schema_version": "ATIF-v1.6", "steps": []}, indent=1),
        json.dumps({"info": {}, "messages": [{"role": "user", "content": "x"}]}),
        "# aider chat started at 2026-01-01 10:00:00\n\n#### fix it\n",
        '{"type":"thread.started","thread_id":"0199"}\n{"type":"turn.started"}\n',
        '{"type":"step_start","sessionID":"ses_1","part":{}}\n',
        "",
    ]
    assert not any(claude_code.looks_like(text, "x.jsonl") for text in others)


def test_it_refuses_to_import_a_file_without_claude_code_messages():
    with pytest.raises(ValueError, match="notes.jsonl: no Claude Code messages"):
        claude_code.import_transcript('{"type":"system","subtype":"status"}\n', "notes.jsonl", {})

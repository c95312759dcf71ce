"""The opencode harness for real: `opencode run --format json` headless in the sandbox, against
FakeLLM through the run's gateway, and its stream read into the ATIF transcript.

The end-to-end tests need opencode installed (`make agents`) and bubblewrap; without them they
skip and say so. The converter's tests read a stream captured from such a run
(fixtures/opencode/), and need neither.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from runs import campaigns, execution, providers
from runs.agents import base, opencode
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from runs.transcript import TranscriptWriter, validate
from tests.conftest import needs
from tests.fake_llm import FakeLLM
from tests.runs.test_agents_cli import Harness, _close_gateways  # noqa: F401 (autouse: closes the gateways Harness opens)

# What these check is the harness's (its command line, stream and sandbox), not the database's:
# the SQLite pass runs them (conftest.py).
pytestmark = pytest.mark.single_pass

FIXTURES = Path(__file__).parent / "fixtures" / "opencode"
FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
}
FIXED = "def add(a, b):\n    return a + b\n"
KEY = "sk-opencode-real-key-1234"

needs_opencode = needs(
    opencode.binary().is_file(),
    f"opencode is not installed at {opencode.binary()}: run `make agents`",
)
needs_bwrap = needs(shutil.which("bwrap") is not None, "bubblewrap (bwrap) is not installed")


def tool(name: str, text: str = "", usage: tuple[int, int] = (100, 10), **arguments) -> dict:
    """A scripted reply calling one of opencode's tools, with its own argument names."""
    return {
        "text": text,
        "tool_calls": [{"name": name, "arguments": arguments}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


FIXING_REPLIES = [
    tool("read", "Let me look at calc.py.", (500, 20), filePath="calc.py"),
    tool(
        "edit", "The operator is wrong.", (700, 30),
        filePath="calc.py", oldString="a - b", newString="a + b",
    ),
    tool("bash", "", (800, 15), command="python -m pytest -q", description="Run the tests"),
    {"text": "Fixed: add() now adds.", "usage": {"input_tokens": 900, "output_tokens": 5}},
]  # fmt: skip


@pytest.fixture
def launch(db, make_repo, settings):
    """launch(replies, **contestant fields) -> (the finished Run, the requests FakeLLM got)."""
    settings.MERGEABLE_SANDBOX = "bubblewrap"
    path, sha = make_repo(FILES)
    repo = Repository.objects.create(name="calc", url=str(path))
    prompt_set = PromptSet.objects.create(name="calc-tasks")

    def run(replies: list[dict], answer: str = "", **fields) -> tuple[Run, list[dict]]:
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=f"fix-add-{uuid.uuid4().hex[:6]}",
            title="Fix add",
            instructions="add() subtracts; make it add.",
            repository=repo,
            commit=sha,
            test_command="python -m pytest -q",
            clarification_answer=answer,
        )
        with FakeLLM(replies) as llm:
            model = LanguageModel.objects.create(
                name=f"m-{uuid.uuid4().hex[:8]}",
                provider="openai",
                base_url=llm.base_url_openai,
                model_id="qwen",
                api_key=KEY,
                input_per_mtok=1.0,
                output_per_mtok=2.0,
            )
            contestant = Contestant.objects.create(
                name=f"opencode-{uuid.uuid4().hex[:8]}",
                model=model,
                harness="opencode",
                **{"max_steps": 10, **fields},
            )
            campaign = campaigns.launch(prompt_set=prompt_set, contestants=[contestant])
            found = campaign.runs.get()
            execution.execute(found.pk)
            requests = list(llm.requests)
        found.refresh_from_db()
        return found, requests

    return run


def agent_steps(run: Run) -> list[dict]:
    return [step for step in run.transcript["steps"] if step["source"] == "agent"]


@needs_opencode
@needs_bwrap
def test_it_fixes_a_bug_with_opencodes_own_tools_through_the_gateway(launch):
    run, requests = launch(FIXING_REPLIES)

    assert run.status == Run.FINISHED, run.status_reason
    assert run.agent_status == base.FINISHED
    assert run.files_changed == ["calc.py"]
    assert "+    return a + b" in run.diff
    assert run.test_exit_code == 0
    # Every call went through the gateway, metered; no title call took a scripted reply.
    assert len(requests) == 4 and run.model_calls == 4
    assert (run.input_tokens, run.output_tokens, run.steps) == (2900, 70, 4)
    assert run.cost_usd == pytest.approx(2900 / 1e6 + 70 * 2 / 1e6)
    first = requests[0]
    assert first["body"]["stream"] is True
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert "add() subtracts" in json.dumps(first["body"]["messages"])
    tools = {t["function"]["name"] for t in first["body"]["tools"]}
    assert {"read", "edit", "write", "bash"} <= tools and "task" not in tools

    steps = agent_steps(run)
    assert [s["tool_calls"][0]["function_name"] for s in steps[:3]] == ["read", "edit", "bash"]
    assert steps[0]["message"] == "Let me look at calc.py."
    assert "return a - b" in steps[0]["observation"]["results"][0]["content"]
    assert steps[1]["tool_calls"][0]["arguments"]["newString"] == "a + b"
    assert "1 passed" in steps[2]["observation"]["results"][0]["content"]
    assert steps[0]["metrics"] == {
        "prompt_tokens": 500,
        "completion_tokens": 20,
        "cost_usd": 0.00054,
    }
    assert steps[3]["message"] == "Fixed: add() now adds."
    assert run.transcript["steps"][0]["source"] == "user"
    assert run.transcript["extra"]["summary"] == "Fixed: add() now adds."
    validate(run.transcript)
    events = run.read_artifact("raw/opencode/events.jsonl")
    assert '"type":"step_finish"' in events
    # The real key stayed with the gateway.
    assert KEY not in events and KEY not in json.dumps(run.transcript)


@needs_opencode
@needs_bwrap
def test_it_answers_opencodes_question_and_resumes_the_same_session(launch):
    replies = [
        {"text": "Should add() really add, or is subtraction intended?"},
        tool("edit", "Understood.", filePath="calc.py", oldString="a - b", newString="a + b"),
        {"text": "Done."},
    ]
    run, requests = launch(replies, answer="Yes, addition is what we want.")

    assert run.status == Run.FINISHED, run.status_reason
    assert run.questions[0]["question"] == "Should add() really add, or is subtraction intended?"
    assert run.questions[0]["source"] == "prepared"
    assert run.files_changed == ["calc.py"]
    # The second turn carries the first: one session, the question and the answer in its history.
    resumed = requests[1]["body"]["messages"]
    history = json.dumps(resumed)
    assert "add() subtracts" in history and "subtraction intended" in history
    assert resumed[-1] == {"role": "user", "content": "Yes, addition is what we want."}
    sessions = {
        json.loads(line)["sessionID"]
        for line in run.read_artifact("raw/opencode/events.jsonl").splitlines()
    }
    assert len(sessions) == 1
    sources = [step["source"] for step in run.transcript["steps"]]
    assert sources == ["user", "agent", "user", "agent", "agent"]
    assert run.steps == 3


@needs_opencode
@needs_bwrap
def test_it_stops_opencode_at_the_step_limit_though_the_model_keeps_calling_tools(launch):
    looping = [tool("bash", "Looking.", command="ls", description="List files")] * 8
    run, requests = launch(looping, max_steps=3)

    assert run.status == Run.FAILED
    assert run.agent_status == base.MAX_STEPS
    assert "steps limit" in run.status_reason
    assert run.steps == 3 and len(agent_steps(run)) == 3
    # opencode asked the model to stop at its last step; the model did not, and was stopped.
    assert "MAXIMUM STEPS REACHED" in json.dumps(requests[2]["body"]["messages"])
    # opencode sends its next call as soon as a step ends: that one may be out before the kill.
    assert len(requests) in (3, 4) and run.model_calls == len(requests)


@needs_opencode
@needs_bwrap
def test_it_fails_the_run_naming_the_gateways_call_limit(launch):
    looping = [tool("bash", "Looking.", command="ls", description="List files")] * 8
    run, requests = launch(looping, max_calls=2)

    assert run.status == Run.FAILED
    assert "2 model calls" in run.status_reason
    assert len(requests) == 2 and run.model_calls == 2


@needs_opencode
@needs_bwrap
def test_it_drives_an_anthropic_model_through_the_gateways_messages_endpoint(
    tmp_path, make_repo, settings
):
    settings.MERGEABLE_SANDBOX = "bubblewrap"
    harness = Harness(tmp_path, make_repo, files={"calc.py": FILES["calc.py"]})
    replies = [
        tool("edit", "Fix.", filePath="calc.py", oldString="a - b", newString="a + b"),
        {"text": "Done."},
    ]
    with FakeLLM(replies) as llm:
        model = providers.ModelConfig(
            provider="anthropic", model="claude-x", base_url=llm.base_url_anthropic,
            api_key=KEY, input_per_mtok=1.0, output_per_mtok=2.0,
        )  # fmt: skip
        outcome = opencode.run(harness.context(model))
        requests = list(llm.requests)

    assert harness.file("calc.py") == FIXED
    assert (outcome.end_status, outcome.summary, outcome.steps) == (base.FINISHED, "Done.", 2)
    assert [r["path"] for r in requests] == ["/v1/messages", "/v1/messages"]
    assert requests[0]["headers"]["x-api-key"] == KEY
    env = harness.sandboxed[0]["env"]
    assert env[opencode.TOKEN_VARIABLE] == harness.gateway.token
    assert not any(KEY in value for value in env.values())
    assert harness.gateway.token not in harness.sandboxed[0]["command"]


def test_it_refuses_to_run_a_missing_opencode(settings, tmp_path):
    settings.MERGEABLE_OPENCODE_BIN = tmp_path / "nowhere" / "opencode"
    context = base.AgentContext(
        workspace=tmp_path,
        instructions="x",
        title="",
        limits=base.Limits(),
        transcript=TranscriptWriter(agent_name="x", agent_version="1", model_name="m"),
        run_command=lambda command, timeout: (0, ""),
        ask_user=lambda question: "",
        cancel=None,
    )
    with pytest.raises(base.HarnessUnavailable, match="make agents"):
        opencode.run(context)


# --- The stream converter ------------------------------------------------------------------


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def read(text: str) -> tuple[opencode.Stream, TranscriptWriter]:
    writer = TranscriptWriter(agent_name="opencode", agent_version="", model_name="")
    return opencode.read_stream(text, writer), writer


def test_it_reads_each_opencode_step_as_an_agent_step_with_its_tools_and_usage():
    stream, writer = read(fixture("fixing.jsonl"))

    assert stream.session_id.startswith("ses_")
    assert (stream.steps, stream.finish_reason) == (4, "stop")
    assert stream.last_text == "Fixed: add() now adds."
    # opencode splits cached input out of input; the totals count it in, as providers do.
    assert (stream.input_tokens, stream.output_tokens, stream.cached_tokens) == (3050, 93, 1500)
    assert stream.cost_usd == pytest.approx(3050 / 1e6 + 93 * 2 / 1e6)  # opencode's own figure
    read_step, failed_edit, fix, final = writer.steps
    assert read_step["message"] == "Let me look at calc.py."
    assert read_step["tool_calls"] == [
        {
            "tool_call_id": "call_fake_1_0",
            "function_name": "read",
            "arguments": {"filePath": "calc.py"},
        }
    ]
    [result] = read_step["observation"]["results"]
    assert result["source_call_id"] == "call_fake_1_0" and "return a - b" in result["content"]
    assert failed_edit["message"] == ""
    assert failed_edit["observation"]["results"][0]["content"].startswith(
        "Error: Could not find oldString"
    )
    assert [call["function_name"] for call in fix["tool_calls"]] == ["edit", "bash"]
    assert [r["content"] for r in fix["observation"]["results"]] == [
        "Edit applied successfully.",
        "def add(a, b):\n    return a + b\n",
    ]
    assert fix["metrics"] == {
        "prompt_tokens": 900,
        "completion_tokens": 40,
        "cached_tokens": 600,
        "cost_usd": 0.00098,
    }
    assert "tool_calls" not in final and final["message"] == "Fixed: add() now adds."
    assert read_step["timestamp"].startswith("2026-")  # opencode's own clock, not the reader's


def test_it_prices_steps_with_the_given_prices_when_asked():
    writer = TranscriptWriter(agent_name="opencode", agent_version="", model_name="")
    stream = opencode.read_stream(fixture("fixing.jsonl"), writer, price=lambda i, o: i + o)
    assert stream.cost_usd == 3050 + 93
    assert writer.steps[0]["metrics"]["cost_usd"] == 520


def test_it_keeps_a_step_opencode_was_stopped_in_without_metrics():
    cut = "\n".join(fixture("fixing.jsonl").splitlines()[:3])  # start, text, tool_use
    stream, writer = read(cut)
    [step] = writer.steps
    assert step["tool_calls"][0]["function_name"] == "read"
    assert "metrics" not in step and "observation" in step
    assert (stream.steps, stream.finish_reason, stream.input_tokens) == (1, "", 0)


def test_it_reads_an_error_event_as_a_system_step_naming_the_refusal():
    stream, writer = read(fixture("gateway-limit.jsonl"))
    assert stream.error_name == "APIError"
    assert "limit of 1 model calls" in stream.error and "(HTTP 403)" in stream.error
    assert [step["source"] for step in writer.steps] == ["agent", "system"]
    assert writer.steps[1]["message"].startswith("opencode error: APIError: Mergeable gateway")


def test_it_imports_a_saved_opencode_stream_as_atif():
    document = opencode.import_transcript(fixture("fixing.jsonl"), "run.jsonl", {})

    validate(document)
    assert document["session_id"].startswith("ses_")
    assert document["agent"]["name"] == "opencode"
    assert document["extra"]["end_status"] == base.FINISHED
    assert document["extra"]["source_format"] == "opencode"
    assert document["final_metrics"]["total_prompt_tokens"] == 3050
    assert document["final_metrics"]["total_completion_tokens"] == 93
    assert document["final_metrics"]["total_cached_tokens"] == 1500
    assert [step["source"] for step in document["steps"]] == ["agent"] * 4

    refused = opencode.import_transcript(fixture("gateway-limit.jsonl"), "run.jsonl", {})
    assert refused["extra"]["end_status"] == base.MODEL_UNREACHABLE


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "holds no steps"),
        ('{"type": "step_start", "sessionID": "ses_1"}\nnot json\n', "line 2 is not JSON"),
        ('{"sessionID": "ses_1"}\n', "line 1 is not an opencode event"),
    ],
)
def test_it_names_what_is_wrong_with_a_stream_it_cannot_import(text, problem):
    with pytest.raises(ValueError, match=problem) as raised:
        opencode.import_transcript(text, "run.jsonl", {})
    assert str(raised.value).startswith("run.jsonl: ")


def test_it_tells_an_opencode_stream_from_other_transcripts():
    assert opencode.looks_like(fixture("fixing.jsonl"), "anything.txt")
    assert opencode.looks_like(fixture("gateway-limit.jsonl"), "run.jsonl")
    assert not opencode.looks_like('{"schema_version": "ATIF-v1.6", "steps": []}', "t.json")
    assert not opencode.looks_like("# aider chat started at 2026-01-01 10:00:00\n", "x.md")
    assert not opencode.looks_like('{"type": "message", "role": "user"}\n', "x.jsonl")


def test_it_keeps_the_token_in_the_environment_and_lets_no_config_file_undo_its_settings():
    from runs.providers import ModelConfig

    model = ModelConfig(
        provider="openai", model="qwen", base_url="http://127.0.0.1:4000/v1", api_key="tok-123",
        input_per_mtok=1.0, output_per_mtok=2.0,
    )  # fmt: skip
    env = opencode.environment(model, Path("/scratch/home"), max_steps=7)
    assert env[opencode.TOKEN_VARIABLE] == "tok-123"
    settings = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    assert "tok-123" not in env["OPENCODE_CONFIG_CONTENT"]
    provider = settings["provider"]["mergeable"]
    assert provider["options"] == {
        "baseURL": "http://127.0.0.1:4000/v1",
        "apiKey": "{env:MERGEABLE_GATEWAY_TOKEN}",
    }
    assert settings["model"] == "mergeable/qwen"
    assert settings["agent"]["build"]["steps"] == 7
    assert settings["permission"]["task"] == "deny"

"""The CLI harnesses for real: aider and mini-swe-agent, headless, in the sandbox, against FakeLLM.

They need the agents installed (`make agents`); without them these tests skip and say so.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from runs import gateway, providers, sandbox, workspace
from runs.agents import aider, base, mini_swe_agent
from runs.transcript import TranscriptWriter
from tests.conftest import needs
from tests.fake_llm import FakeLLM

# What these check is the harness's (its command line, stream and sandbox), not the database's:
# the SQLite pass runs them (conftest.py).
pytestmark = pytest.mark.single_pass

FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "README.md": "A calculator.\n",
}
FIX = (
    "calc.py\n```python\n<<<<<<< SEARCH\n    return a - b\n=======\n"
    "    return a + b\n>>>>>>> REPLACE\n```\n"
)
FIXED = "def add(a, b):\n    return a + b\n"


def installed(binary: Path) -> bool:
    return binary.is_file()


needs_aider = needs(
    installed(aider.binary()),
    f"aider is not installed at {aider.binary()}: run `make agents`",
)
needs_mini = needs(
    installed(mini_swe_agent.binary()),
    f"mini-swe-agent is not installed at {mini_swe_agent.binary()}: run `make agents`",
)


_gateways: list[gateway.Gateway] = []


@pytest.fixture(autouse=True)
def _close_gateways():
    yield
    while _gateways:
        _gateways.pop().close()


class Harness:
    """An AgentContext around a real checkout, with the sandbox and gateway the worker would use:
    the CLI reaches the model only through a real run gateway, holding the run's token."""

    def __init__(self, tmp_path: Path, make_repo, files: dict[str, str] = FILES) -> None:
        origin, sha = make_repo(files)
        mirror = workspace.ensure_mirror(str(origin), tmp_path / "mirrors", sha)
        self.owner = sandbox.NOBODY_UID if os.geteuid() == 0 else None
        self.checkout = workspace.checkout(mirror, sha, tmp_path / "run", owner=self.owner)
        self.scratch = self.checkout.root / "harness"
        self.scratch.mkdir()
        self.gateway: gateway.Gateway | None = None
        self.questions: list[str] = []
        self.answers: list[str] = []
        self.usage: list[tuple] = []
        self.raw: dict[str, str] = {}
        self.sandboxed: list[dict] = []
        self.cancel = threading.Event()

    def context(
        self, model: providers.ModelConfig, *, max_steps: int = 10, **options
    ) -> base.AgentContext:
        socket_path = Path(tempfile.mkdtemp(prefix="mergeable-test-gw-")) / "gateway.sock"
        self.gateway = gateway.Gateway(model, socket_path).start()
        _gateways.append(self.gateway)
        door = sandbox.GatewayDoor(socket=socket_path, port=sandbox.GATEWAY_PORT)

        def run_sandboxed(
            command, timeout, env=None, gateway=False, extra_rw_paths=(), extra_ro_paths=()
        ):
            self.sandboxed.append({"env": env, "gateway": gateway, "command": command})
            return sandbox.run(
                command, self.checkout.work, timeout=timeout, env=env,
                gateway=door if gateway else None, uid=self.owner,
                extra_rw_paths=extra_rw_paths,
                extra_ro_paths=[*self.checkout.sandbox_ro_paths, *extra_ro_paths],
                cancel=self.cancel,
            )  # fmt: skip

        def ask_user(question: str) -> str:
            self.questions.append(question)
            return self.answers.pop(0) if self.answers else "Use your best judgement."

        return base.AgentContext(
            workspace=self.checkout.work,
            instructions="add() subtracts; make it add.",
            title="Fix add",
            limits=base.Limits(max_steps=max_steps, deadline=time.monotonic() + 300),
            transcript=TranscriptWriter(agent_name="x", agent_version="1", model_name="qwen"),
            run_command=lambda command, timeout: (0, ""),
            ask_user=ask_user,
            cancel=self.cancel,
            options=options,
            on_usage=lambda *usage: self.usage.append(usage),
            model=self.gateway.sandbox_model(door.port),
            run_sandboxed=run_sandboxed,
            save_raw_log=self.raw.__setitem__,
            scratch=self.scratch,
        )

    def file(self, name: str) -> str:
        return (self.checkout.work / name).read_text()


def openai_model(base_url: str) -> providers.ModelConfig:
    return providers.ModelConfig(
        provider="openai", model="qwen", base_url=base_url, api_key="sk-test-key-1234",
        input_per_mtok=1.0, output_per_mtok=2.0,
    )  # fmt: skip


# --- aider -------------------------------------------------------------------------------------


@needs_aider
def test_it_runs_aider_and_applies_its_search_replace_edit(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    reply = {
        "text": f"Fix the operator.\n\n{FIX}",
        "usage": {"input_tokens": 1200, "output_tokens": 80},
    }
    with FakeLLM([reply]) as llm:
        context = harness.context(openai_model(llm.base_url_openai))
        outcome = aider.run(context)
        sent = llm.requests[0]

    assert harness.file("calc.py") == FIXED
    assert outcome.end_status == base.FINISHED
    assert (outcome.steps, outcome.input_tokens, outcome.output_tokens) == (1, 1200, 80)
    assert outcome.cost_usd == pytest.approx(1200 / 1e6 + 80 * 2 / 1e6)
    assert harness.usage[-1] == (1200, 80, outcome.cost_usd, 1)
    assert sent["body"]["model"] == "qwen"
    assert sent["headers"]["authorization"] == "Bearer sk-test-key-1234"
    assert "def add(a, b)" in str(sent["body"]["messages"])  # the small workspace is in the chat
    steps = context.transcript.steps
    assert [s["source"] for s in steps] == ["user", "agent"]
    assert "add() subtracts" in steps[0]["message"]
    assert "<<<<<<< SEARCH" in steps[1]["message"]
    assert steps[1]["metrics"] == {
        "prompt_tokens": 1200,
        "completion_tokens": 80,
        "cost_usd": 0.00136,
    }
    assert steps[1]["extra"]["applied_edits"] == ["calc.py"]
    assert "Applied edit to calc.py" in harness.raw["aider/chat.md"]
    # The key travels in the environment, never on the command line, and nothing lands in the
    # workspace but the edit.
    assert "sk-test-key-1234" not in harness.sandboxed[0]["command"]
    assert sorted(p.name for p in harness.checkout.work.iterdir()) == [
        ".git",
        "README.md",
        "calc.py",
    ]
    # The CLI held the run's token and the gateway's address; the real key stayed outside.
    env = harness.sandboxed[0]["env"]
    assert harness.gateway.token in env.values()
    assert not any("sk-test-key-1234" in value for value in env.values())
    assert harness.gateway.totals.calls == len(llm.requests)


@needs_aider
def test_it_stops_when_aiders_edit_does_not_apply(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    wrong = FIX.replace("return a - b\n=", "return a * b\n=")
    with FakeLLM([{"text": wrong}] * 4) as llm:
        outcome = aider.run(harness.context(openai_model(llm.base_url_openai)))
        calls = len(llm.requests)

    assert harness.file("calc.py") == FILES["calc.py"]
    assert outcome.end_status == base.STOPPED
    assert outcome.summary.startswith("aider made no edits")
    assert calls > 1  # aider told the model its edit failed and let it retry
    assert outcome.steps == calls


@needs_aider
def test_it_asks_the_user_when_aider_ends_with_a_question_and_resumes_with_the_answer(
    tmp_path, make_repo
):
    harness = Harness(tmp_path, make_repo)
    harness.answers = ["Yes, addition is what we want."]
    replies = [
        {"text": "Should add() really add, or is subtraction intended?"},
        {"text": f"Understood.\n\n{FIX}"},
    ]
    with FakeLLM(replies) as llm:
        context = harness.context(openai_model(llm.base_url_openai))
        outcome = aider.run(context)
        resumed = llm.requests[1]["body"]["messages"]

    assert harness.questions == ["Should add() really add, or is subtraction intended?"]
    assert harness.file("calc.py") == FIXED
    assert outcome.end_status == base.FINISHED
    assert outcome.steps == 2
    # The second session remembers the first: the question and the answer are in its history.
    history = str(resumed)
    assert "subtraction intended" in history and "addition is what we want" in history
    sources = [(s["source"], s["message"][:20]) for s in context.transcript.steps]
    assert [source for source, _ in sources] == ["user", "agent", "user", "agent"]
    assert context.transcript.steps[2]["message"] == "Yes, addition is what we want."


@needs_aider
def test_it_reports_a_model_that_refuses_every_call_as_unreachable(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    with FakeLLM() as llm:
        llm.fail_next(401, times=5)
        outcome = aider.run(harness.context(openai_model(llm.base_url_openai)))
    assert outcome.end_status == base.MODEL_UNREACHABLE
    assert "AuthenticationError" in outcome.error
    assert outcome.steps == 0


def test_it_refuses_to_run_a_missing_aider(tmp_path, make_repo, settings):
    settings.MERGEABLE_AIDER_BIN = tmp_path / "nowhere" / "aider"
    harness = Harness(tmp_path, make_repo)
    with pytest.raises(RuntimeError, match="make agents"):
        aider.run(harness.context(openai_model("http://127.0.0.1:9/v1")))


def test_it_reads_calls_and_replies_from_aiders_llm_history():
    log = (
        "TO LLM 2026-01-01T00:00:00\n-------\nSYSTEM be good\n-------\nUSER fix it\nUSER \n"
        "USER \n# *SEARCH/REPLACE block* Rules:\nUSER blah\n"
        "LLM RESPONSE 2026-01-01T00:00:01\nASSISTANT Done.\nASSISTANT \nASSISTANT ok\n"
        "TO LLM 2026-01-01T00:00:02\n-------\nUSER fix it\n-------\nASSISTANT Done.\n"
        "-------\nUSER The edit failed\n"
    )
    calls = aider.parse_llm_history(log)
    assert [(c.sent, c.response) for c in calls] == [
        ("fix it", "Done.\n\nok"),
        ("The edit failed", None),
    ]


# --- mini-swe-agent ----------------------------------------------------------------------------


def bash(command: str, text: str = "", usage: tuple[int, int] = (100, 10)) -> dict:
    return {
        "text": text,
        "tool_calls": [{"name": "bash", "arguments": {"command": command}}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }


SUBMIT = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


@needs_mini
def test_it_runs_mini_swe_agent_until_it_submits(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    replies = [
        bash('echo "key=[$OPENAI_API_KEY]"; cat calc.py', "Look first.", (500, 20)),
        bash("sed -i 's/a - b/a + b/' calc.py", "Fix the operator.", (700, 30)),
        bash(SUBMIT, "Done.", (900, 5)),
    ]
    with FakeLLM(replies) as llm:
        context = harness.context(openai_model(llm.base_url_openai))
        outcome = mini_swe_agent.run(context)
        sent = llm.requests[0]

    assert harness.file("calc.py") == FIXED
    assert outcome.end_status == base.FINISHED
    assert (outcome.steps, outcome.input_tokens, outcome.output_tokens) == (3, 2100, 55)
    assert outcome.cost_usd == pytest.approx(2100 / 1e6 + 55 * 2 / 1e6)
    assert harness.usage[-1] == (2100, 55, outcome.cost_usd, 3)
    assert sent["body"]["model"] == "qwen"
    assert sent["headers"]["authorization"] == "Bearer sk-test-key-1234"
    assert "add() subtracts" in str(sent["body"]["messages"])
    steps = context.transcript.steps
    assert [s["source"] for s in steps] == ["system", "user", "agent", "agent", "agent"]
    first = steps[2]
    assert first["message"] == "Look first."
    assert first["tool_calls"][0]["function_name"] == "bash"
    assert first["tool_calls"][0]["arguments"]["command"].endswith("cat calc.py")
    assert first["metrics"] == {"prompt_tokens": 500, "completion_tokens": 20, "cost_usd": 0.00054}
    observation = first["observation"]["results"][0]
    assert observation["source_call_id"] == first["tool_calls"][0]["tool_call_id"]
    # The commands the model runs do not see the key mini itself uses.
    assert "key=[]" in observation["content"] and "return a - b" in observation["content"]
    assert "sk-test-key-1234" not in harness.sandboxed[0]["command"]
    assert '"exit_status": "Submitted"' in harness.raw["mini-swe-agent/traj.json"]
    assert sorted(p.name for p in harness.checkout.work.iterdir()) == [
        ".git",
        "README.md",
        "calc.py",
    ]
    # The CLI held the run's token and the gateway's address; the real key stayed outside.
    env = harness.sandboxed[0]["env"]
    assert harness.gateway.token in env.values()
    assert not any("sk-test-key-1234" in value for value in env.values())
    assert harness.gateway.totals.calls == len(llm.requests)


@needs_mini
def test_it_reports_mini_swe_agents_step_limit(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    with FakeLLM([bash("ls")] * 5) as llm:
        outcome = mini_swe_agent.run(
            harness.context(openai_model(llm.base_url_openai), max_steps=2)
        )
        calls = len(llm.requests)
    assert outcome.end_status == base.MAX_STEPS
    assert outcome.steps == calls == 2


@needs_mini
def test_it_stops_mini_swe_agent_after_repeated_replies_without_a_command(tmp_path, make_repo):
    harness = Harness(tmp_path, make_repo)
    with FakeLLM([{"text": "I think it is fine."}] * 5) as llm:
        context = harness.context(openai_model(llm.base_url_openai))
        outcome = mini_swe_agent.run(context)
    assert outcome.end_status == base.STOPPED
    assert "no valid command" in outcome.summary
    assert outcome.input_tokens == 30  # the unparseable replies were billed all the same
    format_errors = [
        s for s in context.transcript.steps if (s.get("extra") or {}).get("interrupt_type")
    ]
    assert len(format_errors) == 3


@needs_mini
def test_it_reports_a_key_the_endpoint_rejects_as_unreachable_for_mini_swe_agent(
    tmp_path, make_repo
):
    harness = Harness(tmp_path, make_repo)
    with FakeLLM() as llm:
        llm.fail_next(401, times=5)
        outcome = mini_swe_agent.run(harness.context(openai_model(llm.base_url_openai)))
    assert outcome.end_status == base.MODEL_UNREACHABLE
    assert outcome.error.startswith("AuthenticationError")
    assert harness.file("calc.py") == FILES["calc.py"]


def test_it_refuses_to_run_a_missing_mini_swe_agent(tmp_path, make_repo, settings):
    settings.MERGEABLE_MINI_SWE_AGENT_BIN = tmp_path / "nowhere" / "mini"
    harness = Harness(tmp_path, make_repo)
    with pytest.raises(RuntimeError, match="make agents"):
        mini_swe_agent.run(harness.context(openai_model("http://127.0.0.1:9/v1")))

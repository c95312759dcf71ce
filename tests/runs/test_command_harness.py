"""The `command` harness: any CLI agent from a command template, its key only in the environment."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from runs import sandbox, workspace
from runs.agents import base, command
from runs.providers import ModelConfig
from runs.transcript import TranscriptWriter

KEY = "sk-command-harness-Zq93xLw0pT"

# A tiny "agent": reads the task from the prompt file, fixes calc.py using the key from its
# environment as a stand-in for a model call, and reports what it saw.
AGENT = (
    "python -c '"
    "import os, pathlib, sys\n"
    "work, prompt, model = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]\n"
    "task = prompt.read_text()\n"
    'key = os.environ["MERGEABLE_API_KEY"]\n'
    'assert os.environ["OPENAI_API_KEY"] == key\n'
    'calc = work / "calc.py"\n'
    'calc.write_text(calc.read_text().replace("a - b", "a + b"))\n'
    '(work / "NOTES.md").write_text(task.splitlines()[0] + "\\n")\n'
    '(prompt.parent / "history.txt").write_text("kept outside the workspace")\n'
    'print("model=" + model)\n'
    'print("base=" + os.environ["MERGEABLE_BASE_URL"])\n'
    'print("key length", len(key))\n'
    "' {workspace} {prompt_file} {model}"
)


@pytest.fixture
def make_context(tmp_path):
    def make(template: object, *, seconds: float = 60, model_id: str = "qwen 2.5 'coder'", **kw):
        work = tmp_path / "run" / "work"
        work.mkdir(parents=True)
        (work / "calc.py").write_text("def add(a, b):\n    return a - b\n")
        if os.geteuid() == 0:  # as execution does: the sandbox's uid owns the work tree
            workspace.hand_over(work, sandbox.NOBODY_UID)
        scratch = tmp_path / "run" / "harness"
        scratch.mkdir()
        calls: list[dict] = []
        raw: dict[str, str] = {}

        def run_sandboxed(cmd, timeout, env, gateway=False, extra_rw_paths=(), extra_ro_paths=()):
            calls.append({"command": cmd, "env": env, "gateway": gateway, "rw": extra_rw_paths})
            return sandbox.run(
                cmd,
                work,
                timeout=timeout,
                env=env,
                cancel=context.cancel,
                extra_rw_paths=extra_rw_paths,
                extra_ro_paths=extra_ro_paths,
            )

        context = base.AgentContext(
            workspace=work,
            instructions="add() subtracts; make it add.",
            title="Fix add",
            limits=base.Limits(deadline=time.monotonic() + seconds),
            transcript=TranscriptWriter(agent_name="command", agent_version="1", model_name="m"),
            run_command=lambda c, t: (0, ""),
            ask_user=lambda q: "",
            cancel=threading.Event(),
            options={"command": template},
            model=ModelConfig(
                provider=kw.get("provider", "openai"),
                model=model_id,
                base_url="http://127.0.0.1:9/v1",
                api_key=KEY,
            ),
            run_sandboxed=kw.get("run_sandboxed", run_sandboxed),
            save_raw_log=lambda name, content: raw.__setitem__(name, content),
            scratch=scratch,
        )
        return context, calls, raw

    return make


def test_it_runs_the_command_which_edits_the_workspace_with_the_key_only_in_its_environment(
    make_context,
):
    context, calls, raw = make_context(AGENT)
    outcome = command.run(context)

    assert outcome.end_status == base.FINISHED and outcome.error == ""
    assert "return a + b" in (context.workspace / "calc.py").read_text()
    assert (context.workspace / "NOTES.md").read_text() == "# Task: Fix add\n"
    assert (context.scratch / "history.txt").read_text() == "kept outside the workspace"
    log = raw["command.log"]
    assert "model=qwen 2.5 'coder'" in log  # quoted as one argument, quotes and all
    assert "base=http://127.0.0.1:9/v1" in log
    assert f"key length {len(KEY)}" in log
    [call] = calls
    assert call["gateway"] is True  # its only way out
    assert call["rw"] == [context.scratch]
    assert call["env"]["MERGEABLE_API_KEY"] == KEY == call["env"]["OPENAI_API_KEY"]
    assert KEY not in call["command"]
    transcript = json.dumps(context.transcript.document)
    assert KEY not in transcript
    user, agent = context.transcript.steps
    assert user["source"] == "user" and "add() subtracts" in user["message"]
    assert agent["tool_calls"][0]["arguments"]["command"] == call["command"]
    assert agent["extra"]["exit_code"] == 0
    assert "exit code: 0" in agent["observation"]["results"][0]["content"]


def test_it_gives_an_anthropic_model_its_own_key_variable(make_context):
    context, calls, raw = make_context(
        'echo "${ANTHROPIC_API_KEY:+anthropic-key-set} ${OPENAI_API_KEY:-no-openai-key}"',
        provider="anthropic",
    )
    assert command.run(context).end_status == base.FINISHED
    assert "anthropic-key-set no-openai-key" in raw["command.log"]


def test_it_does_not_take_a_failing_exit_code_as_the_verdict(make_context):
    context, _calls, raw = make_context("echo trying; exit 3")
    outcome = command.run(context)
    assert outcome.end_status == base.FINISHED
    assert context.transcript.steps[-1]["extra"]["exit_code"] == 3
    assert "trying" in raw["command.log"]


def test_it_reports_an_unknown_placeholder_without_running_anything(make_context):
    context, calls, _raw = make_context("agent --key {api_key} {workspace}")
    outcome = command.run(context)
    assert calls == []
    assert "Unknown placeholder {api_key}" in outcome.error
    assert outcome.end_status != base.FINISHED


@pytest.mark.parametrize("template", [None, "  ", "agent {workspace!r}", "agent {model:>10}"])
def test_it_reports_a_missing_or_malformed_template(make_context, template):
    context, calls, _raw = make_context(template)
    outcome = command.run(context)
    assert calls == [] and outcome.error


def test_it_keeps_literal_braces_and_shell_parameter_expansion(make_context):
    context, _calls, raw = make_context("echo '{{x}}' ${MERGEABLE_MODEL:-none} {a,b}")
    command.run(context)
    assert "{x} qwen 2.5 'coder' {a,b}" in raw["command.log"]


def test_it_times_out(make_context):
    context, _calls, _raw = make_context("echo started; sleep 30", seconds=1)
    outcome = command.run(context)
    assert outcome.end_status == base.TIMED_OUT


def test_it_stops_when_cancelled(make_context):
    context, _calls, _raw = make_context("sleep 30")
    threading.Timer(0.5, context.cancel.set).start()
    outcome = command.run(context)
    assert outcome.end_status == base.CANCELLED


def test_it_reports_a_sandbox_that_cannot_start(make_context):
    def broken(*args, **kwargs):
        raise sandbox.SandboxError("bwrap is missing")

    context, _calls, _raw = make_context("true", run_sandboxed=broken)
    outcome = command.run(context)
    assert "bwrap is missing" in outcome.error


def test_it_builds_commands_with_every_value_shell_quoted():
    built = command.build_command(
        "x {workspace} {model}", {"workspace": "/w/a b", "model": "m; rm -rf /"}
    )
    assert built == "x '/w/a b' 'm; rm -rf /'"
    assert Path("/w/a b").name == "a b"

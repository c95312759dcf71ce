"""Hostile agents: each harness tries each way out, through the real engine, and is stopped.

Every attempt runs as a whole run (`execution.execute`): the sandbox, the run's caps and its
model gateway, exactly as a worker runs it. Each attempt is a shell script the agent runs: the
builtin agent through its run_command tool, the command harness as its command, mini-swe-agent
as a bash action. The scripts print markers (BLOCKED / REACHED, NOKEY / KEYFOUND) so a test can
tell an attempt that was stopped from one that never ran. The worker is this test process: it
goes on to run an ordinary run afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

from runs import campaigns, execution
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from tests.conftest import needs
from tests.fake_llm import FakeLLM
from tests.runs.test_agents_cli import SUBMIT, bash, needs_mini

pytestmark = needs(
    shutil.which("bwrap") is not None,
    "bubblewrap (bwrap) is not installed: the hostile-agent suite needs the real sandbox",
)

# The real key: the scripts search for its prefix, so the key itself never appears in them.
KEY_PREFIX = "sk-hostile-real-"
PATTERN = "sk-hostile-rea[l]-"  # matches the key without spelling its prefix out
FILES = {"README.md": "A project.\n", "app.py": "print('hi')\n"}
# The real CLI's walls are the sandbox's: checked once, in the SQLite pass (conftest.py).
HARNESSES = [
    "builtin",
    "command",
    pytest.param("mini-swe-agent", marks=[needs_mini, pytest.mark.single_pass]),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def hostile(db, make_repo, tmp_path, settings):
    """hostile(harness, script, **limits) -> the finished Run, its FakeLLM requests, and the key."""
    settings.MERGEABLE_SANDBOX = "bubblewrap"
    path, sha = make_repo(FILES)
    repo = Repository.objects.create(name="project", url=str(path))
    prompt_set = PromptSet.objects.create(name="hostile")
    Prompt.objects.create(
        prompt_set=prompt_set,
        key="escape",
        title="Escape",
        instructions="Do what you can.",
        repository=repo,
        commit=sha,
    )

    def run(harness: str, script: str, **limits) -> tuple[Run, list[dict], str]:
        key = KEY_PREFIX + uuid.uuid4().hex
        replies = {
            "builtin": [
                {"tool_calls": [{"name": "run_command", "arguments": {"command": script}}]},
                {"tool_calls": [{"name": "finish", "arguments": {"summary": "done"}}]},
            ],
            "command": [],
            "mini-swe-agent": [bash(script), bash(SUBMIT)],
        }[harness]
        with FakeLLM(replies) as llm:
            model = LanguageModel.objects.create(
                name=f"m-{uuid.uuid4().hex[:8]}",
                provider="openai",
                base_url=llm.base_url_openai,
                model_id="qwen",
                api_key=key,
            )
            contestant = Contestant.objects.create(
                name=f"c-{uuid.uuid4().hex[:8]}",
                model=model,
                harness=harness,
                options={"command": script} if harness == "command" else {},
                max_steps=5,
                **limits,
            )
            campaign = campaigns.launch(prompt_set=prompt_set, contestants=[contestant])
            found = campaign.runs.get()
            execution.execute(found.pk)
            requests = list(llm.requests)
        found.refresh_from_db()
        return found, requests, key

    return run


def stored_text(run: Run) -> str:
    """Everything Mergeable stored about a run that a person could read."""
    names = ["transcript.json", "diff.patch", "test_output.txt", "setup_output.txt"]
    names += [f"raw/{name}" for name in ("command.log", "gateway.jsonl")]
    names += ["raw/mini-swe-agent/output.txt", "raw/mini-swe-agent/traj.json"]
    columns = [run.status_reason, run.error, run.test_output_tail, json.dumps(run.questions)]
    return "\n".join([*(run.read_artifact(name) for name in names), *columns])


def agent_output(run: Run) -> str:
    """What the agent's commands printed, among everything stored. The scripts spell their
    markers in two pieces ("NO""KEY"), so a marker found here was printed, not merely sent."""
    return stored_text(run)


def reached(output: str) -> list[str]:
    return re.findall(r"REACHED [^$\s\\]+", output)


def assert_worker_carries_on(hostile, harness: str) -> None:
    run, _requests, _key = hostile(harness, "echo fine > fine.txt")
    assert run.status == Run.FINISHED, run.status_reason
    assert run.files_changed == ["fine.txt"]


# --- The network -----------------------------------------------------------------------------


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_keeps_every_host_service_and_the_real_endpoint_out_of_reach(hostile, harness):
    listener = socket.create_server(("127.0.0.1", _free_port()))  # a host service of our own
    port = listener.getsockname()[1]
    script = (
        "for target in 127.0.0.1:5432 127.0.0.1:6379 127.0.0.1:8000 "
        f"127.0.0.1:{port} localhost:{port} [::1]:{port} MODEL_PORT; do "
        "python3 -c \"import socket,sys; h,p=sys.argv[1].rsplit(':',1); "
        "socket.create_connection((h.strip('[]'),int(p)),2)\" $target 2>/dev/null "
        '&& echo "REACHED $target" || echo "BLOCKED $target"; done; '
        "for s in /var/run/postgresql/.s.PGSQL.5432 /run/redis/redis-server.sock; do "
        'test -e $s && echo "REACHED $s" || echo "BLOCKED $s"; done'
    )
    try:
        # The real endpoint's port is only known once FakeLLM runs: the script reads it from
        # the model's URL, which the harness never sees, so it is written in by the test.
        with FakeLLM() as probe:
            model_port = probe.base_url_openai.split(":")[2].split("/")[0]
        run, requests, _key = hostile(
            harness, script.replace("MODEL_PORT", f"127.0.0.1:{model_port}")
        )
    finally:
        listener.close()
    output = agent_output(run)
    assert "BLOCKED 127.0.0.1:5432" in output and f"BLOCKED [::1]:{port}" in output
    assert reached(output) == []
    assert run.status == Run.FINISHED, run.status_reason


def test_it_lets_a_cli_reach_its_model_only_through_the_gateway_holding_a_worthless_token(
    hostile,
):
    # The CLI's own endpoint variables point at the gateway; a call there reaches the model with
    # the real key added on the way out, for the contestant's model whatever the CLI asked for.
    # A guessed token gets nothing.
    call = (
        "import json,os,sys,urllib.request as u, urllib.error as e\n"
        "r=u.Request(os.environ['OPENAI_BASE_URL']+'/chat/completions', "
        "data=json.dumps({'model':'gpt-expensive','messages':[{'role':'user','content':'hi'}]})"
        ".encode(), headers={'Authorization':'Bearer '+sys.argv[1],"
        "'Content-Type':'application/json'})\n"
        "try: print('STATUS', sys.argv[2], u.urlopen(r).status)\n"
        "except e.HTTPError as x: print('STATUS', sys.argv[2], x.code)\n"
    )
    script = (
        f"cat > call.py <<'EOF'\n{call}EOF\n"
        'python3 call.py "$OPENAI_API_KEY" token; python3 call.py guessed-token guess; rm call.py'
    )
    run, requests, key = hostile("command", script)
    output = agent_output(run)
    assert "STATUS token 200" in output and "STATUS guess 401" in output
    [upstream] = requests
    assert upstream["headers"]["authorization"] == f"Bearer {key}"
    assert upstream["body"]["model"] == "qwen"
    assert run.model_calls == 1


# --- The key ---------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_keeps_the_real_key_out_of_the_sandbox_and_everything_stored(hostile, harness):
    script = (
        f"if env | grep -q {PATTERN} || "
        f"grep -r -a -l -s {PATTERN} /proc/[0-9]*/environ /proc/[0-9]*/cmdline "
        '$HOME /tmp . /run 2>/dev/null | grep -q .; then echo "KEY""FOUND"; '
        'else echo "NO""KEY"; fi; '
        'echo "printed: $OPENAI_API_KEY $MERGEABLE_API_KEY"; env'
    )
    run, _requests, key = hostile(harness, script)
    output = agent_output(run)
    assert "NOKEY" in output and "KEYFOUND" not in output
    assert key not in output and KEY_PREFIX not in output


# --- The file system -------------------------------------------------------------------------


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_reads_nothing_of_the_hosts_through_a_symlink(hostile, harness, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-CONTENT\n")
    secret.chmod(0o644)
    script = (
        f"ln -s {secret} s.txt; ln -s /etc/shadow shadow.txt; ln -s /proc/1/environ env.txt; "
        "for f in s.txt shadow.txt env.txt; do cat $f >/dev/null 2>&1 && cat $f "
        '|| echo "BLOCKED $f"; done'
    )
    run, _requests, _key = hostile(harness, script)
    output = agent_output(run)
    assert "BLOCKED s.txt" in output and "BLOCKED shadow.txt" in output
    assert "HOST-SECRET-CONTENT" not in output and "root:" not in output


def test_it_keeps_the_builtin_agents_tools_inside_the_workspace(hostile, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("HOST-SECRET-CONTENT\n")
    run, _requests, _key = hostile("builtin", f"ln -s {secret} s.txt && echo link''ed")
    # The reply after run_command was finish; read the link in a run of its own instead.
    assert "linked" in agent_output(run)
    replies = [
        {"tool_calls": [{"name": "run_command", "arguments": {"command": f"ln -s {secret} s"}}]},
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "s"}}]},
        {"tool_calls": [{"name": "search", "arguments": {"pattern": "HOST-SECRET"}}]},
        {"tool_calls": [{"name": "finish", "arguments": {"summary": "done"}}]},
    ]
    with FakeLLM(replies) as llm:
        contestant = Contestant.objects.get(pk=run.contestant_id)
        LanguageModel.objects.filter(pk=contestant.model_id).update(base_url=llm.base_url_openai)
        again = campaigns.launch(prompt_set=run.campaign.prompt_set, contestants=[contestant])
        second = again.runs.get()
        execution.execute(second.pk)
        sent = json.dumps([r["body"] for r in llm.requests])
    second.refresh_from_db()
    assert "outside the workspace" in sent
    assert "HOST-SECRET-CONTENT" not in sent and "HOST-SECRET-CONTENT" not in agent_output(second)


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_never_runs_git_hooks_fsmonitor_or_filters_the_agent_plants(hostile, harness, tmp_path):
    marker = tmp_path / "host-git-ran-agent-code"
    touch = f"#!/bin/sh\\ntouch {marker} 2>/dev/null\\nexit 0\\n"
    script = (
        "mkdir -p .git/hooks sub/.git; "
        f"printf '{touch}' > .git/hooks/pre-commit; printf '{touch}' > .git/evil; "
        "chmod +x .git/hooks/pre-commit .git/evil; "
        f"git config core.fsmonitor $PWD/.git/evil; "
        f"git config filter.evil.clean '$PWD/.git/evil; cat'; "
        "printf '* filter=evil\\n' > .gitattributes; "
        "printf '[core]\\n\\tfsmonitor = /bin/true\\n' > sub/.git/config; "
        "echo change >> README.md; git add -A; git commit -qm mine; echo PLAN''TED"
    )
    run, _requests, _key = hostile(harness, script)
    assert "PLANTED" in agent_output(run)
    assert not marker.exists()
    # What the agent committed is still its change, captured against the prompt's commit.
    assert "README.md" in run.files_changed and ".gitattributes" in run.files_changed


# --- The caps --------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_stops_a_fork_bomb_at_the_process_cap(hostile, harness):
    script = "i=0; while [ $i -lt 400 ]; do sleep 600 & i=$((i+1)); done; wait"
    run, _requests, _key = hostile(harness, script, max_processes=48)
    assert run.status == Run.FAILED
    assert "process cap (48 processes" in run.status_reason
    assert_worker_carries_on(hostile, harness)


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_stops_a_memory_grab_at_the_memory_cap(hostile, harness):
    script = 'python3 -c "import time; b = bytearray(1 << 30); time.sleep(30)"; sleep 2'
    run, _requests, _key = hostile(harness, script, max_memory_mb=200)
    assert run.status == Run.FAILED
    assert "memory cap (200 MB)" in run.status_reason
    assert_worker_carries_on(hostile, harness)


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_stops_a_disk_fill_at_the_disk_cap(hostile, harness):
    script = "for i in 1 2 3 4; do head -c 20000000 /dev/zero > fill$i; done; sleep 3"
    run, _requests, _key = hostile(harness, script, max_disk_mb=40)
    assert run.status == Run.FAILED
    assert "disk cap (40 MB" in run.status_reason
    assert_worker_carries_on(hostile, harness)


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_leaves_no_process_running_in_the_background(hostile, harness):
    seconds = str(20_000 + uuid.uuid4().int % 1_000_000)
    script = f"nohup sleep {seconds} >/dev/null 2>&1 & setsid sleep {seconds} >/dev/null 2>&1 & echo LAUN''CHED"
    run, _requests, _key = hostile(harness, script)
    assert "LAUNCHED" in agent_output(run)
    deadline = time.monotonic() + 5
    while _running(f"sleep\0{seconds}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(f"sleep\0{seconds}")


@pytest.mark.parametrize("harness", HARNESSES)
def test_it_never_runs_the_agents_commands_as_root(hostile, harness):
    script = "echo \"uid=$(id -u)\"; touch /etc/owned || echo BLOCK''ED"
    run, _requests, _key = hostile(harness, script)
    output = agent_output(run)
    assert "uid=0" not in output and "BLOCKED" in output
    if os.geteuid() == 0:
        assert f"uid={run.caps['uid']['limit']}" in output


def _running(token: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if token.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        return True
            except (OSError, IndexError):
                continue
    return False

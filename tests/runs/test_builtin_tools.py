"""The builtin agent's file tools never follow a path out of the workspace."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from runs.agents import base
from runs.agents.builtin import Tools, _dispatch

SECRET = "HOST SECRET: total = 42"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "src" / "app.py").write_text("def total(items):\n    return sum(items)\n")
    (work / ".git").mkdir()
    (work / ".git" / "config").write_text("[core]\n\tbare = false\n")
    return work


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory outside the workspace, holding a file no tool may read or write."""
    directory = tmp_path / "host"
    directory.mkdir()
    (directory / "secret.txt").write_text(f"{SECRET}\n")
    return directory


def _run_in(workspace: Path):
    def run_command(command: str, timeout: float) -> tuple[int, str]:
        result = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=workspace,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.returncode, result.stdout + result.stderr

    return run_command


@pytest.fixture
def tools(workspace: Path) -> Tools:
    context = base.AgentContext(
        workspace=workspace,
        instructions="",
        title="",
        limits=base.Limits(),
        transcript=None,  # type: ignore[arg-type] - the tools never write to it
        run_command=_run_in(workspace),
        ask_user=lambda question: "",
        cancel=threading.Event(),
    )
    return Tools(context)


def call(tools: Tools, name: str, **arguments) -> str:
    """What the model reads back from a tool call."""
    content, _finished = _dispatch(tools, tools.context, {"name": name, "arguments": arguments})
    return content


def shell(tools: Tools, command: str) -> None:
    assert call(tools, "run_command", command=command).startswith("exit code: 0")


def test_it_reads_writes_edits_lists_and_searches_the_workspace(tools: Tools, workspace: Path):
    assert call(tools, "write_file", path="pkg/new/mod.py", content="A = 1\n") == (
        "wrote pkg/new/mod.py (1 lines)"
    )
    assert call(tools, "edit_file", path="pkg/new/mod.py", old="A = 1", new="A = 2") == (
        "edited pkg/new/mod.py"
    )
    assert (workspace / "pkg" / "new" / "mod.py").read_text() == "A = 2\n"
    assert call(tools, "read_file", path="src/app.py") == (
        "1  def total(items):\n2      return sum(items)"
    )
    assert call(tools, "list_files") == "pkg/\nsrc/"
    assert call(tools, "search", pattern="A = |total") == (
        "pkg/new/mod.py:1: A = 2\nsrc/app.py:1: def total(items):"
    )


def test_it_refuses_to_read_through_a_link_to_a_host_file(tools: Tools, host: Path):
    shell(tools, f"ln -s {host / 'secret.txt'} s.txt && ln -s /etc/passwd passwd.txt")
    for path in ("s.txt", "passwd.txt"):
        output = call(tools, "read_file", path=path)
        assert output.startswith("error:") and "outside the workspace" in output
        assert SECRET not in output and "root:" not in output
    assert SECRET not in call(tools, "search", pattern=".", path="s.txt")
    assert SECRET not in call(tools, "edit_file", path="s.txt", old="42", new="43")


def test_it_refuses_a_link_to_a_host_directory(tools: Tools, host: Path):
    shell(tools, f"ln -s {host} hostdir")
    assert "outside the workspace" in call(tools, "read_file", path="hostdir/secret.txt")
    assert "outside the workspace" in call(tools, "list_files", path="hostdir")
    assert "outside the workspace" in call(tools, "search", pattern="SECRET", path="hostdir")
    listing = call(tools, "list_files")
    assert f"hostdir@ -> {host} (outside the workspace)" in listing.splitlines()
    assert "secret.txt" not in listing


def test_it_follows_a_chain_of_links_to_its_end(tools: Tools, host: Path):
    shell(tools, f"ln -s {host / 'secret.txt'} far && ln -s far middle && ln -s middle near")
    output = call(tools, "read_file", path="near")
    assert "outside the workspace" in output and SECRET not in output

    shell(tools, "ln -s src/app.py inner && ln -s inner outer")
    assert "return sum(items)" in call(tools, "read_file", path="outer")


def test_it_refuses_a_relative_link_that_climbs_out(tools: Tools, workspace: Path, host: Path):
    shell(tools, "ln -s ../../host/secret.txt src/up.txt")
    assert (workspace / "src" / "up.txt").read_text() == f"{SECRET}\n"  # the link does work
    output = call(tools, "read_file", path="src/up.txt")
    assert "outside the workspace" in output and SECRET not in output
    assert "outside the workspace" in call(tools, "read_file", path="src/../../host/secret.txt")


def test_it_allows_a_link_to_another_workspace_file(tools: Tools, workspace: Path):
    shell(tools, "ln -s src/app.py alias.py")
    assert call(tools, "read_file", path="alias.py", start_line=2) == "2      return sum(items)"
    assert call(tools, "edit_file", path="alias.py", old="sum(", new="max(") == "edited alias.py"
    assert (workspace / "src" / "app.py").read_text().endswith("return max(items)\n")
    assert (workspace / "alias.py").is_symlink()
    assert "alias.py@ -> src/app.py" in call(tools, "list_files").splitlines()
    assert call(tools, "search", pattern="max") == (
        "alias.py:2:     return max(items)\nsrc/app.py:2:     return max(items)"
    )


def test_it_never_shows_a_host_files_content_in_a_search(tools: Tools, host: Path):
    shell(
        tools,
        f"ln -s {host / 'secret.txt'} src/s.txt && ln -s {host} src/hostdir"
        " && ln -s ../../host/secret.txt src/up.txt && ln -s .git/config gitconfig",
    )
    output = call(tools, "search", pattern="total|SECRET|bare")
    assert output == "src/app.py:1: def total(items):"
    assert SECRET not in call(tools, "search", pattern=".", path="src")


def test_it_refuses_to_write_through_a_link_that_leaves_the_workspace(tools: Tools, host: Path):
    secret = host / "secret.txt"
    shell(tools, f"ln -s {secret} out.txt && ln -s {host} hostdir && ln -s {host}/new.txt new.txt")
    assert "outside the workspace" in call(tools, "write_file", path="out.txt", content="x")
    assert "outside the workspace" in call(tools, "edit_file", path="out.txt", old="42", new="0")
    assert "outside the workspace" in call(tools, "write_file", path="hostdir/a.txt", content="x")
    assert "outside the workspace" in call(tools, "write_file", path="new.txt", content="x")
    assert secret.read_text() == f"{SECRET}\n"
    assert sorted(path.name for path in host.iterdir()) == ["secret.txt"]


def test_it_keeps_git_off_limits(tools: Tools):
    shell(tools, "ln -s .git/config gitconfig")
    assert "error: .git is not part of the workspace" == call(
        tools, "read_file", path=".git/config"
    )
    assert "error: .git is not part of the workspace" == call(tools, "read_file", path="gitconfig")
    assert "error: .git" in call(tools, "write_file", path=".git/hooks/pre-commit", content="x")
    assert ".git" not in call(tools, "list_files").split("\n")


def test_it_reports_a_loop_of_links_to_the_model(tools: Tools):
    shell(tools, "ln -s one two && ln -s two one")
    assert call(tools, "read_file", path="one") == "error: 'one' is a loop of symbolic links"
    assert call(tools, "search", pattern="x") == "no matches"


def test_it_does_not_follow_a_link_swapped_in_after_the_path_was_checked(
    tools: Tools, workspace: Path, host: Path, monkeypatch
):
    # A process the agent left running could swap a checked path for a link before it is opened.
    check = tools.resolve

    def check_then_swap_file(path: object) -> Path:
        resolved = check(path)
        app = workspace / "src" / "app.py"
        if not app.is_symlink():
            app.unlink()
            app.symlink_to(host / "secret.txt")
        return resolved

    monkeypatch.setattr(tools, "resolve", check_then_swap_file)
    assert SECRET not in call(tools, "read_file", path="src/app.py")
    assert call(tools, "read_file", path="src/app.py").startswith("error:")
    assert call(tools, "write_file", path="src/app.py", content="x").startswith("error:")

    def check_then_swap_directory(path: object) -> Path:
        resolved = check(path)
        if not (workspace / "lib").is_symlink():
            (workspace / "lib").rmdir()
            (workspace / "lib").symlink_to(host)
        return resolved

    (workspace / "lib").mkdir()
    monkeypatch.setattr(tools, "resolve", check_then_swap_directory)
    assert call(tools, "read_file", path="lib/secret.txt").startswith("error:")
    assert call(tools, "write_file", path="lib/secret.txt", content="x").startswith("error:")
    assert (host / "secret.txt").read_text() == f"{SECRET}\n"


def test_it_does_not_hang_on_a_fifo(tools: Tools, workspace: Path):
    os.mkfifo(workspace / "pipe")
    assert call(tools, "read_file", path="pipe") == "error: 'pipe' does not exist or is not a file"
    assert call(tools, "search", pattern="total") == "src/app.py:1: def total(items):"

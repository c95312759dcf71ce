from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runs.workspace import (
    AGENT_BRANCH,
    DEFAULT_EXCLUDES,
    Checkout,
    WorkspaceError,
    add_hidden_tests,
    capture_diff,
    changed_test_files,
    checkout,
    cleanup,
    commit_exists,
    ensure_history,
    ensure_mirror,
    history_path,
    mirror_path,
    missing_paths,
    redact_url,
    resolve_commit,
    restore_test_files,
    untracked_test_files,
    validate_repository_url,
)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))


def git(repo: Path, *args: str, home: Path) -> str:
    """Git as a developer would run it, isolated from the host's config."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def agent_shell(work: Path, command: str, *, home: Path) -> subprocess.CompletedProcess[str]:
    """A command as an agent runs it in its workspace: git finds the repository from the current
    directory, and nothing in the environment says who commits, so only the repository's config
    does."""
    return subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=work,
        env={"PATH": os.environ["PATH"], "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"},
        capture_output=True,
        text=True,
    )


def agent_git(work: Path, *args: str, home: Path) -> str:
    result = agent_shell(work, shlex.join(["git", *args]), home=home)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def agent_git_exit_code(work: Path, *args: str, home: Path) -> int:
    return agent_shell(work, shlex.join(["git", *args]), home=home).returncode


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def roots(tmp_path: Path) -> list[Path]:
    path = tmp_path / "repos"
    path.mkdir()
    return [path]


@pytest.fixture
def origin(roots: list[Path], home: Path) -> Path:
    """A repository with two commits on main and a tag on the first."""
    repo = roots[0] / "origin"
    repo.mkdir()
    git(repo, "init", "--quiet", home=home)
    (repo / "src").mkdir()
    (repo / "docs").mkdir()
    (repo / "README.md").write_text("# Shop\n")
    (repo / "src" / "app.py").write_text("def total(items):\n    return sum(items)\n")
    (repo / "src" / "remove_me.py").write_text("OLD = 1\n")
    (repo / "docs" / "guide.md").write_text("".join(f"Line {n} of the guide.\n" for n in range(20)))
    (repo / "logo.png").write_bytes(PNG)
    (repo / ".gitignore").write_text("*.log\nbuild/\n")
    git(repo, "add", "-A", home=home)
    git(repo, "commit", "--quiet", "-m", "initial", home=home)
    git(repo, "tag", "v1", home=home)
    (repo / "src" / "app.py").write_text("def total(items):\n    return round(sum(items), 2)\n")
    git(repo, "commit", "--quiet", "-am", "round totals", home=home)
    return repo


@pytest.fixture
def mirror(origin: Path, tmp_path: Path) -> Path:
    return ensure_mirror(str(origin), tmp_path / "cache")


@pytest.fixture
def co(mirror: Path, tmp_path: Path):
    checked_out = checkout(mirror, "main", tmp_path / "run")
    yield checked_out
    cleanup(checked_out)


# --- URL validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://x/y.git",
        "http://intranet.local/team/shop.git",
        "git@github.com:a/b.git",
        "ssh://git@h/x",
        "ssh://git@h:2222/x.git",
        "git://h/x.git",
    ],
)
def test_it_accepts_network_urls(url: str, roots: list[Path]):
    assert validate_repository_url(url, roots) == url


def test_it_accepts_local_paths_under_a_root(origin: Path, roots: list[Path]):
    assert validate_repository_url(str(origin), roots) == str(origin.resolve())
    assert validate_repository_url(f"file://{origin}", roots) == str(origin.resolve())
    assert validate_repository_url(f"{roots[0]}/x/../origin", roots) == str(origin.resolve())


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ext::sh -c touch% /tmp/pwned", "whitespace"),
        ("ext::sh", "transport"),
        ("fd::17", "transport"),
        ("-uhelp", "'-'"),
        ("--upload-pack=touch", "'-'"),
        ("ssh://-oProxyCommand=touch/x", "'-'"),
        ("file:///etc", "outside"),
        ("/etc/passwd", "outside"),
        ("file://otherhost/srv/x.git", "host"),
        ("ftp://h/x.git", "scheme"),
        ("relative/path.git", "not a repository URL"),
        ("https://x/y z.git", "whitespace"),
        ("https://x/y.git\n", "whitespace"),
        ("https://x/\x00y.git", "control"),
        ("https://x/y\u00a0.git", "whitespace"),
        ("", "empty"),
        ("https:///y.git", "no host"),
        ("https://x", "no repository path"),
        ("https://x:99999/y.git", "port"),
    ],
)
def test_it_refuses_dangerous_or_unsupported_urls(url: str, problem: str, roots: list[Path]):
    with pytest.raises(ValueError, match=problem):
        validate_repository_url(url, roots)


def test_it_refuses_a_symlink_under_a_root_that_points_outside(roots: list[Path], tmp_path: Path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (roots[0] / "sneaky").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        validate_repository_url(str(roots[0] / "sneaky"), roots)


def test_it_refuses_local_paths_when_no_roots_are_set(origin: Path):
    with pytest.raises(ValueError, match="disabled"):
        validate_repository_url(str(origin), [])


def test_it_keeps_credentials_out_of_validation_errors(roots: list[Path]):
    with pytest.raises(ValueError) as error:
        validate_repository_url("ftp://user:hunter2@h/x.git", roots)
    assert "hunter2" not in str(error.value)


# --- Redaction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:secret@host/x.git", "https://***@host/x.git"),
        ("https://ghp_token@github.com/a/b.git", "https://***@github.com/a/b.git"),
        ("https://host/x.git", "https://host/x.git"),
        ("git@github.com:a/b.git", "git@github.com:a/b.git"),
        (
            "fatal: could not read from 'https://u:p@h/x' or 'http://t@h/y'",
            "fatal: could not read from 'https://***@h/x' or 'http://***@h/y'",
        ),
    ],
)
def test_it_redacts_credentials(url: str, shown: str):
    assert redact_url(url) == shown


def test_it_redacts_credentials_in_git_errors(tmp_path: Path):
    # Nothing listens on port 1, so the clone fails fast and git's message names the URL.
    with pytest.raises(WorkspaceError) as error:
        ensure_mirror("http://user:secret@127.0.0.1:1/x.git", tmp_path / "cache")
    assert "secret" not in str(error.value)
    assert "clone" in str(error.value)


# --- Mirrors ----------------------------------------------------------------------------------


def test_it_places_mirrors_by_url_hash(tmp_path: Path):
    path = mirror_path(tmp_path, "https://x/y.git")
    assert path.parent == tmp_path / "mirrors"
    assert path.name.endswith(".git") and len(path.name) == 16 + len(".git")
    assert mirror_path(tmp_path, "https://x/z.git") != path


def test_it_clones_a_mirror_once_and_fetches_only_for_a_missing_commit(
    origin: Path, tmp_path: Path, home: Path
):
    cache_root = tmp_path / "cache"
    first = ensure_mirror(str(origin), cache_root)
    assert commit_exists(first, git(origin, "rev-parse", "main", home=home))

    (origin / "NEW.md").write_text("new\n")
    git(origin, "add", "NEW.md", home=home)
    git(origin, "commit", "--quiet", "-m", "after the mirror", home=home)
    new_sha = git(origin, "rev-parse", "HEAD", home=home)

    # Without a commit to look for, the existing mirror is reused as is.
    assert ensure_mirror(str(origin), cache_root) == first
    assert not commit_exists(first, new_sha)

    assert ensure_mirror(str(origin), cache_root, commit=new_sha) == first
    assert commit_exists(first, new_sha)
    assert resolve_commit(first, "main") == new_sha
    assert list((cache_root / "mirrors").glob("*.git")) == [first]


def test_it_resolves_abbreviated_shas_branches_and_tags(mirror: Path, origin: Path, home: Path):
    head = git(origin, "rev-parse", "main", home=home)
    first = git(origin, "rev-parse", "v1^{commit}", home=home)
    assert resolve_commit(mirror, head[:8]) == head
    assert resolve_commit(mirror, "main") == head
    assert resolve_commit(mirror, "v1") == first
    assert len(head) == 40 and head != first


def test_it_names_a_missing_commit(mirror: Path):
    with pytest.raises(WorkspaceError, match="'deadbeefdeadbeef' was not found"):
        resolve_commit(mirror, "deadbeefdeadbeef")
    with pytest.raises(WorkspaceError, match="'no-such-branch' was not found"):
        resolve_commit(mirror, "no-such-branch")
    assert not commit_exists(mirror, "deadbeefdeadbeef")


def test_it_refuses_a_ref_that_is_not_a_commit(mirror: Path, origin: Path, home: Path):
    tree = git(origin, "rev-parse", "main^{tree}", home=home)
    with pytest.raises(WorkspaceError, match="names a tree, not a commit"):
        resolve_commit(mirror, tree)
    with pytest.raises(WorkspaceError, match="not a valid"):
        resolve_commit(mirror, "--all")


# --- Checkouts --------------------------------------------------------------------------------


def test_it_checks_out_an_older_commit_with_the_worker_git_dir_outside_the_work_tree(
    mirror: Path, tmp_path: Path, origin: Path, home: Path
):
    co = checkout(mirror, "v1", tmp_path / "run")
    assert co.commit == git(origin, "rev-parse", "v1^{commit}", home=home)
    assert (co.work / "src" / "app.py").read_text() == "def total(items):\n    return sum(items)\n"
    assert (co.work / "logo.png").read_bytes() == PNG
    assert co.work == co.root / "work" and co.git_dir == co.root / "git"
    assert not co.git_dir.is_relative_to(co.work)
    assert (co.work / ".git" / "HEAD").read_text() == f"ref: refs/heads/{AGENT_BRANCH}\n"
    assert co.sandbox_ro_paths == [history_path(mirror, co.commit)]
    cleanup(co)
    assert not co.root.exists()
    assert history_path(mirror, co.commit).is_dir()  # kept for the next run of this commit


def test_it_refuses_to_check_out_into_a_used_directory(mirror: Path, tmp_path: Path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "leftover").write_text("x")
    with pytest.raises(WorkspaceError, match="not empty"):
        checkout(mirror, "main", run_dir)


# --- The agent's repository -------------------------------------------------------------------


def test_it_gives_the_agent_a_clean_repository_with_history(co: Checkout, home: Path):
    work = co.work
    assert agent_git(work, "status", "--porcelain", home=home) == ""
    assert agent_git(work, "rev-parse", "HEAD", home=home) == co.commit
    assert agent_git(work, "symbolic-ref", "--short", "HEAD", home=home) == AGENT_BRANCH
    assert agent_git(work, "log", "--format=%s", home=home) == "round totals\ninitial"
    blame = agent_git(work, "blame", "--porcelain", "src/app.py", home=home)
    assert "summary initial" in blame and "summary round totals" in blame
    assert agent_git(work, "show", "HEAD~1:src/app.py", home=home).endswith("return sum(items)")
    assert agent_git(work, "diff", "HEAD~1", "--stat", home=home).startswith("src/app.py | 2")


def test_it_captures_what_the_agent_committed_against_the_prompts_commit(co: Checkout, home: Path):
    work = co.work
    (work / "src" / "app.py").write_text("def total(items):\n    return sum(items) * 2\n")
    (work / "src" / "refunds.py").write_text("REFUNDS = []\n")
    agent_git(work, "add", "-A", home=home)
    agent_git(work, "commit", "--quiet", "-m", "double totals", home=home)
    assert agent_git(work, "log", "-1", "--format=%an <%ae>", home=home) == (
        "Agent <agent@example.invalid>"
    )
    assert agent_git(work, "status", "--porcelain", home=home) == ""

    diff = capture_diff(co)
    assert diff.files == ["src/app.py", "src/refunds.py"]
    assert diff.before["src/app.py"] == "def total(items):\n    return round(sum(items), 2)\n"
    assert ".git" not in " ".join(diff.files)


def test_it_lets_the_agent_stash_and_branch(co: Checkout, home: Path):
    work = co.work
    (work / "README.md").write_text("# Shop, stashed\n")
    agent_git(work, "stash", "--quiet", home=home)
    assert (work / "README.md").read_text() == "# Shop\n"
    assert capture_diff(co).files == []  # the final work tree is what counts
    agent_git(work, "stash", "pop", "--quiet", home=home)
    assert capture_diff(co).files == ["README.md"]

    agent_git(work, "switch", "--quiet", "-c", "experiment", home=home)
    agent_git(work, "commit", "--quiet", "-am", "experiment", home=home)
    agent_git(work, "switch", "--quiet", AGENT_BRANCH, home=home)
    assert (work / "README.md").read_text() == "# Shop\n"
    assert capture_diff(co).files == []
    agent_git(work, "merge", "--quiet", "--ff-only", "experiment", home=home)
    assert capture_diff(co).after["README.md"] == "# Shop, stashed\n"


def test_it_supports_mini_swe_agents_finishing_command(co: Checkout, home: Path):
    (co.work / "src" / "app.py").write_text("def total(items):\n    return 0\n")
    (co.work / "src" / "new.py").write_text("NEW = 1\n")
    finishing = agent_shell(co.work, "git add -A && git diff --cached", home=home)
    assert finishing.returncode == 0, finishing.stderr
    patch = finishing.stdout
    assert "+    return 0" in patch and "+NEW = 1" in patch
    assert capture_diff(co).files == ["src/app.py", "src/new.py"]


def test_it_keeps_commits_after_the_prompts_commit_out_of_the_agents_reach(
    origin: Path, tmp_path: Path, home: Path
):
    (origin / "hidden_test.py").write_text("def test_fix(): assert FIXED\n")
    git(origin, "add", "hidden_test.py", home=home)
    git(origin, "commit", "--quiet", "-m", "the fix", home=home)
    future_commit = git(origin, "rev-parse", "HEAD", home=home)
    future_blob = git(origin, "rev-parse", "HEAD:hidden_test.py", home=home)
    mirror = ensure_mirror(str(origin), tmp_path / "cache")
    assert commit_exists(mirror, future_commit)  # the mirror has the whole repository

    co = checkout(mirror, "main~1", tmp_path / "run")
    work = co.work
    for hidden in (future_commit, future_blob):
        assert agent_git_exit_code(work, "cat-file", "-e", hidden, home=home) != 0
    assert agent_git(work, "log", "--all", "--format=%s", home=home) == "round totals\ninitial"
    assert agent_git_exit_code(work, "fsck", "--connectivity-only", home=home) == 0

    alternates = (work / ".git" / "objects" / "info" / "alternates").read_text().split()
    assert [Path(line) for line in alternates] == co.sandbox_ro_paths
    assert not any(path.is_relative_to(mirror.resolve()) for path in co.sandbox_ro_paths)
    cleanup(co)


def test_it_packs_a_commits_history_once_and_shares_it(mirror: Path, tmp_path: Path):
    first = checkout(mirror, "main", tmp_path / "run1")
    [pack] = (first.sandbox_ro_paths[0] / "pack").glob("*.pack")
    built = pack.stat()
    second = checkout(mirror, "main", tmp_path / "run2")
    assert second.sandbox_ro_paths == first.sandbox_ro_paths
    assert list((second.sandbox_ro_paths[0] / "pack").glob("*.pack")) == [pack]
    assert pack.stat().st_ino == built.st_ino and pack.stat().st_mtime_ns == built.st_mtime_ns
    assert stat.S_IMODE(built.st_mode) == 0o444  # readable by the sandbox's uid
    assert [p.name for p in pack.parents[2].iterdir() if p.name.startswith(".")] == []
    cleanup(first)
    cleanup(second)


def _history_in_child(mirror: str, sha: str) -> str:
    return str(ensure_history(Path(mirror), sha))


def test_it_packs_once_when_two_workers_ask_at_the_same_time(mirror: Path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    sha = resolve_commit(mirror, "main")
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        paths = set(pool.map(_history_in_child, [str(mirror)] * 4, [sha] * 4))
    assert paths == {str(history_path(mirror, sha))}
    assert len(list((history_path(mirror, sha) / "pack").glob("*.pack"))) == 1


def test_it_gives_a_sha256_repository_its_own_format(roots: list[Path], tmp_path: Path, home: Path):
    repo = roots[0] / "sha256"
    repo.mkdir()
    git(repo, "init", "--quiet", "--object-format=sha256", home=home)
    (repo / "a.txt").write_text("a\n")
    git(repo, "add", "a.txt", home=home)
    git(repo, "commit", "--quiet", "-m", "first", home=home)
    co = checkout(ensure_mirror(str(repo), tmp_path / "cache"), "main", tmp_path / "run")
    assert len(co.commit) == 64
    assert agent_git(co.work, "status", "--porcelain", home=home) == ""
    assert agent_git(co.work, "log", "--format=%H %s", home=home) == f"{co.commit} first"
    cleanup(co)


# --- Diff capture -----------------------------------------------------------------------------


def test_it_captures_an_untouched_work_tree_as_no_change(co: Checkout):
    diff = capture_diff(co)
    assert diff.patch == "" and diff.files == [] and diff.additions == diff.deletions == 0


def test_it_captures_modified_new_deleted_renamed_and_binary_files(
    co: Checkout, tmp_path: Path, origin: Path, home: Path
):
    work = co.work
    (work / "src" / "app.py").write_text("def total(items):\n    return sum(items) * 2\n")
    (work / "src" / "refunds.py").write_text("def refund(order):\n    return order.total\n")
    (work / "src" / "remove_me.py").unlink()
    (work / "docs" / "guide.md").rename(work / "docs" / "handbook.md")
    (work / "logo.png").write_bytes(PNG + b"\x00\xff")
    (work / "icon.bin").write_bytes(b"\x00\x01\x02binary")

    diff = capture_diff(co)

    assert sorted(diff.files) == [
        "docs/handbook.md",
        "icon.bin",
        "logo.png",
        "src/app.py",
        "src/refunds.py",
        "src/remove_me.py",
    ]
    assert sorted(diff.binary_files) == ["icon.bin", "logo.png"]
    assert (diff.additions, diff.deletions) == (3, 2)
    assert "rename from docs/guide.md\nrename to docs/handbook.md" in diff.patch
    assert "GIT binary patch" in diff.patch
    assert "deleted file mode" in diff.patch and "new file mode" in diff.patch

    assert diff.before["src/app.py"] == "def total(items):\n    return round(sum(items), 2)\n"
    assert diff.after["src/app.py"] == "def total(items):\n    return sum(items) * 2\n"
    assert "src/refunds.py" not in diff.before
    assert diff.after["src/refunds.py"].startswith("def refund")
    assert diff.before["src/remove_me.py"] == "OLD = 1\n" and "src/remove_me.py" not in diff.after
    assert diff.before["docs/handbook.md"] == diff.after["docs/handbook.md"]
    assert "logo.png" not in diff.before and "logo.png" not in diff.after

    # The patch reproduces the work tree when applied to a fresh copy of the commit.
    replay = tmp_path / "replay"
    git(tmp_path, "clone", "--quiet", str(origin), str(replay), home=home)
    (replay / "change.patch").write_text(diff.patch)
    git(replay, "apply", "change.patch", home=home)
    assert (replay / "logo.png").read_bytes() == PNG + b"\x00\xff"
    assert (replay / "docs" / "handbook.md").exists()
    assert not (replay / "src" / "remove_me.py").exists()


def test_it_caps_before_and_after_text(co: Checkout):
    (co.work / "big.txt").write_text("x" * 2000)
    (co.work / "src" / "app.py").write_text("small\n")
    diff = capture_diff(co, text_cap=1000)
    assert "big.txt" in diff.files and "big.txt" not in diff.after
    assert diff.after["src/app.py"] == "small\n"


def test_it_leaves_harness_leftovers_out_of_the_diff(co: Checkout):
    work = co.work
    (work / ".aider.chat.history.md").write_text("chat")
    (work / ".aider.tags.cache.v4").mkdir()
    (work / ".aider.tags.cache.v4" / "cache.db").write_text("db")
    (work / "src" / "__pycache__").mkdir()
    (work / "src" / "__pycache__" / "app.cpython-312.pyc").write_bytes(b"\x00pyc")
    (work / "stray.pyc").write_bytes(b"\x00pyc")
    (work / ".pytest_cache").mkdir()
    (work / ".pytest_cache" / "README.md").write_text("cache")
    (work / ".mergeable").mkdir()
    (work / ".mergeable" / "agent.log").write_text("log")
    (work / "src" / "kept.py").write_text("KEPT = True\n")

    diff = capture_diff(co)
    assert diff.files == ["src/kept.py"]
    assert "aider" not in diff.patch and "pyc" not in diff.patch

    without_excludes = capture_diff(co, exclude=())
    assert ".aider.chat.history.md" in without_excludes.files
    assert "src/__pycache__/app.cpython-312.pyc" in without_excludes.files


def test_it_applies_custom_excludes(co: Checkout):
    (co.work / "notes").mkdir()
    (co.work / "notes" / "scratch.txt").write_text("scratch")
    (co.work / "src" / "notes.py").write_text("NOTES = 1\n")
    diff = capture_diff(co, exclude=(*DEFAULT_EXCLUDES, "notes/"))
    assert diff.files == ["src/notes.py"]


def test_it_honours_the_repository_gitignore(co: Checkout):
    (co.work / "debug.log").write_text("noise")
    (co.work / "build").mkdir()
    (co.work / "build" / "out.bin").write_bytes(b"\x00")
    (co.work / "src" / "feature.py").write_text("FEATURE = 1\n")
    diff = capture_diff(co)
    assert diff.files == ["src/feature.py"]


def test_it_captures_files_of_a_repository_the_agent_initialised(co: Checkout, home: Path):
    # `cargo new` and friends run `git init`; plain `git add -A` would fail on such a directory.
    crate = co.work / "crate"
    crate.mkdir()
    git(crate, "init", "--quiet", home=home)
    (crate / "main.rs").write_text("fn main() {}\n")
    (crate / "target.log").write_text("ignored by the repository's *.log rule")
    diff = capture_diff(co)
    assert diff.files == ["crate/main.rs"]
    assert diff.after["crate/main.rs"] == "fn main() {}\n"


def test_it_stores_a_symlink_as_its_target_not_the_file_it_points_to(co: Checkout, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    (co.work / "link").symlink_to(secret)
    diff = capture_diff(co)
    assert diff.after["link"] == str(secret)
    assert "host secret" not in diff.patch


def _plant_trap(git_dir: Path, marker: Path) -> None:
    """Make `git_dir` run a command that creates `marker` if git ever uses its config or hooks.

    Its config also defines the filter `trap`, which a `.gitattributes` line `* filter=trap` puts
    on every file git adds.
    """
    script = marker.with_name("trap.sh")
    script.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    script.chmod(0o755)
    with open(git_dir / "config", "a") as config:
        config.write(f"[core]\n\tfsmonitor = {script}\n\thooksPath = {git_dir / 'hooks'}\n")
        config.write(f'[filter "trap"]\n\tclean = {script}\n\tsmudge = {script}\n')
    (git_dir / "hooks").mkdir(exist_ok=True)
    for hook in ("pre-commit", "post-checkout", "post-index-change", "reference-transaction"):
        (git_dir / "hooks" / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (git_dir / "hooks" / hook).chmod(0o755)


def test_it_never_runs_hooks_fsmonitor_or_filters_the_agent_planted(
    co: Checkout, tmp_path: Path, home: Path
):
    marker = tmp_path / "pwned"
    _plant_trap(co.work / ".git", marker)
    (co.work / ".gitattributes").write_text("* filter=trap\n")
    nested = co.work / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "--quiet", home=home)
    _plant_trap(nested / ".git", marker)
    (nested / "lib.py").write_text("LIB = 1\n")
    (co.work / "src" / "app.py").write_text("changed\n")

    # The traps work: ordinary git in the agent's repository springs each of them.
    agent_git(co.work, "status", home=home)
    assert marker.exists()
    marker.unlink()
    agent_git(co.work, "-c", "core.fsmonitor=false", "add", "src/app.py", home=home)
    assert marker.exists()  # the clean filter
    marker.unlink()
    agent_git(co.work, "-c", "core.fsmonitor=false", "commit", "-qm", "x", home=home)
    assert marker.exists()  # the pre-commit hook
    marker.unlink()

    diff = capture_diff(co)
    assert not marker.exists()
    assert diff.files == [".gitattributes", "src/app.py", "vendor/lib/lib.py"]
    assert diff.after["src/app.py"] == "changed\n"
    assert ".git/" not in diff.patch


def test_it_ignores_a_git_file_pointing_elsewhere(co: Checkout, tmp_path: Path, home: Path):
    marker = tmp_path / "pwned"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    git(elsewhere, "init", "--quiet", home=home)
    _plant_trap(elsewhere / ".git", marker)
    shutil.rmtree(co.work / ".git")
    (co.work / ".git").write_text(f"gitdir: {elsewhere / '.git'}\n")
    (co.work / "README.md").write_text("# Changed\n")

    diff = capture_diff(co)
    assert not marker.exists()
    assert diff.files == ["README.md"]
    assert diff.before["README.md"] == "# Shop\n"


# --- Cleanup ----------------------------------------------------------------------------------


def _cleanup_without_privileges(co: Checkout) -> None:
    """`cleanup(co)` as an ordinary owner of the files, even when the tests run as root.

    Root ignores permission bits. In a user namespace that maps an unprivileged uid to our own,
    the process still owns the files but has no capabilities over them, as any worker user.
    """
    if os.geteuid() != 0:
        cleanup(co)
        return
    code = (
        "import sys; from pathlib import Path; from runs.workspace import Checkout, cleanup; "
        "cleanup(Checkout(root=Path(sys.argv[1]), work=Path(sys.argv[2]), "
        "git_dir=Path(sys.argv[3]), commit=sys.argv[4]))"
    )
    argv = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    argv += [sys.executable, "-c", code, str(co.root), str(co.work), str(co.git_dir), co.commit]
    result = subprocess.run(
        argv, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_it_cleans_up_read_only_files_and_directories(mirror: Path, tmp_path: Path):
    co = checkout(mirror, "main", tmp_path / "run")
    locked = co.work / "locked"
    locked.mkdir()
    (locked / "file.txt").write_text("x")
    (locked / "file.txt").chmod(stat.S_IRUSR)
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    (co.work / "src").chmod(0)

    _cleanup_without_privileges(co)
    assert not co.root.exists()
    assert mirror.exists()


def test_it_cleans_up_a_run_and_tolerates_a_second_call(mirror: Path, tmp_path: Path):
    co = checkout(mirror, "main", tmp_path / "run")
    (co.work / "new.txt").write_text("x")
    cleanup(co)
    assert not co.root.exists()
    assert mirror.exists()
    cleanup(co)


def _mirror_in_child(url: str, cache_root: str) -> str:
    return str(ensure_mirror(url, Path(cache_root)))


def test_it_clones_once_when_two_workers_ask_at_the_same_time(origin: Path, tmp_path: Path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    cache_root = tmp_path / "cache"
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        paths = list(pool.map(_mirror_in_child, [str(origin)] * 4, [str(cache_root)] * 4))
    assert len(set(paths)) == 1
    assert [p.name for p in (cache_root / "mirrors").iterdir() if p.suffix == ".git"] == [
        Path(paths[0]).name
    ]


def test_it_sees_a_same_size_edit_made_right_after_checkout(co):
    # Same length, same second as the checkout: only git's racy-clean check can notice it,
    # which depends on the copied index keeping its modification time.
    app = co.work / "src" / "app.py"
    original = app.stat()
    app.write_text(app.read_text().replace("round", "ROUND"))
    os.utime(app, ns=(original.st_atime_ns, original.st_mtime_ns))
    captured = capture_diff(co)
    assert captured.files == ["src/app.py"]
    assert "+    return ROUND(sum(items), 2)" in captured.patch


def test_it_captures_edits_to_many_untouched_files_only_where_they_changed(co):
    (co.work / "docs" / "guide.md").write_text("rewritten\n")
    captured = capture_diff(co)
    assert captured.files == ["docs/guide.md"]


# --- Protected and hidden tests -----------------------------------------------------------------

SUITE = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
    "tests/data/cases.txt": "2 3 5\n",
    "tests/run.sh": "#!/bin/sh\npytest -q\n",
}
TESTS = ["tests/**"]


@pytest.fixture
def suite(roots: list[Path], home: Path, tmp_path: Path):
    """A checkout of a repository whose tests live in tests/, and the sha of a later commit that
    adds hidden tests (and changes a visible one)."""
    repo = roots[0] / "suite"
    repo.mkdir()
    git(repo, "init", "--quiet", home=home)
    for name, text in SUITE.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "tests" / "run.sh").chmod(0o755)
    (repo / "tests" / "cases").symlink_to("data/cases.txt")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A", home=home)
    git(repo, "commit", "--quiet", "-m", "tests", home=home)
    first = git(repo, "rev-parse", "HEAD", home=home)
    (repo / "tests" / "hidden").mkdir()
    (repo / "tests" / "hidden" / "test_limits.py").write_text("def test_limits():\n    pass\n")
    (repo / "tests" / "hidden" / "limits.txt").write_text("9\n")
    (repo / "tests" / "test_calc.py").write_text("def test_add():\n    pass  # later\n")
    git(repo, "add", "-A", home=home)
    git(repo, "commit", "--quiet", "-m", "hidden tests", home=home)
    second = git(repo, "rev-parse", "HEAD", home=home)
    mirror = ensure_mirror(str(repo), tmp_path / "cache")
    checked_out = checkout(mirror, first, tmp_path / "run")
    yield checked_out, second
    cleanup(checked_out)


def tree_of(top: Path) -> dict[str, object]:
    """Everything under `top`, links not followed: path -> text, ("link", target) or "dir"."""
    found: dict[str, object] = {}
    for directory, subdirectories, files in os.walk(top):
        for name in [*subdirectories, *files]:
            path = Path(directory, name)
            key = str(path.relative_to(top))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = path.read_text()
    return found


def test_it_puts_back_test_files_the_agent_changed_deleted_or_added(suite):
    co, _hidden = suite
    original = tree_of(co.work / "tests")
    (co.work / "tests" / "test_calc.py").write_text("def test_add():\n    assert True\n")
    (co.work / "tests" / "data" / "cases.txt").unlink()
    (co.work / "tests" / "run.sh").chmod(0o644)
    (co.work / "tests" / "test_planted.py").write_text("def test_ok():\n    pass\n")
    (co.work / "tests" / "conftest.log").write_text("ignored, yet it would be in the way")
    (co.work / "tests" / "data" / "stale.pyc").write_bytes(b"\0")  # never in a diff
    (co.work / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    captured = capture_diff(co)

    changed = changed_test_files(co, captured.tree, TESTS)
    restore_test_files(co, TESTS, tree=captured.tree)

    assert changed == [
        "tests/data/cases.txt",
        "tests/run.sh",
        "tests/test_calc.py",
        "tests/test_planted.py",
    ]
    assert tree_of(co.work / "tests") == original
    assert os.access(co.work / "tests" / "run.sh", os.X_OK)
    assert "a + b" in (co.work / "calc.py").read_text()  # the agent's work is not a test file


def test_it_matches_test_files_with_gits_glob_rules(suite):
    co, _hidden = suite
    (co.work / "tests" / "test_calc.py").write_text("changed\n")
    (co.work / "tests" / "data" / "test_deep.py").write_text("new\n")
    (co.work / "tests" / "data" / "cases.txt").write_text("changed\n")
    tree = capture_diff(co).tree

    assert changed_test_files(co, tree, ["tests/*.py"]) == ["tests/test_calc.py"]
    assert changed_test_files(co, tree, ["**/test_*.py"]) == [
        "tests/data/test_deep.py",
        "tests/test_calc.py",
    ]
    assert changed_test_files(co, tree, ["tests/data"]) == [
        "tests/data/cases.txt",
        "tests/data/test_deep.py",
    ]
    assert changed_test_files(co, tree, []) == []


def test_it_moves_renamed_test_files_back_and_flags_both_sides(suite):
    co, _hidden = suite
    (co.work / "tests" / "test_calc.py").rename(co.work / "check_calc.py")
    captured = capture_diff(co)
    assert captured.files == ["check_calc.py"]  # a rename shows only its new path

    assert changed_test_files(co, captured.tree, TESTS) == ["tests/test_calc.py"]
    assert changed_test_files(co, captured.tree, [*TESTS, "check_*.py"]) == [
        "check_calc.py",
        "tests/test_calc.py",
    ]
    restore_test_files(co, TESTS, tree=captured.tree)
    assert (co.work / "tests" / "test_calc.py").read_text() == SUITE["tests/test_calc.py"]


def _replace_tests_dir_with_link(work: Path, outside: Path) -> None:
    shutil.rmtree(work / "tests")
    (work / "tests").symlink_to(outside)


def _replace_data_dir_with_link(work: Path, outside: Path) -> None:
    shutil.rmtree(work / "tests" / "data")
    (work / "tests" / "data").symlink_to(outside)


def _replace_test_with_link(work: Path, outside: Path) -> None:
    (work / "tests" / "test_calc.py").unlink()
    (work / "tests" / "test_calc.py").symlink_to(outside / "host.txt")


def _replace_test_with_directory(work: Path, outside: Path) -> None:
    (work / "tests" / "test_calc.py").unlink()
    (work / "tests" / "test_calc.py").mkdir()
    (work / "tests" / "test_calc.py" / "inner.py").write_text("x = 1\n")


def _replace_data_dir_with_file(work: Path, outside: Path) -> None:
    shutil.rmtree(work / "tests" / "data")
    (work / "tests" / "data").write_text("not a directory")


def _plant_nested_repository(work: Path, outside: Path) -> None:
    nested = work / "tests" / "vendored"
    nested.mkdir()
    subprocess.run(["git", "init", "--quiet", str(nested)], check=True)
    (nested / "test_planted.py").write_text("def test_ok():\n    pass\n")


@pytest.mark.parametrize(
    "hostile",
    [
        _replace_tests_dir_with_link,
        _replace_data_dir_with_link,
        _replace_test_with_link,
        _replace_test_with_directory,
        _replace_data_dir_with_file,
        _plant_nested_repository,
    ],
)
def test_it_never_follows_what_the_agent_left_in_place_of_test_files(suite, tmp_path, hostile):
    co, _hidden = suite
    original = tree_of(co.work / "tests")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host.txt").write_text("the host's")
    (outside / "cases.txt").write_text("the host's too")
    hostile(co.work, outside)
    captured = capture_diff(co)

    restore_test_files(co, TESTS, tree=captured.tree)

    assert tree_of(co.work / "tests") == original
    assert tree_of(outside) == {"host.txt": "the host's", "cases.txt": "the host's too"}


def test_it_keeps_what_the_setup_left_among_test_files(suite):
    co, _hidden = suite
    (co.work / "tests" / "data" / "generated.txt").write_text("made by the setup command\n")
    setup_left = untracked_test_files(co, TESTS)
    (co.work / "tests" / "data" / "planted.txt").write_text("made by the agent\n")
    captured = capture_diff(co)

    restore_test_files(co, TESTS, tree=captured.tree, keep=setup_left)

    assert setup_left == {b"tests/data/generated.txt"}
    assert (co.work / "tests" / "data" / "generated.txt").exists()
    assert not (co.work / "tests" / "data" / "planted.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to another uid needs root")
def test_it_writes_test_files_the_sandbox_uid_can_use(suite, roots, tmp_path):
    co, _hidden = suite
    mirror = mirror_path(tmp_path / "cache", str(roots[0] / "suite"))
    owned = checkout(mirror, co.commit, tmp_path / "owned", owner=65534)
    try:
        shutil.rmtree(owned.work / "tests")
        restore_test_files(owned, TESTS, tree=capture_diff(owned).tree, owner=65534)
        modes = {
            path: stat.S_IMODE((owned.work / path).lstat().st_mode)
            for path in ("tests", "tests/data", "tests/test_calc.py", "tests/run.sh")
        }
    finally:
        cleanup(owned)
    assert modes == {
        "tests": 0o777,
        "tests/data": 0o777,
        "tests/test_calc.py": 0o666,
        "tests/run.sh": 0o777,
    }


def test_it_adds_hidden_tests_in_place_of_whatever_is_there(suite, tmp_path):
    co, hidden = suite
    outside = tmp_path / "outside"
    outside.mkdir()
    # The agent guessed where hidden tests go and left a conftest.py and a link there.
    (co.work / "tests" / "hidden").mkdir()
    (co.work / "tests" / "hidden" / "conftest.py").write_text("import pytest  # rigged\n")
    (co.work / "tests" / "hidden" / "limits.txt").symlink_to(outside / "limits.txt")

    add_hidden_tests(co, hidden, ["tests/hidden", "tests/test_calc.py"])

    assert tree_of(co.work / "tests" / "hidden") == {
        "test_limits.py": "def test_limits():\n    pass\n",
        "limits.txt": "9\n",
    }
    assert (
        co.work / "tests" / "test_calc.py"
    ).read_text() == "def test_add():\n    pass  # later\n"
    assert (co.work / "tests" / "data" / "cases.txt").read_text() == "2 3 5\n"  # not listed
    assert list(outside.iterdir()) == []


def test_it_names_a_hidden_commit_or_path_that_is_not_there(suite):
    co, hidden = suite
    missing = "0123456789abcdef" * 2 + "01234567"

    with pytest.raises(WorkspaceError, match=f"commit {missing}"):
        add_hidden_tests(co, missing, ["tests/hidden"])
    with pytest.raises(WorkspaceError, match="'tests/nope.py' not in commit"):
        add_hidden_tests(co, hidden, ["tests/hidden", "tests/nope.py"])
    assert not (co.work / "tests" / "hidden").exists()  # nothing written when one is missing
    assert missing_paths(co.git_dir, hidden, ["tests/hidden", "tests/nope.py", "tests"]) == [
        "tests/nope.py"
    ]

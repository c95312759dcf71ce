"""Git for runs: a mirror per repository, a checkout per run, and the run's final diff.

Host-side git here never trusts anything the agent can write. The worker's git dir sits beside the
work tree in the run directory, outside the sandbox, and is always passed explicitly so git never
discovers a repository. Every git call runs without a shell, with hooks and fsmonitor disabled,
the ext transport refused, and no system or user config, so the work tree's `.git` (the agent's
own repository), a `.git` file or a config the agent plants is plain data to us.

The agent's `.git` borrows its objects from a pack of the commit's history only, never from the
mirror: the mirror also holds what came after the commit (the real fix, hidden tests).

Settings are read only as defaults, when a caller passes none.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings

from runs.repository_urls import check_repository_url_safety

# What coding harnesses and test runners leave behind in a work tree. Patterns are gitignore-like:
# without a slash they match any path component, a trailing slash matches directories only, and a
# pattern with an inner slash is matched against the whole path from the top of the work tree.
DEFAULT_EXCLUDES: tuple[str, ...] = (
    ".aider*",
    ".mergeable/",
    "__pycache__/",
    "*.pyc",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
    ".hypothesis/",
)

NETWORK_SCHEMES = frozenset({"https", "http", "ssh", "git", "git+ssh", "ssh+git"})

NETWORK_TIMEOUT = 3600  # seconds; a first clone of a large repository is slow
LOCAL_TIMEOUT = 600

_GIT_CONFIG = (
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "protocol.ext.allow=never",
    "protocol.file.allow=always",
    "safe.directory=*",
    "core.quotePath=false",
    "submodule.recurse=false",
    "gc.autoDetach=false",
    # A commit means its own content: a mirror's refs/replace/* never swap in other objects.
    "core.useReplaceRefs=false",
)
# Operator-level SSH settings are honoured; every other GIT_* variable of the worker's environment
# (GIT_DIR, GIT_INDEX_FILE, GIT_CONFIG_*...) could redirect or reconfigure git, so it is dropped.
_KEPT_GIT_VARIABLES = frozenset({"GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSH_VARIANT"})

_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._~+-]+)@)?(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<path>.+)$"
)
_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_GITLINK_MODE = "160000"

# The agent's repository: HEAD is this branch, at the prompt's commit. A neutral name, so it says
# nothing about the repository's real branches.
AGENT_BRANCH = "work"
AGENT_NAME = "Agent"
AGENT_EMAIL = "agent@example.invalid"


class WorkspaceError(Exception):
    """A git or workspace failure. The message is safe to show: credentials are redacted."""


# --- URLs -------------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """Hide the user-info part of every URL in `url`: "https://u:p@h/x" -> "https://***@h/x"."""
    return _CREDENTIALS.sub(r"\1***@", url)


def validate_repository_url(url: str, local_roots: Sequence[Path] | None = None) -> str:
    """Return the normalized repository URL, or raise ValueError naming the problem.

    Accepted: http(s)://, ssh://, git:// and scp-like `user@host:path` URLs, and local
    repositories (absolute paths or file:// URLs) that resolve under one of `local_roots`
    (default: the MERGEABLE_LOCAL_REPO_ROOTS setting). A local repository is normalized to its
    resolved absolute path, so every spelling of it shares one mirror.
    """
    if not url:
        raise ValueError("The repository URL is empty.")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValueError("The repository URL contains whitespace or control characters.")
    if url.startswith("-"):
        raise ValueError("The repository URL starts with '-', which git would read as an option.")
    if _TRANSPORT_PREFIX.match(url):
        transport = url.split("::", 1)[0]
        raise ValueError(f"The git transport {transport + '::'!r} is not allowed.")
    check_repository_url_safety(url)

    if scheme_match := _SCHEME.match(url):
        scheme = scheme_match.group(1).lower()
        if scheme == "file":
            return _validate_file_url(url, local_roots)
        if scheme not in NETWORK_SCHEMES:
            raise ValueError(
                f"The URL scheme {scheme + '://'!r} is not allowed; "
                "use https://, http://, ssh://, git:// or user@host:path."
            )
        return _validate_network_url(scheme, url)

    if url.startswith("/"):
        return _validate_local_path(url, local_roots)

    if scp := _SCP_LIKE.match(url):
        if scp["host"].startswith("-"):
            raise ValueError(f"The host in {redact_url(url)!r} starts with '-'.")
        return url

    raise ValueError(
        f"{redact_url(url)!r} is not a repository URL: use https://, http://, ssh://, git://, "
        "user@host:path, or an absolute path under a local repository root."
    )


def _validate_network_url(scheme: str, url: str) -> str:
    parts = urlsplit(url)
    shown = redact_url(url)
    if not parts.hostname:
        raise ValueError(f"The URL {shown!r} names no host.")
    if parts.netloc.startswith("-") or parts.hostname.startswith("-"):
        raise ValueError(f"The host in {shown!r} starts with '-'.")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ValueError(f"The port in {shown!r} is not a number between 0 and 65535.") from None
    if not parts.path.strip("/"):
        raise ValueError(f"The URL {shown!r} names no repository path.")
    return scheme + url[len(scheme) :]


def _validate_file_url(url: str, local_roots: Sequence[Path] | None) -> str:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"The file:// URL {url!r} names a host; only local paths are allowed.")
    return _validate_local_path(unquote(parts.path), local_roots)


def _validate_local_path(path: str, local_roots: Sequence[Path] | None) -> str:
    if local_roots is None:
        local_roots = settings.MERGEABLE_LOCAL_REPO_ROOTS
    if not path.startswith("/"):
        raise ValueError(f"The local repository path {path!r} is not absolute.")
    if not local_roots:
        raise ValueError("Local repositories are disabled: no local repository roots are set.")
    resolved = Path(path).resolve()
    for root in local_roots:
        if resolved.is_relative_to(Path(root).resolve()):
            return str(resolved)
    allowed = ", ".join(str(root) for root in local_roots)
    raise ValueError(
        f"The local repository {path!r} is outside the allowed local roots ({allowed})."
    )


# --- Running git --------------------------------------------------------------------------------


@cache
def _empty_home() -> Path:
    # One empty HOME per process keeps the host's ~/.gitconfig, credential helpers and global
    # excludes out of every git call.
    home = Path(tempfile.mkdtemp(prefix="mergeable-git-home-"))
    creator = os.getpid()

    def remove() -> None:
        # Forked workers inherit this cache; only the process that made the directory removes it.
        if os.getpid() == creator:
            shutil.rmtree(home, ignore_errors=True)

    atexit.register(remove)
    return home


def _git_env(index_file: Path | None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key in _KEPT_GIT_VARIABLES
    }
    home = _empty_home()
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        # Git runs from inside the empty home; the ceiling stops it looking further up for a repo.
        GIT_CEILING_DIRECTORIES=str(home.parent),
        LC_ALL="C",
    )
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    if index_file is not None:
        env["GIT_INDEX_FILE"] = str(index_file)
    return env


def _git(
    args: Sequence[str],
    *,
    git_dir: Path | None = None,
    work_tree: Path | None = None,
    index_file: Path | None = None,
    input: bytes | None = None,
    timeout: float = LOCAL_TIMEOUT,
    ok_codes: tuple[int, ...] = (0,),
    cwd: Path | None = None,
    umask: int = -1,
) -> subprocess.CompletedProcess[bytes]:
    """Run hardened git (no hooks, no fsmonitor, no user or system config) without a shell.

    `cwd` defaults to an empty directory so git never discovers a repository by itself; pass the
    work tree only for commands that resolve paths from it (`git apply`).
    """
    command = ["git"]
    for setting in _GIT_CONFIG:
        command += ["-c", setting]
    if git_dir is not None:
        command.append(f"--git-dir={git_dir}")
    if work_tree is not None:
        command.append(f"--work-tree={work_tree}")
    command += args
    try:
        result = subprocess.run(
            command,
            input=input,
            capture_output=True,
            env=_git_env(index_file),
            cwd=cwd or _empty_home(),
            timeout=timeout,
            check=False,
            umask=umask,
        )
    except subprocess.TimeoutExpired:
        raise WorkspaceError(
            f"git {args[0]} did not finish within {timeout:.0f} seconds."
        ) from None
    except FileNotFoundError:
        raise WorkspaceError("git is not installed on this worker.") from None
    if result.returncode not in ok_codes:
        detail = result.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise WorkspaceError(redact_url(f"git {args[0]} failed: {detail or 'no message'}"))
    return result


git = _git  # the public name, for other modules of the run engine (imports)


# --- Mirrors ----------------------------------------------------------------------------------


def mirror_path(root: Path, url: str) -> Path:
    return root / "mirrors" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_mirror(url: str, root: Path, commit: str | None = None) -> Path:
    """Return the bare mirror of `url` under `root`, cloning it the first time.

    When `commit` is given and is not already in the mirror, fetch (a ref name such as a branch is
    always fetched, since it may have moved). A commit still missing afterwards is not an error
    here: `resolve_commit` reports it with the ref's name. A file lock serializes clone and fetch
    across worker processes. Validate `url` with `validate_repository_url` first.
    """
    if url.startswith("-"):
        raise WorkspaceError("The repository URL starts with '-'.")
    path = mirror_path(root, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    if commit is not None and _is_present(path, commit):
        return path
    with _locked(path.with_suffix(".lock")):
        cloned = False
        if not (path / "HEAD").exists():
            _clone_mirror(url, path)
            cloned = True
        if commit is None or _is_present(path, commit):
            return path
        if not cloned:
            _git(["fetch", "--prune", "--quiet", "origin"], git_dir=path, timeout=NETWORK_TIMEOUT)
        if _FULL_SHA.match(commit) and not commit_exists(path, commit):
            # A commit no branch reaches any more; servers that allow fetching by id still serve it.
            _git(
                ["fetch", "--quiet", "origin", commit],
                git_dir=path,
                timeout=NETWORK_TIMEOUT,
                ok_codes=(0, 1, 128),
            )
    return path


def _is_present(mirror: Path, commit: str) -> bool:
    return (mirror / "HEAD").exists() and bool(_HEX.match(commit)) and commit_exists(mirror, commit)


def _clone_mirror(url: str, path: Path) -> None:
    # Clone beside the final place and rename, so a crash mid-clone never leaves a half mirror.
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _git(["clone", "--mirror", "--quiet", "--", url, str(partial)], timeout=NETWORK_TIMEOUT)
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def commit_exists(mirror: Path, sha: str) -> bool:
    if not sha or sha.startswith("-"):
        return False
    result = _git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}^{{commit}}"],
        git_dir=mirror,
        ok_codes=(0, 1, 128),
    )
    return result.returncode == 0


def _rev_parse_commit(mirror: Path, ref: str) -> str | None:
    """The full sha of the commit `ref` names, or None. `ref` must not start with '-'."""
    result = _git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"],
        git_dir=mirror,
        ok_codes=(0, 1, 128),
    )
    return result.stdout.decode().strip() if result.returncode == 0 else None


def _object_format(sha: str) -> str:
    # A full object id names its repository's hash: 40 hex digits for SHA-1, 64 for SHA-256.
    return "sha256" if len(sha) == 64 else "sha1"


def resolve_commit(mirror: Path, ref: str) -> str:
    """Return the full sha of the commit `ref` names (an abbreviated sha, a branch or a tag)."""
    if not ref or ref.startswith("-") or any(ch.isspace() or ord(ch) < 32 for ch in ref):
        raise WorkspaceError(f"{ref!r} is not a valid commit or ref name.")
    sha = _rev_parse_commit(mirror, ref)
    if sha is not None:
        return sha
    kind = _git(["cat-file", "-t", "--end-of-options", ref], git_dir=mirror, ok_codes=(0, 1, 128))
    if kind.returncode == 0:
        found = kind.stdout.decode().strip()
        raise WorkspaceError(f"{ref!r} names a {found}, not a commit.")
    raise WorkspaceError(f"Commit {ref!r} was not found in the repository.")


# --- History ----------------------------------------------------------------------------------


def history_path(mirror: Path, sha: str) -> Path:
    """The object directory holding what `sha` reaches in `mirror`: <root>/history/<mirror>/<sha>."""
    return mirror.resolve().parent.parent / "history" / mirror.name.removesuffix(".git") / sha


def ensure_history(mirror: Path, sha: str) -> Path:
    """Return an object directory holding exactly the objects `sha` reaches, packing it once.

    The agent's repository borrows its objects from here, never from the mirror, which holds the
    repository's future as well. One pack per (mirror, commit), cached beside the mirrors: built
    in a scratch directory and renamed into place under a file lock, so a crash never leaves half
    of one and two workers never build the same one. `sha` must be a full, resolved commit id.
    """
    if not _FULL_SHA.match(sha):
        raise WorkspaceError(f"{sha!r} is not a full commit id.")
    objects = history_path(mirror, sha)
    if objects.is_dir():
        return objects
    objects.parent.mkdir(parents=True, exist_ok=True)
    with _locked(objects.with_name(f"{sha}.lock")):
        if objects.is_dir():
            return objects
        partial = objects.with_name(f".{sha}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            pack_dir = partial / "pack"
            pack_dir.mkdir(parents=True)
            # The commit is the only tip: no other ref, tag, reflog or loose object comes along.
            _git(
                ["pack-objects", "--revs", "--quiet", str(pack_dir / "pack")],
                git_dir=mirror,
                input=f"{sha}\n".encode(),
            )
            # Readable by the sandbox's unprivileged uid whatever our umask; never written again.
            for path in pack_dir.iterdir():
                path.chmod(0o444)
            pack_dir.chmod(0o755)
            partial.chmod(0o755)
            partial.rename(objects)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return objects


# --- Checkouts --------------------------------------------------------------------------------


@dataclass
class Checkout:
    root: Path  # the run directory, owned by us
    work: Path  # the agent's workspace (root / "work"), with the agent's own repository in .git
    git_dir: Path  # root / "git": outside the work tree, so the agent cannot write it
    commit: str
    # What the sandbox must mount read-only, each at its own path, for git to work in the
    # workspace: the history objects that work/.git/objects/info/alternates names.
    sandbox_ro_paths: list[Path] = field(default_factory=list)


def checkout(mirror: Path, commit: str, run_dir: Path, *, owner: int | None = None) -> Checkout:
    """Check `commit` out of `mirror` into `run_dir / "work"`, with the git dir beside it.

    The git dir borrows the mirror's objects through objects/info/alternates, so nothing is
    copied but the files themselves. The work tree gets its own `.git` for the agent (see
    `_make_agent_repository`).
    """
    return _checkout_resolved(mirror, resolve_commit(mirror, commit), run_dir, owner)


def checkout_commit(
    url: str, root: Path, commit: str, run_dir: Path, *, owner: int | None = None
) -> Checkout:
    """`ensure_mirror` then `checkout`, with one git call fewer when the mirror has the commit.

    The usual case (the commit is already in the mirror) costs one `rev-parse`, which both
    proves the commit is there and resolves it.
    """
    path = mirror_path(root, url)
    if not url.startswith("-") and (path / "HEAD").exists() and _HEX.match(commit):
        sha = _rev_parse_commit(path, commit)
        if sha is not None:
            return _checkout_resolved(path, sha, run_dir, owner)
    mirror = ensure_mirror(url, root, commit)
    return checkout(mirror, commit, run_dir, owner=owner)


def _checkout_resolved(mirror: Path, sha: str, run_dir: Path, owner: int | None = None) -> Checkout:
    """The checkout; with `owner` (a root worker's sandbox uid), a work tree that uid can write.

    Files are written world-writable (umask 0) inside a run directory only root may enter, and
    only the work tree's top and its .git are handed to `owner`: a chown of every file would
    change their ctimes, and git would then re-hash the whole tree at capture.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        run_dir.chmod(0o700)
    if any(run_dir.iterdir()):
        raise WorkspaceError(f"The run directory {run_dir} is not empty.")
    co = Checkout(root=run_dir, work=run_dir / "work", git_dir=run_dir / "git", commit=sha)
    try:
        history = ensure_history(mirror, sha)
        _git(
            [
                "init",
                "--bare",
                "--quiet",
                "--template=",
                f"--object-format={_object_format(sha)}",
                "--",
                str(co.git_dir),
            ]
        )
        alternates = co.git_dir / "objects" / "info" / "alternates"
        alternates.parent.mkdir(parents=True, exist_ok=True)
        alternates.write_text(f"{(mirror / 'objects').resolve()}\n")
        co.work.mkdir()
        _git(
            ["checkout", "--quiet", "--force", "--detach", sha],
            git_dir=co.git_dir,
            work_tree=co.work,
            umask=-1 if owner is None else 0,
        )
        _make_agent_repository(co, history)
        if owner is not None:
            hand_over(co.work, owner, recursive=False)
            hand_over(co.work / ".git", owner)
        co.sandbox_ro_paths = [history]
    except BaseException:
        cleanup(co)
        raise
    return co


def _make_agent_repository(co: Checkout, history: Path) -> None:
    """Give the agent `work/.git`: a repository on branch `AGENT_BRANCH` at the commit.

    Its objects come through objects/info/alternates from `history` (the commit and its
    ancestors, nothing later); its index is a copy of the worker's, made for this same work tree,
    so `git status` is clean at once without hashing a file. The files are written directly: a
    handful of small writes cost less than one git process. Host-side git never reads any of it.
    """
    dot_git = co.work / ".git"
    (dot_git / "objects" / "info").mkdir(parents=True)
    (dot_git / "objects" / "pack").mkdir()
    (dot_git / "refs" / "heads").mkdir(parents=True)
    (dot_git / "refs" / "tags").mkdir()
    (dot_git / "objects" / "info" / "alternates").write_text(f"{history}\n")
    (dot_git / "refs" / "heads" / AGENT_BRANCH).write_text(f"{co.commit}\n")
    (dot_git / "HEAD").write_text(f"ref: refs/heads/{AGENT_BRANCH}\n")
    if _object_format(co.commit) == "sha256":
        version, extensions = 1, "[extensions]\n\tobjectformat = sha256\n"
    else:
        version, extensions = 0, ""
    (dot_git / "config").write_text(
        f"[core]\n\trepositoryformatversion = {version}\n\tfilemode = true\n\tbare = false\n"
        f"\tlogallrefupdates = true\n{extensions}"
        f"[user]\n\tname = {AGENT_NAME}\n\temail = {AGENT_EMAIL}\n"
    )
    # copy2 keeps the mtime, which git's racy-clean check compares file times against.
    shutil.copy2(co.git_dir / "index", dot_git / "index")


def hand_over(path: Path, owner: int, *, recursive: bool = True) -> None:
    """chown `path` (and with `recursive` everything under it) to `owner`; links themselves."""
    os.lchown(path, owner, owner)
    if recursive:
        for directory, subdirectories, files in os.walk(path):
            for name in (*subdirectories, *files):
                os.lchown(os.path.join(directory, name), owner, owner)


def cleanup(co: Checkout) -> None:
    """Remove the run directory, including read-only files and directories the agent made."""
    remove_tree(co.root)


def remove_tree(path: Path) -> None:
    """Remove `path` and everything under it, read-only directories included.

    Entries that vanish meanwhile (another process removing the same tree) are not an error.
    """

    def tolerate_vanished(_function, _path, exc: BaseException) -> None:
        if not isinstance(exc, FileNotFoundError):
            raise exc

    if not path.exists():
        return
    try:
        shutil.rmtree(path, onexc=tolerate_vanished)
        return
    except OSError:
        pass  # a directory the agent made read-only: make every directory writable, then retry
    for directory, subdirectories, _files in os.walk(path):
        for name in subdirectories:
            subdirectory = os.path.join(directory, name)
            if not os.path.islink(subdirectory):
                try:
                    os.chmod(subdirectory, stat.S_IRWXU)
                except FileNotFoundError:
                    pass
    shutil.rmtree(path, onexc=tolerate_vanished)


# --- Protected and hidden tests ---------------------------------------------------------------
#
# After the agent has ended, the worker puts the prompt's test files back and adds its hidden
# tests, so what grades a run is the prompt author's. Git decides which paths match (pathspecs
# with glob magic) and writes the files, into a staging directory in the run directory; each is
# then moved into the work tree through directory descriptors opened without following links.
# Whatever the agent left at a path or in place of one of its directories (a file, a symlink, a
# directory) is moved aside first, never followed. All of it goes through the worker's git dir;
# the agent's `work/.git` is never read.

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class _Entry:
    mode: str
    path: bytes


def _test_file_pathspecs(globs: Sequence[str]) -> list[str]:
    """git pathspecs for test_files globs: from the top; `*` within a directory, `**` across."""
    return [f":(top,glob){glob}" for glob in globs]


def changed_test_files(co: Checkout, tree: str, globs: Sequence[str]) -> list[str]:
    """The paths matching `globs` that differ between the checkout's commit and `tree` (the
    captured work tree): modified, deleted and added ones, both sides of a rename."""
    return [_decode_path(path) for path in _changed(co, tree, globs)]


def _changed(co: Checkout, tree: str, globs: Sequence[str], *, added_only: bool = False):
    if not globs:
        return []
    only = ["--diff-filter=A"] if added_only else []
    output = _git(
        ["diff-tree", "-r", "-z", "--no-renames", "--name-only", *only, co.commit, tree, "--"]
        + _test_file_pathspecs(globs),
        git_dir=co.git_dir,
    ).stdout
    return _split_z(output)


def untracked_test_files(co: Checkout, globs: Sequence[str]) -> frozenset[bytes]:
    """The untracked paths of the work tree that match `globs`, ignored ones included (a nested
    repository counts as one "dir/" path). Taken after the setup command: what restoring keeps."""
    if not globs:
        return frozenset()
    output = _git(
        ["ls-files", "-z", "--others", "--", *_test_file_pathspecs(globs)],
        git_dir=co.git_dir,
        work_tree=co.work,
    ).stdout
    return frozenset(_split_z(output))


def restore_test_files(
    co: Checkout,
    globs: Sequence[str],
    *,
    tree: str,
    keep: frozenset[bytes] = frozenset(),
    owner: int | None = None,
) -> None:
    """Put every path matching `globs` back as it is at the checkout's commit.

    Committed paths are written again, so the ones the agent deleted come back. Paths the commit
    does not have are removed: what is untracked now (ignored files too) and what `tree`, the
    captured work tree, added (which includes files of nested repositories), except those in
    `keep`. `owner`: as for `checkout`, files that uid can use.
    """
    if not globs:
        return
    pathspecs = _test_file_pathspecs(globs)
    with _commit_index(co.git_dir, co.commit) as index:
        entries = _index_entries(co.git_dir, index, pathspecs)
        committed = {entry.path for entry in entries}
        added = _changed(co, tree, globs, added_only=True)
        stray = {path.rstrip(b"/") for path in [*untracked_test_files(co, globs), *added]}
        with _WorkTree(co, owner) as work:
            for path in sorted(stray - committed - {path.rstrip(b"/") for path in keep}):
                work.remove(path)
            work.place(index, entries)


def remove_bytecode(co: Checkout) -> None:
    """Remove Python's bytecode caches (`__pycache__`, `*.pyc`) from the work tree, so tests
    run the sources as they are. A cache is trusted while the source's size and mtime (whole
    seconds) match: an edit of the same length within the second after an import, or an mtime
    set back on purpose, would otherwise be graded as the code before it. Never follows a link;
    call it only when nothing runs in the work tree."""
    for directory, subdirectories, files in os.walk(co.work):
        for name in list(subdirectories):
            if name == "__pycache__":
                subdirectories.remove(name)
                path = Path(directory, name)
                if path.is_symlink():
                    path.unlink()
                else:
                    remove_tree(path)
        for name in files:
            if name.endswith(".pyc"):
                Path(directory, name).unlink(missing_ok=True)


def add_hidden_tests(
    co: Checkout, commit: str, paths: Sequence[str], *, owner: int | None = None
) -> None:
    """Write `paths` (files or directories) as they are at `commit` into the work tree, in place
    of whatever is there. `commit` is of the checkout's repository and must be in its mirror
    (`ensure_mirror` with it), whose objects the worker's git dir borrows. A commit or a path
    that is not there is a WorkspaceError naming it."""
    if not commit_exists(co.git_dir, commit):
        raise WorkspaceError(f"The hidden tests' commit {commit} is not in the repository.")
    with _commit_index(co.git_dir, commit) as index:
        entries = _index_entries(co.git_dir, index, _literal_pathspecs(paths))
        if missing := _missing(paths, entries):
            raise WorkspaceError(
                f"Hidden test path {', '.join(map(repr, missing))} not in commit {commit}."
            )
        with _WorkTree(co, owner) as work:
            for path in paths:
                work.remove(os.fsencode(path))
            work.place(index, entries)


def missing_paths(git_dir: Path, commit: str, paths: Sequence[str]) -> list[str]:
    """Those of `paths` (files or directories) that `commit` does not have."""
    if not paths:
        return []
    with _commit_index(git_dir, commit) as index:
        return _missing(paths, _index_entries(git_dir, index, _literal_pathspecs(paths)))


def _literal_pathspecs(paths: Sequence[str]) -> list[str]:
    return [f":(top,literal){path}" for path in paths]


def _missing(paths: Sequence[str], entries: list[_Entry]) -> list[str]:
    found = [entry.path for entry in entries]
    missing = []
    for path in paths:
        wanted = os.fsencode(path)
        if not any(p == wanted or p.startswith(wanted + b"/") for p in found):
            missing.append(path)
    return missing


@contextmanager
def _commit_index(git_dir: Path, commit: str) -> Iterator[Path]:
    """A temporary index holding `commit`'s tree."""
    with tempfile.TemporaryDirectory(prefix="mergeable-index-") as scratch:
        index = Path(scratch) / "index"
        _git(["read-tree", "--end-of-options", commit], git_dir=git_dir, index_file=index)
        yield index


def _index_entries(git_dir: Path, index: Path, pathspecs: Sequence[str]) -> list[_Entry]:
    output = _git(
        ["ls-files", "-z", "--stage", "--", *pathspecs], git_dir=git_dir, index_file=index
    ).stdout
    entries = []
    for record in _split_z(output):
        meta, path = record.split(b"\t", 1)
        entries.append(_Entry(mode=meta.split(b" ", 1)[0].decode(), path=path))
    return entries


class _WorkTree:
    """The agent's work tree, changed by the worker without following anything the agent left.

    What is in the way goes to a directory of its own in the run directory (outside the work
    tree, removed with the checkout): a rename never follows a link and costs the same for a
    file as for a directory of any size.
    """

    def __init__(self, co: Checkout, owner: int | None) -> None:
        self.co = co
        self.owner = owner
        self.moved = 0

    def __enter__(self) -> _WorkTree:
        self.top = os.open(self.co.work, _DIRECTORY_FLAGS)
        aside = tempfile.mkdtemp(prefix="moved-aside-", dir=self.co.root)
        self.aside = os.open(aside, _DIRECTORY_FLAGS)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.aside)
        os.close(self.top)

    def remove(self, path: bytes) -> None:
        """Move whatever is at `path` aside; nothing when a directory on the way is not one."""
        parent = self._parent(path, create=False)
        if parent is not None:
            try:
                self._move_aside(parent, _parts(path)[-1])
            finally:
                os.close(parent)

    def place(self, index: Path, entries: list[_Entry]) -> None:
        """Write `entries` of `index` into the work tree, each in place of what is there."""
        entries = [entry for entry in entries if entry.mode != _GITLINK_MODE]
        if not entries:
            return
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=self.co.root))
        _git(
            ["checkout-index", "-z", "--stdin"],
            git_dir=self.co.git_dir,
            work_tree=staging,
            index_file=index,
            input=b"".join(entry.path + b"\0" for entry in entries),
            # As the checkout wrote the work tree: files the sandbox's uid can use.
            umask=-1 if self.owner is None else 0,
        )
        for entry in entries:
            parent = self._parent(entry.path, create=True)
            try:
                name = _parts(entry.path)[-1]
                self._move_aside(parent, name)
                os.rename(os.fsencode(staging) + b"/" + entry.path, name, dst_dir_fd=parent)
            finally:
                os.close(parent)
        shutil.rmtree(staging)

    def _parent(self, path: bytes, *, create: bool) -> int | None:
        """A descriptor of the real directory that holds `path`. Where a directory on the way is
        missing or something else (a file, a link), `create` puts one there; else None."""
        directory = os.dup(self.top)
        try:
            for name in _parts(path)[:-1]:
                try:
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=directory)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise
                    if not create:
                        os.close(directory)
                        return None
                    self._move_aside(directory, name)
                    os.mkdir(name, 0o777, dir_fd=directory)
                    child = os.open(name, _DIRECTORY_FLAGS, dir_fd=directory)
                    if self.owner is not None:
                        os.fchmod(child, 0o777)  # as the checkout made directories: umask 0
                os.close(directory)
                directory = child
        except BaseException:
            os.close(directory)
            raise
        return directory

    def _move_aside(self, parent: int, name: bytes) -> None:
        self.moved += 1
        target = str(self.moved).encode()
        try:
            os.rename(name, target, src_dir_fd=parent, dst_dir_fd=self.aside)
        except FileNotFoundError:
            pass
        except PermissionError:
            # A worker that is not root shares its uid with the agent, which may have made
            # directories read-only. (Root is not stopped by modes.)
            _make_writable(parent)
            try:
                moved = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
            except OSError:
                pass  # not a directory: renaming it needs nothing of it
            else:
                _make_writable(moved)
                os.close(moved)
            os.rename(name, target, src_dir_fd=parent, dst_dir_fd=self.aside)


def _make_writable(directory: int) -> None:
    os.fchmod(directory, stat.S_IMODE(os.fstat(directory).st_mode) | stat.S_IRWXU)


def _parts(path: bytes) -> list[bytes]:
    parts = path.split(b"/")
    if any(part in (b"", b".", b"..", b".git") for part in parts):
        raise WorkspaceError(f"Refusing to write {_decode_path(path)!r} into the workspace.")
    return parts


# --- Diff capture -----------------------------------------------------------------------------


@dataclass
class CapturedDiff:
    patch: str
    files: list[str]
    additions: int
    deletions: int
    binary_files: list[str]
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    tree: str = ""  # the captured work tree, in the checkout's git dir


def capture_diff(
    co: Checkout, *, exclude: Sequence[str] = DEFAULT_EXCLUDES, text_cap: int = 512 * 1024
) -> CapturedDiff:
    """Capture everything that changed in the work tree since the checkout's commit.

    Steps: load the commit into a temporary index; stage every tracked path plus every untracked
    path the repository's .gitignore does not ignore (minus `exclude` and any `.git`); write that
    index as a tree; diff the commit against the tree. Nothing of git_dir's own index is used.

    `files` lists changed paths (the new path of a rename). `before` and `after` hold the text of
    changed, non-binary files keyed by that same path; a file larger than `text_cap` bytes is left
    out, as is the missing side of an added or deleted file. A symlink's text is its target.
    """
    with tempfile.TemporaryDirectory(prefix="mergeable-index-") as scratch:
        index = Path(scratch) / "index"

        def git(args: Sequence[str], **kwargs) -> subprocess.CompletedProcess[bytes]:
            return _git(args, git_dir=co.git_dir, work_tree=co.work, index_file=index, **kwargs)

        # Start from the checkout's own index (it lives in git_dir, out of the agent's reach):
        # its stat data lets git skip re-hashing the files nobody touched.
        checkout_index = co.git_dir / "index"
        if checkout_index.is_file():
            # copy2 keeps the mtime: git relies on it to spot "racily clean" entries (files
            # changed within the same second as the checkout, with the same size).
            shutil.copy2(checkout_index, index)
            changed_only = True
        else:
            git(["read-tree", co.commit])
            changed_only = False
        paths, deleted = _paths_to_stage(
            git, co.work, exclude, changed_only=changed_only, commit=co.commit
        )
        if deleted:
            # Apart, and forced: a file whose directory the agent replaced (say by a symlink) is
            # deleted too, and `update-index --remove` refuses a path "beyond a symbolic link".
            git(
                ["update-index", "--force-remove", "-z", "--stdin"],
                input=b"".join(path + b"\0" for path in deleted),
            )
        if paths:
            git(
                ["update-index", "--add", "--remove", "--replace", "-z", "--stdin"],
                input=b"".join(path + b"\0" for path in paths),
            )
        tree = git(["write-tree"]).stdout.decode().strip()

    return _diff(co.git_dir, co.commit, tree, text_cap)


def _paths_to_stage(
    git, work: Path, exclude: Sequence[str], *, changed_only: bool = False, commit: str = ""
) -> tuple[list[bytes], list[bytes]]:
    """Every path `git add -A` would consider, without its failure on nested repositories: the
    paths to stage, and apart from them the tracked paths that are gone (to remove).

    With `changed_only` (the index holds valid stat data for the checkout), tracked paths are
    limited to those git sees as modified or deleted.

    Tracked submodules keep their committed state. A nested repository the agent created (say by
    `cargo new`) is listed by git as one "dir/" entry; its files are staged as plain files, so the
    diff shows the code and not a gitlink.
    """
    paths: list[bytes] = []
    gitlinks: set[bytes] | frozenset[bytes]
    if changed_only and commit:
        # One call lists both, tagged: "? " untracked, "C " modified, "R " deleted.
        gitlinks = _gitlinks(git, commit)
        tracked, others, gone = [], [], []
        listing = git(["ls-files", "-z", "-t", "-m", "-d", "--others", "--exclude-standard"])
        for record in _split_z(listing.stdout):
            {b"? ": others, b"R ": gone}.get(record[:2], tracked).append(record[2:])
    else:
        gitlinks, tracked = _read_gitlinks(git, keep_tracked=not changed_only)
        if changed_only:
            tracked = _split_z(git(["ls-files", "-z", "-m"]).stdout)
        gone = _split_z(git(["ls-files", "-z", "-d"]).stdout)
        others = _split_z(git(["ls-files", "-z", "--others", "--exclude-standard"]).stdout)
    # A tracked file whose directory the agent replaced by a link is gone, whatever the link
    # leads to (git may call it modified when the link's target has a file of that name).
    gone += [p for p in tracked if _behind_a_link(work, p)]
    deleted = [p for p in dict.fromkeys(gone) if p not in gitlinks and not _excluded(p, exclude)]
    skipped = gitlinks | set(deleted)
    paths += [p for p in dict.fromkeys(tracked) if p not in skipped and not _excluded(p, exclude)]

    nested: list[bytes] = []
    for path in others:
        if path.endswith(b"/"):
            nested += _files_under(work, path)
        elif not _excluded(path, exclude):
            paths.append(path)

    nested = [path for path in nested if not _excluded(path, exclude)]
    if nested:
        ignored = git(
            ["check-ignore", "-z", "--stdin"],
            input=b"".join(path + b"\0" for path in nested),
            ok_codes=(0, 1),
        )
        ignored_paths = set(_split_z(ignored.stdout))
        paths += [path for path in nested if path not in ignored_paths]
    return paths, deleted


def _behind_a_link(work: Path, path: bytes) -> bool:
    """Whether a directory on the way to `path` is not a real directory (a link, a file)."""
    current = os.fsencode(work)
    for part in path.split(b"/")[:-1]:
        current = os.path.join(current, part)
        try:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                return True
        except OSError:
            return True
    return False


def _read_gitlinks(git, *, keep_tracked: bool) -> tuple[set[bytes], list[bytes]]:
    """The index's submodule paths, and (with `keep_tracked`) every other tracked path."""
    gitlinks: set[bytes] = set()
    tracked: list[bytes] = []
    for record in _split_z(git(["ls-files", "-z", "--stage"]).stdout):
        meta, path = record.split(b"\t", 1)
        if meta.split(b" ", 1)[0].decode() == _GITLINK_MODE:
            gitlinks.add(path)
        elif keep_tracked:
            tracked.append(path)
    return gitlinks, tracked


# The submodule paths of a commit, read from an index freshly checked out from it. A commit's
# tree never changes, so this is cached: listing a large index on every run costs real time.
_GITLINKS_BY_COMMIT: dict[str, frozenset[bytes]] = {}
_GITLINKS_CACHE_SIZE = 512


def _gitlinks(git, commit: str) -> frozenset[bytes]:
    found = _GITLINKS_BY_COMMIT.get(commit)
    if found is None:
        found = frozenset(_read_gitlinks(git, keep_tracked=False)[0])
        if len(_GITLINKS_BY_COMMIT) >= _GITLINKS_CACHE_SIZE:
            _GITLINKS_BY_COMMIT.clear()
        _GITLINKS_BY_COMMIT[commit] = found
    return found


def _files_under(work: Path, relative: bytes) -> list[bytes]:
    found: list[bytes] = []
    top = os.path.join(os.fsencode(work), relative.rstrip(b"/"))
    for directory, subdirectories, files in os.walk(top):
        for name in list(subdirectories):
            if os.path.islink(os.path.join(directory, name)):
                files.append(name)  # a symlink to a directory is staged as a link
                subdirectories.remove(name)
            elif name == b".git":
                subdirectories.remove(name)
        for name in files:
            if name != b".git":
                found.append(os.path.relpath(os.path.join(directory, name), os.fsencode(work)))
    return found


def _excluded(path: bytes, patterns: Sequence[str]) -> bool:
    parts = path.decode("utf-8", "surrogateescape").split("/")
    if ".git" in parts:
        return True
    for pattern in patterns:
        directories_only = pattern.endswith("/")
        bare = pattern.strip("/")
        if "/" in bare:
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            candidates = prefixes[:-1] if directories_only else prefixes
        else:
            candidates = parts[:-1] if directories_only else parts
        if any(fnmatchcase(candidate, bare) for candidate in candidates):
            return True
    return False


def _split_z(output: bytes) -> list[bytes]:
    return [item for item in output.split(b"\0") if item]


@dataclass
class _Change:
    path: str
    old_mode: str
    new_mode: str
    old_blob: str
    new_blob: str


def _diff(git_dir: Path, commit: str, tree: str, text_cap: int) -> CapturedDiff:
    def git(args: Sequence[str], **kwargs) -> subprocess.CompletedProcess[bytes]:
        return _git(args, git_dir=git_dir, **kwargs)

    common = ["-M", "--no-ext-diff", "--no-textconv", commit, tree, "--"]
    patch = git(
        ["diff", "--binary", "--no-color", "--src-prefix=a/", "--dst-prefix=b/", *common]
    ).stdout.decode("utf-8", "replace")
    # One git call for both: the raw records come first, then the numstat ones.
    changes, numstat = _parse_raw(
        git(["diff", "-z", "--raw", "--numstat", "--no-abbrev", *common]).stdout
    )
    additions = deletions = 0
    binary_files: list[str] = []
    for path, added, deleted in _parse_numstat(numstat):
        if added is None or deleted is None:
            binary_files.append(path)
        else:
            additions += added
            deletions += deleted

    texts = [
        c
        for c in changes
        if c.path not in binary_files and _GITLINK_MODE not in (c.old_mode, c.new_mode)
    ]
    blobs = _read_blobs(
        git,
        {blob for c in texts for blob in (c.old_blob, c.new_blob) if set(blob) != {"0"}},
        text_cap,
    )
    before = {c.path: blobs[c.old_blob] for c in texts if c.old_blob in blobs}
    after = {c.path: blobs[c.new_blob] for c in texts if c.new_blob in blobs}
    return CapturedDiff(
        patch=patch,
        files=[c.path for c in changes],
        additions=additions,
        deletions=deletions,
        binary_files=binary_files,
        before=before,
        after=after,
        tree=tree,
    )


def _decode_path(path: bytes) -> str:
    return path.decode("utf-8", "replace")


def _parse_raw(output: bytes) -> tuple[list[_Change], bytes]:
    """The raw records at the start of `output`, and the rest of it (any numstat records).

    Records: ":old_mode new_mode old_blob new_blob status" NUL path NUL [new_path NUL]
    """
    items = output.split(b"\0")
    changes: list[_Change] = []
    i = 0
    while i < len(items) and items[i].startswith(b":"):
        old_mode, new_mode, old_blob, new_blob, status = items[i][1:].decode().split(" ")
        renamed = status[0] in "RC"
        path = items[i + 2] if renamed else items[i + 1]
        changes.append(_Change(_decode_path(path), old_mode, new_mode, old_blob, new_blob))
        i += 3 if renamed else 2
    return changes, b"\0".join(items[i:])


def _parse_numstat(output: bytes) -> list[tuple[str, int | None, int | None]]:
    # Records: "added TAB deleted TAB path" NUL, or for renames "added TAB deleted TAB" NUL old NUL
    # new NUL. Binary files count "-" for both.
    items = output.split(b"\0")
    rows: list[tuple[str, int | None, int | None]] = []
    i = 0
    while i < len(items) and items[i]:
        added, deleted, path = items[i].split(b"\t", 2)
        if path:
            i += 1
        else:
            path = items[i + 2]
            i += 3
        rows.append(
            (
                _decode_path(path),
                None if added == b"-" else int(added),
                None if deleted == b"-" else int(deleted),
            )
        )
    return rows


def _read_blobs(git, blobs: set[str], text_cap: int) -> dict[str, str]:
    if not blobs:
        return {}
    request = "".join(f"{blob}\n" for blob in sorted(blobs)).encode()
    sizes = git(
        ["cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"], input=request
    )
    small = []
    for line in sizes.stdout.decode().splitlines():
        name, kind, size = line.split(" ")
        if kind == "blob" and int(size) <= text_cap:
            small.append(name)
    if not small:
        return {}
    output = git(["cat-file", "--batch"], input="".join(f"{b}\n" for b in small).encode()).stdout
    texts: dict[str, str] = {}
    position = 0
    while position < len(output):
        header_end = output.index(b"\n", position)
        name, _kind, size = output[position:header_end].decode().split(" ")
        start = header_end + 1
        texts[name] = output[start : start + int(size)].decode("utf-8", "replace")
        position = start + int(size) + 1  # the content is followed by a newline
    return texts

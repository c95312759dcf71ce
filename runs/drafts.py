"""Prompts drafted from a repository's own merged changes, the SWE-bench way, and proven.

1. `candidates`: one `git log --numstat` pass over the branch's first-parent line. Each merge
   (its change against its first parent: the whole merged branch) or single commit that changes
   both code and tests is a candidate.
2. `draft_from_candidate`: the parent is the start, the change's test files (as at the change)
   are the hidden tests, the rest of the change is the reference patch, the commit message or
   the issue it references on the forge is the instructions.
3. `prove_draft` (a background task, with progress): in the sandbox, at the parent with the
   hidden tests added, the test command must fail (twice); with the reference patch applied it
   must pass (twice). Otherwise the draft says why: flaky, passes already, the reference does
   not fix it, or it could not be run.
4. `accept_draft`: an admin's edited draft becomes a prompt of a prompt set.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from runs import enqueue, forges, sandbox, test_results, workspace
from runs.caps import RunCaps
from runs.execution import TEST_TIMEOUT, cap_limits
from runs.models import Prompt, PromptDraft, PromptSet, Repository

log = logging.getLogger(__name__)

MAX_SCANNED_COMMITS = 50_000
PROOF_RUNS = 2  # each side runs twice: a test that changes its mind is flaky
PROOF_STEPS = 2 + 2 * PROOF_RUNS  # prepare, the runs before, apply, the runs after

_TEST_DIRECTORIES = {"test", "tests", "testing", "spec", "specs", "__tests__", "t"}
_TEST_NAME = re.compile(
    r"(^test_.*\.py$|.*_test\.(py|go|rb|exs?|rs)$|.*_spec\.rb$|.*\.(test|spec)\.[cm]?[jt]sx?$"
    r"|.*Tests?\.(java|kt|cs|swift|php)$|^test.*\.(sh|bats)$)"
)
_DOCUMENTATION = re.compile(
    r"(\.(md|rst|txt|adoc)$|^(docs?|documentation)/|(^|/)(CHANGELOG|LICENSE|AUTHORS)[^/]*$)", re.I
)


class DraftingError(Exception):
    """The history cannot be read; the message says why (credentials hidden)."""


def is_test_path(path: str) -> bool:
    parts = PurePosixPath(path).parts
    return bool(_TEST_DIRECTORIES & set(parts[:-1])) or bool(_TEST_NAME.match(parts[-1]))


def is_documentation(path: str) -> bool:
    return bool(_DOCUMENTATION.search(path))


@dataclass
class ChangedFile:
    path: str
    additions: int | None  # None for a binary file
    deletions: int | None
    is_test: bool


@dataclass
class Candidate:
    sha: str
    parent: str
    author_date: datetime
    subject: str
    is_merge: bool
    files: list[ChangedFile] = field(default_factory=list)

    @property
    def tests(self) -> list[str]:
        return [f.path for f in self.files if f.is_test]

    @property
    def code_files(self) -> list[str]:
        return [f.path for f in self.files if not f.is_test]

    @property
    def additions(self) -> int:
        return sum(f.additions or 0 for f in self.files)

    @property
    def deletions(self) -> int:
        return sum(f.deletions or 0 for f in self.files)

    @property
    def lines(self) -> int:
        return self.additions + self.deletions

    def changes_code_and_tests(self) -> bool:
        return bool(self.tests) and any(not is_documentation(p) for p in self.code_files)

    def as_dict(self) -> dict:
        return {
            "sha": self.sha,
            "parent": self.parent,
            "author_date": self.author_date.isoformat(),
            "subject": self.subject,
            "merge": self.is_merge,
            "files": len(self.files),
            "additions": self.additions,
            "deletions": self.deletions,
            "tests": self.tests,
        }


def mirror_for(repository: Repository, ref: str) -> Path:
    """The repository's mirror, fetched for `ref` (a branch is always fetched, so it is fresh)."""
    try:
        url = workspace.validate_repository_url(repository.url, settings.MERGEABLE_LOCAL_REPO_ROOTS)
        return workspace.ensure_mirror(url, Path(settings.MERGEABLE_WORKSPACE_ROOT), ref)
    except (ValueError, workspace.WorkspaceError) as exc:
        raise DraftingError(workspace.redact_url(str(exc))[:500]) from None


def local_mirror(repository: Repository) -> Path | None:
    """The repository's mirror as it is on this machine, without fetching; None if there is
    none yet (a repository check makes it)."""
    mirror = workspace.mirror_path(Path(settings.MERGEABLE_WORKSPACE_ROOT), repository.url)
    return mirror if (mirror / "HEAD").exists() else None


def candidates(
    repository: Repository,
    *,
    branch: str = "",
    since: str = "",
    paths: str = "",
    limit: int | None = None,
    mirror: Path | None = None,
) -> list[Candidate]:
    """Changes of `branch` (default: the repository's default branch, else HEAD) that change
    both code and tests, newest first. `since` is an ISO date (2024-01-31), of authorship; `paths` a
    glob that one of the change's files must match. Raises DraftingError."""
    ref = branch or repository.default_branch or "HEAD"
    if ref.startswith("-"):
        raise DraftingError(f"{ref!r} is not a branch name.")
    mirror = mirror or mirror_for(repository, ref)
    try:
        sha = workspace.resolve_commit(mirror, ref)
    except workspace.WorkspaceError:
        raise DraftingError(f"The branch {ref!r} is not in the repository.") from None
    return list_candidates(mirror, sha, since=since, paths=paths, limit=limit)


def list_candidates(
    git_dir: Path,
    head: str,
    *,
    since: str = "",
    paths: str = "",
    limit: int | None = None,
    max_commits: int = MAX_SCANNED_COMMITS,
) -> list[Candidate]:
    """The candidates of `head`'s first-parent history in `git_dir`, from one `git log` pass."""
    args = [
        "log",
        "--first-parent",
        "--diff-merges=first-parent",
        "--no-renames",
        "--numstat",
        "-z",
        f"--max-count={max_commits}",
        "--format=%x1e%H%x1f%P%x1f%aI%x1f%s",
    ]
    since_date = None
    if since:
        try:
            since_date = datetime.fromisoformat(since)
        except ValueError:
            raise DraftingError(f"{since!r} is not a date such as 2024-01-31.") from None
        if since_date.tzinfo is None:
            since_date = since_date.replace(tzinfo=UTC)
        # git filters on the committer date, which is never before the author date: a cheap
        # first cut; the author date, which the page shows, decides.
        args.append(f"--since={since_date.isoformat()}")
    output = workspace.git([*args, head, "--"], git_dir=git_dir).stdout
    found = []
    for candidate in _parse_log(output):
        if not candidate.changes_code_and_tests():
            continue
        if since_date and candidate.author_date < since_date:
            continue
        if paths and not any(fnmatch.fnmatch(f.path, paths) for f in candidate.files):
            continue
        found.append(candidate)
        if limit and len(found) >= limit:
            break
    return found


def _parse_log(output: bytes):
    for record in output.split(b"\x1e")[1:]:
        header, _, stats = record.partition(b"\0")
        fields = header.decode("utf-8", "replace").split("\x1f")
        if len(fields) != 4:
            continue
        sha, parents, date, subject = fields
        parent_list = parents.split()
        if not parent_list:
            continue  # the root commit: no parent to start from
        candidate = Candidate(
            sha=sha,
            parent=parent_list[0],
            author_date=datetime.fromisoformat(date),
            subject=subject,
            is_merge=len(parent_list) > 1,
        )
        for entry in stats.lstrip(b"\n").split(b"\0"):
            parts = entry.split(b"\t", 2)
            if len(parts) != 3 or not parts[2]:
                continue
            path = parts[2].decode("utf-8", "surrogateescape")
            added = None if parts[0] == b"-" else int(parts[0])
            deleted = None if parts[1] == b"-" else int(parts[1])
            candidate.files.append(ChangedFile(path, added, deleted, is_test_path(path)))
        yield candidate


# -- Drafts --------------------------------------------------------------------------------------


def size_tag(lines: int) -> str:
    return "small" if lines <= 30 else "medium" if lines <= 300 else "large"


def tags_for(candidate: Candidate, code_files: list[str]) -> list[str]:
    tags = [size_tag(candidate.lines)]
    if len(code_files) > 1:
        tags.append("multi-file")
    areas = []
    for path in code_files:
        parts = PurePosixPath(path).parts
        area = parts[0] if len(parts) > 1 else ""
        if area and area not in areas:
            areas.append(area)
    return tags + areas[:3]


def grading_command(template: str, tests: list[str]) -> str:
    """The repository's test command template with `{tests}` replaced by these test files."""
    return template.replace("{tests}", " ".join(shlex.quote(path) for path in tests))


def draft_from_candidate(
    repository: Repository, sha: str, *, mirror: Path | None = None, queue_proof: bool = True
) -> PromptDraft:
    """Make (or remake, while not yet accepted) the draft of the change `sha`, and queue its
    proof (unless the caller proves it itself). Raises DraftingError when `sha` is not a change
    with code and tests."""
    mirror = mirror or mirror_for(repository, sha)
    try:
        sha = workspace.resolve_commit(mirror, sha)
    except workspace.WorkspaceError:
        raise DraftingError(f"The commit {sha[:40]!r} is not in the repository.") from None
    found = list_candidates(mirror, sha, max_commits=1)
    if not found:
        raise DraftingError(f"The commit {sha[:12]} does not change both code and tests.")
    candidate = found[0]
    message = _message(mirror, candidate)
    hidden = _present_paths(mirror, sha, candidate.tests)
    code_files = candidate.code_files
    reference = _diff(mirror, candidate.parent, sha, code_files)
    title, body = _title_and_body(candidate, message)
    instructions, source = body or title, "commit message"
    token = repository.forge_token if isinstance(repository.forge_token, str) else ""
    issue, problems = forges.first_text(repository.forge, repository.forge_url, token, message)
    if issue is not None:
        instructions = "\n\n".join(part for part in (issue.title, issue.body) if part)
        source = f"{repository.get_forge_display()} {issue.reference}"
    values = {
        "parent": candidate.parent,
        "subject": candidate.subject[:300],
        "author_date": candidate.author_date,
        "title": title[:300],
        "instructions": instructions,
        "instructions_source": source,
        "tags": tags_for(candidate, code_files),
        "expected_files": [path for path in code_files if not is_documentation(path)] or code_files,
        "reference_patch": reference,
        "hidden_tests_paths": hidden,
        "test_command": grading_command(repository.test_command_template, hidden),
        "additions": candidate.additions,
        "deletions": candidate.deletions,
        "proof_status": PromptDraft.PENDING,
        "proof": {"notes": problems[:5]} if problems else {},
    }
    with transaction.atomic():
        draft = (
            PromptDraft.objects.select_for_update()
            .filter(repository=repository, commit=sha)
            .first()
        )
        if draft is not None and draft.prompt_id:
            return draft  # accepted: its prompt is the admin's now
        draft, _ = PromptDraft.objects.update_or_create(
            repository=repository, commit=sha, defaults=values
        )
        if queue_proof:
            enqueue.draft_proof(draft.pk)
    return draft


def _message(mirror: Path, candidate: Candidate) -> str:
    """The commit's message; for a merge, followed by the messages of the commits it merged."""
    text = workspace.git(["log", "-1", "--format=%B", candidate.sha], git_dir=mirror).stdout
    if candidate.is_merge:
        merged = workspace.git(
            ["log", "--no-merges", "--format=%B", f"{candidate.parent}..{candidate.sha}"],
            git_dir=mirror,
        ).stdout
        text += b"\n" + merged
    return text.decode("utf-8", "replace").strip()


def _title_and_body(candidate: Candidate, message: str) -> tuple[str, str]:
    lines = message.splitlines()
    body = "\n".join(lines[1:]).strip()
    title = candidate.subject
    # "Merge pull request #12 from acme/fix" says nothing: the next line is the PR's title.
    if candidate.is_merge and title.lower().startswith("merge ") and body:
        first, _, rest = body.partition("\n")
        title, body = first.strip(), rest.strip()
    return title, body


def _present_paths(mirror: Path, sha: str, paths: list[str]) -> list[str]:
    """Those of `paths` that exist at `sha` (a change may delete a test file)."""
    missing = set(workspace.missing_paths(mirror, sha, paths)) if paths else set()
    return [path for path in paths if path not in missing]


def _diff(mirror: Path, parent: str, sha: str, paths: list[str]) -> str:
    if not paths:
        return ""
    args = ["diff", "--binary", "--no-ext-diff", "--no-textconv", "--no-color", "--no-renames"]
    output = workspace.git(
        [*args, parent, sha, "--", *[f":(literal){p}" for p in paths]], git_dir=mirror
    )
    return output.stdout.decode("utf-8", "surrogateescape")


# -- Proof ---------------------------------------------------------------------------------------


def request_proof(draft: PromptDraft) -> None:
    draft.proof_status, draft.proof = PromptDraft.PENDING, {}
    PromptDraft.objects.filter(pk=draft.pk).update(proof_status=draft.proof_status, proof={})
    enqueue.draft_proof(draft.pk)


class _Unprovable(Exception):
    pass


def prove_draft(draft_id: int) -> str | None:
    """Check the draft the SWE-bench way in the sandbox, recording progress as it goes; returns
    the proof status it ends with (None when the draft is gone)."""
    draft = PromptDraft.objects.select_related("repository").filter(pk=draft_id).first()
    if draft is None:
        return None
    proof: dict = {
        "step": 0,
        "steps": PROOF_STEPS,
        "checks": [],
        "notes": draft.proof.get("notes", []),
    }

    def progress(message: str, status: str = PromptDraft.PROVING) -> None:
        proof["step"] = min(proof["step"] + 1, PROOF_STEPS)
        proof["message"] = message
        PromptDraft.objects.filter(pk=draft_id).update(proof_status=status, proof=proof)

    run_dir = Path(settings.MERGEABLE_CHECKOUT_ROOT) / "drafts" / uuid.uuid4().hex
    try:
        status, reason = _prove(draft, run_dir, proof, progress)
    except _Unprovable as exc:
        status, reason = PromptDraft.UNPROVABLE, str(exc)
    except (workspace.WorkspaceError, sandbox.SandboxError) as exc:
        status, reason = PromptDraft.UNPROVABLE, workspace.redact_url(str(exc))[:1000]
    except Exception as exc:  # the admin needs an answer on the page whatever went wrong
        log.exception("proving draft %s crashed", draft_id)
        status, reason = PromptDraft.UNPROVABLE, f"Internal error: {type(exc).__name__}"
    finally:
        workspace.remove_tree(run_dir)
    proof.update(step=PROOF_STEPS, message="", reason=reason, proven_at=timezone.now().isoformat())
    PromptDraft.objects.filter(pk=draft_id).update(proof_status=status, proof=proof)
    log.info("proved draft %s: %s", draft_id, status)
    return status


def _prove(draft: PromptDraft, run_dir: Path, proof: dict, progress) -> tuple[str, str]:
    if not draft.test_command.strip():
        raise _Unprovable(
            "The draft has no test command: set the repository's test command template "
            "(e.g. pytest -q {tests}) and draft it again, or write one in the editor."
        )
    if not draft.hidden_tests_paths:
        raise _Unprovable("The change has no test file left at its commit.")
    repository = draft.repository
    progress("Checking out the parent commit and adding the hidden tests")
    try:
        url = workspace.validate_repository_url(repository.url, settings.MERGEABLE_LOCAL_REPO_ROOTS)
    except ValueError as exc:
        raise _Unprovable(f"The repository cannot be used: {exc}") from None
    root = Path(settings.MERGEABLE_WORKSPACE_ROOT)
    mirror = workspace.ensure_mirror(url, root, draft.commit)
    # As for imports: never as root, the caps over every command, no network.
    owner = sandbox.NOBODY_UID if os.geteuid() == 0 else None
    checkout = workspace.checkout(mirror, draft.parent, run_dir, owner=owner)
    workspace.add_hidden_tests(checkout, draft.commit, draft.hidden_tests_paths, owner=owner)
    with RunCaps(
        f"draft-{run_dir.name}",
        cap_limits({}),
        watch_paths=[checkout.work],
        uid=owner,
        nice=sandbox.command_niceness(),
    ) as caps:

        def run_tests(name: str) -> int:
            progress(f"Running the tests {name}")
            result = sandbox.run(
                draft.test_command,
                checkout.work,
                timeout=TEST_TIMEOUT,
                caps=caps,
                uid=owner,
                extra_ro_paths=checkout.sandbox_ro_paths,
            )
            proof["checks"].append(
                {
                    "name": name,
                    "exit_code": result.exit_code,
                    "output_tail": test_results.output_tail(result.output)[-2000:],
                }
            )
            return result.exit_code

        before = [run_tests(f"at the parent, run {n}") for n in range(1, PROOF_RUNS + 1)]
        progress("Applying the reference patch")
        _apply(checkout, draft.reference_patch)
        # The runs before compiled the parent's sources; a same-length fix within the same
        # second would otherwise be tested as the parent's code.
        workspace.remove_bytecode(checkout)
        after = [run_tests(f"with the reference patch, run {n}") for n in range(1, PROOF_RUNS + 1)]
    return judge(before, after)


def judge(before: list[int], after: list[int]) -> tuple[str, str]:
    """The proof status and its reason from the test command's exit codes at the parent (with
    the hidden tests) and with the reference patch applied."""
    if len({code == 0 for code in before}) > 1 or len({code == 0 for code in after}) > 1:
        return PromptDraft.FLAKY, (
            f"The tests changed their mind between identical runs (exit codes at the parent "
            f"{before}, with the reference {after}): a flaky test grades nothing."
        )
    if before[0] == 0:
        return PromptDraft.PASSES_ALREADY, (
            "The hidden tests already pass at the parent commit: they do not test the change."
        )
    if after[0] != 0:
        return PromptDraft.NOT_FIXED, (
            f"The hidden tests still fail with the reference patch applied (exit code "
            f"{after[0]}): the reference does not fix it."
        )
    return PromptDraft.PROVEN, "The tests fail at the parent and pass with the reference patch."


def _apply(checkout: workspace.Checkout, patch: str) -> None:
    if not patch.strip():
        raise _Unprovable("The reference patch is empty.")
    data = patch.encode("utf-8", "surrogateescape")
    if not data.endswith(b"\n"):
        data += b"\n"
    result = workspace.git(
        ["apply", "-"],
        git_dir=checkout.git_dir,
        work_tree=checkout.work,
        input=data,
        cwd=checkout.work,
        ok_codes=tuple(range(256)),
    )
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()[-1000:]
        raise _Unprovable(f"The reference patch does not apply at the parent: {detail}")


# -- Curation ------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")


def quoted_lines(instructions: str, reference_patch: str) -> list[int]:
    """Indexes (0-based) of the instruction lines that quote a code line the reference patch
    adds: such a task gives the answer away."""
    added = set()
    for line in reference_patch.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            code = line[1:].strip()
            if len(code) >= 12:
                added.add(code)
    return [
        index
        for index, line in enumerate(instructions.splitlines())
        if line.strip() and any(code in line for code in added)
    ]


def unmentioned_names(
    instructions: str, reference_patch: str, test_sources: dict[str, str]
) -> list[str]:
    """Names of the code (as the reference patch shows it) that the hidden tests use and the
    instructions never mention: the tests check what the task never asks for, such as a
    function name the agent would have to guess."""
    code_names = set()
    for line in reference_patch.splitlines():
        if not line.startswith(("+++", "---", "diff ", "index ", "@@")):
            code_names.update(_IDENTIFIER.findall(line))
    said = instructions.lower()
    names = []
    for source in test_sources.values():
        for name in _IDENTIFIER.findall(source):
            if name in code_names and name.lower() not in said and name not in names:
                if name.lower() not in _KEYWORDS:
                    names.append(name)
    return names[:20]


_KEYWORDS = {
    "import",
    "from",
    "return",
    "true",
    "false",
    "none",
    "class",
    "self",
    "lambda",
    "print",
    "assert",
    "raise",
    "while",
    "yield",
    "async",
    "await",
    "const",
    "function",
    "pass",
    "else",
    "elif",
    "with",
    "null",
    "void",
    "public",
    "private",
    "static",
    "package",
    "func",
}


def hidden_test_sources(draft: PromptDraft, limit: int = 200_000) -> dict[str, str]:
    """The hidden test files' text at the draft's commit, for the editor's checks."""
    mirror = workspace.mirror_path(Path(settings.MERGEABLE_WORKSPACE_ROOT), draft.repository.url)
    sources = {}
    for path in draft.hidden_tests_paths:
        try:
            blob = workspace.git(
                ["cat-file", "blob", f"{draft.commit}:{path}"], git_dir=mirror
            ).stdout
        except workspace.WorkspaceError:
            continue
        sources[path] = blob[:limit].decode("utf-8", "replace")
    return sources


def accept_draft(draft: PromptDraft, prompt_set: PromptSet, key: str, user) -> Prompt:
    """Add the (edited) draft to `prompt_set` as prompt `key`. Raises ValidationError naming
    what is wrong; only a proven draft is accepted."""
    if draft.prompt_id:
        raise ValidationError("This draft was already accepted.")
    if not draft.is_proven:
        raise ValidationError(
            f"Only a proven draft can be accepted; this one is {draft.get_proof_status_display()}."
        )
    if prompt_set.prompts.filter(key=key).exists():
        raise ValidationError({"key": f"The prompt set already has a prompt {key!r}."})
    last = prompt_set.prompts.order_by("-position").values_list("position", flat=True).first()
    prompt = Prompt(
        prompt_set=prompt_set,
        key=key,
        title=draft.title,
        instructions=draft.instructions,
        repository=draft.repository,
        commit=draft.parent,
        tags=list(draft.tags),
        expected_files=list(draft.expected_files),
        test_command=draft.test_command,
        hidden_tests_commit=draft.commit,
        hidden_tests_paths=list(draft.hidden_tests_paths),
        reference_patch=draft.reference_patch,
        position=0 if last is None else last + 1,
    )
    prompt.full_clean(exclude=["repository", "prompt_set"])
    with transaction.atomic():
        prompt.save()
        updated = PromptDraft.objects.filter(pk=draft.pk, prompt__isnull=True).update(
            prompt=prompt, accepted_by=user, accepted_at=timezone.now()
        )
        if not updated:
            raise ValidationError("This draft was already accepted.")
    draft.prompt = prompt
    return prompt

"""Runs produced elsewhere: a patch or a branch, and optionally the agent's transcript.

A team often has agent output already: a PR branch an agent pushed, a patch from a colleague's
laptop, an aider or Roo Code session. Importing it makes it a run like any other, reviewed,
compared and ranked with the rest. To keep it comparable, the diff is not trusted as given: the
change is applied to a fresh checkout of the prompt's commit, captured with the same
`workspace.capture_diff` as executed runs, and the prompt's tests are run on it in the sandbox.

Everything is validated before anything is stored: a transcript that cannot be read, a patch that
does not apply or touches paths outside the repository, or a branch that cannot be found raises
`ImportProblem` and leaves the database and storage untouched.

Imported contestants that did not exist yet are created with harness "command" on a shared
placeholder model named "external" (provider "openai", no endpoint, no key): they record who
produced the runs, and cannot be launched in a campaign until an admin points them at a model.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from runs import redaction, sandbox, workspace
from runs.agents import base
from runs.caps import RunCaps
from runs.execution import (
    SETUP_TIMEOUT,
    TEST_TIMEOUT,
    cap_limits,
    capture_fields,
    column_text,
    parse_junit,
    save_capture_artifacts,
)
from runs.models import Campaign, Contestant, LanguageModel, Prompt, Run, RunImport, save_file
from runs.transcript import TranscriptWriter, dumps
from runs.transcript import validate as validate_atif

log = logging.getLogger(__name__)

DEFAULT_CAMPAIGN_NAME = "Imported runs"
EXTERNAL_MODEL_NAME = "external"
IMPORTED_REASON = "Imported"
MAX_PATCH_BYTES = 20 * 1024 * 1024
MAX_TRANSCRIPT_BYTES = 50 * 1024 * 1024

ATIF = "atif"
AIDER = "aider"
MINI_SWE_AGENT = "mini-swe-agent"
ROO_CODE = "roo-code"


class ImportProblem(ValueError):
    """The input cannot be imported; the message names the file and what is wrong with it."""


# --- Importing a run ----------------------------------------------------------------------------


@dataclass
class _Tested:
    """What the checkout produced: the captured diff and the test result."""

    captured: workspace.CapturedDiff
    branch_commit: str = ""
    setup_output: str | None = None
    test_output: str | None = None
    test_exit_code: int | None = None
    tests_passed: int | None = None
    tests_failed: int | None = None
    test_files_modified: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def import_run(
    *,
    campaign_name: str | None,
    prompt: Prompt,
    contestant_name: str,
    patch: str | None = None,
    branch: str | None = None,
    transcript_text: str | None = None,
    transcript_filename: str = "",
    extra_files: dict[str, str] | None = None,
    user=None,
) -> Run:
    """Validate, apply, test and store one run produced elsewhere. Raises ImportProblem.

    Give exactly one of `patch` (a unified diff, as `git diff` writes it) and `branch` (a branch
    of the prompt's repository, compared with the prompt's commit). `transcript_text` is read as
    ATIF JSON, an aider chat history, a mini-swe-agent trajectory or a Roo Code task file (the
    format is detected from `transcript_filename` and the content); `extra_files` holds companion
    files, such as Roo Code's ui_messages.json, and every file is kept as a raw artifact.
    """
    extra_files = dict(extra_files or {})
    checked = _check(
        campaign_name=campaign_name,
        contestant_name=contestant_name,
        patch=patch,
        branch=branch,
        transcript_text=transcript_text,
        transcript_filename=transcript_filename,
        extra_files=extra_files,
    )
    tested = _apply_and_test(prompt, patch=checked.patch, branch=checked.branch)
    return _store(
        prompt=prompt,
        contestant_name=checked.contestant_name,
        campaign_name=checked.campaign_name,
        tested=tested,
        transcript=checked.transcript,
        raw_files=_raw_files(transcript_text, transcript_filename, extra_files),
        branch=checked.branch,
        user=user,
    )


@dataclass
class _Checked:
    contestant_name: str
    campaign_name: str
    patch: str | None
    branch: str | None
    transcript: ImportedTranscript | None


def _check(
    *,
    campaign_name: str | None,
    contestant_name: str,
    patch: str | None,
    branch: str | None,
    transcript_text: str | None,
    transcript_filename: str,
    extra_files: dict[str, str],
) -> _Checked:
    """Everything about an import that can be judged without the repository, in a moment."""
    contestant_name = (contestant_name or "").strip()
    campaign_name = (campaign_name or "").strip() or DEFAULT_CAMPAIGN_NAME
    _check_names(contestant_name, campaign_name)
    patch, branch = _check_change(patch, branch)
    transcript = None
    if transcript_text is not None:
        transcript = parse_transcript(transcript_text, transcript_filename, extra_files)
    if patch is not None:
        check_patch_paths(patch, "the patch")
    return _Checked(contestant_name, campaign_name, patch, branch, transcript)


# --- In the background ---------------------------------------------------------------------------

# A worker that died mid-import leaves it "running"; after this long it is reported as failed.
STALE_IMPORT_SECONDS = SETUP_TIMEOUT + TEST_TIMEOUT + 600


def queue_import(
    *,
    campaign_name: str | None,
    prompt: Prompt,
    contestant_name: str,
    patch: str | None = None,
    patch_name: str = "",
    branch: str | None = None,
    transcript_text: str | None = None,
    transcript_filename: str = "",
    extra_files: dict[str, str] | None = None,
    user=None,
) -> RunImport:
    """Check what can be checked at once (raising ImportProblem), then leave the rest to a worker.

    Fetching the repository, applying the change and running the prompt's setup and tests can
    take longer than a web request may. The worker calls `run_queued_import`.
    """
    from runs import tasks

    extra_files = dict(extra_files or {})
    checked = _check(
        campaign_name=campaign_name,
        contestant_name=contestant_name,
        patch=patch,
        branch=branch,
        transcript_text=transcript_text,
        transcript_filename=transcript_filename,
        extra_files=extra_files,
    )
    payload = {
        "patch": checked.patch,
        "transcript_text": transcript_text,
        "transcript_filename": transcript_filename,
        "extra_files": extra_files,
    }
    with transaction.atomic():
        job = RunImport.objects.create(
            prompt=prompt,
            contestant_name=checked.contestant_name,
            campaign_name=checked.campaign_name,
            branch=checked.branch or "",
            patch_name=patch_name if checked.patch is not None else "",
            transcript_names=(
                [name for name in (transcript_filename, *extra_files) if name]
                if transcript_text is not None
                else []
            ),
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        # ensure_ascii (the default) keeps a patch's undecodable bytes, held as surrogates.
        save_file(job.payload_name, json.dumps(payload))
        job_id = job.pk
        transaction.on_commit(lambda: tasks.import_run.delay(job_id))
    return job


def run_queued_import(import_id: int) -> str | None:
    """Apply, test and store a queued import; returns its final status, None if not queued."""
    if not RunImport.objects.filter(pk=import_id, status=RunImport.QUEUED).update(
        status=RunImport.RUNNING, started_at=timezone.now()
    ):
        return None  # another worker has it, or it ended
    job = RunImport.objects.select_related("prompt__repository", "created_by").get(pk=import_id)
    try:
        with default_storage.open(job.payload_name, "rb") as handle:
            payload = json.loads(handle.read())
        run = import_run(
            campaign_name=job.campaign_name,
            prompt=job.prompt,
            contestant_name=job.contestant_name,
            patch=payload["patch"],
            branch=job.branch or None,
            transcript_text=payload["transcript_text"],
            transcript_filename=payload["transcript_filename"],
            extra_files=payload["extra_files"],
            user=job.created_by,
        )
    except ImportProblem as exc:
        return _end_import(job, RunImport.FAILED, error=str(exc))
    except Exception as exc:  # a bug of ours: say so, keep nothing
        log.exception("import %s crashed", import_id)
        return _end_import(job, RunImport.FAILED, error=f"Internal error: {exc}")
    return _end_import(job, RunImport.DONE, run=run)


def _end_import(job: RunImport, status: str, *, error: str = "", run: Run | None = None) -> str:
    # An error can quote the setup command's output or git's, and is shown on the import's page.
    RunImport.objects.filter(pk=job.pk).update(
        status=status, error=redaction.scrub(error), run=run, finished_at=timezone.now()
    )
    _delete_payload(job)
    return status


def _delete_payload(job: RunImport) -> None:
    try:
        default_storage.delete(job.payload_name)
    except OSError:
        log.warning("could not delete %s", job.payload_name, exc_info=True)


def reap_stale_imports() -> list[int]:
    """Report imports whose worker died as failed (nothing of theirs was stored)."""
    cutoff = timezone.now() - timezone.timedelta(seconds=STALE_IMPORT_SECONDS)
    reaped = []
    for job in RunImport.objects.filter(status=RunImport.RUNNING, started_at__lt=cutoff):
        if RunImport.objects.filter(pk=job.pk, status=RunImport.RUNNING).update(
            status=RunImport.FAILED,
            error="The worker stopped before the import was done; nothing was stored. "
            "Import it again.",
            finished_at=timezone.now(),
        ):
            _delete_payload(job)
            reaped.append(job.pk)
    return reaped


def _check_names(contestant_name: str, campaign_name: str) -> None:
    if not contestant_name:
        raise ImportProblem("Name the contestant that produced the run.")
    try:
        validate_slug(contestant_name)
    except ValidationError:
        raise ImportProblem(
            f"The contestant name {contestant_name!r} may use only letters, digits, '-' and '_'."
        ) from None
    if len(contestant_name) > 100:
        raise ImportProblem("The contestant name is longer than 100 characters.")
    if len(campaign_name) > 200:
        raise ImportProblem("The campaign name is longer than 200 characters.")


def _check_change(patch: str | None, branch: str | None) -> tuple[str | None, str | None]:
    branch = (branch or "").strip() or None
    if (patch is None) == (branch is None):
        raise ImportProblem("Give either a patch or a branch (exactly one of them).")
    if patch is not None and not patch.strip():
        raise ImportProblem("The patch is empty.")
    if patch is not None and len(patch.encode("utf-8", "surrogateescape")) > MAX_PATCH_BYTES:
        raise ImportProblem(f"The patch is larger than {MAX_PATCH_BYTES // (1024 * 1024)} MB.")
    if branch is not None and not _valid_branch_name(branch):
        raise ImportProblem(f"{branch!r} is not a valid branch name.")
    return patch, branch


def _valid_branch_name(name: str) -> bool:
    if name.startswith(("-", "/")) or name.endswith(("/", ".", ".lock")) or len(name) > 250:
        return False
    if ".." in name or "@{" in name or "//" in name:
        return False
    return not any(ch.isspace() or ord(ch) < 32 or ch in "~^:?*[\\\x7f" for ch in name)


def _raw_files(text: str | None, filename: str, extra_files: dict[str, str]) -> dict[str, str]:
    files = {}
    if text is not None:
        files[_safe_name(filename or "transcript.txt")] = text
    for name, content in extra_files.items():
        files[_safe_name(name)] = content
    return files


def _safe_name(name: str) -> str:
    """A file name for raw/<name>: the base name only, in a conservative alphabet."""
    base_name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(name.replace("\\", "/")).name)
    return base_name if base_name.strip(".") else "transcript.txt"


# --- Applying the change and testing it ----------------------------------------------------------


def _apply_and_test(prompt: Prompt, *, patch: str | None, branch: str | None) -> _Tested:
    root = Path(settings.MERGEABLE_WORKSPACE_ROOT)
    try:
        url = workspace.validate_repository_url(prompt.repository.url)
    except ValueError as exc:
        raise ImportProblem(f"The prompt's repository cannot be used: {exc}") from None
    run_dir = Path(settings.MERGEABLE_CHECKOUT_ROOT) / "imports" / uuid.uuid4().hex
    timings: dict[str, float] = {}
    stack = ExitStack()
    try:
        started = time.monotonic()
        mirror = workspace.ensure_mirror(url, root, prompt.commit)
        branch_commit = ""
        if branch is not None:
            branch_commit, patch = _branch_patch(url, root, mirror, prompt.commit, branch)
        # As for executed runs: never as root, the caps over all of it, the network only for a
        # setup that asked for it.
        owner = sandbox.NOBODY_UID if os.geteuid() == 0 else None
        checkout = workspace.checkout(mirror, prompt.commit, run_dir, owner=owner)
        caps = RunCaps(
            f"import-{run_dir.name}", cap_limits({}), watch_paths=[checkout.work], uid=owner
        )
        stack.enter_context(caps)

        def run_sandboxed(command: str, timeout: float, network: bool = False) -> sandbox.Result:
            return sandbox.run(
                command,
                checkout.work,
                timeout=timeout,
                network=network,
                caps=caps,
                uid=owner,
                extra_ro_paths=checkout.sandbox_ro_paths,
            )

        setup_output = None
        setup_left: frozenset[bytes] = frozenset()
        if prompt.setup_command:
            setup = run_sandboxed(prompt.setup_command, SETUP_TIMEOUT, network=prompt.setup_network)
            setup_output = setup.output
            if setup.exit_code != 0:
                raise ImportProblem(
                    f"The prompt's setup command exited with {setup.exit_code}: "
                    f"{setup.output[-500:]}"
                )
            setup_left = workspace.untracked_test_files(checkout, prompt.test_files)
        _apply(checkout, patch, "the branch's diff" if branch else "the patch")
        timings["prepare"] = time.monotonic() - started

        started = time.monotonic()
        captured = workspace.capture_diff(checkout, text_cap=settings.MERGEABLE_ARTIFACT_TEXT_CAP)
        timings["capture"] = time.monotonic() - started
        if not captured.files:
            raise ImportProblem("The change is empty: it leaves the repository as it was.")
        tested = _Tested(
            captured=captured,
            branch_commit=branch_commit,
            setup_output=setup_output,
            test_files_modified=workspace.changed_test_files(
                checkout, captured.tree, prompt.test_files
            ),
            timings=timings,
        )
        if prompt.test_command:
            started = time.monotonic()
            # As for executed runs: the prompt's own tests grade the change, not the change's.
            workspace.restore_test_files(
                checkout, prompt.test_files, tree=captured.tree, keep=setup_left, owner=owner
            )
            if prompt.hidden_tests:
                workspace.ensure_mirror(url, root, prompt.hidden_tests_commit)
                workspace.add_hidden_tests(
                    checkout, prompt.hidden_tests_commit, prompt.hidden_tests_paths, owner=owner
                )
            result = run_sandboxed(prompt.test_command, TEST_TIMEOUT)
            timings["test"] = time.monotonic() - started
            tested.test_output = result.output
            tested.test_exit_code = result.exit_code
            tested.tests_passed, tested.tests_failed = parse_junit(checkout.work)
        return tested
    except workspace.WorkspaceError as exc:
        raise ImportProblem(f"The repository could not be prepared: {exc}") from None
    except sandbox.SandboxError as exc:
        raise ImportProblem(f"The sandbox could not run the prompt's commands: {exc}") from None
    finally:
        stack.close()
        workspace.remove_tree(run_dir)  # the checkout's root, or what a failed checkout left


def _branch_patch(url: str, root: Path, mirror: Path, commit: str, branch: str) -> tuple[str, str]:
    """The branch's head commit and its diff from the prompt's commit (two-dot, as `git diff`)."""
    mirror = workspace.ensure_mirror(url, root, f"refs/heads/{branch}")
    try:
        head = workspace.resolve_commit(mirror, f"refs/heads/{branch}")
    except workspace.WorkspaceError:
        raise ImportProblem(
            f"The branch {branch!r} was not found in the repository {workspace.redact_url(url)}."
        ) from None
    diff = workspace.git(
        ["diff", "--binary", "--no-ext-diff", "--no-textconv", "--no-color", commit, head, "--"],
        git_dir=mirror,
    )
    return head, diff.stdout.decode("utf-8", "surrogateescape")


def _apply(checkout: workspace.Checkout, patch: str, what: str) -> None:
    data = patch.encode("utf-8", "surrogateescape")
    if not data.endswith(b"\n"):
        data += b"\n"
    numstat = _git_apply(checkout, ["--numstat", "-z", "-"], data, what)
    # git's own reading of the patch is the last word on which paths it would touch.
    for path in _numstat_paths(numstat):
        problem = path_problem(path)
        if problem:
            raise ImportProblem(f"{what.capitalize()} touches {path!r}: {problem}.")
    _git_apply(checkout, ["--check", "-"], data, what)
    _git_apply(checkout, ["-"], data, what)


def _git_apply(checkout: workspace.Checkout, args: list[str], data: bytes, what: str) -> bytes:
    # `git apply` resolves the patch's paths from the current directory: run it in the work tree.
    try:
        result = workspace.git(
            ["apply", *args],
            git_dir=checkout.git_dir,
            work_tree=checkout.work,
            input=data,
            cwd=checkout.work,
            ok_codes=tuple(range(256)),
        )
    except workspace.WorkspaceError as exc:
        raise ImportProblem(f"git apply could not run on {what}: {exc}") from None
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip()[-1500:]
        raise ImportProblem(
            f"{what.capitalize()} does not apply cleanly at the prompt's commit "
            f"{checkout.commit[:12]}: {detail or 'git apply failed'}"
        )
    return result.stdout


def _numstat_paths(output: bytes) -> list[str]:
    """Paths from `git apply --numstat -z`: "A\\tD\\tpath\\0", or "A\\tD\\t\\0old\\0new\\0"."""
    items = output.split(b"\0")
    paths: list[str] = []
    index = 0
    while index < len(items):
        record = items[index]
        index += 1
        if not record:
            continue
        parts = record.split(b"\t", 2)
        if len(parts) == 3 and parts[2]:
            paths.append(parts[2].decode("utf-8", "surrogateescape"))
        elif len(parts) == 3:
            paths += [p.decode("utf-8", "surrogateescape") for p in items[index : index + 2]]
            index += 2
    return paths


# --- Checking a patch's paths before git sees it -------------------------------------------------

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
_PREFIXED = ("--- ", "+++ ")
_UNPREFIXED = ("rename from ", "rename to ", "copy from ", "copy to ")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def path_problem(path: str) -> str:
    """Why `path` (as written in a patch) is not a path inside the repository, or ""."""
    if not path:
        return "an empty path"
    if path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
        return "an absolute path"
    parts = path.replace("\\", "/").split("/")
    if "" in parts[:-1] or parts[-1] == "":
        return "an empty path component"
    if ".." in parts:
        return "a '..' component leads outside the repository"
    if any(part.lower() == ".git" for part in parts):
        return "git's own directory is not part of the repository"
    if "\0" in path:
        return "a NUL character"
    return ""


def patch_paths(patch: str) -> list[str]:
    """Every path named in the file headers of a unified or git diff, as written (with a/ b/).

    Hunk bodies are skipped by counting their lines, so a removed line that reads "-- x" (shown
    as "--- x") is never taken for a header.
    """
    paths: list[str] = []
    old_left = new_left = 0
    for line in patch.splitlines():
        if old_left > 0 or new_left > 0:
            tag = line[:1]
            if tag in (" ", "") or line == "":
                old_left, new_left = old_left - 1, new_left - 1
                continue
            if tag == "-":
                old_left -= 1
                continue
            if tag == "+":
                new_left -= 1
                continue
            if tag == "\\":
                continue
            old_left = new_left = 0  # a malformed hunk: git will say so; read headers again
        if hunk := _HUNK.match(line):
            old_left = int(hunk.group(1) if hunk.group(1) is not None else 1)
            new_left = int(hunk.group(2) if hunk.group(2) is not None else 1)
        elif line.startswith("diff --git "):
            paths += _git_header_paths(line[len("diff --git ") :])
        elif line.startswith(_PREFIXED):
            name = _header_path(line[4:])
            if name != "/dev/null":
                paths.append(name)
        elif line.startswith(_UNPREFIXED):
            paths.append("x/" + _header_path(line.split(" ", 2)[2]))
    return paths


def check_patch_paths(patch: str, what: str = "the patch") -> None:
    """Refuse a patch naming any path outside the repository or inside .git, before applying."""
    for path in patch_paths(patch):
        problem = path_problem(path)
        if not problem and "/" in path:
            # git strips one leading component (a/, b/): what is left must be a path too.
            problem = path_problem(path.split("/", 1)[1])
        if problem:
            raise ImportProblem(f"{what.capitalize()} names {path!r}: {problem}.")


def _header_path(text: str) -> str:
    if text.startswith('"'):
        path, _rest = _unquote(text)
        return path
    return text.split("\t", 1)[0].rstrip("\r")


def _git_header_paths(rest: str) -> list[str]:
    rest = rest.rstrip("\r")
    if rest.startswith('"'):
        first, tail = _unquote(rest)
        tail = tail.lstrip(" ")
        return [first, _unquote(tail)[0] if tail.startswith('"') else tail]
    if '"' in rest:
        head, _, quoted = rest.partition(' "')
        return [head, _unquote('"' + quoted)[0]]
    middle = len(rest) // 2
    if len(rest) % 2 == 1 and rest[middle] == " ":
        return [rest[:middle], rest[middle + 1 :]]
    head, separator, tail = rest.partition(" b/")
    return [head, "b/" + tail] if separator else [rest]


def _unquote(text: str) -> tuple[str, str]:
    """Read a C-style quoted path as git writes it; returns (path, the text after it)."""
    raw = bytearray()
    index = 1
    while index < len(text):
        char = text[index]
        if char == '"':
            return raw.decode("utf-8", "surrogateescape"), text[index + 1 :]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if following in "01234567" and re.match(r"[0-7]{3}", text[index + 1 : index + 4]):
                raw.append(int(text[index + 1 : index + 4], 8))
                index += 4
                continue
            raw += _ESCAPES.get(following, following).encode()
            index += 2
            continue
        raw += char.encode("utf-8", "surrogateescape")
        index += 1
    raise ImportProblem(f"The patch has an unterminated quoted path: {text[:200]!r}")


# --- Storing ------------------------------------------------------------------------------------


def _store(
    *,
    prompt: Prompt,
    contestant_name: str,
    campaign_name: str,
    tested: _Tested,
    transcript: ImportedTranscript | None,
    raw_files: dict[str, str],
    branch: str | None,
    user,
) -> Run:
    captured = tested.captured
    failed = tested.test_exit_code not in (None, 0)
    now = timezone.now()
    with transaction.atomic():
        contestant = _contestant(contestant_name)
        campaign = _campaign(campaign_name, prompt, user)
        campaign.contestants.add(contestant)
        taken = campaign.runs.filter(prompt=prompt, contestant=contestant).aggregate(
            top=Max("repeat")
        )["top"]
        repeat = 0 if taken is None else taken + 1
        if repeat + 1 > campaign.repeats:
            Campaign.objects.filter(pk=campaign.pk).update(repeats=repeat + 1)
        snapshot = {
            "prompt": prompt.snapshot(),
            "contestant": contestant.snapshot(),
            "import": {
                "source": "branch" if branch else "patch",
                "branch": branch or "",
                "branch_commit": tested.branch_commit,
                "transcript_format": transcript.format if transcript else "",
                "files": sorted(raw_files),
                "imported_by": getattr(user, "username", "") or "",
                "imported_at": now.isoformat(),
            },
        }
        run = Run.objects.create(
            campaign=campaign,
            prompt=prompt,
            contestant=contestant,
            repeat=repeat,
            snapshot=snapshot,
            imported=True,
            status=Run.FAILED if failed else Run.FINISHED,
            status_reason=(
                f"{IMPORTED_REASON}; tests failed (exit code {tested.test_exit_code})"
                if failed
                else IMPORTED_REASON
            ),
            started_at=transcript.started_at if transcript else None,
            finished_at=(transcript.finished_at if transcript else None) or now,
            phase_timings={k: round(v, 3) for k, v in tested.timings.items()},
            agent_status=transcript.end_status if transcript else "",
            steps=transcript.steps if transcript else 0,
            input_tokens=transcript.input_tokens if transcript else 0,
            output_tokens=transcript.output_tokens if transcript else 0,
            cost_usd=transcript.cost_usd if transcript else 0.0,
            **capture_fields(captured),
            test_exit_code=tested.test_exit_code,
            tests_passed=tested.tests_passed,
            tests_failed=tested.tests_failed,
            test_files_modified=tested.test_files_modified,
            # Scrubbed before it is cut, so a secret the cut splits is redacted too.
            test_output_tail=column_text(redaction.scrub(tested.test_output or "")[-4000:]),
        )
        save_capture_artifacts(run, captured)
        if tested.setup_output is not None:
            run.save_artifact("setup_output.txt", tested.setup_output)
        if tested.test_output is not None:
            run.save_artifact("test_output.txt", tested.test_output)
        if transcript is not None:
            run.save_artifact("transcript.json", dumps(transcript.document))
        for name, content in raw_files.items():
            run.save_artifact(f"raw/{name}", content)
    return run


def _contestant(name: str) -> Contestant:
    contestant = Contestant.objects.filter(name=name).select_related("model").first()
    if contestant is not None:
        return contestant
    model, _created = LanguageModel.objects.get_or_create(
        name=EXTERNAL_MODEL_NAME,
        defaults={"provider": LanguageModel.OPENAI, "base_url": "", "model_id": ""},
    )
    return Contestant.objects.create(
        name=name, harness=Contestant.COMMAND, model=model, options={"imported": True}
    )


def _campaign(name: str, prompt: Prompt, user) -> Campaign:
    campaign = (
        Campaign.objects.select_for_update()
        .filter(name=name, prompt_set=prompt.prompt_set)
        .order_by("-created_at", "-id")
        .first()
    )
    if campaign is None:
        campaign = Campaign.objects.create(
            name=name,
            prompt_set=prompt.prompt_set,
            state=Campaign.FINISHED,
            created_by=user if getattr(user, "pk", None) else None,
        )
    return campaign


# --- Transcripts --------------------------------------------------------------------------------


@dataclass
class ImportedTranscript:
    document: dict  # ATIF
    format: str
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    end_status: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


def parse_transcript(
    text: str, filename: str = "", extra_files: dict[str, str] | None = None
) -> ImportedTranscript:
    """Read a transcript in any format Mergeable knows and return it as ATIF with its usage."""
    name = _safe_name(filename or "transcript")
    if len(text.encode("utf-8", "surrogateescape")) > MAX_TRANSCRIPT_BYTES:
        raise ImportProblem(f"{name}: larger than {MAX_TRANSCRIPT_BYTES // (1024 * 1024)} MB.")
    fmt = detect_format(text, name)
    document = IMPORTERS[fmt](text, name, dict(extra_files or {}))
    return _summarize(document, fmt)


def detect_format(text: str, filename: str) -> str:
    lowered = filename.lower()
    if lowered.endswith(".md") or text.lstrip().startswith("# aider chat started at"):
        return AIDER
    if lowered in ("api_conversation_history.json", "ui_messages.json"):
        return ROO_CODE
    data = _json(text, filename)
    if isinstance(data, dict) and str(data.get("schema_version", "")).startswith("ATIF"):
        return ATIF
    if isinstance(data, dict) and (
        str(data.get("trajectory_format", "")).startswith("mini-swe-agent")
        or ("messages" in data and "info" in data)
    ):
        return MINI_SWE_AGENT
    if isinstance(data, list):
        return ROO_CODE
    raise ImportProblem(
        f"{filename}: not a transcript format Mergeable reads (ATIF JSON, an aider "
        ".aider.chat.history.md, a mini-swe-agent trajectory, or Roo Code's "
        "api_conversation_history.json / ui_messages.json)."
    )


def _json(text: str, filename: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportProblem(
            f"{filename}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None


def _writer(agent: str, version: str = "", model_name: str = "") -> TranscriptWriter:
    return TranscriptWriter(agent_name=agent, agent_version=version, model_name=model_name)


def _finish(
    writer: TranscriptWriter,
    fmt: str,
    filename: str,
    *,
    timestamps: dict[int, datetime | None],
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
    end_status: str = "",
) -> dict:
    """Close the document: the source's own timestamps (never the import's), totals, provenance."""
    for step in writer.steps:
        when = timestamps.get(step["step_id"])
        if when is None:
            step.pop("timestamp", None)
        else:
            step["timestamp"] = when.isoformat()
    writer.finish(
        prompt_tokens=input_tokens,
        completion_tokens=output_tokens,
        cost_usd=cost_usd,
        end_status=end_status,
        imported=True,
        source_format=fmt,
        source_file=filename,
    )
    return writer.document


def _summarize(document: dict, fmt: str) -> ImportedTranscript:
    steps = document.get("steps") or []
    final = document.get("final_metrics") if isinstance(document.get("final_metrics"), dict) else {}
    extra = document.get("extra") if isinstance(document.get("extra"), dict) else {}

    def total(final_key: str, step_key: str, cast: Callable):
        value = final.get(final_key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cast(value)
        summed = 0
        for step in steps:
            metrics = step.get("metrics") if isinstance(step.get("metrics"), dict) else {}
            item = metrics.get(step_key)
            if isinstance(item, int | float) and not isinstance(item, bool):
                summed += item
        return cast(summed)

    times = [_parse_time(step.get("timestamp")) for step in steps]
    times = [t for t in times if t is not None]
    return ImportedTranscript(
        document=document,
        format=fmt,
        steps=sum(1 for step in steps if step.get("source") == "agent"),
        input_tokens=max(total("total_prompt_tokens", "prompt_tokens", int), 0),
        output_tokens=max(total("total_completion_tokens", "completion_tokens", int), 0),
        cost_usd=max(total("total_cost_usd", "cost_usd", float), 0.0),
        end_status=str(extra.get("end_status") or "")[:40],
        started_at=min(times) if times else None,
        finished_at=max(times) if times else None,
    )


def _parse_time(value) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # Roo Code writes milliseconds
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


# ATIF ---------------------------------------------------------------------------------------------


def from_atif(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    try:
        return validate_atif(_json(text, filename))
    except ImportProblem:
        raise
    except ValueError as exc:
        raise ImportProblem(f"{filename}: {exc}.") from None


# aider ----------------------------------------------------------------------------------------------

_AIDER_START = re.compile(r"^# aider chat started at (.+?)\s*$")
_AIDER_TOKENS = re.compile(
    r"Tokens: ([\d.,]+)([kKmM]?) sent.*?([\d.,]+)([kKmM]?) received\.?"
    r"(?:\s*Cost: \$([\d.,]+) message)?"
)
_SEARCH_REPLACE = re.compile(
    r"(?:^|\n)([^\n`]+?)\n```[^\n]*\n<<<<<<< SEARCH\n(.*?)\n?=======\n(.*?)\n?>>>>>>> REPLACE",
    re.DOTALL,
)


def from_aider(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """aider's .aider.chat.history.md: "#### " lines are the user's, "> " lines aider's own output
    (edits applied, token counts), everything else the model's reply with SEARCH/REPLACE blocks."""
    lines = text.splitlines()
    if not any(_AIDER_START.match(line) for line in lines):
        raise ImportProblem(
            f"{filename}: not an aider chat history: there is no '# aider chat started at' line."
        )
    blocks: list[tuple[str, list[str]]] = []  # (kind, lines): kind is user, agent, output, start
    in_fence = False  # inside the model's ``` blocks, ">>>>>>> REPLACE" is the model's text
    for line in lines:
        if start := _AIDER_START.match(line):
            blocks.append(("start", [start.group(1)]))
            in_fence = False
            continue
        if in_fence or not line.startswith((">", "####")) or line.startswith(">>>>>>>"):
            kind, content = "agent", line
            if line.startswith("```"):
                in_fence = not in_fence
        elif line.startswith("####"):
            kind, content = "user", line[4:].removeprefix(" ")
        else:
            kind, content = "output", line[1:].removeprefix(" ")
        if blocks and blocks[-1][0] == kind:
            blocks[-1][1].append(content)
        elif kind == "agent" and not content.strip():
            continue  # blank lines between blocks belong to nobody
        else:
            blocks.append((kind, [content]))

    writer = _writer("aider")
    timestamps: dict[int, datetime | None] = {}
    session_time: datetime | None = None
    input_tokens = output_tokens = 0
    cost = 0.0
    last_agent: dict | None = None
    for kind, block in blocks:
        body = "\n".join(block).strip()
        if kind == "start":
            session_time = _parse_time(body.replace(" ", "T", 1))
            continue
        if kind == "user":
            step = writer.add_step("user", body)
            last_agent = None
        elif kind == "agent":
            calls = [
                {
                    "id": f"edit-{len(writer.steps) + 1}-{n}",
                    "name": "edit_file",
                    "arguments": {"path": path.strip(), "old": old, "new": new},
                }
                for n, (path, old, new) in enumerate(_SEARCH_REPLACE.findall(body), 1)
            ]
            step = last_agent = writer.add_step("agent", body, tool_calls=calls)
        else:
            used = _aider_usage(block)
            if used and last_agent is not None:
                last_agent["metrics"] = used
            if used:
                input_tokens += used["prompt_tokens"]
                output_tokens += used["completion_tokens"]
                cost += used["cost_usd"]
            output = "\n".join(line for line in block if not line.startswith("Tokens:")).strip()
            if not output:
                continue
            if last_agent is not None and last_agent.get("tool_calls"):
                results = [
                    (call["tool_call_id"], _lines_about(output, call["arguments"]["path"]))
                    for call in last_agent["tool_calls"]
                ]
                if "observation" not in last_agent:
                    writer.add_observations(last_agent, results)
                continue
            step = writer.add_step("system", output)
        timestamps[step["step_id"]] = session_time
    if not any(step["source"] in ("user", "agent") for step in writer.steps):
        raise ImportProblem(f"{filename}: the aider chat history holds no messages.")
    return _finish(
        writer,
        AIDER,
        filename,
        timestamps=timestamps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
    )


def _aider_usage(block: list[str]) -> dict | None:
    for line in block:
        if match := _AIDER_TOKENS.search(line):
            return {
                "prompt_tokens": _count(match.group(1), match.group(2)),
                "completion_tokens": _count(match.group(3), match.group(4)),
                "cost_usd": float((match.group(5) or "0").replace(",", "")),
            }
    return None


def _count(number: str, suffix: str) -> int:
    scale = {"k": 1_000, "m": 1_000_000}.get(suffix.lower(), 1)
    return round(float(number.replace(",", "")) * scale)


def _lines_about(output: str, path: str) -> str:
    about = [line for line in output.splitlines() if path and path in line]
    return "\n".join(about) or output


# mini-swe-agent --------------------------------------------------------------------------------

_MSWEA_END_STATUS = {
    "Submitted": base.FINISHED,
    "LimitsExceeded": base.MAX_STEPS,
    "TimeExceeded": base.TIMED_OUT,
}


def from_mini_swe_agent(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """A mini-swe-agent trajectory (-o traj.json): {"info": {...}, "messages": [...]}."""
    data = _json(text, filename)
    if not isinstance(data, dict):
        raise ImportProblem(f"{filename}: a mini-swe-agent trajectory is a JSON object.")
    info = data.get("info", {})
    messages = data.get("messages")
    if not isinstance(info, dict):
        raise ImportProblem(f"{filename}: 'info' must be an object.")
    if not isinstance(messages, list):
        raise ImportProblem(f"{filename}: 'messages' must be a list of messages.")
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    model_config = config.get("model") if isinstance(config.get("model"), dict) else {}
    writer = _writer(
        "mini-swe-agent",
        str(info.get("mini_version") or ""),
        str(model_config.get("model_name") or ""),
    )
    timestamps: dict[int, datetime | None] = {}
    input_tokens = output_tokens = 0
    summed_cost = 0.0
    pending: dict | None = None  # the agent step whose commands await their output
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ImportProblem(f"{filename}: message {index} has no role.")
        role = message["role"]
        content = _content_text(message.get("content"), filename, index)
        extra = message.get("extra") if isinstance(message.get("extra"), dict) else {}
        when = _parse_time(extra.get("timestamp"))
        if role == "assistant":
            calls = _mswea_calls(message, extra)
            metrics = _mswea_metrics(extra)
            input_tokens += metrics.get("prompt_tokens", 0)
            output_tokens += metrics.get("completion_tokens", 0)
            summed_cost += metrics.get("cost_usd", 0.0)
            step = writer.add_step("agent", content, tool_calls=calls, metrics=metrics or None)
            pending = step if calls else None
        elif role in ("tool", "user") and pending is not None and index > 2:
            calls = pending["tool_calls"]
            call_id = message.get("tool_call_id")
            known = [c["tool_call_id"] for c in calls]
            target = call_id if call_id in known else known[0]
            if _add_result(writer, pending, target, content) >= len(calls):
                pending = None
            continue
        elif role == "exit":
            step = writer.add_step("system", f"Exit: {content}".strip())
        elif role in ("system", "user"):
            step = writer.add_step(role, content)
        elif role == "tool":
            step = writer.add_step("user", content)
        else:
            raise ImportProblem(f"{filename}: message {index} has the unknown role {role!r}.")
        timestamps[step["step_id"]] = when
    stats = info.get("model_stats") if isinstance(info.get("model_stats"), dict) else {}
    cost = stats.get("instance_cost")
    exit_status = str(info.get("exit_status") or "")
    return _finish(
        writer,
        MINI_SWE_AGENT,
        filename,
        timestamps=timestamps,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=float(cost) if isinstance(cost, int | float) else summed_cost,
        end_status=_MSWEA_END_STATUS.get(exit_status, base.STOPPED if exit_status else ""),
    )


def _content_text(content, filename: str, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, dict):
                parts.append(f"[{part.get('type', 'content')}]")
            else:
                raise ImportProblem(f"{filename}: message {index} has malformed content.")
        return "\n".join(parts)
    raise ImportProblem(f"{filename}: message {index}'s content must be text or a list of parts.")


def _mswea_calls(message: dict, extra: dict) -> list[dict]:
    calls = []
    for n, call in enumerate(message.get("tool_calls") or [], 1):
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = {"_raw": arguments}
        calls.append(
            {
                "id": str(call.get("id") or f"call-{n}"),
                "name": str(function.get("name") or "bash"),
                "arguments": arguments if isinstance(arguments, dict) else {"_raw": arguments},
            }
        )
    if not calls:  # text mode (mini-swe-agent 1.x): the commands are parsed into extra.actions
        for n, action in enumerate(extra.get("actions") or [], 1):
            if isinstance(action, dict) and isinstance(action.get("command"), str):
                calls.append(
                    {
                        "id": f"action-{n}",
                        "name": "bash",
                        "arguments": {"command": action["command"]},
                    }
                )
    return calls


def _mswea_metrics(extra: dict) -> dict:
    response = extra.get("response") if isinstance(extra.get("response"), dict) else {}
    usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
    metrics = {}
    for source, target in (
        ("prompt_tokens", "prompt_tokens"),
        ("completion_tokens", "completion_tokens"),
    ):
        if isinstance(usage.get(source), int):
            metrics[target] = usage[source]
    if isinstance(extra.get("cost"), int | float):
        metrics["cost_usd"] = round(float(extra["cost"]), 6)
    return metrics


# Roo Code -------------------------------------------------------------------------------------------

ROO_API_FILE = "api_conversation_history.json"
ROO_UI_FILE = "ui_messages.json"


def from_roo_code(text: str, filename: str, extra_files: dict[str, str]) -> dict:
    """A Roo Code (or Cline) task folder: the API conversation for the steps, the UI messages for
    usage, timestamps and how the task ended. Either file alone is enough."""
    files = {_safe_name(name).lower(): content for name, content in extra_files.items()}
    files[filename.lower()] = text
    data = _json(text, filename)
    api = ui = None
    if filename.lower() == ROO_UI_FILE or (
        filename.lower() != ROO_API_FILE
        and isinstance(data, list)
        and data
        and isinstance(data[0], dict)
        and "type" in data[0]
        and "role" not in data[0]
    ):
        ui = (filename, data)
        if ROO_API_FILE in files:
            api = (ROO_API_FILE, _json(files[ROO_API_FILE], ROO_API_FILE))
    else:
        api = (filename, data)
        if ROO_UI_FILE in files:
            ui = (ROO_UI_FILE, _json(files[ROO_UI_FILE], ROO_UI_FILE))
    usage = (
        _roo_ui_usage(*ui)
        if ui
        else {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cost_usd": 0.0,
            "times": [],
            "finished": False,
        }
    )
    writer = _writer("roo-code")
    timestamps: dict[int, datetime | None] = {}
    if api is not None:
        _roo_api_steps(writer, timestamps, *api)
    else:
        _roo_ui_steps(writer, timestamps, *ui)
    if not writer.steps:
        raise ImportProblem(f"{filename}: the Roo Code task holds no messages.")
    if api is not None and usage["times"]:
        # The API history may carry no timestamps; the UI messages span the same task.
        timestamps.setdefault(1, usage["times"][0])
        timestamps[writer.steps[-1]["step_id"]] = (
            timestamps.get(writer.steps[-1]["step_id"]) or usage["times"][-1]
        )
    return _finish(
        writer,
        ROO_CODE,
        filename,
        timestamps=timestamps,
        input_tokens=usage["prompt_tokens"],
        output_tokens=usage["completion_tokens"],
        cost_usd=usage["cost_usd"],
        end_status=base.FINISHED if usage["finished"] else "",
    )


def _roo_api_steps(writer, timestamps, filename: str, messages) -> None:
    if not isinstance(messages, list):
        raise ImportProblem(f"{filename}: expected a list of messages.")
    calls_by_id: dict[str, dict] = {}
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ImportProblem(f"{filename}: message {index} needs a role of user or assistant.")
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            raise ImportProblem(f"{filename}: message {index}'s content must be text or a list.")
        texts, calls, results = [], [], []
        for block in blocks:
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise ImportProblem(f"{filename}: message {index} has a block without a type.")
            kind = block["type"]
            if kind == "text":
                texts.append(without_environment_details(str(block.get("text", ""))))
            elif kind == "tool_use":
                arguments = block.get("input")
                calls.append(
                    {
                        "id": str(block.get("id") or f"tool-{index}-{len(calls) + 1}"),
                        "name": str(block.get("name") or "tool"),
                        "arguments": arguments
                        if isinstance(arguments, dict)
                        else {"_raw": arguments},
                    }
                )
            elif kind == "tool_result":
                results.append((str(block.get("tool_use_id") or ""), _roo_result_text(block)))
            elif kind in ("thinking", "reasoning"):
                continue
            else:
                texts.append(f"[{kind}]")
        when = _parse_time(message.get("ts"))
        for call_id, result in results:
            owner = calls_by_id.get(call_id)
            if owner is None:
                texts.append(result)
                continue
            _add_result(writer, owner, call_id, result)
        body = "\n\n".join(t for t in texts if t.strip())
        if message["role"] == "assistant":
            step = writer.add_step("agent", body, tool_calls=calls)
            for call in step.get("tool_calls", []):
                calls_by_id[call["tool_call_id"]] = step
        elif body:
            step = writer.add_step("user", body)
        else:
            continue
        timestamps[step["step_id"]] = when


def _roo_result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(
            str(part.get("text", ""))
            if isinstance(part, dict) and part.get("type") == "text"
            else "[image]"
            for part in content
        )
    else:
        text = ""
    text = without_environment_details(text)
    return f"error: {text}" if block.get("is_error") else text


# Roo Code and Cline append this block to user turns and tool results: the model id, the running
# cost, open tabs, the time. Reviewers must not see it (it names the model), and it is noise.
_ENVIRONMENT_DETAILS = re.compile(
    r"<environment_details>.*?(?:</environment_details>|\Z)", re.DOTALL | re.IGNORECASE
)


def without_environment_details(text: str) -> str:
    return (
        _ENVIRONMENT_DETAILS.sub("", text).strip()
        if "<environment_details" in text.lower()
        else text
    )


def _roo_ui_messages(filename: str, messages) -> list[dict]:
    if not isinstance(messages, list):
        raise ImportProblem(f"{filename}: expected a list of UI messages.")
    for index, message in enumerate(messages, 1):
        if not isinstance(message, dict) or message.get("type") not in ("say", "ask"):
            raise ImportProblem(f"{filename}: message {index} needs a type of say or ask.")
    return messages


def _roo_ui_usage(filename: str, messages) -> dict:
    usage = {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "times": [],
        "finished": False,
    }
    for message in _roo_ui_messages(filename, messages):
        when = _parse_time(message.get("ts"))
        if when is not None:
            usage["times"].append(when)
        if message.get("say") == "completion_result" or message.get("ask") == "completion_result":
            usage["finished"] = True
        if message.get("say") != "api_req_started":
            continue
        try:
            request = json.loads(message.get("text") or "{}")
        except json.JSONDecodeError:
            continue
        if isinstance(request, dict):
            usage["prompt_tokens"] += _int(request.get("tokensIn"))
            usage["completion_tokens"] += _int(request.get("tokensOut"))
            cost = request.get("cost")
            usage["cost_usd"] += float(cost) if isinstance(cost, int | float) else 0.0
    usage["times"].sort()
    return usage


def _roo_ui_steps(writer, timestamps, filename: str, messages) -> None:
    last_command: dict | None = None
    for index, message in enumerate(_roo_ui_messages(filename, messages)):
        kind = message.get("say") or message.get("ask") or ""
        text = str(message.get("text") or "")
        if message.get("partial"):
            continue
        if (index == 0 and kind == "text") or kind == "user_feedback":
            step = writer.add_step("user", text)
        elif kind in ("text", "completion_result", "followup") and text.strip():
            step = writer.add_step("agent", text)
        elif kind in ("command", "tool"):
            arguments = {"command": text}
            if kind == "tool":
                try:
                    parsed = json.loads(text)
                except json.JSONDecodeError:
                    parsed = None
                arguments = parsed if isinstance(parsed, dict) else {"_raw": text}
            name = "execute_command" if kind == "command" else str(arguments.get("tool") or "tool")
            step = writer.add_step(
                "agent",
                "",
                tool_calls=[{"id": f"ui-{index}", "name": name, "arguments": arguments}],
            )
            last_command = step if kind == "command" else None
        elif kind == "command_output" and last_command is not None:
            call_id = last_command["tool_calls"][0]["tool_call_id"]
            writer.add_observations(last_command, [(call_id, text)])
            last_command = None
            continue
        else:
            continue
        timestamps[step["step_id"]] = _parse_time(message.get("ts"))


def _add_result(writer: TranscriptWriter, step: dict, call_id: str, content: str) -> int:
    """Add one tool result to an agent step's observation; returns how many it now holds."""
    results = [
        (result["source_call_id"], result["content"])
        for result in step.get("observation", {}).get("results", [])
    ]
    writer.add_observations(step, [*results, (call_id, content)])
    return len(results) + 1


def _int(value) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


IMPORTERS: dict[str, Callable[[str, str, dict[str, str]], dict]] = {
    ATIF: from_atif,
    AIDER: from_aider,
    MINI_SWE_AGENT: from_mini_swe_agent,
    ROO_CODE: from_roo_code,
}


def split_transcript_files(files: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """Pick the main transcript among uploaded files: (filename, text, the others).

    Roo Code's API conversation leads when both of its files are given.
    """
    if not files:
        raise ImportProblem("No transcript file was given.")
    names = list(files)
    main = next((n for n in names if _safe_name(n).lower() == ROO_API_FILE), names[0])
    return main, files[main], {n: t for n, t in files.items() if n != main}

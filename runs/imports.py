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
from datetime import datetime
from importlib import import_module
from pathlib import Path, PurePosixPath
from types import ModuleType

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.storage import default_storage
from django.core.validators import validate_slug
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from runs import diffs, enqueue, redaction, rendered_diffs, sandbox, test_results, workspace
from runs.caps import RunCaps
from runs.execution import SETUP_TIMEOUT, TEST_TIMEOUT, cap_limits
from runs.models import Campaign, Contestant, LanguageModel, Prompt, Run, RunImport, save_file
from runs.transcript import dumps, parse_time
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
CLINE = "cline"


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
        enqueue.run_import(job.pk)
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
            f"import-{run_dir.name}",
            cap_limits({}),
            watch_paths=[checkout.work],
            uid=owner,
            nice=sandbox.command_niceness(),
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
            tested.tests_passed, tested.tests_failed = test_results.parse_junit(checkout.work)
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
    """Every path a unified or git diff names (without git's a/ and b/), read by the same parser
    as the diff pages: hunks are read by their line counts, so a removed line "-- x" (shown as
    "--- x") is never taken for a header. ValueError when it is not a diff that parser reads."""
    return diffs.named_paths(patch)


def check_patch_paths(patch: str, what: str = "the patch") -> None:
    """Refuse a patch naming any path outside the repository or inside .git, before applying."""
    try:
        paths = patch_paths(patch)
    except ValueError:
        # Not a diff we can read: `git apply` says what is wrong with it, and the paths git
        # itself reads from it are checked again before anything is applied (`_apply`).
        return
    for path in paths:
        if problem := path_problem(path):
            raise ImportProblem(f"{what.capitalize()} names {path!r}: {problem}.")


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
            **Run.diff_fields(captured),
            test_exit_code=tested.test_exit_code,
            tests_passed=tested.tests_passed,
            tests_failed=tested.tests_failed,
            test_files_modified=tested.test_files_modified,
            test_output_tail=test_results.output_tail(tested.test_output or ""),
        )
        run.save_diff(captured)
        if tested.setup_output is not None:
            run.save_artifact("setup_output.txt", tested.setup_output)
        if tested.test_output is not None:
            run.save_artifact("test_output.txt", tested.test_output)
        if transcript is not None:
            run.save_artifact("transcript.json", dumps(transcript.document))
        for name, content in raw_files.items():
            run.save_artifact(f"raw/{name}", content)
        rendered_diffs.prerender(run)
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

# Each format is read by the module that knows it: the harness that runs the agent, or an
# import-only module for agents Mergeable cannot run. Each exposes looks_like(text, filename) and
# import_transcript(text, filename, extra_files) -> an ATIF document. Loaded when first needed, so
# a format whose module is missing does not stop the others. Detection tries them in this order.
FORMATS = {
    ATIF: "runs.transcript",
    "claude-code": "runs.agents.claude_code",
    "codex": "runs.agents.codex",
    "opencode": "runs.agents.opencode",
    MINI_SWE_AGENT: "runs.agents.mini_swe_agent",
    CLINE: "runs.agents.cline",
    ROO_CODE: "runs.agents.roo_code",
    AIDER: "runs.agents.aider",  # last: it takes any other .md
}
ROO_API_FILE = "api_conversation_history.json"
ROO_UI_FILE = "ui_messages.json"


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
    try:
        document = format_module(fmt).import_transcript(text, name, dict(extra_files or {}))
        # Whatever a reader produced must be ATIF reviewers can read: step order, ids, fields.
        validate_atif(document)
    except ImportProblem:
        raise
    except ValueError as exc:
        message = str(exc)
        raise ImportProblem(message if message.startswith(name) else f"{name}: {message}") from None
    return _summarize(document, fmt)


def format_module(fmt: str) -> ModuleType:
    try:
        return import_module(FORMATS[fmt])
    except KeyError:
        raise ImportProblem(f"Unknown transcript format {fmt!r}.") from None
    except ModuleNotFoundError as exc:
        raise ImportProblem(f"Transcripts in the {fmt} format cannot be read here: {exc}") from None


def detect_format(text: str, filename: str) -> str:
    for fmt in FORMATS:
        try:
            module = format_module(fmt)
        except ImportProblem:
            continue  # not installed here: another format may still match
        looks_like = getattr(module, "looks_like", None)
        if looks_like is not None and looks_like(text, filename):
            return fmt
    if not filename.lower().endswith(".json") or text.lstrip().startswith(("{", "[")):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportProblem(
                f"{filename}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
            ) from None
    raise ImportProblem(
        f"{filename}: not a transcript format Mergeable reads (ATIF JSON, an aider "
        ".aider.chat.history.md, a mini-swe-agent trajectory, a Claude Code, Codex or opencode "
        "session, or a Roo Code or Cline task: api_conversation_history.json, ui_messages.json "
        "or the exported task .md)."
    )


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

    times = [parse_time(step.get("timestamp"), numbers=False) for step in steps]
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


_TASK_FILE_ORDER = (ROO_API_FILE, ROO_UI_FILE, "history_item.json")


def split_transcript_files(files: dict[str, str]) -> tuple[str, str, dict[str, str]]:
    """Pick the main transcript among uploaded files: (filename, text, the others).

    Of a Roo Code or Cline task folder, the API conversation leads, then the UI messages; a file
    named after a subtask's id ("<id>_api_conversation_history.json") never leads.
    """
    if not files:
        raise ImportProblem("No transcript file was given.")
    names = list(files)
    bases = {name: _safe_name(name).lower() for name in names}
    main = next(
        (n for wanted in _TASK_FILE_ORDER for n in names if bases[n] == wanted),
        names[0],
    )
    return main, files[main], {n: t for n, t in files.items() if n != main}

"""Background checks an admin asks for on the curation pages.

The views call `request_repository_check` / `request_model_connection_check`, which mark the
object as pending and enqueue a Celery task once the transaction commits; the task calls
`check_repository` / `check_model_connection`, plain functions that tests call directly. Results
land in a JSON column that the page polls:

    Repository.last_check = {"checked_at": iso, "ok": bool, "error": str,
                             "prompts": [{"key", "commit", "exists"}]}
    LanguageModel.connection_check = {"checked_at": iso, "ok": bool, "answer" | "error": str}

While a check is queued the column holds {"pending": True, "requested_at": iso}.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from runs import enqueue, providers, redaction, workspace
from runs.models import KeyUnavailable, LanguageModel, Repository

log = logging.getLogger(__name__)

ANSWER_LIMIT = 200


def _now() -> str:
    return timezone.now().isoformat()


def is_pending(check: dict) -> bool:
    return bool(check.get("pending"))


def request_repository_check(repository: Repository) -> None:
    repository.last_check = {"pending": True, "requested_at": _now()}
    Repository.objects.filter(pk=repository.pk).update(last_check=repository.last_check)
    enqueue.repository_check(repository.pk)


def request_model_connection_check(model: LanguageModel) -> None:
    model.connection_check = {"pending": True, "requested_at": _now()}
    LanguageModel.objects.filter(pk=model.pk).update(connection_check=model.connection_check)
    enqueue.model_connection_check(model.pk)


def check_repository(repository_id: int) -> None:
    """Fetch the repository's mirror and check that every prompt's commit is in it."""
    repository = Repository.objects.filter(pk=repository_id).first()
    if repository is None:
        return  # deleted while the task waited in the queue
    root = Path(settings.MERGEABLE_WORKSPACE_ROOT)
    result: dict = {"checked_at": None, "ok": False, "error": "", "prompts": []}
    try:
        # Never hand git a URL that would not pass the form today (roots may have changed).
        workspace.validate_repository_url(repository.url, settings.MERGEABLE_LOCAL_REPO_ROOTS)
        # A ref name (unlike a sha) is always fetched, so this refreshes an existing mirror.
        mirror = workspace.ensure_mirror(repository.url, root, repository.default_branch or "HEAD")
    except (ValueError, workspace.WorkspaceError) as exc:
        result["error"] = workspace.redact_url(str(exc))
    else:
        result["prompts"] = _prompt_commits(repository, mirror, root)
        missing = [p["key"] for p in result["prompts"] if not p["exists"]]
        if missing:
            result["error"] = f"{len(missing)} prompt commit(s) not found: {', '.join(missing)}"
        result["ok"] = not missing
    result["checked_at"] = _now()
    Repository.objects.filter(pk=repository_id).update(last_check=result)
    log.info("checked repository %s: ok=%s", repository.name, result["ok"])


def _prompt_commits(repository: Repository, mirror: Path, root: Path) -> list[dict]:
    rows = []
    for key, commit in repository.prompts.filter(archived=False).values_list("key", "commit"):
        exists = workspace.commit_exists(mirror, commit)
        if not exists:
            # A commit pushed after the mirror was made: fetching for it is ensure_mirror's job.
            try:
                workspace.ensure_mirror(repository.url, root, commit)
                exists = workspace.commit_exists(mirror, commit)
            except workspace.WorkspaceError:
                exists = False
        rows.append({"key": key, "commit": commit, "exists": exists})
    return rows


def check_model_connection(model_id: int) -> None:
    """Send one tiny request to the model and record its answer or the error."""
    model = LanguageModel.objects.filter(pk=model_id).first()
    if model is None:
        return
    result: dict = {"checked_at": None, "ok": False}
    try:
        answer = providers.check_connection(model.provider_config())
    except (providers.ProviderError, KeyUnavailable) as exc:
        result["error"] = str(exc)
    except ValueError as exc:  # a scripted model whose script no longer parses
        result["error"] = f"the script is invalid: {exc}"
    except Exception as exc:  # the admin needs an answer on the page whatever went wrong
        log.warning("testing model %s failed: %s", model.name, type(exc).__name__)
        result["error"] = f"the test failed: {type(exc).__name__}"
    else:
        result["ok"] = True
        # Scrubbed before it is cut, so a key the cut would split is redacted too.
        result["answer"] = redaction.scrub(answer)[:ANSWER_LIMIT]
    # Belt and braces: an error never carries the key either, even if a server echoes it.
    if "error" in result:
        result["error"] = redaction.scrub(result["error"])
    result["checked_at"] = _now()
    LanguageModel.objects.filter(pk=model_id).update(connection_check=result)
    log.info("tested model %s: ok=%s", model.name, result["ok"])

"""Background checks an admin asks for on the curation pages.

The views call `request_repository_check` / `request_model_test`, which mark the object as
pending and enqueue a Celery task once the transaction commits; the task calls
`check_repository` / `test_model_connection`, plain functions that tests call directly. Results
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
from django.db import transaction
from django.utils import timezone

from runs import redaction
from runs.models import KeyUnavailable, LanguageModel, Repository

log = logging.getLogger(__name__)

ANSWER_LIMIT = 200


def _now() -> str:
    return timezone.now().isoformat()


def is_pending(check: dict) -> bool:
    return bool(check.get("pending"))


def request_repository_check(repository: Repository) -> None:
    from runs import tasks

    repository.last_check = {"pending": True, "requested_at": _now()}
    Repository.objects.filter(pk=repository.pk).update(last_check=repository.last_check)
    repository_id = repository.pk
    transaction.on_commit(lambda: tasks.check_repository.delay(repository_id))


def request_model_test(model: LanguageModel) -> None:
    from runs import tasks

    model.connection_check = {"pending": True, "requested_at": _now()}
    LanguageModel.objects.filter(pk=model.pk).update(connection_check=model.connection_check)
    model_id = model.pk
    transaction.on_commit(lambda: tasks.test_model_connection.delay(model_id))


def check_repository(repository_id: int) -> None:
    """Fetch the repository's mirror and check that every prompt's commit is in it."""
    from runs import workspace

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
        result["error"] = _redacted(str(exc), repository)
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
    from runs import workspace

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


def test_model_connection(model_id: int) -> None:
    """Send one tiny request to the model and record its answer or the error."""
    from runs import providers

    model = LanguageModel.objects.filter(pk=model_id).first()
    if model is None:
        return
    result: dict = {"checked_at": None, "ok": False}
    try:
        answer = providers.test_connection(model.provider_config())
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


# pytest would otherwise collect it when a test module imports it by name.
test_model_connection.__test__ = False  # type: ignore[attr-defined]


def _redacted(message: str, repository: Repository) -> str:
    if repository.url and repository.url != repository.display_url:
        message = message.replace(repository.url, repository.display_url)
    return message

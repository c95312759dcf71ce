"""Work handed to a Celery worker, sent once the transaction that made it commits.

Domain modules enqueue through these functions and never import `runs.tasks`: the tasks import
the domain modules, so an import back would be a circle. Each task is looked up by the name it is
registered under (`runs.apps` imports the tasks when Django starts), which is also the name
`CELERY_BEAT_SCHEDULE` uses. Tasks take ids only: the row is read again when the task runs.
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import current_app
from django.conf import settings
from django.db import transaction


def _on_commit(task: str, ids: Iterable[int], **options) -> None:
    ids = list(ids)

    def send() -> None:
        registered = current_app.tasks[f"runs.tasks.{task}"]
        for item_id in ids:
            registered.apply_async((item_id,), **options)

    transaction.on_commit(send)


def runs(run_ids: Iterable[int], *, requeued: bool = False) -> None:
    """Execute these runs (`runs.execution.execute`). Runs the reaper requeued go ahead of every
    queued run (on Redis): a lost run takes the next free slot, not the end of the backlog."""
    options = {"priority": settings.REQUEUED_RUN_PRIORITY} if requeued else {}
    _on_commit("execute_run", run_ids, **options)


def run_import(import_id: int) -> None:
    """Apply and test a queued import (`runs.imports.run_queued_import`)."""
    _on_commit("import_run", [import_id])


def repository_check(repository_id: int) -> None:
    """Fetch a repository and check its prompts' commits (`runs.checks.check_repository`)."""
    _on_commit("check_repository", [repository_id])


def model_connection_check(model_id: int) -> None:
    """Send a model one tiny request (`runs.checks.check_model_connection`)."""
    _on_commit("check_model_connection", [model_id])


def draft_proof(draft_id: int) -> None:
    """Prove a drafted prompt in the sandbox (`runs.drafts.prove_draft`)."""
    _on_commit("prove_draft", [draft_id])


def judge_reviews(judge_review_ids: Iterable[int]) -> None:
    """Have an LLM judge review these runs (`scoring.judge.judge_run`). The task is scoring's,
    sent by name like the others: runs never imports scoring."""
    ids = list(judge_review_ids)

    def send() -> None:
        registered = current_app.tasks["scoring.tasks.judge_run"]
        for item_id in ids:
            registered.apply_async((item_id,))

    transaction.on_commit(send)

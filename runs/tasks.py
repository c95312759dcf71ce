"""Thin Celery tasks: take ids, call a plain function of a domain module.

Nothing imports this module but `runs.apps` (to register the tasks and the worker_ready handler):
domain modules enqueue through `runs.enqueue`, which names the tasks below. A task's name is
`runs.tasks.<function>`; renaming one leaves messages queued under the old name unread, which is
harmless only because every task here can be enqueued again (checks by the admin's button, runs
and imports by the reapers).
"""

from __future__ import annotations

from pathlib import Path

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from runs import checks, drafts, execution, imports, providers
from runs.workers import worker_name


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def execute_run(self, run_id: int) -> None:
    execution.execute(run_id, worker=worker_name(self.request.hostname))


@shared_task(ignore_result=True)
def reap_stale_runs() -> None:
    execution.reap_stale_runs()
    imports.reap_stale_imports()


@shared_task(ignore_result=True)
def import_run(import_id: int) -> None:
    imports.run_queued_import(import_id)


@shared_task(ignore_result=True)
def check_repository(repository_id: int) -> None:
    checks.check_repository(repository_id)


@shared_task(ignore_result=True)
def check_model_connection(model_id: int) -> None:
    checks.check_model_connection(model_id)


@shared_task(ignore_result=True)
def prove_draft(draft_id: int) -> None:
    drafts.prove_draft(draft_id)


@worker_ready.connect
def make_the_shared_ssl_context(**_kwargs) -> None:
    """Before the first runs, not by them: loading the CA bundle costs ~30 ms of CPU."""
    providers.shared_ssl_context()


@worker_ready.connect
def remove_abandoned_checkouts(**_kwargs) -> None:
    """What workers killed on this machine left in the checkout root, once per worker start."""
    execution.remove_abandoned_checkouts(Path(settings.MERGEABLE_CHECKOUT_ROOT))

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evalsite.settings")

app = Celery("evalsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_worker_beat = None


@worker_ready.connect
def start_worker_heartbeat(sender, **_kwargs) -> None:
    """A run pool (one that consumes the default queue) heartbeats for the dashboard's Workers
    panel; the bookkeeping pool, which holds no runs, does not."""
    global _worker_beat
    # Imported here: this module is loaded before Django's apps are (evalsite/__init__.py).
    from django.conf import settings

    from evalsite.operations import WorkerBeat
    from runs.workers import worker_name

    queues = {queue.name for queue in sender.task_consumer.queues}
    if settings.CELERY_TASK_DEFAULT_QUEUE in queues:
        _worker_beat = WorkerBeat(worker_name(sender.hostname), sender.pool.limit).start()


@worker_shutdown.connect
def stop_worker_heartbeat(**_kwargs) -> None:
    if _worker_beat is not None:
        _worker_beat.stop()

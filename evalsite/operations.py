"""What an operator watches: which workers are alive, how many of their run slots are busy, how
many runs wait and for how long. Workers write their heartbeat here (`WorkerBeat`, started by
`evalsite.celery` in each run pool); the dashboard reads `load()`."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models import Count, Min
from django.utils import timezone

from evalsite.models import WorkerHeartbeat
from runs.models import Run

log = logging.getLogger(__name__)

# Rows of workers gone this long are deleted when a worker starts: the table stays small.
FORGET_AFTER = timedelta(days=1)


class WorkerBeat:
    """A thread writing one worker's heartbeat row until `stop()`, which deletes the row."""

    def __init__(self, name: str, slots: int) -> None:
        self.name = name
        self.slots = slots
        self.started_at = timezone.now()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="worker-heartbeat", daemon=True)

    def start(self) -> WorkerBeat:
        WorkerHeartbeat.objects.filter(seen_at__lt=timezone.now() - FORGET_AFTER).delete()
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        WorkerHeartbeat.objects.filter(name=self.name).delete()

    def _beat(self) -> None:
        try:
            while True:
                try:
                    WorkerHeartbeat.objects.update_or_create(
                        name=self.name,
                        defaults={"seen_at": timezone.now(), "slots": self.slots},
                        create_defaults={
                            "seen_at": timezone.now(),
                            "slots": self.slots,
                            "started_at": self.started_at,
                        },
                    )
                except DatabaseError:
                    # The dashboard shows this worker as gone until the database answers again;
                    # its runs carry their own heartbeats.
                    log.warning("worker heartbeat of %s failed", self.name, exc_info=True)
                if self.stopped.wait(settings.MERGEABLE_HEARTBEAT_SECONDS):
                    return
        finally:
            close_old_connections()


@dataclass(frozen=True)
class Worker:
    name: str
    slots: int
    busy: int
    started_at: datetime
    seen_at: datetime


@dataclass(frozen=True)
class Load:
    workers: list[Worker]
    slots: int
    busy: int
    # Runs claimed by workers that stopped beating: the reaper requeues them soon.
    held_by_lost_workers: int
    queued: int
    oldest_queued_at: datetime | None

    @property
    def oldest_wait(self) -> timedelta | None:
        return timezone.now() - self.oldest_queued_at if self.oldest_queued_at else None


def load() -> Load:
    """Workers alive (heard from within the staleness window), their busy slots, the queue. Three
    queries, however many workers and runs."""
    alive_since = timezone.now() - timedelta(seconds=settings.MERGEABLE_STALE_AFTER_SECONDS)
    beats = list(WorkerHeartbeat.objects.filter(seen_at__gte=alive_since).order_by("name"))
    claimed = dict(
        Run.objects.filter(status__in=Run.CLAIMED_STATUSES)
        .values("worker")
        .annotate(runs=Count("id"))
        .values_list("worker", "runs")
    )
    queue = Run.objects.filter(status=Run.QUEUED).aggregate(
        count=Count("id"), oldest=Min("queued_at")
    )
    workers = [
        Worker(beat.name, beat.slots, claimed.pop(beat.name, 0), beat.started_at, beat.seen_at)
        for beat in beats
    ]
    return Load(
        workers=workers,
        slots=sum(worker.slots for worker in workers),
        busy=sum(worker.busy for worker in workers),
        held_by_lost_workers=sum(claimed.values()),
        queued=queue["count"],
        oldest_queued_at=queue["oldest"],
    )

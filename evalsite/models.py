"""What the site knows about its own processes (the rest of the data lives in `runs` and `scoring`)."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """A run pool's sign of life, written every MERGEABLE_HEARTBEAT_SECONDS while it runs.

    A run carries its own heartbeat (`Run.heartbeat_at`); this one says that the worker exists at
    all, idle or not, and how many run slots it has: what an operator needs to see spare capacity.
    A worker that shuts down deletes its row; one killed leaves it to go stale.
    """

    # As written on the runs the worker claims (`Run.worker`): node@host:pid.
    name = models.CharField(max_length=200, unique=True)
    slots = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.name

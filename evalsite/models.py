"""What the site knows about its own processes (the rest of the data lives in `runs` and `scoring`)."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone


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


class InviteQuerySet(models.QuerySet):
    def usable(self) -> InviteQuerySet:
        return self.filter(used_at__isnull=True, expires_at__gt=timezone.now())


class Invite(models.Model):
    """A link an admin hands to a new teammate: it creates one account with the given role.

    Only a hash of the link's token is stored, so a database dump holds no usable link. The
    link works once (``accept`` claims it conditionally) and not after ``expires_at``.
    """

    token_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=20)
    note = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = InviteQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"invite for a {self.role} ({self.created_at:%Y-%m-%d})"

    @staticmethod
    def hash_token(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and self.expires_at > timezone.now()

"""Worker identity: the name a worker writes on the runs it claims.

A run's `worker` column says who holds it (`name@host:pid`). Every write a worker makes to a run
is conditional on that name, and cancelling compares machines to decide whether the process
group can be killed from here.
"""

from __future__ import annotations

import os
import socket


def worker_name(node: str | None = None) -> str:
    """Who holds a run: the Celery node name (name@host) or the host, and the process id."""
    return f"{node or socket.gethostname()}:{os.getpid()}"


def machine(worker: str) -> str:
    """The host part of a worker name: workers with the same one can signal each other's runs."""
    return worker.rsplit(":", 1)[0].split("@")[-1]

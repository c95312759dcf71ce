"""Gunicorn's settings for the web service (`gunicorn --config=python:evalsite.gunicorn_config`).

Threaded workers (gthread, closing connections as `ThreadWorker` says): a request waiting on the
database, or a slow one such as a login (Argon2 costs tens of milliseconds of CPU on purpose),
holds one thread, not a whole process.
One process per CPU the server may use, so Python's GIL does not cap the site at one core, and
four threads in each: on 2 CPUs, 8 requests in flight. WEB_CONCURRENCY and WEB_THREADS override.

The application, its URLs and every view are loaded once, before the workers are forked
(`preload_app`, `when_ready`): a worker serves the moment it starts, so the logins that arrive
just after a (re)start do not queue behind each worker's two seconds of imports, and the
workers share those pages of memory. Nothing opens a database or cache connection on import.
"""

from __future__ import annotations

import gc
import os
import socket
from pathlib import Path

from gunicorn import util
from gunicorn.http.body import LengthReader
from gunicorn.workers import gthread


def _cpus() -> int:
    # The CPUs this process may run on (a container's cpuset), not every CPU of the host.
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def envcount(name: str, default: int) -> int:
    value = os.getenv(name) or str(default)
    if not value.isdigit() or int(value) < 1:
        raise SystemExit(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ThreadWorker(gthread.ThreadWorker):
    """gunicorn's threaded worker, which closes a connection without waiting on its client when
    the client has nothing left to send.

    One thread of each worker accepts connections and hands them to the others. After each
    response gunicorn half-closes the connection on that thread and waits for the client to close
    its side (RFC 9112's lingering close), so that request bytes still on their way do not reset
    the connection before the client has read the response. A browser's close arrives a network
    round trip later: meanwhile the worker accepts nothing. Four clients 100 ms away made a fifth
    client's login page take 410 ms (median) on one worker instead of 1 ms. A client whose request
    was read to its end, with nothing more waiting on the socket, has nothing to lose, so its
    connection is closed at once; any other still gets the lingering close.
    """

    def finish_request(self, conn, fs) -> None:
        if not fs.cancelled() and fs.exception() is None and fs.result() is False:
            if _read_to_the_end(conn):
                self.nr_conns -= 1  # what gunicorn's close path counts
                util.close(conn.sock)
                return
        super().finish_request(conn, fs)


def _read_to_the_end(conn) -> bool:
    """Whether the connection's last request was read whole, body included, and nothing else
    waits unread on its socket (a read-ahead buffer of gunicorn's is off the socket already)."""
    body = getattr(getattr(conn.parser, "mesg", None), "body", None)
    reader = getattr(body, "reader", None)
    if not isinstance(reader, LengthReader) or reader.length:  # chunked, or a body left unread
        return False
    try:
        waiting = conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return not waiting  # b"": the client has closed its side


worker_class = ThreadWorker
workers = envcount("WEB_CONCURRENCY", max(2, _cpus()))
threads = envcount("WEB_THREADS", 4)
# A worker takes only the connections it can serve now; the others wait in the listen queue for
# whichever worker frees a thread first, as sync workers share them. A worker that took more would
# queue requests behind its own threads while another worker sat idle: in 21 logins at once just
# after a start, one of two workers took 62% of the requests. (p95 of those logins, the median of
# six such storms, no runs: 0.83-0.94 s before, 0.76-0.85 s after.) So no connection stays open
# between requests either (keep-alive): an idle one would count against its worker. Slow clients
# are a buffering proxy's to absorb, as gunicorn's documentation advises.
worker_connections = threads
keepalive = 0


preload_app = True


def when_ready(server) -> None:
    # Runs in the master, after the application is loaded and before the first fork: what
    # Django would otherwise do on each worker's first requests is done once, and shared.
    warm_up()
    freeze_the_heap()


def freeze_the_heap() -> None:
    """Leave everything loaded so far out of the garbage collector's passes, in this process and
    in every worker it forks (`gc.freeze`, as Python's documentation advises before a fork).

    The loaded site is about 180,000 objects that live as long as the process. A full collection
    walks them all: 70-120 ms with the GIL held, in the middle of whichever requests the worker is
    serving, and in a newly forked worker it writes to each object's header, so the kernel copies
    every page of the heap the worker shares with the master. Frozen, a full collection walks
    only the objects made since (7 ms)."""
    gc.collect()
    gc.freeze()


def post_worker_init(worker) -> None:
    # Runs in each worker before it accepts a connection: its password-hashing thread starts and
    # faults its memory in now, not during the first logins (evalsite/hashers.py).
    from evalsite import hashers

    hashers.warm_up()


def warm_up() -> None:
    """Import every view, build the URL table both ways, compile every template of the site,
    and prime the highlighter and the markdown renderer.

    Each is done lazily, on the first request that needs it: in every worker, at the moment a
    restart's first logins arrive (compiling the site's templates takes a worker about a tenth
    of a second of CPU; pygments compiles every lexer's file-name patterns, 0.15 s, the first
    time it picks a lexer for a diff with no stored rendering).
    """
    # Django's modules are imported when this runs: gunicorn reads this file before it loads
    # the application, and Django's template and URL modules need its settings.
    from django.conf import settings
    from django.template.loader import get_template
    from django.urls import resolve, reverse

    from evalsite import hashers
    from runs import diffs
    from runs.templatetags.runs_tags import render_markdown

    resolve("/")  # imports every URL module, and with them every view
    reverse("dashboard")  # builds the table that every {% url %} and redirect reads
    for engine in settings.TEMPLATES:
        for directory in engine["DIRS"]:
            for path in sorted(Path(directory).rglob("*.html")):
                get_template(path.relative_to(directory).as_posix())
    diffs.render_diff(_SAMPLE_DIFF)
    render_markdown("A *prompt* with code:\n\n```python\nprint(1)\n```\n\n| a |\n|---|\n| 1 |")
    hashers.hash_once()  # on this thread: no thread is started before the fork


_SAMPLE_DIFF = """\
diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1 +1 @@
-print(1)
+print(2)
"""

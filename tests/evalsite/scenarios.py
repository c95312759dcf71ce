"""Load settings under many environments in one interpreter: read scenarios as JSON on stdin
([{"env": {...}, "code": "..."}]), run each in a forked child with exactly that environment, and
print [{"returncode", "stdout", "stderr"}] as JSON.

Settings are read once per process, so each scenario needs a process of its own; forking one
interpreter that has already imported Django, Celery and the rest costs milliseconds, where a new
interpreter per scenario costs seconds.
"""

from __future__ import annotations

import io
import json
import os
import sys
import traceback

# Imported before forking, so each child starts with them loaded (but with no settings read).
import celery  # noqa: F401
import cryptography.fernet  # noqa: F401
import django  # noqa: F401
import django.db.models  # noqa: F401
import django.forms  # noqa: F401
import django.http  # noqa: F401
import django.template  # noqa: F401
import django.urls  # noqa: F401
import kombu  # noqa: F401
import kombu.transport.redis  # noqa: F401


def run(scenario: dict) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the code, send back what it printed
        os.close(read_fd)
        out, err, code = io.StringIO(), io.StringIO(), 0
        os.environ.clear()
        os.environ.update(scenario["env"])
        sys.stdout, sys.stderr = out, err
        try:
            exec(compile(scenario["code"], "<scenario>", "exec"), {"__name__": "__main__"})
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        with os.fdopen(write_fd, "w") as pipe:
            json.dump(
                {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}, pipe
            )
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        result = json.loads(pipe.read() or '{"returncode": -1, "stdout": "", "stderr": "died"}')
    os.waitpid(pid, 0)
    return result


if __name__ == "__main__":
    print(json.dumps([run(scenario) for scenario in json.load(sys.stdin)]))

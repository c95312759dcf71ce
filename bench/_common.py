"""Shared helpers for the benchmarks: Django set-up in a throwaway directory, git, figures.

Every benchmark is a standalone script that prints ONE JSON object to stdout and its progress to
stderr. Import this module before anything Django: `setup_django` sets the environment the
settings read at import time.
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(figures: dict) -> None:
    """The benchmark's one result: a JSON object on stdout.

    A missed target is a figure, not a failure: the exit status stays 0 so that `make bench` runs
    every benchmark. With --strict on the command line, a missed target exits 1.
    """
    print(json.dumps(figures, indent=2, sort_keys=False), flush=True)
    if "--strict" in sys.argv[1:] and figures.get("met") is False:
        sys.exit(1)


def make_var_dir(prefix: str) -> Path:
    # resolve(): /tmp may be a symlink, and local repository roots are compared as real paths.
    return Path(tempfile.mkdtemp(prefix=f"mergeable-{prefix}-")).resolve()


def bench_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment variables the settings read, for this process and any worker we start."""
    env = {
        "DJANGO_SETTINGS_MODULE": "evalsite.settings",
        "DEBUG": "true",
        "MERGEABLE_VAR_DIR": str(var_dir),
        "MERGEABLE_LOCAL_REPO_ROOTS": f"{var_dir / 'repos'},{var_dir}",
        "MERGEABLE_WORKSPACE_ROOT": str(var_dir / "workspaces"),
        "MEDIA_ROOT": str(var_dir / "media"),
        "AXES_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


def setup_django(var_dir: Path, **extra_env: str) -> None:
    """Point the settings at `var_dir` (and any DATABASE_URL etc. in `extra_env`), then migrate.

    Without DATABASE_URL / CELERY_BROKER_URL in `extra_env` the benchmark runs on SQLite and the
    embedded queue, whatever the calling shell has set.
    """
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "MERGEABLE_SQLITE_PATH"):
        os.environ.pop(name, None)
    os.environ.update(bench_env(var_dir, **extra_env))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def as_after_autovacuum() -> None:
    """On PostgreSQL, what autovacuum does to a database that has been in use: statistics for
    the planner and a visibility map, without which no index-only scan is possible. A world
    loaded in bulk moments ago has neither, so its first minutes measure plans no site runs."""
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "core.autocrlf=false", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV, "HOME": str(cwd)},
        input=input,
        check=True,
        capture_output=True,
    )
    return result.stdout.decode("utf-8", "replace").strip()


def make_repo(path: Path, files: dict[str, str]) -> str:
    """A real git repository at `path` with `files` in one commit; returns the commit's sha."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for rel, text in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return git(path, "rev-parse", "HEAD")


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def int_arg(name: str, default: int) -> int:
    """The value of `--name=N` on the command line, else `default`."""
    prefix = f"--{name}="
    return next((int(a[len(prefix) :]) for a in sys.argv[1:] if a.startswith(prefix)), default)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of values at or below."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))  # ceil without importing math
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(function: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# --- profiling ---------------------------------------------------------------------------------

PROJECT_PACKAGES = ("runs/", "scoring/", "evalsite/", "templates/")


def profile(function: Callable[[], object], skip: Sequence[str] = ()) -> dict:
    """Profile one call: the top 5 entries of Mergeable's own code by cumulative time (minus the
    names in `skip`, entry points that say nothing) and the top 5 of anything by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(function)
    rows = _profile_rows(profiler)
    skipped = tuple(f"({name})" for name in ("__enter__", "__exit__", *skip))
    ours = [
        row
        for row in rows
        if row["function"].startswith(PROJECT_PACKAGES) and not row["function"].endswith(skipped)
    ]
    return {
        "profile_top": sorted(ours, key=lambda row: row["cumtime_s"], reverse=True)[:5],
        "profile_top_tottime": sorted(rows, key=lambda row: row["tottime_s"], reverse=True)[:5],
    }


def _profile_rows(profiler: cProfile.Profile) -> list[dict]:
    stats = pstats.Stats(profiler, stream=io.StringIO())
    return [
        {
            "function": f"{_short(filename)}:{line}({function})",
            "calls": calls,
            "tottime_s": round(tottime, 4),
            "cumtime_s": round(cumtime, 4),
        }
        for (filename, line, function), (_cc, calls, tottime, cumtime, _callers) in (
            stats.stats.items()
        )
    ]


def _short(filename: str) -> str:
    for marker in ("/site-packages/", f"{ROOT}/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# --- PostgreSQL + Redis of a benchmark's own -------------------------------------------------

PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"


class ServiceBackend:
    """A benchmark's own PostgreSQL database and Redis database when both answer on 127.0.0.1
    (created fresh, dropped by `cleanup`), else SQLite and the embedded queue."""

    def __init__(self, database: str, redis_db: int) -> None:
        self.database = database
        self.pg_url = f"postgres://postgres@127.0.0.1:5432/{database}"
        self.redis_url = f"redis://127.0.0.1:6379/{redis_db}"

    def choose(self) -> tuple[str, dict[str, str], str]:
        """(backend name, environment for the site's processes, why not PostgreSQL + Redis)."""
        if "--embedded" in sys.argv[1:]:
            return "sqlite+filesystem", {}, "asked for with --embedded"
        if not (answers("127.0.0.1", 5432) and answers("127.0.0.1", 6379)):
            return "sqlite+filesystem", {}, "PostgreSQL and Redis are not both reachable"
        try:
            self._reset(create=True)
        except Exception as exc:  # any failure to prepare them: fall back rather than give up
            return "sqlite+filesystem", {}, f"could not prepare PostgreSQL/Redis: {exc}"
        env = {"DATABASE_URL": self.pg_url, "CELERY_BROKER_URL": self.redis_url}
        return "postgres+redis", env, ""

    def cleanup(self, backend: str, var_dir: Path) -> None:
        if backend == "postgres+redis":
            from django.db import connections

            connections.close_all()
            try:
                self._reset(create=False)
            except Exception as exc:
                log(f"clean-up of PostgreSQL/Redis failed: {exc}")
        shutil.rmtree(var_dir, ignore_errors=True)

    def _reset(self, *, create: bool) -> None:
        import psycopg
        import redis

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")
            if create:
                connection.execute(f"CREATE DATABASE {self.database}")
        redis.Redis.from_url(self.redis_url, socket_connect_timeout=5).flushdb()

"""settings.py, loaded in a fresh interpreter under a controlled environment.

Settings are read once per process, so each case starts `python -c ...` with exactly the
variables it names (plus PATH and a private MERGEABLE_VAR_DIR) and inspects what it prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.conf import settings

ROOT = Path(settings.BASE_DIR)
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 60,
    "MERGEABLE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
}
REPORT = """
import json, django
django.setup()
from django.conf import settings
from django.db import connection
from evalsite import celery_app
report = {
    "debug": settings.DEBUG,
    "engine": settings.DATABASES["default"]["ENGINE"],
    "broker": settings.CELERY_BROKER_URL,
    "app_broker": celery_app.conf.broker_url,
    "embedded": settings.EMBEDDED_QUEUE,
    "transport_options": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "run_time_limit": settings.RUN_HARD_TIME_LIMIT,
    "cache": settings.CACHES["default"]["BACKEND"],
    "transport": str(celery_app.connection_for_write().transport_cls),  # does not connect
}
if report["engine"].endswith("sqlite3"):
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        report["journal_mode"] = cursor.fetchone()[0]
    report["sqlite_path"] = str(settings.DATABASES["default"]["NAME"])
print(json.dumps(report))
"""


def _load(tmp_path: Path, code: str = "import django; django.setup()", **variables: str):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "evalsite.settings",
        "MERGEABLE_VAR_DIR": str(tmp_path / "var"),
        **variables,
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _report(tmp_path: Path, **variables: str) -> dict:
    result = _load(tmp_path, REPORT, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _refusal(tmp_path: Path, **variables: str) -> str:
    """The last line of the traceback of a start-up that must fail."""
    result = _load(tmp_path, **variables)
    assert result.returncode != 0, "settings loaded but should have refused"
    return result.stderr.strip().splitlines()[-1]


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    variables = {**PRODUCTION}
    del variables["SECRET_KEY"]
    message = _refusal(tmp_path, **variables)
    assert message.startswith("django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set")


def test_it_refuses_to_start_in_production_without_encryption_keys(tmp_path):
    variables = {**PRODUCTION}
    del variables["MERGEABLE_ENCRYPTION_KEYS"]
    message = _refusal(tmp_path, **variables)
    assert message.startswith(
        "django.core.exceptions.ImproperlyConfigured: MERGEABLE_ENCRYPTION_KEYS is not set"
    )


def test_it_starts_in_production_with_both_secrets(tmp_path):
    assert _report(tmp_path, **PRODUCTION)["debug"] is False


def test_it_treats_a_missing_debug_as_production(tmp_path):
    assert "SECRET_KEY" in _refusal(tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEBUG", "maybe"),
        ("MERGEABLE_MAX_ATTEMPTS", "abc"),
        ("MERGEABLE_SANDBOX", "docker"),
        ("MERGEABLE_WORKSPACE_ROOT", "relative/path"),
        ("MERGEABLE_ENCRYPTION_KEYS", "notakey"),
        ("DATABASE_URL", "nonsense://"),
        ("MERGEABLE_RUN_MAX_PROCESSES", "0"),
        ("MERGEABLE_RUN_MAX_MEMORY_MB", "-4096"),
        ("MERGEABLE_RUN_MAX_DISK_MB", "10G"),
        ("MERGEABLE_RUN_MAX_CPU_SECONDS", "0"),
    ],
)
def test_it_names_the_variable_holding_a_malformed_value(tmp_path, name, value):
    variables = {**PRODUCTION, name: value}
    message = _refusal(tmp_path, **variables)
    assert message.startswith("django.core.exceptions.ImproperlyConfigured: ")
    assert name in message


def test_it_uses_postgresql_when_database_url_says_so(tmp_path):
    report = _report(tmp_path, DEBUG="true", DATABASE_URL="postgres://u:p@db.example.com:5432/x")
    assert report["engine"] == "django.db.backends.postgresql"


def test_it_runs_on_sqlite_in_wal_mode_and_the_embedded_queue_with_nothing_set(tmp_path):
    report = _report(tmp_path, DEBUG="true")
    assert report["engine"] == "django.db.backends.sqlite3"
    assert report["journal_mode"] == "wal"
    assert Path(report["sqlite_path"]).is_relative_to(tmp_path / "var")
    assert report["embedded"] is True
    assert report["broker"] == report["app_broker"] == "filesystem://"
    assert report["transport"] == "evalsite.embedded_queue:Transport"  # publishes atomically
    assert report["transport_options"]["data_folder_in"] == str(tmp_path / "var/queue/messages")
    assert (tmp_path / "var" / "queue" / "messages").is_dir()


def test_it_uses_redis_for_celery_when_only_redis_url_is_set(tmp_path):
    report = _report(tmp_path, DEBUG="true", REDIS_URL="redis://cache.example.com:6379/2")
    assert report["embedded"] is False
    assert report["broker"] == report["app_broker"] == "redis://cache.example.com:6379/2"
    assert report["transport"] == "redis"
    # Redis must not hand a long run to a second worker while the first is still on it.
    assert report["transport_options"]["visibility_timeout"] > report["run_time_limit"]
    assert not (tmp_path / "var" / "queue").exists()


def test_it_shares_a_redis_cache_only_when_asked(tmp_path):
    assert _report(tmp_path, DEBUG="true", REDIS_URL="redis://r:6379/0")["cache"].endswith(
        "LocMemCache"
    )
    report = _report(tmp_path, DEBUG="true", MERGEABLE_CACHE_URL="redis://r:6379/1")
    assert report["cache"] == "evalsite.cache.SignedRedisCache"


def test_it_prefers_celery_broker_url_over_redis_url(tmp_path):
    report = _report(
        tmp_path,
        DEBUG="true",
        REDIS_URL="redis://cache.example.com:6379/2",
        CELERY_BROKER_URL="redis://broker.example.com:6379/0",
    )
    assert report["broker"] == "redis://broker.example.com:6379/0"


RUN_CAPS = """
import json, django
django.setup()
from django.conf import settings
names = ["PROCESSES", "MEMORY_MB", "DISK_MB", "CPU_SECONDS"]
print(json.dumps({n: getattr(settings, "MERGEABLE_RUN_MAX_" + n) for n in names}))
"""


def test_it_caps_every_run_at_the_documented_defaults(tmp_path):
    result = _load(tmp_path, RUN_CAPS, DEBUG="true")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "PROCESSES": 256,
        "MEMORY_MB": 4096,
        "DISK_MB": 10240,
        "CPU_SECONDS": 3600,
    }


def test_it_reads_each_run_cap_from_its_own_variable(tmp_path):
    variables = {
        "MERGEABLE_RUN_MAX_PROCESSES": "64",
        "MERGEABLE_RUN_MAX_MEMORY_MB": "512",
        "MERGEABLE_RUN_MAX_DISK_MB": "2048",
        "MERGEABLE_RUN_MAX_CPU_SECONDS": "600",
    }
    result = _load(tmp_path, RUN_CAPS, DEBUG="true", **variables)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "PROCESSES": 64,
        "MEMORY_MB": 512,
        "DISK_MB": 2048,
        "CPU_SECONDS": 600,
    }

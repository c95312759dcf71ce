"""settings.py, loaded in a fresh process under a controlled environment.

Settings are read once per process, so each case is a scenario: code run with exactly the
variables it names (plus PATH, HOME and a private MERGEABLE_VAR_DIR). All scenarios run in one
interpreter that forks a child per scenario (tests/evalsite/scenarios.py); each test inspects
what its scenario printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
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
    "database_options": settings.DATABASES["default"].get("OPTIONS", {}),
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


SETUP = "import django; django.setup()"
SCENARIOS: dict[str, tuple[str, dict[str, str]]] = {}


def scenario(name: str, code: str = SETUP, **variables: str) -> str:
    """Declare a scenario (run, with all the others, once per module)."""
    SCENARIOS[name] = (code, variables)
    return name


@dataclass
class Outcome:
    home: Path
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> dict:
        assert self.returncode == 0, self.stderr
        return json.loads(self.stdout)

    def refusal(self) -> str:
        """The last line of the traceback of a start-up that must fail."""
        assert self.returncode != 0, "settings loaded but should have refused"
        return self.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("settings")
    batch = []
    for name, (code, variables) in SCENARIOS.items():
        home = base / name
        home.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "DJANGO_SETTINGS_MODULE": "evalsite.settings",
            "MERGEABLE_VAR_DIR": str(home / "var"),
            **variables,
        }
        batch.append({"env": env, "code": code})
    result = subprocess.run(
        [sys.executable, "-m", "tests.evalsite.scenarios"],
        input=json.dumps(batch),
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return {
        name: Outcome(home=base / name, **outcome)
        for name, outcome in zip(SCENARIOS, json.loads(result.stdout), strict=True)
    }


NO_SECRET_KEY = scenario(
    "no-secret-key", **{k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
)
NO_ENCRYPTION_KEYS = scenario(
    "no-encryption-keys",
    **{k: v for k, v in PRODUCTION.items() if k != "MERGEABLE_ENCRYPTION_KEYS"},
)
PRODUCTION_REPORT = scenario("production", REPORT, **PRODUCTION)
NOTHING_SET = scenario("nothing-set")


def test_it_refuses_to_start_in_production_without_a_secret_key(loaded):
    message = loaded[NO_SECRET_KEY].refusal()
    assert message.startswith("django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set")


def test_it_refuses_to_start_in_production_without_encryption_keys(loaded):
    message = loaded[NO_ENCRYPTION_KEYS].refusal()
    assert message.startswith(
        "django.core.exceptions.ImproperlyConfigured: MERGEABLE_ENCRYPTION_KEYS is not set"
    )


def test_it_starts_in_production_with_both_secrets(loaded):
    assert loaded[PRODUCTION_REPORT].report()["debug"] is False


def test_it_treats_a_missing_debug_as_production(loaded):
    assert "SECRET_KEY" in loaded[NOTHING_SET].refusal()


MALFORMED = [
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
    ("MERGEABLE_SANDBOX_ENV", "PIP_INDEX_URL"),
    ("MERGEABLE_SANDBOX_NICE", "20"),
    ("MERGEABLE_SANDBOX_ENV", "PATH=/tmp/evil"),
    ("DATABASE_PREPARED_STATEMENTS", "sometimes"),
]
for _index, (_name, _value) in enumerate(MALFORMED):
    scenario(f"malformed-{_index}", **{**PRODUCTION, _name: _value})


@pytest.mark.parametrize(
    ("index", "name", "value"), [(i, *case) for i, case in enumerate(MALFORMED)]
)
def test_it_names_the_variable_holding_a_malformed_value(loaded, index, name, value):
    message = loaded[f"malformed-{index}"].refusal()
    assert message.startswith("django.core.exceptions.ImproperlyConfigured: ")
    assert name in message


POSTGRES = scenario(
    "postgres", REPORT, DEBUG="true", DATABASE_URL="postgres://u:p@db.example.com:5432/x"
)
POSTGRES_UNPREPARED = scenario(
    "postgres-unprepared",
    REPORT,
    DEBUG="true",
    DATABASE_URL="postgres://u:p@db.example.com:5432/x",
    DATABASE_PREPARED_STATEMENTS="false",
)
DEVELOPMENT = scenario("development", REPORT, DEBUG="true")
REDIS_ONLY = scenario(
    "redis-only", REPORT, DEBUG="true", REDIS_URL="redis://cache.example.com:6379/2"
)
REDIS_NOT_CACHE = scenario("redis-not-cache", REPORT, DEBUG="true", REDIS_URL="redis://r:6379/0")
REDIS_CACHE = scenario("redis-cache", REPORT, DEBUG="true", MERGEABLE_CACHE_URL="redis://r:6379/1")
BOTH_BROKERS = scenario(
    "both-brokers",
    REPORT,
    DEBUG="true",
    REDIS_URL="redis://cache.example.com:6379/2",
    CELERY_BROKER_URL="redis://broker.example.com:6379/0",
)


def test_it_uses_postgresql_when_database_url_says_so(loaded):
    assert loaded[POSTGRES].report()["engine"] == "django.db.backends.postgresql"


def test_it_prepares_postgresql_statements_unless_told_not_to(loaded):
    # Behind a pooler in transaction mode, a connection's prepared statements would vanish.
    prepared = loaded[POSTGRES].report()["database_options"]
    assert prepared == {"server_side_binding": True, "prepare_threshold": 2}
    assert loaded[POSTGRES_UNPREPARED].report()["database_options"] == {}


@pytest.mark.services_only
@pytest.mark.django_db
def test_postgresql_plans_a_statement_sent_again_once():
    from django.contrib.auth.models import Group
    from django.db import connection

    def prepared() -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements")
            return [row[0] for row in cursor.fetchall()]

    for name in ("scorer", "lead", "admin"):
        assert Group.objects.filter(name=name).exists()
    assert [s for s in prepared() if "auth_group" in s and "$1" in s]


def test_it_runs_on_sqlite_in_wal_mode_and_the_embedded_queue_with_nothing_set(loaded):
    outcome = loaded[DEVELOPMENT]
    report, var = outcome.report(), outcome.home / "var"
    assert report["engine"] == "django.db.backends.sqlite3"
    assert report["journal_mode"] == "wal"
    assert Path(report["sqlite_path"]).is_relative_to(var)
    assert report["embedded"] is True
    assert report["broker"] == report["app_broker"] == "filesystem://"
    assert report["transport"] == "evalsite.embedded_queue:Transport"  # publishes atomically
    assert report["transport_options"]["data_folder_in"] == str(var / "queue/messages")
    assert (var / "queue" / "messages").is_dir()


def test_it_uses_redis_for_celery_when_only_redis_url_is_set(loaded):
    outcome = loaded[REDIS_ONLY]
    report = outcome.report()
    assert report["embedded"] is False
    assert report["broker"] == report["app_broker"] == "redis://cache.example.com:6379/2"
    assert report["transport"] == "redis"
    # Redis must not hand a long run to a second worker while the first is still on it.
    assert report["transport_options"]["visibility_timeout"] > report["run_time_limit"]
    assert not (outcome.home / "var" / "queue").exists()


def test_it_shares_a_redis_cache_only_when_asked(loaded):
    assert loaded[REDIS_NOT_CACHE].report()["cache"].endswith("LocMemCache")
    assert loaded[REDIS_CACHE].report()["cache"] == "evalsite.cache.SignedRedisCache"


def test_it_prefers_celery_broker_url_over_redis_url(loaded):
    assert loaded[BOTH_BROKERS].report()["broker"] == "redis://broker.example.com:6379/0"


RUN_CAPS = """
import json, django
django.setup()
from django.conf import settings
names = ["PROCESSES", "MEMORY_MB", "DISK_MB", "CPU_SECONDS"]
print(json.dumps({n: getattr(settings, "MERGEABLE_RUN_MAX_" + n) for n in names}))
"""
DEFAULT_CAPS = scenario("default-caps", RUN_CAPS, DEBUG="true")
OWN_CAPS = scenario(
    "own-caps",
    RUN_CAPS,
    DEBUG="true",
    MERGEABLE_RUN_MAX_PROCESSES="64",
    MERGEABLE_RUN_MAX_MEMORY_MB="512",
    MERGEABLE_RUN_MAX_DISK_MB="2048",
    MERGEABLE_RUN_MAX_CPU_SECONDS="600",
)


def test_it_caps_every_run_at_the_documented_defaults(loaded):
    assert loaded[DEFAULT_CAPS].report() == {
        "PROCESSES": 256,
        "MEMORY_MB": 4096,
        "DISK_MB": 10240,
        "CPU_SECONDS": 3600,
    }


def test_it_reads_each_run_cap_from_its_own_variable(loaded):
    assert loaded[OWN_CAPS].report() == {
        "PROCESSES": 64,
        "MEMORY_MB": 512,
        "DISK_MB": 2048,
        "CPU_SECONDS": 600,
    }


@pytest.mark.services_only
@pytest.mark.django_db(transaction=True)
def test_a_column_added_by_a_migration_breaks_no_statement_an_open_connection_prepared():
    # A deploy migrates from another connection, while the site's connections keep the
    # statements they prepared.
    import psycopg
    from django.db import connection

    from scoring.models import Rubric
    from tests.scoring.test_review import make_contestant, make_prompt, make_run

    campaign = make_run(make_prompt(), make_contestant()).campaign
    rubric = Rubric.default()
    for _ in range(3):
        assert Rubric.criteria_of_campaign(campaign.pk) == list(rubric.criteria.all())
        assert Rubric.default() == rubric
    database = connection.settings_dict
    tables = ("scoring_criterion", "scoring_rubric")
    with psycopg.connect(
        host=database["HOST"],
        port=database["PORT"],
        user=database["USER"],
        dbname=database["NAME"],
        autocommit=True,
    ) as migrating:
        for table in tables:
            migrating.execute(f"ALTER TABLE {table} ADD COLUMN added_later integer")
        try:
            assert Rubric.criteria_of_campaign(campaign.pk) == list(rubric.criteria.all())
            assert Rubric.default() == rubric
        finally:
            for table in tables:
                migrating.execute(f"ALTER TABLE {table} DROP COLUMN added_later")

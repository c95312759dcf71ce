"""A small world of named users and curated objects, shared by every test, and how the suite
is split: `bin/test` runs it in parallel (pytest-xdist) on SQLite, then runs only the tests that
touch the database, the broker or a worker again on PostgreSQL + Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from evalsite.roles import ADMIN, LEAD, SCORER, set_role

PASSWORD = "correct-horse-battery-staple"
# Production hashes with PBKDF2 at Django's full cost (about 0.9 s per password here); fixtures
# need users, not strong hashes. test_auth checks the production hasher on its own.
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Sandboxed commands run the project's own Python, where the dev plugins (hypothesis,
# playwright, pytest-django, xdist) cost about 2.5 s of CPU at every pytest start; the
# repositories the tests create need none of them. Set for this process (the fixture below) and
# for the workers and servers tests start (the environment).
SANDBOX_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
os.environ.setdefault("MERGEABLE_SANDBOX_ENV", ",".join(f"{k}={v}" for k, v in SANDBOX_ENV.items()))
# Fixtures whose presence means a test touches the database.
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


# `make test` installs every tool the suite tests (bin/install-packages, bin/install-agents):
# a missing one is a failure that says what to install, never a skip that hides what went
# untested.
INSTALL_HINT = "make test installs it (bin/install-packages, make agents)"


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """A mark that fails the test at set-up, naming the missing tool, when it is not installed."""
    # Without a reason the mark says nothing (pytest_runtest_setup below): the tool is there.
    return pytest.mark.missing_tool(reason) if not available else pytest.mark.missing_tool


def skip_unless_installed(available: bool, reason: str) -> None:
    """`needs`, inside a fixture or test."""
    if not available:
        pytest.fail(f"{reason}: {INSTALL_HINT}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("missing_tool"):
        if mark.args:
            pytest.fail(f"{mark.args[0]}: {INSTALL_HINT}")


def touches_services(item: pytest.Item) -> bool:
    """Whether the test uses the database, the broker or a worker (so a PostgreSQL + Redis pass
    can tell it something the SQLite pass could not). Tests marked `single_pass` use the
    database only to hold a run while they check something no database can change: a CLI
    harness's command line and stream, the sandbox's walls, an accessibility audit. The engine
    and gateway code they go through is tested on PostgreSQL by the builtin harness's tests."""
    if item.get_closest_marker("single_pass"):
        return False
    return bool(
        DATABASE_FIXTURES & set(getattr(item, "fixturenames", ()))
        or item.get_closest_marker("django_db")
        or item.get_closest_marker("integration")
    )


def pytest_collection_modifyitems(config, items):
    """With MERGEABLE_TESTS=services (bin/test's PostgreSQL + Redis pass), keep only the tests
    that touch the database, the broker or a worker; the others ran in the SQLite pass. Without
    it, leave out the tests marked services_only."""
    if os.environ.get("MERGEABLE_TESTS") != "services":
        # Tests that only mean something on PostgreSQL + Redis (two workers sharing a database
        # and a broker) are left out of the SQLite pass, not skipped: bin/test runs them in the
        # second pass, which CI requires.
        kept = [item for item in items if not item.get_closest_marker("services_only")]
        if len(kept) < len(items):
            config.hook.pytest_deselected(
                items=[item for item in items if item.get_closest_marker("services_only")]
            )
            items[:] = kept
        return
    kept = [item for item in items if touches_services(item)]
    deselected = [item for item in items if not touches_services(item)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


@pytest.fixture(autouse=True, scope="session")
def _fast_hashing_and_sandboxed_pytest():
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=FAST_HASHERS, MERGEABLE_SANDBOX_ENV=SANDBOX_ENV):
        yield


def _user(username: str, role: str | None):
    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if role:
        set_role(user, role)
    return user


@pytest.fixture
def admin_user(db):
    return _user("ada", ADMIN)


@pytest.fixture
def lead(db):
    return _user("lena", LEAD)


@pytest.fixture
def scorer(db):
    return _user("sam", SCORER)


@pytest.fixture
def other_scorer(db):
    return _user("sol", SCORER)


@pytest.fixture
def outsider(db):
    """Logged in but holding no role."""
    return _user("otto", None)


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture(autouse=True)
def _seeded(request):
    """Transactional tests flush the database, taking the migrations' groups and default rubric
    with them; put them back so test order never matters."""
    marker = request.node.get_closest_marker("django_db")
    names = set(request.fixturenames)
    if not marker and not {"db", "transactional_db"} & names:
        return
    transactional = "transactional_db" in names or bool(marker and marker.kwargs.get("transaction"))
    request.getfixturevalue("transactional_db" if transactional else "db")
    import importlib

    from django.contrib.auth.models import Group

    from scoring.models import Criterion, Rubric

    for name in ("scorer", "lead", "admin"):
        Group.objects.get_or_create(name=name)
    if not Rubric.objects.exists():
        seed = importlib.import_module(
            "scoring.migrations.0002_default_rubric_and_role_permissions"
        )
        seed.create_default_rubric(Rubric, Criterion)


@pytest.fixture(autouse=True)
def _empty_cache():
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture(autouse=True, scope="session")
def _artifact_bucket():
    """With MERGEABLE_STORAGE_URL (bin/test's PostgreSQL + Redis pass, on a local S3 server),
    this process's bucket, made once; each test then stores under a prefix of its own."""
    from django.conf import settings

    if settings.MERGEABLE_STORAGE_URL:
        from tests.s3_server import ensure_bucket

        ensure_bucket(settings.STORAGES["default"]["OPTIONS"])


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    if settings.MERGEABLE_STORAGE_URL:
        from evalsite.storage import from_url
        from tests.s3_server import with_prefix

        # Worker processes a test starts get this URL too (tests/runs/test_distributed.py).
        settings.MERGEABLE_STORAGE_URL = with_prefix(
            settings.MERGEABLE_STORAGE_URL, f"t-{uuid.uuid4().hex[:12]}"
        )
        settings.STORAGES = {
            **settings.STORAGES,
            "default": from_url(settings.MERGEABLE_STORAGE_URL),
        }
    settings.MERGEABLE_WORKSPACE_ROOT = tmp_path / "workspaces"
    settings.MERGEABLE_CHECKOUT_ROOT = tmp_path / "checkouts"
    settings.MERGEABLE_LOCAL_REPO_ROOTS = [tmp_path / "repos", Path("/tmp")]
    settings.AXES_ENABLED = False
    # Heartbeats run in a thread with its own connection, which only transactional tests allow;
    # those that test heartbeats set a short interval themselves.
    settings.MERGEABLE_HEARTBEAT_SECONDS = 3600
    # Parallel test processes each run their runs' commands under their own range of uids, as
    # separate workers of one site would not (their run ids come from separate test databases).
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    settings.MERGEABLE_SANDBOX_UID_BASE += 50_000 * int(worker.removeprefix("gw") or 0)


def stored_files(top: str = "") -> list[str]:
    """Every file under `top` in the site's storage, the local directory or the bucket alike
    (the PostgreSQL pass keeps artifacts in S3, where MEDIA_ROOT stays empty)."""
    from django.core.files.storage import default_storage

    def walk(path: str) -> list[str]:
        try:
            directories, files = default_storage.listdir(path)
        except FileNotFoundError:
            return []
        prefix = f"{path.rstrip('/')}/" if path else ""
        found = [prefix + name for name in files]
        for directory in directories:
            found += walk(prefix + directory)
        return found

    return sorted(walk(top))


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(cwd),
    }
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def make_repo(tmp_path):
    """Create a real git repository under a local repo root: files -> (path, head sha)."""

    def make(files: dict[str, str], name: str = "origin") -> tuple[Path, str]:
        path = tmp_path / "repos" / name
        path.mkdir(parents=True)
        git(path, "init", "-q")
        for rel, text in files.items():
            target = path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", "initial")
        return path, git(path, "rev-parse", "HEAD")

    return make


@pytest.fixture
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    skip_unless_installed(
        Path(path).exists(),
        "Chromium is not installed (apt-get install -y chromium); .ci/run installs it",
    )
    return path

"""docker-compose.yml, Dockerfile and .env.example agree with the code they deploy.

No Docker engine runs here, so these tests read the files and check what they refer to: the
commands exist, every variable is one Mergeable reads, and the services wait for each other.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from evalsite.storage import AWS_VARIABLES, from_url

ROOT = Path(settings.BASE_DIR)
APP_SERVICES = ("web", "worker", "worker-2", "beat")
# As docker compose interpolates it: required, from .env.
REDIS_PASSWORD = "${REDIS_PASSWORD:?Set REDIS_PASSWORD in .env}"
# Variables the image sets for Python, pip and Django themselves, not for settings.py.
RUNTIME_VARIABLES = {
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "DJANGO_SETTINGS_MODULE",
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _services() -> dict:
    return _compose()["services"]


def _read_variables(*sources: Path) -> set[str]:
    """Environment variable names the given Python files read (os.getenv, os.environ, env*())."""
    pattern = re.compile(
        r"""(?:os\.getenv|os\.environ\.get|os\.environ\[|\benv[a-z]+)\(?\s*["']([A-Z][A-Z0-9_]*)["']"""
    )
    return {name for source in sources for name in pattern.findall(source.read_text())}


def _settings_variables() -> set[str]:
    # The object storage's variables are read through evalsite/storage.py and boto3.
    return _read_variables(ROOT / "evalsite" / "settings.py") | set(AWS_VARIABLES)


def _command_variables() -> set[str]:
    """Variables read outside settings: by management commands, gunicorn's config and bin/worker
    (`${NAME:-default}`)."""
    commands = (ROOT / "evalsite" / "management" / "commands").glob("*.py")
    worker = re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "bin" / "worker").read_text())
    return _read_variables(*commands, ROOT / "evalsite" / "gunicorn_config.py") | set(worker)


def _env_example_variables() -> set[str]:
    """Every NAME= line of .env.example, commented out or not: documented names must be real."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _interpolated_variables() -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    lines = [
        line
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (match[1].upper(), match[2].strip())
        for match in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, flags=re.MULTILINE)
    ]


def _check_command(argv: list[str]) -> None:
    """Fail unless argv starts a program of this project that exists."""
    if argv[:2] == ["python", "manage.py"]:
        assert argv[2] in get_commands(), f"manage.py has no command {argv[2]!r}"
    elif argv[0] == "gunicorn":
        module_name, _, attribute = argv[1].partition(":")
        module = __import__(module_name, fromlist=[attribute])
        assert callable(getattr(module, attribute)), f"{argv[1]} is not a WSGI callable"
    elif argv[0] == "bin/worker":
        # The image copies it to /app/bin/worker, the working directory's bin/.
        assert os.access(ROOT / argv[0], os.X_OK), "bin/worker is not an executable file"
        assert ("COPY", "bin/worker bin/worker") in _dockerfile_instructions()
    elif argv[0] == "celery":
        from celery import Celery
        from celery.app.utils import find_app

        assert argv[1] == "-A"
        assert isinstance(find_app(argv[2]), Celery), f"{argv[2]} holds no Celery app"
        assert argv[3] in ("worker", "beat", "inspect")
    else:
        raise AssertionError(f"unexpected command {argv!r}")


def test_it_defines_web_worker_beat_postgres_and_redis():
    assert {"web", "worker", "beat", "postgres", "redis"} <= set(_services())


def test_it_builds_one_image_from_the_dockerfile_for_every_app_process():
    services = _services()
    for name in (*APP_SERVICES, "migrate"):
        assert services[name]["build"] == ".", name
        assert services[name]["image"] == "mergeable", name
        assert services[name]["env_file"] == ".env", name
    assert (ROOT / "Dockerfile").is_file()


def test_it_starts_app_processes_that_exist():
    services = _services()
    for name in (*APP_SERVICES, "migrate"):
        _check_command(_argv(services[name]["command"]))
    assert _argv(services["worker"]["command"])[0] == "bin/worker"
    assert _argv(services["beat"]["command"])[3] == "beat"
    assert _argv(services["migrate"]["command"])[2] == "migrate"
    assert "--bind=0.0.0.0:8000" in _argv(services["web"]["command"])


def test_it_runs_the_app_on_postgres_and_redis_with_debug_off():
    for name in (*APP_SERVICES, "migrate"):
        environment = _services()[name]["environment"]
        assert environment["DEBUG"] == "false", name
        assert environment["DATABASE_URL"].startswith("postgres://mergeable:"), name
        assert environment["DATABASE_URL"].endswith("@postgres:5432/mergeable"), name
        assert environment["CELERY_BROKER_URL"] == f"redis://:{REDIS_PASSWORD}@redis:6379/0", name
        # Clearing the cache must not flush the task queue: another Redis database.
        assert environment["MERGEABLE_CACHE_URL"].startswith(
            f"redis://:{REDIS_PASSWORD}@redis:6379/"
        ), name
        assert environment["MERGEABLE_CACHE_URL"] != environment["CELERY_BROKER_URL"], name


def test_it_names_only_variables_that_settings_read():
    settings_variables = _settings_variables()
    for name in (*APP_SERVICES, "migrate"):
        unknown = set(_services()[name]["environment"]) - settings_variables
        assert not unknown, f"{name} sets variables settings.py never reads: {unknown}"

    documented = _env_example_variables()
    known = settings_variables | _command_variables() | _interpolated_variables()
    assert not documented - known, f".env.example documents unknown {documented - known}"


def test_it_documents_every_variable_settings_read_and_compose_needs():
    documented = _env_example_variables()
    assert not _settings_variables() - documented
    assert not _interpolated_variables() - documented
    assert {
        "SECRET_KEY",
        "MERGEABLE_ENCRYPTION_KEYS",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MINIO_ROOT_PASSWORD",
    } <= documented


def test_it_ships_no_secret_in_env_example():
    assignments = re.findall(
        r"^([A-Z][A-Z0-9_]*)=(.*)$", (ROOT / ".env.example").read_text(), flags=re.MULTILINE
    )
    values = dict(assignments)
    assert values["SECRET_KEY"] == ""
    assert values["MERGEABLE_ENCRYPTION_KEYS"] == ""
    assert values["POSTGRES_PASSWORD"] == ""
    assert values["REDIS_PASSWORD"] == ""
    assert values["MINIO_ROOT_PASSWORD"] == ""


def test_it_keeps_redis_private_and_refuses_to_evict_tasks():
    redis = _services()["redis"]
    assert redis["image"].startswith("redis:7")
    command = _argv(redis["command"])
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "ports" not in redis
    assert "ports" not in _services()["postgres"]


def test_it_puts_a_password_on_redis_that_every_redis_url_uses():
    redis = _services()["redis"]
    command = _argv(redis["command"])
    assert command[command.index("--requirepass") + 1] == REDIS_PASSWORD
    # The healthcheck's redis-cli authenticates from the environment, not from its argv.
    assert redis["environment"]["REDISCLI_AUTH"] == REDIS_PASSWORD

    urls = re.findall(r"\brediss?://.*", (ROOT / "docker-compose.yml").read_text())
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(f"redis://:{REDIS_PASSWORD}@"), url
    for name in (*APP_SERVICES, "migrate"):
        environment = _services()[name]["environment"]
        for variable in ("CELERY_BROKER_URL", "REDIS_URL", "MERGEABLE_CACHE_URL"):
            if variable in environment:
                assert f":{REDIS_PASSWORD}@" in environment[variable], (name, variable)


def test_it_health_checks_every_long_running_service():
    services = _services()
    for name in ("web", "worker", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "http://127.0.0.1:8000/login/" in services["web"]["healthcheck"]["test"][-1]

    kind, shell = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    argv = shlex.split(shell)
    _check_command(argv)
    assert argv[3:5] == ["inspect", "ping"]


def test_it_starts_app_processes_only_once_their_dependencies_are_healthy():
    services = _services()
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on["postgres"]["condition"] == "service_healthy", name
        assert depends_on["redis"]["condition"] == "service_healthy", name
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def _interpolated(value: str) -> str:
    """A ${NAME:-default} value as compose fills it in with NAME unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_it_keeps_every_artifact_in_the_minio_bucket_it_creates_at_start():
    services = _services()
    bucket = None
    for name in (*APP_SERVICES, "migrate"):
        environment = services[name]["environment"]
        assert "MEDIA_ROOT" not in environment, name
        options = from_url(_interpolated(environment["MERGEABLE_STORAGE_URL"]))["OPTIONS"]
        assert options["endpoint_url"] == "http://minio:9000", name
        assert bucket in (None, options["bucket_name"]), name
        bucket = options["bucket_name"]
        assert _interpolated(environment["AWS_ACCESS_KEY_ID"]) == _interpolated(
            services["minio"]["environment"]["MINIO_ROOT_USER"]
        )
        assert (
            environment["AWS_SECRET_ACCESS_KEY"]
            == "${MINIO_ROOT_PASSWORD:?Set MINIO_ROOT_PASSWORD in .env}"
        )
    minio = services["minio"]
    assert minio["image"].startswith("minio/minio") and "ports" not in minio
    assert minio["volumes"][0].startswith("minio-data:")
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    creator = services["create-bucket"]
    assert creator["depends_on"]["minio"]["condition"] == "service_healthy"
    assert f"mc mb --ignore-existing store/{bucket}" in creator["command"][-1]
    for name in APP_SERVICES:
        condition = services[name]["depends_on"]["create-bucket"]["condition"]
        assert condition == "service_completed_successfully", name


def test_it_runs_two_workers_that_share_no_volume_but_the_local_repositories():
    services = _services()
    volumes = set(_compose()["volumes"])
    assert _argv(services["worker-2"]["command"]) == _argv(services["worker"]["command"])
    workspaces = {}
    for name in ("web", "worker", "worker-2"):
        environment = services[name]["environment"]
        mounted = dict(reversed(v.split(":")[:2]) for v in services[name]["volumes"])
        assert set(mounted.values()) <= volumes
        assert set(mounted) <= {"/data/repos", environment["MERGEABLE_WORKSPACE_ROOT"]}, name
        workspaces[name] = mounted.get(environment["MERGEABLE_WORKSPACE_ROOT"])
    assert workspaces["web"] is None  # the web's mirrors are a cache in its container
    assert workspaces["worker"] and workspaces["worker-2"]
    assert workspaces["worker"] != workspaces["worker-2"]
    assert services["postgres"]["volumes"][0].startswith("postgres-data:")


def test_it_builds_a_non_root_image_with_git_and_bubblewrap():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.12-slim")
    runs = " ".join(arguments for kind, arguments in instructions if kind == "RUN")
    assert re.search(r"apt-get install .*\bgit\b", runs)
    assert re.search(r"apt-get install .*\bbubblewrap\b", runs)
    assert "pip install ." in runs
    users = [arguments for kind, arguments in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "8000") in instructions

    for kind, arguments in instructions:
        if kind == "COPY":
            *sources, _destination = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"

    cmd = [arguments for kind, arguments in instructions if kind == "CMD"][-1]
    argv = yaml.safe_load(cmd)  # a JSON array is valid YAML
    _check_command(argv)
    assert "0.0.0.0:8000" in argv


def test_it_sets_only_variables_settings_read_in_the_image():
    variables = set()
    for kind, arguments in _dockerfile_instructions():
        if kind == "ENV":
            variables |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", arguments))
    unknown = variables - _settings_variables() - RUNTIME_VARIABLES
    assert not unknown, f"the Dockerfile sets variables settings.py never reads: {unknown}"
    assert "DEBUG" in variables


def test_it_collects_static_files_at_build_time_with_throwaway_keys(tmp_path):
    """Run the Dockerfile's collectstatic step as written, into a temporary STATIC_ROOT."""
    step = next(
        arguments
        for kind, arguments in _dockerfile_instructions()
        if kind == "RUN" and "collectstatic" in arguments
    )
    words = shlex.split(step.split("&&")[0])
    build_env = dict(word.split("=", 1) for word in words if re.match(r"[A-Z_]+=", word))
    argv = [word for word in words if not re.match(r"[A-Z_]+=", word)]
    assert build_env["DEBUG"] == "false"
    assert argv[:3] == ["python", "manage.py", "collectstatic"]

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MERGEABLE_", "DATABASE_", "CELERY_", "REDIS_"))
        and key not in ("DEBUG", "SECRET_KEY", "STATIC_ROOT")
    }
    env.update(build_env, STATIC_ROOT=str(tmp_path / "static"), MERGEABLE_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    # The manifest whitenoise serves from when DEBUG is off.
    assert (tmp_path / "static" / "staticfiles.json").is_file()
    assert list((tmp_path / "static" / "css").glob("app.*.css.gz"))


@pytest.mark.django_db(transaction=True)
def test_it_reports_a_healthy_web_server_behind_an_https_proxy(live_server, settings):
    """The web healthcheck, run as written against a server that insists on HTTPS."""
    settings.ALLOWED_HOSTS = ["mergeable.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    script = _services()["web"]["healthcheck"]["test"][-1]
    script = script.replace("http://127.0.0.1:8000", live_server.url)
    env = {**os.environ, "ALLOWED_HOSTS": ".mergeable.example.com,other.example.com"}

    healthy = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert healthy.returncode == 0, healthy.stderr.decode()

    env["ALLOWED_HOSTS"] = "other.example.com"  # Django answers 400: the check must fail
    unhealthy = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert unhealthy.returncode != 0


def _gunicorn_config(argv: list[str], **env: str) -> dict[str, str]:
    """What gunicorn makes of this command line and environment (`--print-config`)."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "WEB_THREADS")
    }
    gunicorn = Path(sys.executable).parent / "gunicorn"
    result = subprocess.run(
        [str(gunicorn), "--print-config", *argv[1:]],
        cwd=ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        return {"error": result.stdout + result.stderr}
    return dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition("=") for line in result.stdout.splitlines())
    )


def test_it_serves_the_web_with_threaded_workers_sized_from_the_cpus():
    cmd = [arguments for kind, arguments in _dockerfile_instructions() if kind == "CMD"][-1]
    cpus = str(max(2, len(os.sched_getaffinity(0))))
    for argv in (_argv(_services()["web"]["command"]), yaml.safe_load(cmd)):
        config = _gunicorn_config(argv)
        # gunicorn prints a class by its name: gthread's, as evalsite.gunicorn_config closes
        # connections (ThreadWorker), not the bundled "gthread" named by a string.
        assert config["worker_class"] == "<ThreadWorker()>", argv
        assert (config["workers"], config["threads"]) == (cpus, "4"), argv
        assert config["bind"] == "['0.0.0.0:8000']", argv
        assert config["preload_app"] == "True", argv  # workers ready the moment they fork

        tuned = _gunicorn_config(argv, WEB_CONCURRENCY="5", WEB_THREADS="2")
        assert (tuned["workers"], tuned["threads"]) == ("5", "2")
        assert "WEB_THREADS must be a positive integer" in _gunicorn_config(
            argv, WEB_THREADS="zero"
        ).get("error", "")

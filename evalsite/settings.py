"""Mergeable's one settings file, read from the environment.

With nothing set, Mergeable runs on a laptop: SQLite in WAL mode and an embedded task queue
(kombu's filesystem transport) under ``var/``. Set ``DATABASE_URL`` and ``CELERY_BROKER_URL``
(or ``REDIS_URL``) to run on PostgreSQL and Redis with any number of workers.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from evalsite import storage as artifact_storage

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str = "False") -> bool:
    value = os.getenv(name, default).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")


def envint(name: str, default: int) -> int:
    value = os.getenv(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def envvars(name: str, reserved: tuple[str, ...] = ()) -> dict[str, str]:
    """NAME=value,NAME=value as a dict; a malformed or reserved name is refused, naming it."""
    variables = {}
    for item in envlist(name):
        key, equals, value = item.partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ImproperlyConfigured(f"{name} must list NAME=value pairs, got {item!r}")
        if key in reserved:
            raise ImproperlyConfigured(f"{name} may not set {key}")
        variables[key] = value
    return variables


def envpath(name: str, default: Path) -> Path:
    value = os.getenv(name)
    if value is None or value.strip() == "":
        return default
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ImproperlyConfigured(f"{name} must be an absolute path, got {value!r}")
    return path


# Off unless asked for: manage.py and the Makefile turn it on for development.
DEBUG = envbool("DEBUG", "False")
VAR_DIR = envpath("MERGEABLE_VAR_DIR", BASE_DIR / "var")

SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY to a long random string "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))') "
            "or set DEBUG=true for development."
        )
    SECRET_KEY = "development-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost" if not DEBUG else "*")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_ROOT = os.getenv("SITE_ROOT", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "axes",
    "django_celery_beat",
    "evalsite",
    "runs",
    "scoring",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Before any middleware's view hook (CSRF reads a form's body): see evalsite/uploads.py.
    "evalsite.uploads.UploadLimitMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "axes.middleware.AxesMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Loads a signed-in user with their role, in one query (evalsite/roles.py).
    "evalsite.roles.RoleBackend",
    # For sessions signed in before RoleBackend existed; it authenticates no one now.
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "evalsite.urls"
WSGI_APPLICATION = "evalsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "evalsite.roles.role_context",
            ],
        },
    }
]

# Databases: SQLite in WAL mode by default; DATABASE_URL for PostgreSQL.
PREPARED_STATEMENTS = envbool("DATABASE_PREPARED_STATEMENTS", "True")
if os.getenv("DATABASE_URL"):
    try:
        DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL is malformed: {exc}") from None
    # Parameters sent apart from the SQL, and each statement a connection sends a second time
    # prepared: PostgreSQL then plans the forty-odd statements of a review cycle once per
    # connection rather than at every request (about 40% of its CPU per cycle in
    # bench_team_load). A pooler in transaction mode (PgBouncer before 1.21) cannot keep a
    # connection's prepared statements: DATABASE_PREPARED_STATEMENTS=false there.
    if PREPARED_STATEMENTS:
        DATABASES["default"].setdefault("OPTIONS", {}).update(
            server_side_binding=True, prepare_threshold=2
        )
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": envpath("MERGEABLE_SQLITE_PATH", VAR_DIR / "mergeable.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not :memory:, so that worker subprocesses in tests see the same data;
            # one per test process, so concurrent test runs never share it.
            "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The first hashes new passwords. Django verifies a hash with the last hasher listed for its
# algorithm: Mergeable's is the only "argon2" one, so every Argon2 hash, whatever its parameters,
# is checked on the hashing thread (evalsite/hashers.py).
PASSWORD_HASHERS = [
    "evalsite.hashers.MergeableArgon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = envpath("STATIC_ROOT", BASE_DIR / "staticfiles")
MEDIA_ROOT = envpath("MEDIA_ROOT", VAR_DIR / "media")
# Artifacts (transcripts, diffs, logs, test output, rendered diffs, queued imports): MEDIA_ROOT on
# one machine; an S3-compatible bucket, which every web and worker process must share, once
# workers run on other machines (evalsite/storage.py).
MERGEABLE_STORAGE_URL = os.getenv("MERGEABLE_STORAGE_URL", "").strip()
_default_storage = (
    artifact_storage.from_url(MERGEABLE_STORAGE_URL)
    if MERGEABLE_STORAGE_URL
    else artifact_storage.from_aws_environment(os.environ)
) or {"BACKEND": "django.core.files.storage.FileSystemStorage"}
# Downloads of raw artifacts from a bucket: streamed through the web process (the default, as
# browsers often cannot reach the bucket's endpoint), or a redirect to a link signed for a minute.
MERGEABLE_STORAGE_SIGNED_DOWNLOADS = envbool("MERGEABLE_STORAGE_SIGNED_DOWNLOADS", "False")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Content-Security-Policy: no inline script or style anywhere; scripts carry a nonce.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.NONE],
    "object-src": [CSP.NONE],
}

# Production hardening: on whenever DEBUG is off.
SESSION_COOKIE_SECURE = not DEBUG and envbool("SECURE_COOKIES", "True")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_ENGINE = "evalsite.sessions"
SECURE_HSTS_SECONDS = 0 if DEBUG else envint("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_SSL_REDIRECT = not DEBUG and envbool("SECURE_SSL_REDIRECT", "True")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# django-axes: throttle password guessing.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = 0.25  # hours
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_ENABLED = envbool("AXES_ENABLED", "True")
AXES_VERBOSE = False

# Celery: Redis when configured, else kombu's filesystem transport under var/ (the embedded queue).
CELERY_BROKER_URL = os.getenv("CELERY_BROKER_URL") or os.getenv("REDIS_URL") or ""
EMBEDDED_QUEUE = not CELERY_BROKER_URL
QUEUE_DIR = VAR_DIR / "queue"
RUN_HARD_TIME_LIMIT = envint("MERGEABLE_RUN_TIME_LIMIT", 3 * 3600)
if EMBEDDED_QUEUE:
    for _folder in ("messages", "control"):
        (QUEUE_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    # kombu's filesystem transport, but a consumer never reads a message half-written.
    CELERY_BROKER_TRANSPORT = "evalsite.embedded_queue:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(QUEUE_DIR / "messages"),
        "data_folder_out": str(QUEUE_DIR / "messages"),
        "control_folder": str(QUEUE_DIR / "control"),
        "store_processed": False,
        # kombu polls the folder once a second by default: a run slot that frees up would sit
        # idle for up to that long. Listing a small folder ten times a second costs next to nothing.
        "polling_interval": 0.1,
    }
else:
    # The visibility timeout must exceed the longest task, or Redis redelivers it mid-run.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": RUN_HARD_TIME_LIMIT + 3600}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_TASK_SOFT_TIME_LIMIT = RUN_HARD_TIME_LIMIT - 60
CELERY_TASK_TIME_LIMIT = RUN_HARD_TIME_LIMIT
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Two queues. Runs, imports and checks wait in "celery" for a worker's run slots. Bookkeeping
# (the reaper, anything beat schedules) has a queue of its own, which every worker host consumes
# in a separate small process (bin/worker): a worker reserves tasks for its slots across all the
# queues it consumes, so a pool busy with hour-long runs would leave a reaper tick waiting behind
# them. Beat's schedule is below, with the heartbeat settings it depends on.
BOOKKEEPING_QUEUE = "bookkeeping"
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_ROUTES = {
    "runs.tasks.reap_stale_runs": {"queue": BOOKKEEPING_QUEUE},
    "scoring.tasks.judge_new_runs": {"queue": BOOKKEEPING_QUEUE},
}
# Redis serves priority 0 first (kombu's priority_steps 0, 3, 6, 9): runs are sent at 6, and a
# run the reaper requeues at 0 (runs.enqueue), so it takes the next free slot, not the backlog's
# end. The embedded queue ignores priorities.
CELERY_TASK_DEFAULT_PRIORITY = 6
REQUEUED_RUN_PRIORITY = 0
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Beat reads its schedule from the database (django-celery-beat), so a lead's schedule for a
# campaign (api.series) takes effect without restarting beat. CELERY_BEAT_SCHEDULE below is
# copied into it each time beat starts.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# A cache shared by every web process (leaderboards, rendered diffs). Give it its own Redis
# database, never the broker's: clearing the cache must not drop queued runs. Values are signed
# pickles (evalsite/cache.py): whoever can write to Redis still cannot make us unpickle their bytes.
if os.getenv("MERGEABLE_CACHE_URL"):
    CACHES = {
        "default": {
            "BACKEND": "evalsite.cache.SignedRedisCache",
            "LOCATION": os.environ["MERGEABLE_CACHE_URL"],
            "KEY_PREFIX": "mergeable",
        }
    }

# Mergeable's own settings.
MERGEABLE_WORKSPACE_ROOT = envpath("MERGEABLE_WORKSPACE_ROOT", VAR_DIR / "workspaces")
# Per-run checkouts, made and removed once per run. Writing a large work tree is dominated by file
# creation; on a tmpfs (e.g. /dev/shm) it costs a fraction of what a disk does. The mirrors stay
# under MERGEABLE_WORKSPACE_ROOT, so nothing that must survive a restart lives here.
MERGEABLE_CHECKOUT_ROOT = envpath("MERGEABLE_CHECKOUT_ROOT", MERGEABLE_WORKSPACE_ROOT / "runs")
MERGEABLE_LOCAL_REPO_ROOTS = [
    Path(p) for p in envlist("MERGEABLE_LOCAL_REPO_ROOTS", str(VAR_DIR / "repos"))
]
for _root in MERGEABLE_LOCAL_REPO_ROOTS:
    if not _root.is_absolute():
        raise ImproperlyConfigured(
            f"MERGEABLE_LOCAL_REPO_ROOTS must list absolute paths, got {str(_root)!r}"
        )
# http(s) repositories on loopback or link-local addresses (the worker's own machine, a cloud's
# metadata service) are refused unless this is on: see runs/repository_urls.py.
MERGEABLE_ALLOW_PRIVATE_REPOSITORIES = envbool("MERGEABLE_ALLOW_PRIVATE_REPOSITORIES", "False")

MERGEABLE_SANDBOX = os.getenv(
    "MERGEABLE_SANDBOX", "bubblewrap" if shutil.which("bwrap") else "none"
)
if MERGEABLE_SANDBOX not in ("none", "bubblewrap"):
    raise ImproperlyConfigured(
        f"MERGEABLE_SANDBOX must be 'none' or 'bubblewrap', got {MERGEABLE_SANDBOX!r}"
    )
# Variables every sandboxed command gets besides PATH, HOME and LANG (setup, tests, agents), as
# NAME=value,NAME=value: a package index, PYTEST_DISABLE_PLUGIN_AUTOLOAD=1. Agents read them: no secrets.
MERGEABLE_SANDBOX_ENV = envvars("MERGEABLE_SANDBOX_ENV", reserved=("PATH", "HOME"))
# How much lower every sandboxed command's CPU priority is than the worker's (nice, 0-19): runs
# yield the CPU to the web pages and the worker's bookkeeping sharing the machine.
MERGEABLE_SANDBOX_NICE = envint("MERGEABLE_SANDBOX_NICE", 10)
if not 0 <= MERGEABLE_SANDBOX_NICE <= 19:
    raise ImproperlyConfigured(
        f"MERGEABLE_SANDBOX_NICE must be between 0 and 19, got {MERGEABLE_SANDBOX_NICE}"
    )
# A root worker runs each run's commands as its own uid from this range, never as root.
MERGEABLE_SANDBOX_UID_BASE = envint("MERGEABLE_SANDBOX_UID_BASE", 200_000)
# Runs are refused when the process or memory cap cannot be enforced on this host, unless this
# is true (the default in development, where a laptop worker has no cgroups of its own).
MERGEABLE_ALLOW_UNENFORCED_CAPS = envbool("MERGEABLE_ALLOW_UNENFORCED_CAPS", str(DEBUG))

# Fernet keys, newest first. In development a fixed key keeps `make run` working out of the box.
MERGEABLE_ENCRYPTION_KEYS = envlist("MERGEABLE_ENCRYPTION_KEYS")
if not MERGEABLE_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "MERGEABLE_ENCRYPTION_KEYS is not set. Set it to one or more comma-separated Fernet "
            "keys, newest first (python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')."
        )
    MERGEABLE_ENCRYPTION_KEYS = ["ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE="]
try:
    for _key in MERGEABLE_ENCRYPTION_KEYS:
        Fernet(_key)
except ValueError:
    raise ImproperlyConfigured(
        "MERGEABLE_ENCRYPTION_KEYS must be comma-separated url-safe base64 Fernet keys"
    ) from None

# CLI agent harnesses live in their own virtual environments (`make agents` installs them).
MERGEABLE_AGENTS_DIR = envpath("MERGEABLE_AGENTS_DIR", BASE_DIR / ".agents")
MERGEABLE_AIDER_BIN = envpath(
    "MERGEABLE_AIDER_BIN", MERGEABLE_AGENTS_DIR / "aider" / "bin" / "aider"
)
MERGEABLE_MINI_SWE_AGENT_BIN = envpath(
    "MERGEABLE_MINI_SWE_AGENT_BIN", MERGEABLE_AGENTS_DIR / "mini-swe-agent" / "bin" / "mini"
)
# The Node.js CLIs are npm packages under .agents/<name>/ (each ships its own native binary).
MERGEABLE_CLAUDE_CODE_BIN = envpath(
    "MERGEABLE_CLAUDE_CODE_BIN",
    MERGEABLE_AGENTS_DIR / "claude-code" / "node_modules" / ".bin" / "claude",
)
MERGEABLE_CODEX_BIN = envpath(
    "MERGEABLE_CODEX_BIN", MERGEABLE_AGENTS_DIR / "codex" / "node_modules" / ".bin" / "codex"
)
MERGEABLE_OPENCODE_BIN = envpath(
    "MERGEABLE_OPENCODE_BIN",
    MERGEABLE_AGENTS_DIR / "opencode" / "node_modules" / ".bin" / "opencode",
)

MERGEABLE_MAX_ATTEMPTS = envint("MERGEABLE_MAX_ATTEMPTS", 3)
# A lost run is running again within a minute: a worker killed just after a heartbeat is stale
# STALE_AFTER seconds later, and the reaper, every REAP seconds on the bookkeeping queue, requeues
# it ahead of the backlog: at worst 30 + 10 s. Stale is three missed heartbeats, so a database
# hiccup does not cost a live run its attempt. Workers heartbeat themselves as often too (the
# dashboard's "Workers" panel).
MERGEABLE_HEARTBEAT_SECONDS = envint("MERGEABLE_HEARTBEAT_SECONDS", 10)
MERGEABLE_STALE_AFTER_SECONDS = envint("MERGEABLE_STALE_AFTER_SECONDS", 30)
MERGEABLE_REAP_SECONDS = envint("MERGEABLE_REAP_SECONDS", 10)
if min(MERGEABLE_HEARTBEAT_SECONDS, MERGEABLE_REAP_SECONDS) < 1:
    raise ImproperlyConfigured(
        "MERGEABLE_HEARTBEAT_SECONDS and MERGEABLE_REAP_SECONDS must be positive integers, got "
        f"{MERGEABLE_HEARTBEAT_SECONDS} and {MERGEABLE_REAP_SECONDS}"
    )
if MERGEABLE_STALE_AFTER_SECONDS < 2 * MERGEABLE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "MERGEABLE_STALE_AFTER_SECONDS must be at least twice MERGEABLE_HEARTBEAT_SECONDS "
        f"({MERGEABLE_STALE_AFTER_SECONDS} < 2 x {MERGEABLE_HEARTBEAT_SECONDS}): one late "
        "heartbeat would hand a live run to a second worker"
    )
MERGEABLE_JUDGE_SWEEP_SECONDS = envint("MERGEABLE_JUDGE_SWEEP_SECONDS", 60)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {
        "task": "runs.tasks.reap_stale_runs",
        "schedule": float(MERGEABLE_REAP_SECONDS),
        # A tick nobody took in time is worth nothing: the next one does the same work. Without
        # this, a night without workers would leave thousands of ticks to run one after another.
        # (expire_seconds: the database scheduler's name for it; it drops "expires".)
        "options": {"expire_seconds": MERGEABLE_REAP_SECONDS},
    },
    # Runs that finished since an LLM judge was appointed get judged without a lead's click.
    "judge-new-runs": {
        "task": "scoring.tasks.judge_new_runs",
        "schedule": float(MERGEABLE_JUDGE_SWEEP_SECONDS),
        "options": {"expire_seconds": MERGEABLE_JUDGE_SWEEP_SECONDS},
    },
}
# Requests one API token may make per minute (api.throttle); past it, 429 with Retry-After.
MERGEABLE_API_RATE_PER_MINUTE = envint("MERGEABLE_API_RATE_PER_MINUTE", 120)
MERGEABLE_ANSWER_TIMEOUT_SECONDS = envint("MERGEABLE_ANSWER_TIMEOUT_SECONDS", 900)
MERGEABLE_ARTIFACT_TEXT_CAP = envint("MERGEABLE_ARTIFACT_TEXT_CAP", 512 * 1024)

# Uploads (run imports, prompt-set and contestants files): all the files of one request together.
# A larger request is refused before its body is read, so nothing of it is stored, not even in a
# temporary file. Each kind of file also has its own, smaller limit.
MERGEABLE_MAX_UPLOAD_MB = envint("MERGEABLE_MAX_UPLOAD_MB", 100)
if MERGEABLE_MAX_UPLOAD_MB < 1:
    raise ImproperlyConfigured(
        f"MERGEABLE_MAX_UPLOAD_MB must be a positive integer, got {MERGEABLE_MAX_UPLOAD_MB}"
    )
# Form fields other than files: a prompt's instructions and reference patch can be long.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# An uploaded file larger than this waits in a temporary file rather than in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# A run import sends a patch and a few transcript files; no form takes more.
DATA_UPLOAD_MAX_NUMBER_FILES = 10

# Site caps on what one agent run may use (FORMATS.md). A contestant's limits may lower them,
# never raise them; CPU seconds count everything the run starts, together.
MERGEABLE_RUN_MAX_PROCESSES = envint("MERGEABLE_RUN_MAX_PROCESSES", 256)
MERGEABLE_RUN_MAX_MEMORY_MB = envint("MERGEABLE_RUN_MAX_MEMORY_MB", 4096)
MERGEABLE_RUN_MAX_DISK_MB = envint("MERGEABLE_RUN_MAX_DISK_MB", 10240)
MERGEABLE_RUN_MAX_CPU_SECONDS = envint("MERGEABLE_RUN_MAX_CPU_SECONDS", 3600)
for _name in (
    "MERGEABLE_RUN_MAX_PROCESSES",
    "MERGEABLE_RUN_MAX_MEMORY_MB",
    "MERGEABLE_RUN_MAX_DISK_MB",
    "MERGEABLE_RUN_MAX_CPU_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be a positive integer, got {globals()[_name]}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # An ordinary 403 or 404 is one line, not a traceback that buries the real errors.
    "filters": {"expected_refusals": {"()": "evalsite.log_filters.NoTracebackForRefusals"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["expected_refusals"],
        }
    },
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        # The development server's line per request; `make run` turns it off (the live pages
        # poll every 2 s), leaving failed requests, which it logs as warnings and errors.
        "django.server": {
            "level": "INFO" if envbool("MERGEABLE_LOG_REQUESTS", "True") else "WARNING"
        },
        "axes": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "kombu.connection": {"level": "ERROR"},
        "httpcore": {"level": "WARNING"},
    },
}

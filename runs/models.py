"""What gets run: repositories, prompt sets and prompts, models, contestants, campaigns, runs."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.utils import validate_file_name
from django.core.validators import MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from evalsite.fields import EncryptedTextField, UnreadableSecret
from runs import agents, forges, providers, redaction, workspace


def _validate_url(value: str) -> None:
    """The one rule for a repository URL, for the form, the prompt-set files and the checks."""
    try:
        workspace.validate_repository_url(value, settings.MERGEABLE_LOCAL_REPO_ROOTS)
    except ValueError as exc:
        problem = workspace.redact_url(str(exc))
        raise ValidationError(f"This repository URL is not allowed: {problem}") from None


class RepositoryUnreachable(Exception):
    """No mirror of the repository can be made; the message says why (credentials hidden)."""


class CommitNotFound(Exception):
    """The repository is reachable but has no such commit."""


def _validate_forge_url(value: str) -> None:
    """A forge project's web address: https, or http only to this machine (a local forge)."""
    if problem := forges.url_problem(value):
        raise ValidationError(f"This forge URL is not allowed: {problem}")


class Repository(models.Model):
    GITHUB = "github"
    GITLAB = "gitlab"
    FORGES = [(GITHUB, "GitHub"), (GITLAB, "GitLab")]

    name = models.SlugField(max_length=100, unique=True)
    url = models.CharField(max_length=1000, validators=[_validate_url])
    default_branch = models.CharField(max_length=200, blank=True, default="")
    archived = models.BooleanField(default=False)
    last_check = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Drafting prompts from history (runs.drafts): the test command of a draft, with `{tests}`
    # standing for its hidden test paths, e.g. `pytest -q {tests}`.
    test_command_template = models.TextField(blank=True, default="")
    # Optional: where issue and merge-request texts referenced by commit messages are read.
    forge = models.CharField(max_length=10, choices=FORGES, blank=True, default="")
    forge_url = models.CharField(
        max_length=500, blank=True, default="", validators=[_validate_forge_url]
    )
    forge_token = EncryptedTextField(blank=True, default="")

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        # The field's validator reports a URL that is not allowed; an allowed one is stored in
        # its normal form, so that every spelling of a local repository shares one mirror.
        try:
            self.url = workspace.validate_repository_url(
                self.url, settings.MERGEABLE_LOCAL_REPO_ROOTS
            )
        except ValueError:
            pass

    @property
    def display_url(self) -> str:
        """The URL with any embedded credentials removed: safe to render."""
        return workspace.redact_url(self.url)

    def restored_url(self, url: str) -> str:
        """`url`, or the stored URL when `url` is the stored one as shown (credentials hidden).

        Pages and exported files show the URL redacted; sent back unchanged, it means "keep the
        stored URL and its credentials".
        """
        return self.url if self.url and url == self.display_url else url

    def resolve_commit(self, commit: str) -> str:
        """The full sha of `commit` (a sha, an abbreviated one or a branch), fetched into the
        repository's mirror. Raises RepositoryUnreachable or CommitNotFound."""
        root = Path(settings.MERGEABLE_WORKSPACE_ROOT)
        failures = (workspace.WorkspaceError, OSError, subprocess.SubprocessError, ValueError)
        try:
            mirror = workspace.ensure_mirror(self.url, root, commit)
        except failures as exc:
            # A failed fetch of one commit still leaves a usable mirror that can say "not found";
            # with no mirror at all, the repository itself is at fault.
            mirror = workspace.mirror_path(root, self.url)
            if not (mirror / "HEAD").exists():
                raise RepositoryUnreachable(workspace.redact_url(str(exc))[:500]) from None
        try:
            return workspace.resolve_commit(mirror, commit)
        except failures:
            raise CommitNotFound(commit) from None

    def missing_paths(self, commit: str, paths: list[str]) -> list[str]:
        """Which of `paths` the (resolved) `commit` does not have. Paths that cannot be hidden
        test paths at all are left to Prompt.clean(), which names their problem. Raises
        RepositoryUnreachable when the mirror cannot be read."""
        checkable = [path for path in paths if not hidden_path_problem(path)]
        if not checkable:
            return []
        try:
            mirror = workspace.ensure_mirror(
                self.url, Path(settings.MERGEABLE_WORKSPACE_ROOT), commit
            )
            return workspace.missing_paths(mirror, commit, checkable)
        except workspace.WorkspaceError as exc:
            raise RepositoryUnreachable(workspace.redact_url(str(exc))) from None


class PromptSetQuerySet(models.QuerySet):
    def active(self):
        return self.filter(archived=False)


class PromptSet(models.Model):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PromptSetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("runs:prompt_set", args=[self.pk])

    def active_prompts(self):
        return self.prompts.filter(archived=False).select_related("repository")


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    key = models.SlugField(max_length=200)
    title = models.CharField(max_length=300)
    instructions = models.TextField()
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="prompts")
    commit = models.CharField(max_length=64)
    tags = models.JSONField(default=list, blank=True)
    acceptance_criteria = models.JSONField(default=list, blank=True)
    expected_files = models.JSONField(default=list, blank=True)
    setup_command = models.TextField(blank=True, default="")
    # Package installs need the network; the agent and the tests never get it.
    setup_network = models.BooleanField(default=False)
    test_command = models.TextField(blank=True, default="")
    # Globs (git's glob pathspec: `*` stays within a directory, `**` crosses them): every path
    # they match is put back as it is at `commit` before the test command runs.
    test_files = models.JSONField(default=list, blank=True)
    # Tests written into the workspace only after the agent has ended, from another commit of the
    # same repository: the agent never sees them.
    hidden_tests_commit = models.CharField(max_length=64, blank=True, default="")
    hidden_tests_paths = models.JSONField(default=list, blank=True)
    clarification_expected = models.BooleanField(default=False)
    clarification_answer = models.TextField(blank=True, default="")
    reference_patch = models.TextField(blank=True, default="")
    time_limit = models.PositiveIntegerField(null=True, blank=True)
    position = models.PositiveIntegerField(default=0)
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["prompt_set", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "key"], name="prompt_key_unique_in_set")
        ]

    def __str__(self) -> str:
        return f"{self.prompt_set.name}/{self.key}"

    @property
    def hidden_tests(self) -> dict | None:
        """The file format's `hidden_tests`: {"commit", "paths"}, or None."""
        if not self.hidden_tests_paths:
            return None
        return {"commit": self.hidden_tests_commit, "paths": list(self.hidden_tests_paths)}

    def clean(self) -> None:
        super().clean()
        errors = {}
        if self.setup_network and not self.setup_command.strip():
            errors["setup_network"] = (
                "Needs a setup command: only the setup command runs with network access."
            )
        for glob in self.test_files:
            if problem := grading_glob_problem(glob):
                errors["test_files"] = f"{glob[:100]!r} {problem}."
                break
        for path in self.hidden_tests_paths:
            if problem := hidden_path_problem(path):
                errors["hidden_tests_paths"] = f"{path[:100]!r} {problem}."
                break
        if self.hidden_tests_paths and not self.hidden_tests_commit:
            errors["hidden_tests_commit"] = "Needed with hidden test paths: the commit they are in."
        elif self.hidden_tests_commit and not self.hidden_tests_paths:
            errors["hidden_tests_paths"] = "Needed with a hidden tests commit: the paths to add."
        if errors:
            raise ValidationError(errors)

    def snapshot(self) -> dict:
        """What a run keeps of its prompt, so later edits never change what the run shows."""
        return {
            "key": self.key,
            "title": self.title,
            "instructions": self.instructions,
            "repository": self.repository.name,
            "repository_url": self.repository.url,
            "commit": self.commit,
            "tags": list(self.tags),
            "acceptance_criteria": list(self.acceptance_criteria),
            "expected_files": list(self.expected_files),
            "setup": self.setup_command,
            "setup_network": self.setup_network,
            "test": self.test_command,
            "test_files": list(self.test_files),
            "hidden_tests": self.hidden_tests,
            "clarification_expected": self.clarification_expected,
            "clarification_answer": self.clarification_answer,
            "reference_patch": self.reference_patch,
            "time_limit": self.time_limit,
        }


class PromptDraftQuerySet(models.QuerySet):
    def open(self):
        """Drafts not yet accepted into a prompt set."""
        return self.filter(prompt__isnull=True)


class PromptDraft(models.Model):
    """A prompt drafted from a merged change of a repository's history (runs.drafts).

    `commit` is the change (a merge or a single commit); the prompt starts at `parent` and is
    graded by the change's test files taken from `commit`. A draft is proven in the sandbox
    before it is offered: the tests fail at the parent and pass with the reference patch. One
    that is not proven keeps the reason in `proof_status` and `proof`, and is never dropped.
    """

    PENDING = "pending"
    PROVING = "proving"
    PROVEN = "proven"
    FLAKY = "flaky"
    PASSES_ALREADY = "passes_already"
    NOT_FIXED = "not_fixed"
    UNPROVABLE = "unprovable"
    PROOF_STATUSES = [
        (PENDING, "waiting to be proven"),
        (PROVING, "being proven"),
        (PROVEN, "proven"),
        (FLAKY, "flaky"),
        (PASSES_ALREADY, "passes already"),
        (NOT_FIXED, "the reference does not fix it"),
        (UNPROVABLE, "could not be proven"),
    ]
    ACTIVE_PROOF_STATUSES = (PENDING, PROVING)

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="drafts")
    commit = models.CharField(max_length=64)
    parent = models.CharField(max_length=64)
    subject = models.CharField(max_length=300)
    author_date = models.DateTimeField(null=True, blank=True)
    title = models.CharField(max_length=300)
    instructions = models.TextField(blank=True, default="")
    # Where the instructions came from: "commit message", or the forge reference ("#12", "!4").
    instructions_source = models.CharField(max_length=200, blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    expected_files = models.JSONField(default=list, blank=True)
    reference_patch = models.TextField(blank=True, default="")
    hidden_tests_paths = models.JSONField(default=list, blank=True)
    test_command = models.TextField(blank=True, default="")
    additions = models.PositiveIntegerField(default=0)
    deletions = models.PositiveIntegerField(default=0)
    proof_status = models.CharField(max_length=20, choices=PROOF_STATUSES, default=PENDING)
    # {"step", "steps", "message", "reason", "checks": [{"name", "exit_code", "output_tail"}]}
    proof = models.JSONField(default=dict, blank=True)
    prompt = models.ForeignKey(
        Prompt, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = PromptDraftQuerySet.as_manager()

    class Meta:
        ordering = ["-author_date", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["repository", "commit"], name="draft_commit_unique")
        ]

    def __str__(self) -> str:
        return f"draft of {self.commit[:12]} in {self.repository.name}"

    def get_absolute_url(self) -> str:
        return reverse("runs:draft", args=[self.pk])

    @property
    def is_proving(self) -> bool:
        return self.proof_status in self.ACTIVE_PROOF_STATUSES

    @property
    def is_proven(self) -> bool:
        return self.proof_status == self.PROVEN


def grading_glob_problem(glob: str) -> str:
    """Why `glob` cannot be a test_files glob, phrased to follow it; "" if it can."""
    if glob.startswith("/"):
        return "is absolute: globs are relative to the top of the repository"
    if ".." in glob.split("/"):
        return "leaves the repository (..)"
    if glob.startswith(":"):
        return "starts with ':', which git would read as pathspec magic"
    return ""


def hidden_path_problem(path: str) -> str:
    """Why `path` cannot be a hidden test path, phrased to follow it; "" if it can."""
    if path.startswith("/"):
        return "is absolute: paths are relative to the top of the repository"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "is not a plain relative path (no empty, '.' or '..' parts, no trailing '/')"
    if ".git" in parts:
        return "is inside a .git directory"
    return ""


# A model's api_key_env names a variable of the worker's environment whose value is sent to the
# model's endpoint, which whoever curates models controls. Only names that look like a key are
# allowed, and never one holding Mergeable's own secrets.
_KEY_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*_(?:API_KEY|TOKEN)\Z")
_SITE_VARIABLE_PREFIXES = ("MERGEABLE_", "DJANGO_")
_SITE_VARIABLES = ("SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")


def api_key_env_problem(name: str) -> str:
    """Why `name` may not be a model's api_key_env, phrased to follow the field's name; "" if it may."""
    if name.startswith(_SITE_VARIABLE_PREFIXES) or name.endswith(_SITE_VARIABLES):
        return (
            f"may not name {name!r}: variables starting with MERGEABLE_ or DJANGO_, and "
            "SECRET_KEY, DATABASE_URL, CELERY_BROKER_URL and REDIS_URL, hold Mergeable's own "
            "secrets"
        )
    if not _KEY_VARIABLE.match(name):
        return (
            f"must name a variable ending in _API_KEY or _TOKEN, in uppercase letters, digits "
            f"and underscores (e.g. OPENAI_API_KEY), not {name[:100]!r}"
        )
    return ""


class KeyUnavailable(Exception):
    """A model's key cannot be used; the message says why and what to do about it."""


class LanguageModelQuerySet(models.QuerySet):
    def api_keys(self) -> set[str]:
        """The keys these models hold: stored keys that decrypt, and the values of their
        (allowed) api_key_env variables in this process's environment."""
        keys = set()
        for stored, variable in self.values_list("api_key", "api_key_env"):
            if stored and isinstance(stored, str):
                keys.add(stored)
            if variable and not api_key_env_problem(variable):
                keys.add(os.environ.get(variable, ""))
        keys.discard("")
        return keys


class LanguageModel(models.Model):
    """A model behind a provider endpoint ("Model" in the design and file formats)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    SCRIPTED = "scripted"
    PROVIDERS = [
        (OPENAI, "OpenAI-compatible"),
        (ANTHROPIC, "Anthropic"),
        (SCRIPTED, "Scripted (replays a file)"),
    ]

    name = models.SlugField(max_length=100, unique=True)
    provider = models.CharField(max_length=20, choices=PROVIDERS)
    base_url = models.CharField(max_length=500, blank=True, default="")
    model_id = models.CharField(max_length=200, blank=True, default="")
    api_key = EncryptedTextField(blank=True, default="")
    api_key_env = models.CharField(max_length=100, blank=True, default="")
    input_per_mtok = models.FloatField(default=0.0)
    output_per_mtok = models.FloatField(default=0.0)
    params = models.JSONField(default=dict, blank=True)
    script_path = models.CharField(max_length=500, blank=True, default="")
    script = models.TextField(blank=True, default="")
    archived = models.BooleanField(default=False)
    connection_check = models.JSONField(default=dict, blank=True)

    objects = LanguageModelQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        # Phrased to follow the field's name, as the contestants file reports them.
        errors = {}
        if self.api_key_env and (problem := api_key_env_problem(self.api_key_env)):
            errors["api_key_env"] = f"api_key_env {problem}."
        if self.provider == self.SCRIPTED:
            if not self.script.strip():
                errors["script"] = "Is required for provider scripted."
            else:
                try:
                    providers.load_script(self.script)
                except ValueError as exc:
                    errors["script"] = str(exc)
        elif self.provider:
            for name in ("base_url", "model_id"):
                if not getattr(self, name):
                    errors[name] = f"Is required for provider {self.provider}."
        if errors:
            raise ValidationError(errors)

    @property
    def is_scripted(self) -> bool:
        return self.provider == self.SCRIPTED

    @property
    def key_unreadable(self) -> bool:
        """The stored key no longer decrypts: the encryption keys changed without rotate_keys."""
        return isinstance(self.api_key, UnreadableSecret)

    @property
    def key_hint(self) -> str:
        """Only whether a key is set and its last four characters: the key is write-only."""
        if self.key_unreadable:
            return "key unreadable, enter it again"
        if self.api_key:
            return f"set, ending …{self.api_key[-4:]}" if len(self.api_key) >= 12 else "set"
        if self.api_key_env:
            return f"from ${self.api_key_env}"
        return "none"

    def resolved_api_key(self) -> str:
        """The key to send to the endpoint ("" for none); raises KeyUnavailable."""
        if self.key_unreadable:
            raise KeyUnavailable(
                f"Model {self.name}: key unreadable, enter it again on the model's page (no key "
                "in MERGEABLE_ENCRYPTION_KEYS decrypts it: the keys changed without rotate_keys)."
            )
        if self.api_key:
            return self.api_key
        if self.api_key_env:
            if problem := api_key_env_problem(self.api_key_env):
                raise KeyUnavailable(
                    f"Model {self.name} cannot take its key from the environment: "
                    f"api_key_env {problem}. Rename the variable on the model's page."
                )
            return os.environ.get(self.api_key_env, "")
        return ""

    def provider_config(self, prompt_key: str | None = None) -> providers.ModelConfig:
        return providers.ModelConfig(
            provider=self.provider,
            model=self.model_id,
            base_url=self.base_url,
            api_key=self.resolved_api_key(),
            input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok,
            params=dict(self.params),
            script=providers.load_script(self.script, prompt_key) if self.is_scripted else None,
        )


# A contestant's sandbox limits and the site-wide caps they may lower, never raise (FORMATS.md).
SANDBOX_LIMIT_CAPS = {
    "max_processes": "MERGEABLE_RUN_MAX_PROCESSES",
    "max_memory_mb": "MERGEABLE_RUN_MAX_MEMORY_MB",
    "max_disk_mb": "MERGEABLE_RUN_MAX_DISK_MB",
}


class Contestant(models.Model):
    BUILTIN = "builtin"
    AIDER = "aider"
    MINI_SWE_AGENT = "mini-swe-agent"
    CLAUDE_CODE = "claude-code"
    CODEX = "codex"
    OPENCODE = "opencode"
    COMMAND = "command"
    HARNESSES = agents.CHOICES

    name = models.SlugField(max_length=100, unique=True)
    harness = models.CharField(max_length=30, choices=HARNESSES, default=BUILTIN)
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="contestants")
    options = models.JSONField(default=dict, blank=True)
    max_steps = models.PositiveIntegerField(null=True, blank=True)
    max_cost_usd = models.FloatField(null=True, blank=True)
    time_limit = models.PositiveIntegerField(null=True, blank=True)
    # Sandbox limits (blank: the site's cap) and model-gateway limits (blank: none).
    max_processes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_memory_mb = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_disk_mb = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    max_calls = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    benchmarks = models.JSONField(default=dict, blank=True)
    archived = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_scripted(self) -> bool:
        return self.model.is_scripted

    @property
    def label(self) -> str:
        return f"{self.name} (scripted)" if self.is_scripted else self.name

    def clean(self) -> None:
        super().clean()
        # Read on every validation, not once: a cap lowered in settings applies from then on.
        errors = {}
        for name, setting in SANDBOX_LIMIT_CAPS.items():
            value, cap = getattr(self, name), getattr(settings, setting)
            if value is not None and value > cap:
                errors[name] = f"Must be at most {cap}, the site's cap ({setting})."
        if not isinstance(self.benchmarks, dict):
            errors["benchmarks"] = "Must map benchmark names to scores."
        else:
            for name, score in self.benchmarks.items():
                if isinstance(score, bool) or not isinstance(score, int | float):
                    errors["benchmarks"] = (
                        f"The score for {name!r} must be a number, got {json.dumps(score)}."
                    )
                    break
        if errors:
            raise ValidationError(errors)

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "harness": self.harness,
            "model": self.model.name,
            "provider": self.model.provider,
            "model_id": self.model.model_id,
            "scripted": self.is_scripted,
            "options": dict(self.options),
            "limits": {
                "max_steps": self.max_steps,
                "max_cost_usd": self.max_cost_usd,
                "time_limit": self.time_limit,
                "max_processes": self.max_processes,
                "max_memory_mb": self.max_memory_mb,
                "max_disk_mb": self.max_disk_mb,
                "max_tokens": self.max_tokens,
                "max_calls": self.max_calls,
            },
        }


class Campaign(models.Model):
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"
    STATES = [(RUNNING, "running"), (FINISHED, "finished"), (CANCELLED, "cancelled")]

    name = models.CharField(max_length=200)
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.PROTECT, related_name="campaigns")
    contestants = models.ManyToManyField(Contestant, related_name="campaigns")
    repeats = models.PositiveIntegerField(default=1)
    reviews_wanted = models.PositiveIntegerField(default=2)
    budget_usd = models.FloatField(null=True, blank=True)
    state = models.CharField(max_length=20, choices=STATES, default=RUNNING)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("runs:campaign", args=[self.pk])

    def progress(self) -> dict:
        counts = dict(self.runs.values_list("status").annotate(n=models.Count("id")).order_by())
        total = sum(counts.values())
        ended = sum(counts.get(s, 0) for s in Run.ENDED_STATUSES)
        return {"total": total, "ended": ended, "counts": counts}


class RunQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=Run.ACTIVE_STATUSES)

    def ended(self):
        return self.filter(status__in=Run.ENDED_STATUSES)

    def reviewable(self):
        """Runs a human can judge: the agent ended and produced something to look at."""
        return self.filter(status__in=Run.REVIEWABLE_STATUSES)


def new_review_key() -> str:
    """An opaque, unguessable name for a run in review URLs: its sequential id would tell a blind
    reviewer the order runs were made in, and with it which contestant made them."""
    return secrets.token_urlsafe(12)


class PromptFacts(models.Func):
    """What the leaderboard needs of a run's prompt snapshot, as the JSON text of one array:
    [tags, expected_files, clarification_expected] (null for a missing key). Stored with the
    run (`Run.prompt_facts`), so that a board reads one short text per run rather than
    parsing every snapshot. Both forms are immutable, as a stored generated column must be."""

    output_field = models.TextField()
    KEYS = ("tags", "expected_files", "clarification_expected")

    def __init__(self, **extra) -> None:
        super().__init__(models.F("snapshot"), **extra)

    def as_sql(self, compiler, connection, **extra):
        # jsonb_build_array would be shorter, but it is only stable, not immutable.
        parts = " || ',' || ".join(
            f"COALESCE((%(expressions)s #> '{{prompt,{key}}}')::text, 'null')" for key in self.KEYS
        )
        template = f"('[' || {parts} || ']')"
        return super().as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        paths = ", ".join(f"'$.prompt.{key}'" for key in self.KEYS)
        template = f"json_extract(%(expressions)s, {paths})"
        return super().as_sql(compiler, connection, template=template, **extra)


class Run(models.Model):
    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    AWAITING_ANSWER = "awaiting_answer"
    TESTING = "testing"
    FINISHED = "finished"
    FAILED = "failed"
    ERRORED = "errored"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    STATUSES = [
        (QUEUED, "queued"),
        (PREPARING, "preparing"),
        (RUNNING, "running"),
        (AWAITING_ANSWER, "awaiting answer"),
        (TESTING, "testing"),
        (FINISHED, "finished"),
        (FAILED, "failed"),
        (ERRORED, "errored"),
        (CANCELLED, "cancelled"),
        (TIMED_OUT, "timed out"),
    ]
    ACTIVE_STATUSES = (QUEUED, PREPARING, RUNNING, AWAITING_ANSWER, TESTING)
    CLAIMED_STATUSES = (PREPARING, RUNNING, AWAITING_ANSWER, TESTING)
    ENDED_STATUSES = (FINISHED, FAILED, ERRORED, CANCELLED, TIMED_OUT)
    # The agent ended and produced something a human can judge.
    REVIEWABLE_STATUSES = (FINISHED, FAILED, TIMED_OUT)

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="runs")
    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="runs")
    contestant = models.ForeignKey(Contestant, on_delete=models.PROTECT, related_name="runs")
    repeat = models.PositiveIntegerField(default=0)
    snapshot = models.JSONField(default=dict)
    prompt_facts = models.GeneratedField(
        expression=PromptFacts(), output_field=models.TextField(), db_persist=True
    )
    imported = models.BooleanField(default=False)
    review_key = models.SlugField(
        max_length=32, unique=True, default=new_review_key, editable=False
    )
    # Reviews a lead asked for beyond the campaign's reviews_wanted, for this run only.
    extra_reviews_wanted = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=20, choices=STATUSES, default=QUEUED, db_index=True)
    status_reason = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    process_group = models.IntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    phase_timings = models.JSONField(default=dict, blank=True)

    agent_status = models.CharField(max_length=40, blank=True, default="")
    steps = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.FloatField(default=0.0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_tokens = models.PositiveBigIntegerField(default=0)
    model_calls = models.PositiveIntegerField(default=0)  # through the run's model gateway
    # What the harness itself claimed ({"input_tokens", "output_tokens", "cost_usd"}), kept beside
    # the gateway's metered figures above, never in place of them.
    reported_usage = models.JSONField(default=dict, blank=True)
    # The resource caps the sandbox enforced and how: {"processes": {"limit": 256, "how": "…"}}.
    caps = models.JSONField(default=dict, blank=True)

    files_changed = models.JSONField(default=list, blank=True)
    binary_files = models.JSONField(default=list, blank=True)
    additions = models.PositiveIntegerField(default=0)
    deletions = models.PositiveIntegerField(default=0)

    test_exit_code = models.IntegerField(null=True, blank=True)
    tests_passed = models.PositiveIntegerField(null=True, blank=True)
    tests_failed = models.PositiveIntegerField(null=True, blank=True)
    test_output_tail = models.TextField(blank=True, default="")
    # The paths matching the prompt's test_files that the agent modified, deleted or added: it
    # tried to change what grades it (they are put back before the tests run).
    test_files_modified = models.JSONField(default=list, blank=True)

    questions = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True, default="")

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "prompt", "contestant", "repeat"], name="run_cell_unique"
            )
        ]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"]),
            # The leaderboard cache's stamp (scoring/leaderboard/cache.py): the newest id,
            # queueing and finish, each one step down an index, over one campaign or all runs.
            models.Index(fields=["campaign", "id"], name="run_campaign_newest"),
            models.Index(fields=["campaign", "queued_at"], name="run_campaign_queued"),
            models.Index(fields=["campaign", "finished_at"], name="run_campaign_finished"),
            models.Index(fields=["queued_at"], name="run_queued"),
            models.Index(fields=["finished_at"], name="run_finished"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("runs:run", args=[self.pk])

    def blind_url(self) -> str:
        """Where a scorer looks at this run without learning who made it: the review page once
        there is something to review, else a page with its status and any question it asks.

        "scoring:review" is a URL name, not an import: `runs` still never imports `scoring`.
        """
        if self.status in Run.REVIEWABLE_STATUSES:
            return reverse("scoring:review", kwargs={"review_key": self.review_key})
        return reverse("runs:blind_run", kwargs={"review_key": self.review_key})

    @property
    def reviews_wanted(self) -> int:
        return self.campaign.reviews_wanted + self.extra_reviews_wanted

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    @property
    def duration_s(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        if self.started_at:
            return (timezone.now() - self.started_at).total_seconds()
        return None

    @property
    def tests_ok(self) -> bool | None:
        return None if self.test_exit_code is None else self.test_exit_code == 0

    @property
    def pending_question(self) -> dict | None:
        for entry in reversed(self.questions):
            if entry.get("answer") is None:
                return entry
        return None

    @property
    def expected_files_recall(self) -> float | None:
        expected = self.snapshot.get("prompt", {}).get("expected_files") or []
        if not expected:
            return None
        changed = set(self.files_changed)
        return sum(1 for path in expected if path in changed) / len(expected)

    @property
    def reported_tokens(self) -> int | None:
        """The tokens the harness says it used, or None when it said nothing usable."""
        counts = [self.reported_usage.get(name) for name in ("input_tokens", "output_tokens")]
        counts = [n for n in counts if isinstance(n, int) and not isinstance(n, bool)]
        return sum(counts) if counts else None

    @property
    def reported_cost_usd(self) -> float | None:
        cost = self.reported_usage.get("cost_usd")
        return cost if isinstance(cost, int | float) and not isinstance(cost, bool) else None

    @property
    def sandbox_caps(self) -> list[dict]:
        """`caps` as rows to show: name, limit and how it was enforced (blank when unknown)."""
        rows = []
        for name, cap in self.caps.items():
            cap = cap if isinstance(cap, dict) else {"limit": cap}
            rows.append({"name": name, "limit": cap.get("limit", ""), "how": cap.get("how", "")})
        return rows

    # Artifacts live in Django storage under runs/<id>/, not in table columns.
    def artifact_name(self, name: str) -> str:
        return f"runs/{self.pk}/{name}"

    def save_artifact(self, name: str, content: str | bytes) -> None:
        """Store an artifact, with every secret the worker knows replaced by [redacted]."""
        save_file(self.artifact_name(name), redaction.scrub_artifact(name, content))

    @staticmethod
    def diff_fields(captured: workspace.CapturedDiff) -> dict:
        """The fields that describe a captured diff, for an executed or an imported run."""
        return {
            "files_changed": captured.files,
            "binary_files": captured.binary_files,
            "additions": captured.additions,
            "deletions": captured.deletions,
        }

    def save_diff(self, captured: workspace.CapturedDiff) -> None:
        """The diff and the before/after text of changed files, for the review page's context."""
        self.save_artifact("diff.patch", captured.patch)
        self.save_artifact("before.json", json.dumps(captured.before))
        self.save_artifact("after.json", json.dumps(captured.after))

    def read_artifact(self, name: str, default: str = "") -> str:
        # One request to a bucket, not an exists() and then a read.
        try:
            with default_storage.open(self.artifact_name(name), "rb") as handle:
                return handle.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return default

    def read_json_artifact(self, name: str, default=None):
        text = self.read_artifact(name)
        return json.loads(text) if text else default

    @property
    def diff(self) -> str:
        return self.read_artifact("diff.patch")

    @property
    def transcript(self) -> dict | None:
        return self.read_json_artifact("transcript.json")


class RunImport(models.Model):
    """A run produced elsewhere, waiting for a worker to apply and test it.

    The page hands the slow part (fetching the repository, applying the change, the setup and
    test commands) to a worker and follows this row. What was uploaded waits in storage under
    `imports/<id>.json` and is removed once the worker is done with it. On success `run` is the run
    made; on failure `error` says why, and nothing else was stored.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    STATUSES = [(QUEUED, "queued"), (RUNNING, "running"), (DONE, "done"), (FAILED, "failed")]

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="+")
    contestant_name = models.CharField(max_length=100)
    campaign_name = models.CharField(max_length=200, blank=True, default="")
    branch = models.CharField(max_length=250, blank=True, default="")
    patch_name = models.CharField(max_length=255, blank=True, default="")
    transcript_names = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=STATUSES, default=QUEUED)
    error = models.TextField(blank=True, default="")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"import {self.pk} of {self.contestant_name} on {self.prompt.key}"

    def get_absolute_url(self) -> str:
        return reverse("runs:run_import_status", kwargs={"import_id": self.pk})

    @property
    def payload_name(self) -> str:
        return f"imports/{self.pk}.json"


def column_text(text: str) -> str:
    """Text from agents and commands, made storable in any database (PostgreSQL refuses NUL)."""
    return text.replace("\x00", "\ufffd")


def save_file(name: str, content: str | bytes) -> None:
    """Store `content` in default storage under exactly `name`, replacing what is there."""
    data = content.encode() if isinstance(content, str) else content
    if _replace_local_file(name, data):
        return
    # A bucket replaces an object in one request (file_overwrite, evalsite/storage.py); elsewhere
    # the storage would pick another name for an existing one.
    if not getattr(default_storage, "file_overwrite", False) and default_storage.exists(name):
        default_storage.delete(name)
    default_storage.save(name, ContentFile(data))


def _replace_local_file(name: str, data: bytes) -> bool:
    """Overwrite an existing artifact directory's file on the local filesystem storage.

    The transcript is rewritten many times per run: one write and an atomic rename instead of
    exists + delete + save, and a reader never sees the file missing. False (nothing done) when
    the storage is not local or the directory does not exist yet: the storage then creates it
    with its own permissions.
    """
    if not isinstance(default_storage, FileSystemStorage):
        return False
    validate_file_name(name, allow_relative_path=True)  # as Storage.save does
    target = default_storage.path(name)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        return False
    partial = os.path.join(directory, f".{os.path.basename(target)}.{uuid.uuid4().hex}.partial")
    try:
        with open(partial, "xb") as handle:  # mode 0o666 & ~umask, as FileSystemStorage makes
            handle.write(data)
        if default_storage.file_permissions_mode is not None:
            os.chmod(partial, default_storage.file_permissions_mode)
        os.replace(partial, target)
    except BaseException:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise
    return True

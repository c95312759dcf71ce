"""Forms for the curation pages (repositories, prompt sets and prompts, models, contestants) and
the campaign launch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.conf import settings
from django.core.validators import slug_re
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from runs import campaigns as campaign_workflows
from runs.agents import command as command_harness
from runs.models import (
    SANDBOX_LIMIT_CAPS,
    Campaign,
    CommitNotFound,
    Contestant,
    LanguageModel,
    Prompt,
    PromptSet,
    Repository,
    RepositoryUnreachable,
)
from runs.workspace import redact_url

UPLOAD_LIMIT = 5 * 1024 * 1024


class LinesField(forms.CharField):
    """A textarea holding one item per line, cleaned to a list of non-empty stripped lines."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(str(item) for item in value)
        return value

    def to_python(self, value) -> list[str]:
        text = super().to_python(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class TagsField(forms.CharField):
    """Comma-separated tags, cleaned to a list without blanks or repeats (order kept).

    Also takes several values (one per input, as TagInputs posts them); with `slugs`, each tag
    must be a slug, so a tag reads the same in a URL, a YAML file and a rubric's "only for tag".
    """

    def __init__(self, *, slugs: bool = False, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.slugs = slugs

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(item) for item in value)
        return value

    def to_python(self, value) -> list[str]:
        values = value if isinstance(value, list | tuple) else [value]
        tags = [
            tag.strip()
            for text in values
            for tag in super(TagsField, self).to_python(text).split(",")
            if tag.strip()
        ]
        return list(dict.fromkeys(tags))

    def validate(self, value: list[str]) -> None:
        super().validate(value)
        if not self.slugs:
            return
        for tag in value:
            if not slug_re.fullmatch(tag):
                raise forms.ValidationError(
                    f"{tag[:100]!r} is not a valid tag: use letters, digits, hyphens and "
                    "underscores only, e.g. multi-file."
                )


class TagInputs(forms.Widget):
    """One text box per tag and two blank ones for new tags, each offering the tags already in
    use from one <datalist> (a browser suggests only whole values, so one box holds one tag)."""

    BLANKS = 2

    def __init__(self, attrs=None) -> None:
        super().__init__(attrs)
        self.known: list[str] = []

    def format_value(self, value) -> list[str]:
        if isinstance(value, list | tuple):
            return [str(tag) for tag in value]
        return [tag.strip() for tag in str(value or "").split(",") if tag.strip()]

    def value_from_datadict(self, data, files, name):
        return data.getlist(name) if hasattr(data, "getlist") else data.get(name)

    def value_omitted_from_data(self, data, files, name) -> bool:
        return name not in data

    def render(self, name, value, attrs=None, renderer=None) -> str:
        attrs = self.build_attrs(self.attrs, attrs)
        box_id = attrs.get("id") or f"id_{name}"
        list_id = f"{box_id}-known"
        tags = self.format_value(value) + [""] * self.BLANKS
        boxes = []
        for index, tag in enumerate(tags):
            # The first box is the one the field's <label> names; the others say what they are.
            naming = (
                format_html(' id="{}"', box_id)
                if index == 0
                else format_html(' aria-label="{}"', f"Tag {index + 1}")
            )
            boxes.append(
                format_html(
                    '<input type="text" name="{}" value="{}" list="{}" class="tag-input"{}>',
                    name,
                    tag,
                    list_id,
                    naming,
                )
            )
        options = format_html_join("", '<option value="{}"></option>', ((t,) for t in self.known))
        return format_html(
            '<span class="tag-inputs">{}</span><datalist id="{}">{}</datalist>',
            format_html_join("", "{}", ((box,) for box in boxes)),
            list_id,
            options,
        )


class JSONObjectField(forms.JSONField):
    """A JSON textarea that must hold an object ({} when blank)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        # An empty object shows as an empty box, not the literal text "null" or "{}".
        if value is None or value == {}:
            return ""
        return super().prepare_value(value)

    def to_python(self, value):
        result = super().to_python(value)
        if result in (None, ""):
            return {}
        if not isinstance(result, dict):
            raise forms.ValidationError('Enter a JSON object, such as {"temperature": 0}.')
        return result


class UploadForm(forms.Form):
    file = forms.FileField(label="YAML file")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > UPLOAD_LIMIT:
            raise forms.ValidationError("The file is larger than 5 MB.")
        try:
            self.text = upload.read().decode("utf-8")
        except UnicodeDecodeError:
            raise forms.ValidationError("The file is not UTF-8 text.") from None
        return upload


# -- Prompt sets and prompts ---------------------------------------------------------------------


class PromptSetForm(forms.ModelForm):
    class Meta:
        model = PromptSet
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}


class PromptForm(forms.ModelForm):
    tags = TagsField(
        slugs=True,
        widget=TagInputs,
        help_text="One tag per box: pick one in use or type a new one, e.g. multi-file",
    )
    acceptance_criteria = LinesField(help_text="One per line; shown to scorers as a checklist")
    expected_files = LinesField(help_text="One path per line: the files a good change touches")
    test_files = LinesField(
        help_text="One glob per line, e.g. tests/**: put back as they are at the commit before "
        "the test command runs; a run whose agent changed them is flagged"
    )
    hidden_tests_paths = LinesField(
        label="Hidden test paths",
        help_text="One file or directory per line, taken from the hidden tests commit and added "
        "only after the agent has ended: the agent never sees them",
    )

    class Meta:
        model = Prompt
        fields = [
            "title",
            "key",
            "repository",
            "commit",
            "instructions",
            "tags",
            "acceptance_criteria",
            "expected_files",
            "setup_command",
            "setup_network",
            "test_command",
            "test_files",
            "hidden_tests_commit",
            "hidden_tests_paths",
            "clarification_expected",
            "clarification_answer",
            "reference_patch",
            "time_limit",
        ]
        labels = {
            "setup_network": "The setup command may use the network",
            "clarification_expected": "The spec is ambiguous on purpose",
            "clarification_answer": "Prepared answer to a clarifying question",
            "time_limit": "Time limit (seconds)",
            "hidden_tests_commit": "Hidden tests commit",
        }
        help_texts = {
            "commit": "A full or abbreviated sha, or a branch; stored as the full sha",
            "instructions": "Markdown",
            "setup_network": "For package installs. The agent and the tests never get the network.",
            "reference_patch": "Optional: a human's solution as a unified diff",
            "hidden_tests_commit": "Another commit of the same repository, holding the hidden "
            "tests; stored as the full sha",
        }
        widgets = {
            "instructions": forms.Textarea(attrs={"rows": 12}),
            "setup_command": forms.TextInput(),
            "test_command": forms.TextInput(),
            "clarification_answer": forms.Textarea(attrs={"rows": 2}),
            "reference_patch": forms.Textarea(attrs={"rows": 6}),
        }

    def __init__(self, *args, prompt_set: PromptSet, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.prompt_set = prompt_set
        self.instance.prompt_set = prompt_set
        self.fields["tags"].widget.known = known_tags()
        self.fields["repository"].queryset = Repository.objects.filter(archived=False) | (
            Repository.objects.filter(pk=self.instance.repository_id)
        )
        self.fields["instructions"].widget.attrs.update(
            {
                "hx-post": reverse("runs:markdown_preview"),
                "hx-trigger": "input changed delay:400ms",
                "hx-target": "#instructions-preview",
                "hx-include": "this",
            }
        )

    def clean_key(self) -> str:
        key = self.cleaned_data["key"]
        taken = Prompt.objects.filter(prompt_set=self.prompt_set, key=key)
        if self.instance.pk:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise forms.ValidationError("Another prompt in this set already has this key.")
        return key

    def clean(self):
        # Field rules are the model's (run by _post_clean); what needs the repository's mirror is
        # checked here, and only for what changed: a stored commit was resolved when it was saved.
        data = super().clean()
        repository = data.get("repository")
        if repository is None:
            return data
        if data.get("commit") and self._changed(repository, "commit", data["commit"]):
            data["commit"] = self._resolved(repository, data["commit"], "commit")
        hidden_commit = data.get("hidden_tests_commit") or ""
        paths = data.get("hidden_tests_paths") or []
        if hidden_commit and self._changed(repository, "hidden_tests_commit", hidden_commit):
            data["hidden_tests_commit"] = hidden_commit = self._resolved(
                repository, hidden_commit, "hidden_tests_commit"
            )
        if (
            hidden_commit
            and paths
            and "hidden_tests_commit" not in self.errors
            and (
                self._changed(repository, "hidden_tests_commit", hidden_commit)
                or self._changed(repository, "hidden_tests_paths", paths)
            )
        ):
            try:
                missing = repository.missing_paths(hidden_commit, paths)
            except RepositoryUnreachable as exc:
                self.add_error("hidden_tests_paths", f"Cannot check these paths: {exc}")
                missing = []
            for path in missing:
                self.add_error(
                    "hidden_tests_paths", f"{path!r} is not in commit {hidden_commit[:12]}."
                )
        return data

    def _changed(self, repository: Repository, field: str, value) -> bool:
        return not (
            self.instance.pk
            and self.instance.repository_id == repository.pk
            and getattr(self.instance, field) == value
        )

    def _resolved(self, repository: Repository, commit: str, field: str) -> str:
        """The full sha of `commit`; a form error (and `commit` unchanged) if it cannot be."""
        try:
            return repository.resolve_commit(commit)
        except CommitNotFound:
            problem = f"{repository.name} has no commit or branch {commit[:100]!r}."
        except RepositoryUnreachable as exc:
            problem = f"the repository cannot be fetched: {exc}"
        self.add_error(field, f"Cannot resolve this commit in {repository.name}: {problem}")
        return commit


def known_tags() -> list[str]:
    """Every tag on a prompt, sorted: what the prompt form suggests."""
    tags = {tag for tags in Prompt.objects.values_list("tags", flat=True) for tag in tags or []}
    return sorted(str(tag) for tag in tags)


# -- Repositories --------------------------------------------------------------------------------


class RedactedURLInput(forms.TextInput):
    """Renders a URL with its credentials removed, so a stored password never reaches a page."""

    def format_value(self, value):
        value = super().format_value(value)
        return redact_url(value) if value else value


class RepositoryForm(forms.ModelForm):
    class Meta:
        model = Repository
        fields = ["name", "url", "default_branch"]
        widgets = {"url": RedactedURLInput()}
        labels = {"url": "URL"}
        help_texts = {
            "url": "https://, ssh:// or git:// URL, user@host:path, or a local path under "
            "MERGEABLE_LOCAL_REPO_ROOTS. Credentials in the URL are stored but never shown.",
            "default_branch": "Optional",
        }

    def clean_url(self) -> str:
        # The field showed the stored URL redacted: sent back unchanged, it means "keep it".
        # Whether a URL is allowed is the model's rule, checked when the form validates it.
        url = self.cleaned_data["url"]
        return self.instance.restored_url(url) if self.instance.pk else url


# -- Models --------------------------------------------------------------------------------------


class LanguageModelForm(forms.ModelForm):
    """The API key is write-only: never rendered, blank keeps the stored one."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)
    params = JSONObjectField(help_text='Extra request parameters, e.g. {"temperature": 0}')

    class Meta:
        model = LanguageModel
        fields = [
            "name",
            "provider",
            "base_url",
            "model_id",
            "api_key_env",
            "input_per_mtok",
            "output_per_mtok",
            "params",
            "script",
        ]
        labels = {
            "base_url": "Base URL",
            "model_id": "Model id",
            "api_key_env": "Or: environment variable holding the key",
            "input_per_mtok": "Price per million input tokens (USD)",
            "output_per_mtok": "Price per million output tokens (USD)",
            "script": "Script (scripted models only)",
        }
        help_texts = {
            "base_url": "e.g. http://127.0.0.1:11434/v1 for Ollama, https://api.anthropic.com",
            "script": "YAML list of assistant turns: text and/or tool_calls",
        }
        widgets = {"script": forms.Textarea(attrs={"rows": 8})}

    field_order = [
        "name",
        "provider",
        "base_url",
        "model_id",
        "api_key",
        "clear_api_key",
        "api_key_env",
        "input_per_mtok",
        "output_per_mtok",
        "params",
        "script",
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.api_key:
            del self.fields["clear_api_key"]  # nothing stored: nothing to remove
        else:
            # Asked for again on submit (static/js/app.js, through htmx's confirm event).
            self.fields["clear_api_key"].widget.attrs["data-confirm-when-checked"] = (
                "Remove the stored API key? Runs of this model fail until a key is entered again."
            )

    def clean(self):
        # A provider's required fields and a script that parses are the model's rules.
        data = super().clean()
        if data.get("api_key") and data.get("clear_api_key"):
            self.add_error("clear_api_key", "Either enter a new key or remove it, not both.")
        return data

    def save(self, commit: bool = True) -> LanguageModel:
        model = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            model.api_key = ""
        elif self.cleaned_data.get("api_key"):
            model.api_key = self.cleaned_data["api_key"]
        if commit:
            model.save()
        return model


# -- Contestants ---------------------------------------------------------------------------------


class ContestantForm(forms.ModelForm):
    options = JSONObjectField(help_text='Harness options, e.g. {"command": "…"} for command')
    benchmarks = JSONObjectField(help_text='Public scores, e.g. {"HumanEval": 87.0}')

    class Meta:
        model = Contestant
        fields = [
            "name",
            "harness",
            "model",
            "max_steps",
            "max_cost_usd",
            "time_limit",
            "max_processes",
            "max_memory_mb",
            "max_disk_mb",
            "max_tokens",
            "max_calls",
            "options",
            "benchmarks",
        ]
        labels = {
            "max_cost_usd": "Max cost (USD)",
            "time_limit": "Time limit (seconds)",
            "max_processes": "Max processes",
            "max_memory_mb": "Max memory (MB)",
            "max_disk_mb": "Max disk (MB)",
            "max_tokens": "Max tokens",
            "max_calls": "Max model calls",
        }
        help_texts = {
            "max_tokens": "Input and output tokens together, counted by the run's model gateway",
            "max_calls": "Calls to the model, counted by the run's model gateway",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = LanguageModel.objects.filter(archived=False) | (
            LanguageModel.objects.filter(pk=self.instance.model_id)
        )
        self.fields["model"].label_from_instance = lambda m: (
            f"{m.name} (scripted)" if m.is_scripted else m.name
        )
        for name, setting in SANDBOX_LIMIT_CAPS.items():
            cap = getattr(settings, setting)
            self.fields[name].help_text = f"At most {cap}, the site's cap; blank means the cap"

    def clean(self):
        data = super().clean()
        if data.get("harness") == Contestant.COMMAND:
            # The command harness's own reader decides what a valid template is.
            values = dict.fromkeys(command_harness.PLACEHOLDERS, "x")
            try:
                command_harness.build_command((data.get("options") or {}).get("command"), values)
            except command_harness.CommandTemplateError as exc:
                self.add_error("options", str(exc))
        return data


# -- Campaigns -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchChoice:
    """A field another app adds to the campaign form, and what it does with the answer.

    `runs` may never import `scoring`, yet a campaign's rubric is best chosen as it is launched:
    scoring registers its rubric picker here from its AppConfig.ready (scoring/launch_choices.py).
    `apply(campaign, value)` runs in the launch's transaction, before any run is enqueued.
    """

    name: str
    make_field: Callable[[], forms.Field]
    apply: Callable[[Campaign, Any], None]


LAUNCH_CHOICES: dict[str, LaunchChoice] = {}


def register_launch_choice(choice: LaunchChoice) -> None:
    LAUNCH_CHOICES[choice.name] = choice


class CampaignForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Default: the set and date")
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.active())
    contestants = forms.ModelMultipleChoiceField(
        queryset=Contestant.objects.filter(archived=False).select_related("model"),
        widget=forms.CheckboxSelectMultiple,
    )
    repeats = forms.IntegerField(min_value=1, max_value=20, initial=1)
    reviews_wanted = forms.IntegerField(
        min_value=1, max_value=10, initial=2, help_text="Reviews wanted per run"
    )
    budget_usd = forms.FloatField(
        min_value=0.01,
        required=False,
        label="Budget (USD)",
        help_text="Runs not yet started when it is spent are cancelled",
    )
    # Sent by the confirmation step only, when the estimate exceeds the budget: the estimate the
    # lead saw, so a confirmation never covers a bigger launch changed in the same submit.
    confirm_over_budget = forms.BooleanField(required=False)
    confirmed_estimate_usd = forms.FloatField(required=False, widget=forms.HiddenInput)
    CONFIRMATION_FIELDS = ("confirm_over_budget", "confirmed_estimate_usd")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["contestants"].label_from_instance = _contestant_choice_label
        for choice in LAUNCH_CHOICES.values():
            self.fields[choice.name] = choice.make_field()

    def over_budget_unconfirmed(self, estimate: campaign_workflows.CostEstimate) -> bool:
        """True when the estimate exceeds the budget and the lead has not confirmed this much."""
        if not estimate.exceeds(self.cleaned_data.get("budget_usd")):
            return False
        confirmed = self.cleaned_data.get("confirmed_estimate_usd")
        # The page shows cents: a confirmation of the rounded figure covers the exact one.
        return not (
            self.cleaned_data.get("confirm_over_budget")
            and confirmed is not None
            and estimate.known_usd <= confirmed + 0.005
        )

    def apply_launch_choices(self, campaign: Campaign) -> None:
        for choice in LAUNCH_CHOICES.values():
            if choice.name in self.cleaned_data:
                choice.apply(campaign, self.cleaned_data[choice.name])


def _contestant_choice_label(contestant: Contestant) -> str:
    """A contestant as the campaign form offers it, warned about when its model failed its
    connection check: every run of it would error."""
    check = contestant.model.connection_check or {}
    if check.get("ok") is False:
        reason = str(check.get("error") or "no reason given")[:120]
        return f"{contestant.label}: warning, its model failed its connection check ({reason})"
    return contestant.label

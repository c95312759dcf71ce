"""Drafting prompts from a repository's history (admin): candidates, drafts, proofs, curation.

The forms are here rather than in runs/forms.py: only these pages use them.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evalsite.roles import ADMIN, role_required
from runs import checks, drafts
from runs.forms import LinesField, TagsField
from runs.models import PromptDraft, PromptSet, Repository

MAX_LISTED = 200


class CandidateFilterForm(forms.Form):
    branch = forms.CharField(required=False, max_length=200)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    paths = forms.CharField(required=False, max_length=300, help_text="e.g. src/billing/*")
    limit = forms.IntegerField(required=False, min_value=1, max_value=MAX_LISTED, initial=50)

    def clean_branch(self) -> str:
        branch = self.cleaned_data["branch"].strip()
        if branch.startswith("-") or any(c.isspace() for c in branch):
            raise ValidationError("Give a branch name, such as main.")
        return branch


class DraftingSettingsForm(forms.ModelForm):
    """The token is write-only: never rendered, blank keeps the stored one."""

    forge_token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: leave blank to keep the stored token.",
    )
    clear_forge_token = forms.BooleanField(required=False, label="Remove the stored token")

    class Meta:
        model = Repository
        fields = ["test_command_template", "forge", "forge_url"]
        widgets = {"test_command_template": forms.TextInput()}
        labels = {"forge_url": "Forge project URL", "test_command_template": "Test command"}
        help_texts = {
            "test_command_template": "{tests} stands for a draft's test files, e.g. "
            "python -m pytest -q {tests}",
            "forge_url": "Optional: https://github.com/acme/shop or https://gitlab.example.com/"
            "acme/shop; commit messages' #12 and !4 are then read from it.",
        }

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("forge_url") and not cleaned.get("forge"):
            self.add_error("forge", "Say which forge the URL is on.")
        return cleaned

    def save(self, commit: bool = True):
        repository = super().save(commit=False)
        if self.cleaned_data.get("clear_forge_token"):
            repository.forge_token = ""
        elif self.cleaned_data.get("forge_token"):
            repository.forge_token = self.cleaned_data["forge_token"]
        if commit:
            repository.save()
        return repository


class DraftForm(forms.ModelForm):
    tags = TagsField()
    expected_files = LinesField()
    hidden_tests_paths = LinesField(label="Hidden tests")
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.active(), required=False, help_text="Needed to accept."
    )
    key = forms.SlugField(max_length=200, required=False, help_text="Needed to accept.")

    class Meta:
        model = PromptDraft
        fields = [
            "title",
            "instructions",
            "tags",
            "expected_files",
            "test_command",
            "hidden_tests_paths",
        ]
        widgets = {
            "instructions": forms.Textarea(attrs={"rows": 12}),
            "test_command": forms.TextInput(),
        }


def _get_repository_for_admin(repository_id: int) -> Repository:
    return get_object_or_404(Repository, pk=repository_id)


def _get_draft_for_admin(draft_id: int) -> PromptDraft:
    return get_object_or_404(
        PromptDraft.objects.select_related("repository", "prompt__prompt_set"), pk=draft_id
    )


def _drafts_page(request: HttpRequest, repository: Repository, settings_form=None, status=200):
    filters = CandidateFilterForm(request.GET)  # bound even when empty: list at once
    candidates, problem = [], ""
    # A page never waits for a remote: it reads the mirror as the last check left it.
    mirror = drafts.local_mirror(repository)
    if mirror is None:
        problem = "There is no copy of this repository here yet: fetch it first."
    elif filters.is_valid():
        options = filters.cleaned_data
        try:
            candidates = drafts.candidates(
                repository,
                branch=options["branch"],
                since=options["since"].isoformat() if options["since"] else "",
                paths=options["paths"],
                limit=options["limit"] or 50,
                mirror=mirror,
            )
        except drafts.DraftingError as exc:
            problem = str(exc)
    existing = dict(repository.drafts.values_list("commit", "pk"))
    context = {
        "repository": repository,
        "filters": filters,
        "candidates": [(candidate, existing.get(candidate.sha)) for candidate in candidates],
        "problem": problem,
        "fetching": checks.is_pending(repository.last_check),
        "drafts": repository.drafts.select_related("prompt__prompt_set").order_by(
            Case(
                When(prompt__isnull=True, then=Value(0)),
                default=Value(1),
                output_field=IntegerField(),
            ),
            "-author_date",
            "-id",
        ),
        "settings_form": settings_form or DraftingSettingsForm(instance=repository),
    }
    return render(request, "runs/drafts/drafts.html", context, status=status)


@role_required(ADMIN)
@require_GET
def draft_list(request: HttpRequest, repository_id: int) -> HttpResponse:
    return _drafts_page(request, _get_repository_for_admin(repository_id))


@role_required(ADMIN)
@sensitive_post_parameters("forge_token")
@require_POST
def drafting_settings(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = _get_repository_for_admin(repository_id)
    form = DraftingSettingsForm(request.POST, instance=repository)
    if not form.is_valid():
        return _drafts_page(request, repository, settings_form=form, status=400)
    form.save()
    messages.success(request, f"Saved the drafting settings of {repository.name}.")
    return redirect("runs:drafts", repository_id=repository.pk)


@role_required(ADMIN)
@require_POST
def drafts_fetch(request: HttpRequest, repository_id: int) -> HttpResponse:
    """Fetch the repository in the background (the repository check), then list again."""
    repository = _get_repository_for_admin(repository_id)
    checks.request_repository_check(repository)
    messages.success(request, f"Fetching {repository.name}; reload in a moment.")
    return redirect("runs:drafts", repository_id=repository.pk)


@role_required(ADMIN)
@require_POST
def draft_create(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = _get_repository_for_admin(repository_id)
    shas = request.POST.getlist("commit")[:MAX_LISTED]
    if not shas:
        messages.error(request, "Pick at least one change to draft.")
        return redirect("runs:drafts", repository_id=repository.pk)
    made, problems = 0, []
    for sha in shas:
        try:
            drafts.draft_from_candidate(repository, sha)
            made += 1
        except drafts.DraftingError as exc:
            problems.append(str(exc))
    if made:
        messages.success(request, f"Drafted {made} prompt(s); proving them in the sandbox now.")
    for problem in problems:
        messages.error(request, problem)
    return redirect("runs:drafts", repository_id=repository.pk)


def _editor_context(draft: PromptDraft, form: DraftForm) -> dict:
    instructions = form["instructions"].value() or ""
    reference = draft.reference_patch
    quoted = set(drafts.quoted_lines(instructions, reference))
    return {
        "draft": draft,
        "form": form,
        "instruction_lines": [
            {"text": line, "quoted": index in quoted}
            for index, line in enumerate(instructions.splitlines())
        ],
        "quoted_count": len(quoted),
        "unmentioned": drafts.unmentioned_names(
            instructions, reference, drafts.hidden_test_sources(draft)
        ),
    }


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def draft_edit(request: HttpRequest, draft_id: int) -> HttpResponse:
    draft = _get_draft_for_admin(draft_id)
    form = DraftForm(request.POST or None, instance=draft)
    if request.method == "POST" and draft.prompt_id:
        messages.error(request, "This draft was accepted: edit its prompt instead.")
        return redirect(draft)
    if request.method == "POST" and form.is_valid():
        draft = form.save()
        if {"test_command", "hidden_tests_paths"} & set(form.changed_data):
            # What proved the draft changed: the proof no longer holds.
            drafts.request_proof(draft)
            messages.success(request, "Saved the draft; its tests changed, so it is proven again.")
            return redirect(draft)
        if request.POST.get("action") != "accept":
            messages.success(request, "Saved the draft.")
            return redirect(draft)
        prompt_set, key = form.cleaned_data["prompt_set"], form.cleaned_data["key"]
        if prompt_set is None or not key:
            form.add_error(None, "Pick a prompt set and a key to accept the draft.")
        else:
            try:
                prompt = drafts.accept_draft(draft, prompt_set, key, request.user)
            except ValidationError as exc:
                for message in exc.messages:
                    form.add_error(None, message)
            else:
                messages.success(request, f"Added {prompt.key} to {prompt_set.name}.")
                return redirect(prompt_set)
    status = 400 if request.method == "POST" else 200
    return render(request, "runs/drafts/draft.html", _editor_context(draft, form), status=status)


@role_required(ADMIN)
@require_POST
def draft_prove(request: HttpRequest, draft_id: int) -> HttpResponse:
    draft = _get_draft_for_admin(draft_id)
    if draft.prompt_id:
        messages.error(request, "This draft was accepted: its prompt is proven by its runs.")
        return redirect(draft)
    drafts.request_proof(draft)
    if request.htmx:
        return _draft_status(request, draft)
    messages.success(request, "Proving the draft again.")
    return redirect(draft)


@role_required(ADMIN)
@require_GET
def draft_status(request: HttpRequest, draft_id: int) -> HttpResponse:
    return _draft_status(request, _get_draft_for_admin(draft_id))


def _draft_status(request: HttpRequest, draft: PromptDraft) -> HttpResponse:
    return render(request, "runs/drafts/draft.html#draft-status", {"draft": draft})


urlpatterns = [
    path("repositories/<int:repository_id>/drafts/", draft_list, name="drafts"),
    path("repositories/<int:repository_id>/drafts/new/", draft_create, name="draft_create"),
    path("repositories/<int:repository_id>/drafts/fetch/", drafts_fetch, name="drafts_fetch"),
    path(
        "repositories/<int:repository_id>/drafts/settings/",
        drafting_settings,
        name="drafting_settings",
    ),
    path("drafts/<int:draft_id>/", draft_edit, name="draft"),
    path("drafts/<int:draft_id>/prove/", draft_prove, name="draft_prove"),
    path("drafts/<int:draft_id>/status/", draft_status, name="draft_status"),
]

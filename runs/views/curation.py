"""Curation (admin): repositories, prompt sets and prompts, models, contestants.

Prompt sets, prompts, models and contestants are archived, never deleted: runs point at them and
a campaign's results must stay readable. Background checks (repository fetch, model connection)
are enqueued by `runs.checks` and polled by small htmx fragments.
"""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.text import slugify
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from evalsite.roles import ADMIN, role_required
from runs import checks
from runs.files.contestants import export_contestants, import_contestants
from runs.files.prompt_sets import export_prompt_set, import_prompt_set
from runs.files.strict import FormatError
from runs.forms import (
    ContestantForm,
    LanguageModelForm,
    PromptForm,
    PromptSetForm,
    RepositoryForm,
    UploadForm,
)
from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository
from runs.templatetags.runs_tags import render_markdown

YAML_CONTENT_TYPE = "application/yaml; charset=utf-8"


# -- Access helpers: admins see every curated object; anything else is a 404 ------------------


def _get_prompt_set_for_admin(prompt_set_id: int) -> PromptSet:
    return get_object_or_404(PromptSet, pk=prompt_set_id)


def _get_prompt_for_admin(prompt_id: int) -> Prompt:
    return get_object_or_404(
        Prompt.objects.select_related("prompt_set", "repository"), pk=prompt_id
    )


def _get_repository_for_admin(repository_id: int) -> Repository:
    return get_object_or_404(Repository, pk=repository_id)


def _get_model_for_admin(model_id: int) -> LanguageModel:
    return get_object_or_404(LanguageModel, pk=model_id)


def _get_contestant_for_admin(contestant_id: int) -> Contestant:
    return get_object_or_404(Contestant.objects.select_related("model"), pk=contestant_id)


def _yaml_download(text: str, filename: str) -> HttpResponse:
    response = HttpResponse(text, content_type=YAML_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _import_file(request: HttpRequest, importer) -> list[str] | None:
    """Run `importer(text, filename=...)` on the uploaded file.

    Returns None on success (the report is queued as a message), else the error lines to show:
    nothing is stored when the file is invalid.
    """
    form = UploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return [error for errors in form.errors.values() for error in errors]
    upload = form.cleaned_data["file"]
    try:
        with transaction.atomic():
            report = importer(form.text, filename=upload.name)
    except FormatError as exc:
        return list(exc.errors) or [str(exc)]
    messages.success(request, "\n".join(report.lines()) or f"Imported {upload.name}.")
    return None


def _toggle_archived(request: HttpRequest, obj, label: str) -> None:
    obj.archived = not obj.archived
    obj.save(update_fields=["archived"])
    state = "archived" if obj.archived else "restored"
    messages.success(request, f"{label} {state}.")


# -- Prompt sets ---------------------------------------------------------------------------------


def _prompt_set_list(request: HttpRequest, import_errors: list[str] | None = None) -> HttpResponse:
    prompt_sets = PromptSet.objects.annotate(
        prompt_count=Count("prompts", filter=Q(prompts__archived=False), distinct=True),
        campaign_count=Count("campaigns", distinct=True),
    ).order_by("archived", "name")
    context = {
        "prompt_sets": prompt_sets,
        "upload_form": UploadForm(),
        "import_errors": import_errors or [],
    }
    return render(
        request, "runs/curation/prompt_sets.html", context, status=400 if import_errors else 200
    )


@role_required(ADMIN)
@require_GET
def prompt_set_list(request: HttpRequest) -> HttpResponse:
    return _prompt_set_list(request)


@role_required(ADMIN)
@require_POST
def prompt_set_import(request: HttpRequest) -> HttpResponse:
    errors = _import_file(request, import_prompt_set)
    if errors:
        return _prompt_set_list(request, import_errors=errors)
    return redirect("runs:prompt_sets")


@role_required(ADMIN)
@require_GET
def prompt_set_export(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = _get_prompt_set_for_admin(prompt_set_id)
    filename = f"{slugify(prompt_set.name) or 'prompt-set'}.yaml"
    return _yaml_download(export_prompt_set(prompt_set), filename)


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def prompt_set_create(request: HttpRequest) -> HttpResponse:
    form = PromptSetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        prompt_set = form.save()
        messages.success(request, f"Created prompt set {prompt_set.name}. Now add prompts.")
        return redirect(prompt_set)
    return render(request, "runs/curation/prompt_set_form.html", {"form": form})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def prompt_set_edit(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = _get_prompt_set_for_admin(prompt_set_id)
    form = PromptSetForm(request.POST or None, instance=prompt_set)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved prompt set {prompt_set.name}.")
        return redirect(prompt_set)
    context = {"form": form, "prompt_set": prompt_set}
    return render(request, "runs/curation/prompt_set_form.html", context)


@role_required(ADMIN)
@require_GET
def prompt_set_detail(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = _get_prompt_set_for_admin(prompt_set_id)
    prompts = list(prompt_set.prompts.select_related("repository").order_by("position", "id"))
    active = [p for p in prompts if not p.archived]
    context = {
        "prompt_set": prompt_set,
        "prompts": active,
        "archived_prompts": [p for p in prompts if p.archived],
        "campaign_count": prompt_set.campaigns.count(),
    }
    return render(request, "runs/curation/prompt_set.html", context)


@role_required(ADMIN)
@require_POST
def prompt_set_archive(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = _get_prompt_set_for_admin(prompt_set_id)
    _toggle_archived(request, prompt_set, f"Prompt set {prompt_set.name}")
    return redirect(prompt_set)


# -- Prompts -------------------------------------------------------------------------------------


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def prompt_create(request: HttpRequest, prompt_set_id: int) -> HttpResponse:
    prompt_set = _get_prompt_set_for_admin(prompt_set_id)
    form = PromptForm(request.POST or None, prompt_set=prompt_set)
    if request.method == "POST" and form.is_valid():
        prompt = form.save(commit=False)
        last = prompt_set.prompts.order_by("-position").values_list("position", flat=True).first()
        prompt.position = 0 if last is None else last + 1
        prompt.save()
        messages.success(request, f"Added prompt {prompt.key} at commit {prompt.commit[:12]}.")
        return redirect(prompt_set)
    return _prompt_form(request, form, prompt_set)


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def prompt_edit(request: HttpRequest, prompt_id: int) -> HttpResponse:
    prompt = _get_prompt_for_admin(prompt_id)
    prompt_set = prompt.prompt_set
    form = PromptForm(request.POST or None, instance=prompt, prompt_set=prompt_set)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved prompt {prompt.key}.")
        return redirect(prompt_set)
    return _prompt_form(request, form, prompt_set, prompt)


def _prompt_form(
    request: HttpRequest, form: PromptForm, prompt_set: PromptSet, prompt: Prompt | None = None
) -> HttpResponse:
    context = {
        "form": form,
        "prompt_set": prompt_set,
        "prompt": prompt,
        # Rendered on the server too, so the preview is there before any keystroke (or htmx).
        "html": render_markdown(form["instructions"].value() or ""),
    }
    return render(request, "runs/curation/prompt_form.html", context)


@role_required(ADMIN)
@require_POST
def prompt_move(request: HttpRequest, prompt_id: int) -> HttpResponse:
    """Swap the prompt with its neighbour among the set's active prompts.

    Positions are renumbered 0..n-1 on the way, so sets whose prompts all share position 0
    (made by hand or by an older import) still move predictably.
    """
    prompt = _get_prompt_for_admin(prompt_id)
    direction = request.POST.get("direction")
    if direction not in ("up", "down"):
        messages.error(request, "Move a prompt up or down.")
        return redirect(prompt.prompt_set)
    ordered = list(prompt.prompt_set.prompts.filter(archived=False).order_by("position", "id"))
    index = next((i for i, p in enumerate(ordered) if p.pk == prompt.pk), None)
    other = None if index is None else index + (-1 if direction == "up" else 1)
    if other is not None and 0 <= other < len(ordered):
        ordered[index], ordered[other] = ordered[other], ordered[index]
        for position, item in enumerate(ordered):
            item.position = position
        Prompt.objects.bulk_update(ordered, ["position"])
    return redirect(prompt.prompt_set)


@role_required(ADMIN)
@require_POST
def prompt_archive(request: HttpRequest, prompt_id: int) -> HttpResponse:
    prompt = _get_prompt_for_admin(prompt_id)
    _toggle_archived(request, prompt, f"Prompt {prompt.key}")
    return redirect(prompt.prompt_set)


@role_required(ADMIN)
@require_POST
def markdown_preview(request: HttpRequest) -> HttpResponse:
    """The sanitized rendering of the instructions being typed (an htmx fragment)."""
    html = render_markdown(request.POST.get("instructions", ""))
    return render(request, "runs/curation/prompt_form.html#instructions-preview", {"html": html})


# -- Repositories --------------------------------------------------------------------------------


@role_required(ADMIN)
@require_GET
def repository_list(request: HttpRequest) -> HttpResponse:
    repositories = Repository.objects.annotate(
        prompt_count=Count("prompts", filter=Q(prompts__archived=False))
    )
    return render(request, "runs/curation/repositories.html", {"repositories": repositories})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def repository_create(request: HttpRequest) -> HttpResponse:
    form = RepositoryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        repository = form.save()
        checks.request_repository_check(repository)
        messages.success(request, f"Added repository {repository.name}; checking it now.")
        return redirect("runs:repositories")
    return render(request, "runs/curation/repository_form.html", {"form": form})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def repository_edit(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = _get_repository_for_admin(repository_id)
    form = RepositoryForm(request.POST or None, instance=repository)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved repository {repository.name}.")
        return redirect("runs:repositories")
    context = {"form": form, "repository": repository}
    return render(request, "runs/curation/repository_form.html", context)


@role_required(ADMIN)
@require_POST
def repository_check(request: HttpRequest, repository_id: int) -> HttpResponse:
    repository = _get_repository_for_admin(repository_id)
    checks.request_repository_check(repository)
    if request.htmx:
        return _repository_status(request, repository)
    messages.success(request, f"Checking {repository.name}.")
    return redirect("runs:repositories")


@role_required(ADMIN)
@require_GET
def repository_status(request: HttpRequest, repository_id: int) -> HttpResponse:
    return _repository_status(request, _get_repository_for_admin(repository_id))


def _repository_status(request: HttpRequest, repository: Repository) -> HttpResponse:
    return render(
        request, "runs/curation/repositories.html#repository-status", {"repository": repository}
    )


# -- Models --------------------------------------------------------------------------------------


@role_required(ADMIN)
@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    models = LanguageModel.objects.annotate(contestant_count=Count("contestants")).order_by(
        "archived", "name"
    )
    return render(request, "runs/curation/models.html", {"models": models})


@role_required(ADMIN)
@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
def model_create(request: HttpRequest) -> HttpResponse:
    form = LanguageModelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        model = form.save()
        messages.success(request, f"Added model {model.name}. Test its connection from the list.")
        return redirect("runs:models")
    return render(request, "runs/curation/model_form.html", {"form": form})


@role_required(ADMIN)
@sensitive_post_parameters("api_key")
@require_http_methods(["GET", "POST"])
def model_edit(request: HttpRequest, model_id: int) -> HttpResponse:
    model = _get_model_for_admin(model_id)
    form = LanguageModelForm(request.POST or None, instance=model)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved model {model.name}.")
        return redirect("runs:models")
    context = {"form": form, "model": model}
    return render(request, "runs/curation/model_form.html", context)


@role_required(ADMIN)
@require_POST
def model_test(request: HttpRequest, model_id: int) -> HttpResponse:
    model = _get_model_for_admin(model_id)
    checks.request_model_connection_check(model)
    if request.htmx:
        return _model_status(request, model)
    messages.success(request, f"Testing {model.name}.")
    return redirect("runs:models")


@role_required(ADMIN)
@require_GET
def model_status(request: HttpRequest, model_id: int) -> HttpResponse:
    return _model_status(request, _get_model_for_admin(model_id))


def _model_status(request: HttpRequest, model: LanguageModel) -> HttpResponse:
    return render(request, "runs/curation/models.html#model-status", {"model": model})


@role_required(ADMIN)
@require_POST
def model_archive(request: HttpRequest, model_id: int) -> HttpResponse:
    model = _get_model_for_admin(model_id)
    _toggle_archived(request, model, f"Model {model.name}")
    return redirect("runs:models")


# -- Contestants ---------------------------------------------------------------------------------


def _contestant_list(request: HttpRequest, import_errors: list[str] | None = None) -> HttpResponse:
    contestants = Contestant.objects.select_related("model").order_by("archived", "name")
    context = {
        "contestants": contestants,
        "upload_form": UploadForm(),
        "import_errors": import_errors or [],
    }
    return render(
        request, "runs/curation/contestants.html", context, status=400 if import_errors else 200
    )


@role_required(ADMIN)
@require_GET
def contestant_list(request: HttpRequest) -> HttpResponse:
    return _contestant_list(request)


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def contestant_create(request: HttpRequest) -> HttpResponse:
    form = ContestantForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        contestant = form.save()
        messages.success(request, f"Added contestant {contestant.label}.")
        return redirect("runs:contestants")
    return render(request, "runs/curation/contestant_form.html", {"form": form})


@role_required(ADMIN)
@require_http_methods(["GET", "POST"])
def contestant_edit(request: HttpRequest, contestant_id: int) -> HttpResponse:
    contestant = _get_contestant_for_admin(contestant_id)
    form = ContestantForm(request.POST or None, instance=contestant)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Saved contestant {contestant.label}.")
        return redirect("runs:contestants")
    context = {"form": form, "contestant": contestant}
    return render(request, "runs/curation/contestant_form.html", context)


@role_required(ADMIN)
@require_POST
def contestant_archive(request: HttpRequest, contestant_id: int) -> HttpResponse:
    contestant = _get_contestant_for_admin(contestant_id)
    _toggle_archived(request, contestant, f"Contestant {contestant.label}")
    return redirect("runs:contestants")


@role_required(ADMIN)
@require_POST
def contestants_import(request: HttpRequest) -> HttpResponse:
    errors = _import_file(request, import_contestants)
    if errors:
        return _contestant_list(request, import_errors=errors)
    return redirect("runs:contestants")


@role_required(ADMIN)
@require_GET
def contestants_export(request: HttpRequest) -> HttpResponse:
    return _yaml_download(export_contestants(), "contestants.yaml")


urlpatterns = [
    path("prompt-sets/", prompt_set_list, name="prompt_sets"),
    path("prompt-sets/new/", prompt_set_create, name="prompt_set_create"),
    path("prompt-sets/import/", prompt_set_import, name="prompt_set_import"),
    path("prompt-sets/<int:prompt_set_id>/", prompt_set_detail, name="prompt_set"),
    path("prompt-sets/<int:prompt_set_id>/edit/", prompt_set_edit, name="prompt_set_edit"),
    path("prompt-sets/<int:prompt_set_id>/archive/", prompt_set_archive, name="prompt_set_archive"),
    path("prompt-sets/<int:prompt_set_id>/export/", prompt_set_export, name="prompt_set_export"),
    path("prompt-sets/<int:prompt_set_id>/prompts/new/", prompt_create, name="prompt_create"),
    path("prompts/<int:prompt_id>/edit/", prompt_edit, name="prompt_edit"),
    path("prompts/<int:prompt_id>/move/", prompt_move, name="prompt_move"),
    path("prompts/<int:prompt_id>/archive/", prompt_archive, name="prompt_archive"),
    path("markdown-preview/", markdown_preview, name="markdown_preview"),
    path("repositories/", repository_list, name="repositories"),
    path("repositories/new/", repository_create, name="repository_create"),
    path("repositories/<int:repository_id>/edit/", repository_edit, name="repository_edit"),
    path("repositories/<int:repository_id>/check/", repository_check, name="repository_check"),
    path("repositories/<int:repository_id>/status/", repository_status, name="repository_status"),
    path("models/", model_list, name="models"),
    path("models/new/", model_create, name="model_create"),
    path("models/<int:model_id>/edit/", model_edit, name="model_edit"),
    path("models/<int:model_id>/test/", model_test, name="model_test"),
    path("models/<int:model_id>/status/", model_status, name="model_status"),
    path("models/<int:model_id>/archive/", model_archive, name="model_archive"),
    path("contestants/", contestant_list, name="contestants"),
    path("contestants/new/", contestant_create, name="contestant_create"),
    path("contestants/import/", contestants_import, name="contestants_import"),
    path("contestants/export/", contestants_export, name="contestants_export"),
    path("contestants/<int:contestant_id>/edit/", contestant_edit, name="contestant_edit"),
    path("contestants/<int:contestant_id>/archive/", contestant_archive, name="contestant_archive"),
]

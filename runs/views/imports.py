"""Import a run produced elsewhere: a patch or a branch, and the agent's transcript if there is one."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from evalsite.roles import LEAD, role_required
from runs import imports
from runs.models import Prompt, RunImport


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input (Roo Code's task folder has two)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class ImportRunForm(forms.Form):
    prompt = forms.ModelChoiceField(
        queryset=Prompt.objects.filter(archived=False, prompt_set__archived=False)
        .select_related("prompt_set")
        .order_by("prompt_set__name", "position", "id"),
    )
    contestant = forms.CharField(
        max_length=100,
        help_text="An existing contestant, or a new name: it is created as an imported contestant",
    )
    campaign = forms.CharField(
        max_length=200,
        required=False,
        help_text=f"Default: “{imports.DEFAULT_CAMPAIGN_NAME}” of the prompt's set",
    )
    patch = forms.FileField(
        required=False, help_text="A unified diff, as git diff writes it; or give a branch"
    )
    branch = forms.CharField(
        max_length=250,
        required=False,
        help_text="A branch of the prompt's repository, compared with the prompt's commit",
    )
    transcripts = MultipleFileField(
        required=False,
        label="Transcript files",
        help_text="Optional: ATIF JSON, .aider.chat.history.md, a mini-swe-agent trajectory, "
        "or Roo Code's api_conversation_history.json and ui_messages.json",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["prompt"].label_from_instance = lambda p: (
            f"{p.prompt_set.name} / {p.key}: {p.title}"
        )

    def clean(self) -> dict:
        data = super().clean()
        if bool(data.get("patch")) == bool((data.get("branch") or "").strip()):
            raise forms.ValidationError("Give either a patch file or a branch name.")
        return data


def _read(upload: UploadedFile, limit: int, *, exact_bytes: bool = False) -> str:
    if upload.size is not None and upload.size > limit:
        raise imports.ImportProblem(f"{upload.name}: larger than {limit // (1024 * 1024)} MB.")
    data = upload.read()
    # A patch must reach git byte for byte (a latin-1 source file stays latin-1); transcripts are
    # text we display, so undecodable bytes become replacement characters.
    return data.decode("utf-8", "surrogateescape" if exact_bytes else "replace")


@role_required(LEAD)
@require_http_methods(["GET", "POST"])
def run_import(request: HttpRequest) -> HttpResponse:
    form = ImportRunForm(request.POST or None, request.FILES or None)
    if request.method == "POST":
        if form.is_valid():
            try:
                job = _queue(request, form.cleaned_data)
            except imports.ImportProblem as exc:
                form.add_error(None, str(exc))
            else:
                return redirect(job)
        return render(request, "runs/run_import.html", {"form": form}, status=400)
    return render(request, "runs/run_import.html", {"form": form})


@role_required(LEAD)
@require_GET
def run_import_status(request: HttpRequest, import_id: int) -> HttpResponse:
    """Where an import goes after the form: follows the worker, then leads on to the run."""
    job = get_object_or_404(
        RunImport.objects.select_related("prompt__prompt_set", "run", "created_by"), pk=import_id
    )
    if job.status == RunImport.DONE and job.run is not None:
        run = job.run
        outcome = "tests failed" if run.status == run.FAILED else run.status
        messages.success(request, f"Imported run {run.pk}: {outcome}.")
        if request.htmx:
            return HttpResponseClientRedirect(run.get_absolute_url())
        return redirect(run)
    template = "runs/run_import_status.html"
    if request.htmx:
        template += "#import-status"
    return render(request, template, {"job": job})


def _queue(request: HttpRequest, data: dict) -> RunImport:
    patch = None
    if data["patch"]:
        patch = _read(data["patch"], imports.MAX_PATCH_BYTES, exact_bytes=True)
    transcript_name, transcript_text, extra_files = "", None, {}
    if data["transcripts"]:
        files = {
            upload.name: _read(upload, imports.MAX_TRANSCRIPT_BYTES)
            for upload in data["transcripts"]
        }
        transcript_name, transcript_text, extra_files = imports.split_transcript_files(files)
    return imports.queue_import(
        campaign_name=data["campaign"],
        prompt=data["prompt"],
        contestant_name=data["contestant"],
        patch=patch,
        patch_name=data["patch"].name if data["patch"] else "",
        branch=data["branch"] or None,
        transcript_text=transcript_text,
        transcript_filename=transcript_name,
        extra_files=extra_files,
        user=request.user,
    )


urlpatterns = [
    path("runs/import/", run_import, name="run_import"),
    path("runs/import/<int:import_id>/", run_import_status, name="run_import_status"),
]

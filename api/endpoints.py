"""The token API under /api/ (django-ninja): what CI scripts do without a browser.

Each operation does what its page does, through the same functions and forms: prompt-set and
contestants files (runs.files), launching (runs.campaigns via CampaignForm), results
(scoring.exports), importing runs (runs.imports), the leaderboard (scoring.leaderboard), series
and schedules (api.series). Each requires the role its page requires. Every error is JSON:
``{"errors": [{"field": ..., "message": ...}]}``.
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_not_required
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import File, Form, NinjaAPI, Status
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.files import UploadedFile as NinjaUploadedFile

from api import series as series_workflows
from api.auth import ApiError, RateLimited, TokenAuth, error_response, schema_access
from api.forms import RerunForm, ScheduleForm
from api.models import Series, SeriesCampaign
from api.schemas import (
    CampaignIn,
    CampaignOut,
    Errors,
    ImportOut,
    ImportReport,
    Me,
    RerunIn,
    ScheduleIn,
    ScheduleOut,
)
from evalsite.roles import ADMIN, LEAD, SCORER, role_of
from runs import campaigns as campaign_workflows
from runs import imports
from runs.files.contestants import export_contestants, import_contestants
from runs.files.prompt_sets import export_prompt_set, import_prompt_set
from runs.files.strict import FormatError
from runs.forms import UPLOAD_LIMIT
from runs.models import Campaign, Contestant, Prompt, PromptSet, Run, RunImport
from runs.views.campaigns import CampaignForm
from scoring import exports, leaderboard
from scoring.leaderboard import export
from scoring.views.leaderboard import LeaderboardFilterForm

YAML = "application/yaml; charset=utf-8"
YAML_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/yaml": {"schema": {"type": "string", "format": "binary"}}},
    }
}
ERRORS = {400: Errors, 401: Errors, 403: Errors, 404: Errors, 429: Errors}

api = NinjaAPI(
    title="Mergeable",
    version="1",
    description=(
        "Send `Authorization: Bearer <token>` with every request; make a token on your API "
        "tokens page. A token acts with its user's role. Errors are "
        '`{"errors": [{"field": …, "message": …}]}`; past the rate limit, 429 with Retry-After.'
    ),
    urls_namespace="api-v1",
    docs_url=None,
    docs_decorator=schema_access,
)


def operation(method: str, path: str, role: str, **options):
    """Register an operation that needs a token whose user holds at least `role` (the role of
    the matching page); its OpenAPI description says which."""

    def decorator(function):
        function.__doc__ = f"{(function.__doc__ or '').strip()}\n\nNeeds the **{role}** role."
        return api.api_operation([method], path, auth=TokenAuth(role), **options)(function)

    return decorator


# -- Errors --------------------------------------------------------------------------------------


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(exc.status, exc.errors)


@api.exception_handler(RateLimited)
def _rate_limited(request: HttpRequest, exc: RateLimited) -> HttpResponse:
    return error_response(
        429, [{"field": None, "message": str(exc)}], headers={"Retry-After": str(exc.retry_after)}
    )


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    message = "Send a valid token: Authorization: Bearer <token> (it may have been revoked)."
    return error_response(401, [{"field": "Authorization", "message": message}])


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(exc.status_code, [{"field": None, "message": exc.message}])


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Pydantic's errors, each named by its field: `loc` is (where, [schema,] field, …)."""
    errors = []
    for error in exc.errors:
        location = [str(part) for part in error.get("loc", ())]
        # ("body", "payload", "repeats") -> "repeats"; ("query", "transcripts") -> "transcripts"
        names = location[2:] if len(location) > 2 and location[0] == "body" else location[1:]
        errors.append({"field": ".".join(names) or None, "message": error.get("msg", "invalid")})
    return error_response(400, errors)


def _form_errors(form) -> ApiError:
    return ApiError.for_fields(
        400,
        [
            {"field": None if name == "__all__" else name, "message": message}
            for name, messages in form.errors.items()
            for message in messages
        ],
    )


def _not_found(what: str, field: str) -> ApiError:
    return ApiError(404, f"No {what}.", field)


# -- Who am I ------------------------------------------------------------------------------------


@operation("GET", "/me", SCORER, response={200: Me, **ERRORS}, summary="The token's user and role")
def me(request: HttpRequest):
    """Check a token: whose it is and the role it acts with."""
    return {
        "username": request.user.get_username(),
        "role": role_of(request.user),
        "token_name": request.auth.name,
        "token_prefix": request.auth.prefix,
    }


# -- Files: prompt sets and contestants ----------------------------------------------------------


def _yaml_body(request: HttpRequest) -> str:
    if len(request.body) > UPLOAD_LIMIT:
        raise ApiError(400, f"The file is larger than {UPLOAD_LIMIT // (1024 * 1024)} MB.", "body")
    try:
        return request.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The file is not UTF-8 text.", "body") from None


def _import(importer, request: HttpRequest, filename: str) -> dict:
    """Run a file importer (all or nothing), its problems as errors naming entry and field."""
    text = _yaml_body(request)
    try:
        report = importer(text, filename=filename)
    except FormatError as exc:
        errors = []
        for line in exc.errors:
            # FILE: ENTRY: FIELD: message (runs/files/strict.py); YAML syntax errors name no field.
            parts = line.removeprefix(f"{filename}: ").split(": ", 2)
            if len(parts) == 3 and "invalid YAML" not in parts[:2]:
                errors.append({"field": parts[1], "message": f"{parts[0]}: {parts[2]}"})
            else:
                errors.append({"field": "body", "message": ": ".join(parts)})
        raise ApiError.for_fields(400, errors) from None
    return {
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "archived": report.archived,
        "changes": report.changes,
        "summary": report.summary(),
    }


def _yaml_response(text: str) -> HttpResponse:
    response = HttpResponse(text, content_type=YAML)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@operation(
    "POST",
    "/prompt-sets/import",
    ADMIN,
    response={200: ImportReport, **ERRORS},
    openapi_extra=YAML_BODY,
    summary="Import a prompt-set file",
)
def prompt_set_import(request: HttpRequest, filename: str = "prompt-set.yaml"):
    """Create or update a prompt set from a prompt-set YAML file sent as the request body
    (FORMATS.md), as `import_prompt_set` does. Nothing is stored if the file has any problem;
    `filename` only names the file in error messages."""
    return _import(import_prompt_set, request, filename)


@operation(
    "GET",
    "/prompt-sets/{name}/export",
    ADMIN,
    response={200: str, **ERRORS},
    summary="Export a prompt set",
)
def prompt_set_export(request: HttpRequest, name: str):
    """The prompt set as a prompt-set YAML file; importing it again changes nothing."""
    prompt_set = PromptSet.objects.filter(name=name).first()
    if prompt_set is None:
        raise _not_found(f"prompt set is named {name!r}", "name")
    return _yaml_response(export_prompt_set(prompt_set))


@operation(
    "POST",
    "/contestants/import",
    ADMIN,
    response={200: ImportReport, **ERRORS},
    openapi_extra=YAML_BODY,
    summary="Import a contestants file",
)
def contestants_import(request: HttpRequest, filename: str = "contestants.yaml"):
    """Create or update models and contestants from a contestants YAML file sent as the request
    body, as `import_contestants` does. Scripted models' `script` paths are relative to the
    project, as for an upload."""
    return _import(import_contestants, request, filename)


@operation(
    "GET", "/contestants/export", ADMIN, response={200: str, **ERRORS}, summary="Export contestants"
)
def contestants_export(request: HttpRequest, names: str = ""):
    """A contestants YAML file for the comma-separated `names` (default: every active one) and
    their models. API keys are never included; api_key_env is."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    contestants = None
    if wanted:
        contestants = list(Contestant.objects.filter(name__in=wanted).select_related("model"))
        missing = sorted(set(wanted) - {c.name for c in contestants})
        if missing:
            raise _not_found(f"contestant is named {', '.join(missing)}", "names")
    return _yaml_response(export_contestants(contestants))


# -- Campaigns -----------------------------------------------------------------------------------


def _campaign_for_lead(campaign_id: int) -> Campaign:
    campaign = Campaign.objects.select_related("prompt_set").filter(pk=campaign_id).first()
    if campaign is None:
        raise _not_found(f"campaign {campaign_id}", "campaign_id")
    return campaign


def _campaign_out(request: HttpRequest, campaign: Campaign) -> dict:
    runs = list(
        campaign.runs.select_related("prompt", "contestant").order_by(
            "prompt__position", "prompt_id", "contestant__name", "repeat"
        )
    )
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    link = SeriesCampaign.objects.filter(campaign=campaign).values_list("series_id", flat=True)
    return {
        "id": campaign.pk,
        "name": campaign.name,
        "prompt_set": campaign.prompt_set.name,
        "contestants": sorted(campaign.contestants.values_list("name", flat=True)),
        "repeats": campaign.repeats,
        "reviews_wanted": campaign.reviews_wanted,
        "state": campaign.state,
        "created_at": campaign.created_at,
        "url": request.build_absolute_uri(campaign.get_absolute_url()),
        "series": link.first(),
        "progress": {
            "total": len(runs),
            "ended": sum(run.status in Run.ENDED_STATUSES for run in runs),
            "counts": counts,
        },
        "runs": [
            {
                "id": run.pk,
                "prompt": run.snapshot.get("prompt", {}).get("key") or run.prompt.key,
                "contestant": run.contestant.name,
                "repeat": run.repeat,
                "status": run.status,
                "agent_status": run.agent_status,
                "cost_usd": run.cost_usd,
                "duration_s": run.duration_s,
                "tests_passed": run.tests_ok,
            }
            for run in runs
        ],
    }


@operation(
    "POST", "/campaigns", LEAD, response={201: CampaignOut, **ERRORS}, summary="Launch a campaign"
)
def campaign_launch(request: HttpRequest, payload: CampaignIn):
    """Launch a campaign: the prompt set × contestants × repeats, one run each, queued at once.
    Checked as the launch form checks it (an active prompt set, active contestants, repeats 1 to
    20, reviews wanted 1 to 10, a positive budget)."""
    errors = []
    prompt_set = PromptSet.objects.filter(name=payload.prompt_set).first()
    if prompt_set is None:
        errors.append(
            {"field": "prompt_set", "message": f"No prompt set is named {payload.prompt_set!r}."}
        )
    found = dict(Contestant.objects.filter(name__in=payload.contestants).values_list("name", "pk"))
    missing = [name for name in payload.contestants if name not in found]
    if missing:
        errors.append(
            {"field": "contestants", "message": f"Unknown contestants: {', '.join(missing)}."}
        )
    if errors:
        raise ApiError.for_fields(400, errors)
    form = CampaignForm(
        {
            "name": payload.name,
            "prompt_set": prompt_set.pk,
            "contestants": [found[name] for name in payload.contestants],
            "repeats": payload.repeats,
            "reviews_wanted": payload.reviews_wanted,
            "budget_usd": "" if payload.budget_usd is None else payload.budget_usd,
        }
    )
    if not form.is_valid():
        raise _form_errors(form)
    data = form.cleaned_data
    try:
        campaign = campaign_workflows.launch(
            prompt_set=data["prompt_set"],
            contestants=[Contestant.objects.get(pk=found[name]) for name in payload.contestants],
            repeats=data["repeats"],
            name=data["name"],
            created_by=request.user,
            budget_usd=data["budget_usd"],
            reviews_wanted=data["reviews_wanted"],
        )
    except campaign_workflows.LaunchError as exc:
        raise ApiError(400, str(exc)) from None
    return Status(201, _campaign_out(request, campaign))


@operation(
    "GET",
    "/campaigns/{campaign_id}",
    LEAD,
    response={200: CampaignOut, **ERRORS},
    summary="A campaign's status",
)
def campaign_status(request: HttpRequest, campaign_id: int):
    """The campaign, its progress and every run's status."""
    return _campaign_out(request, _campaign_for_lead(campaign_id))


@operation(
    "GET",
    "/campaigns/{campaign_id}/results",
    LEAD,
    response={200: dict, **ERRORS},
    summary="A campaign's results",
)
def campaign_results(request: HttpRequest, campaign_id: int, transcripts: bool = False):
    """The campaign's results as `export_results --format json` writes them (FORMATS.md):
    runs with their reviews, comparisons and the leaderboard with intervals."""
    document = exports.results(_campaign_for_lead(campaign_id), transcripts=transcripts)
    return HttpResponse(json.dumps(document, default=str), content_type="application/json")


@operation(
    "POST",
    "/campaigns/{campaign_id}/rerun",
    LEAD,
    response={201: CampaignOut, **ERRORS},
    summary="Re-run with another model",
)
def campaign_rerun(request: HttpRequest, campaign_id: int, payload: RerunIn):
    """A new campaign like this one, with one contestant's model swapped: the same agent
    (harness, options, limits) driving `model`. It joins this campaign's series."""
    campaign = _campaign_for_lead(campaign_id)
    form = RerunForm(payload.model_dump(), campaign=campaign)
    if not form.is_valid():
        raise _form_errors(form)
    try:
        clone = series_workflows.rerun_with_model(
            campaign,
            contestant=form.cleaned_data["contestant"],
            model=form.cleaned_data["model"],
            user=request.user,
        )
    except series_workflows.SeriesError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    return Status(201, _campaign_out(request, clone))


def _schedule_out(series: Series) -> dict:
    return {
        "series": series.pk,
        "name": series.name,
        "schedule": series.schedule_text,
        "template_campaign": series.template_id,
        "campaigns": list(series.members.values_list("campaign_id", flat=True)),
        "last_error": series.last_error,
    }


@operation(
    "PUT",
    "/campaigns/{campaign_id}/schedule",
    LEAD,
    response={200: ScheduleOut, **ERRORS},
    summary="Put a campaign on a schedule",
)
def campaign_schedule(request: HttpRequest, campaign_id: int, payload: ScheduleIn):
    """Re-run this campaign every `every_weeks` weeks, or on the `cron` expression, each time as
    a new campaign of its series (same prompt set, contestants and repeats). Replaces the
    series' previous schedule."""
    campaign = _campaign_for_lead(campaign_id)
    form = ScheduleForm(payload.model_dump())
    if not form.is_valid():
        raise _form_errors(form)
    try:
        series = series_workflows.schedule(
            campaign,
            every_weeks=form.cleaned_data["every_weeks"],
            cron=form.cleaned_data["cron"],
            user=request.user,
        )
    except series_workflows.SeriesError as exc:
        raise ApiError(400, str(exc), exc.field) from None
    return _schedule_out(series)


@operation(
    "DELETE",
    "/campaigns/{campaign_id}/schedule",
    LEAD,
    response={200: ScheduleOut, **ERRORS},
    summary="Stop a campaign's schedule",
)
def campaign_unschedule(request: HttpRequest, campaign_id: int):
    """Stop re-running the campaign's series; its campaigns stay."""
    campaign = _campaign_for_lead(campaign_id)
    link = (
        SeriesCampaign.objects.select_related("series__periodic_task")
        .filter(campaign=campaign)
        .first()
    )
    if link is None or not series_workflows.unschedule(link.series):
        raise ApiError(404, "This campaign's series has no schedule.", "campaign_id")
    return _schedule_out(link.series)


@operation(
    "GET", "/series/{series_id}", LEAD, response={200: dict, **ERRORS}, summary="A series over time"
)
def series_history(request: HttpRequest, series_id: int):
    """The series' campaigns, oldest first, and per contestant the merge rate in each with its
    95% interval (null where it has no counted run)."""
    series = Series.objects.select_related("template", "periodic_task").filter(pk=series_id).first()
    if series is None:
        raise _not_found(f"series {series_id}", "series_id")
    document = {**_schedule_out(series), **series_workflows.history(series)}
    return HttpResponse(json.dumps(document, default=str), content_type="application/json")


# -- Imported runs -------------------------------------------------------------------------------


def _import_out(request: HttpRequest, job: RunImport) -> dict:
    return {
        "id": job.pk,
        "status": job.status,
        "error": job.error,
        "run": job.run_id,
        "url": request.build_absolute_uri(reverse("api-v1:run_import_status", args=[job.pk])),
    }


def _read(upload: UploadedFile, limit: int, field: str, *, exact_bytes: bool = False) -> str:
    if upload.size is not None and upload.size > limit:
        raise ApiError(400, f"{upload.name}: larger than {limit // (1024 * 1024)} MB.", field)
    # A patch reaches git byte for byte; transcripts are text to display.
    return upload.read().decode("utf-8", "surrogateescape" if exact_bytes else "replace")


@operation(
    "POST", "/runs/import", LEAD, response={202: ImportOut, **ERRORS}, summary="Import a run"
)
def run_import(
    request: HttpRequest,
    prompt_set: Form[str],
    prompt: Form[str],
    contestant: Form[str],
    campaign: Form[str] = "",
    branch: Form[str] = "",
    patch: File[NinjaUploadedFile] = None,
    transcripts: File[list[NinjaUploadedFile]] = None,
):
    """Import a run produced elsewhere (multipart form): a `patch` file or a `branch` of the
    prompt's repository, and optionally its `transcripts` (ATIF JSON, an aider chat history, a
    mini-swe-agent trajectory, Roo Code's task files). Checked at once; a worker then applies
    and tests it: follow `url` until `status` is done (then `run` is its id) or failed."""
    found = (
        Prompt.objects.select_related("prompt_set", "repository")
        .filter(prompt_set__name=prompt_set, key=prompt, archived=False)
        .first()
    )
    if found is None:
        raise ApiError(400, f"No prompt {prompt!r} in a prompt set named {prompt_set!r}.", "prompt")
    if (patch is None) == (not branch.strip()):
        raise ApiError(400, "Give either a patch file or a branch name.", "patch")
    patch_text = None
    if patch is not None:
        patch_text = _read(patch, imports.MAX_PATCH_BYTES, "patch", exact_bytes=True)
    transcript_name, transcript_text, extra_files = "", None, {}
    if transcripts:
        files = {u.name: _read(u, imports.MAX_TRANSCRIPT_BYTES, "transcripts") for u in transcripts}
        transcript_name, transcript_text, extra_files = imports.split_transcript_files(files)
    try:
        job = imports.queue_import(
            campaign_name=campaign,
            prompt=found,
            contestant_name=contestant,
            patch=patch_text,
            patch_name=patch.name if patch is not None else "",
            branch=branch or None,
            transcript_text=transcript_text,
            transcript_filename=transcript_name,
            extra_files=extra_files,
            user=request.user,
        )
    except imports.ImportProblem as exc:
        message = str(exc)
        raise ApiError(
            400, message, _import_problem_field(message, [u.name for u in transcripts or []])
        ) from None
    return Status(202, _import_out(request, job))


def _import_problem_field(message: str, transcript_names: list[str]) -> str:
    """Which field an ImportProblem from the checks done at once is about. Its messages name
    the contestant or campaign name, start with a transcript's file name, or are the change's."""
    lowered = message.lower()
    if "contestant" in lowered:
        return "contestant"
    if "campaign name" in lowered:
        return "campaign"
    if any(message.startswith(name) for name in transcript_names):
        return "transcripts"
    return "branch" if "branch" in lowered else "patch"


@operation(
    "GET",
    "/runs/import/{import_id}",
    LEAD,
    response={200: ImportOut, **ERRORS},
    summary="An import's status",
)
def run_import_status(request: HttpRequest, import_id: int):
    """Queued, running, done (with the run's id) or failed (with the reason)."""
    job = RunImport.objects.filter(pk=import_id).first()
    if job is None:
        raise _not_found(f"import {import_id}", "import_id")
    return _import_out(request, job)


# -- Leaderboard ---------------------------------------------------------------------------------


@operation("GET", "/leaderboard", LEAD, response={200: dict, **ERRORS}, summary="The leaderboard")
def leaderboard_json(
    request: HttpRequest,
    campaign: str | None = None,
    prompt_set: str | None = None,
    tag: str = "",
    date_from: str = "",
    date_to: str = "",
    verdict: str = "",
    errored: str = "",
):
    """The leaderboard as the page's JSON export gives it: one row per contestant with its merge
    rate and 95% interval, ranks, tags, reviewer agreement and predictors. Takes the page's
    filters (ids for `campaign` and `prompt_set`); with no `campaign`, the latest campaign that
    has reviews, as the page shows; `campaign=` (empty) for all campaigns."""
    data = request.GET.copy()
    if "campaign" not in data:
        latest = leaderboard.latest_campaign_with_reviews()
        data["campaign"] = str(latest.pk) if latest else ""
    form = LeaderboardFilterForm(data)
    if not form.is_valid():
        raise _form_errors(form)
    filters = form.filters()
    payload = export.payload(filters, leaderboard.board(filters))
    return HttpResponse(json.dumps(payload, default=str), content_type="application/json")


# -- URLs ----------------------------------------------------------------------------------------


def urls():
    """The API's URL patterns. Each answers for itself (a token, or 401 JSON), so Django's
    LoginRequiredMiddleware must not send API clients to the login page."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        login_not_required(pattern.callback)
    return patterns, app_name, namespace

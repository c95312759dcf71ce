"""The token API's request and response shapes (pydantic, through django-ninja).

These check types only. What a value may be (repeats between 1 and 20, an active prompt set, a
valid cron expression) is decided by the forms and workflows the pages use, so the API and the
pages cannot disagree.
"""

from datetime import datetime

from ninja import Schema
from pydantic import Field

# Not `from __future__ import annotations`: ninja and pydantic read these annotations at runtime.


class ErrorItem(Schema):
    field: str | None = Field(description="The field the error is about; null for the request.")
    message: str


class Errors(Schema):
    errors: list[ErrorItem]


class Me(Schema):
    username: str
    role: str | None
    token_name: str
    token_prefix: str


class ImportReport(Schema):
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    archived: list[str]
    changes: dict[str, list[str]]
    summary: str


class CampaignIn(Schema):
    prompt_set: str = Field(description="The prompt set's name.")
    contestants: list[str] = Field(description="Contestant names.")
    repeats: int = 1
    name: str = ""
    reviews_wanted: int = 2
    budget_usd: float | None = None


class RerunIn(Schema):
    contestant: str = Field(description="The contestant of this campaign to replace.")
    model: str = Field(description="The model it drives in the new campaign.")


class ScheduleIn(Schema):
    every_weeks: int | None = Field(None, description="Re-run every N weeks (1 to 52).")
    cron: str = Field("", description="Or a cron expression, in the site's time zone.")


class RunOut(Schema):
    id: int
    prompt: str
    contestant: str
    repeat: int
    status: str
    agent_status: str
    cost_usd: float
    duration_s: float | None
    tests_passed: bool | None


class Progress(Schema):
    total: int
    ended: int
    counts: dict[str, int]


class CampaignOut(Schema):
    id: int
    name: str
    prompt_set: str
    contestants: list[str]
    repeats: int
    reviews_wanted: int
    state: str
    created_at: datetime
    url: str
    series: int | None
    progress: Progress
    runs: list[RunOut]


class ScheduleOut(Schema):
    series: int
    name: str
    schedule: str
    template_campaign: int
    campaigns: list[int]
    last_error: str


class ImportOut(Schema):
    id: int
    status: str
    error: str
    run: int | None
    url: str

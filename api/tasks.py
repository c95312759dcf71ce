"""Thin Celery tasks: take ids, call `api.series`. Beat sends `rerun_series` by this name (the
name is stored in each schedule's row, so renaming it would orphan every schedule)."""

from __future__ import annotations

from celery import shared_task

from api import series


@shared_task(name="api.tasks.rerun_series", ignore_result=True)
def rerun_series(series_id: int) -> None:
    series.rerun(series_id)

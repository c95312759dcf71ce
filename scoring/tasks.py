"""Thin Celery tasks of scoring: take ids, call a plain function (sent by `runs.enqueue`)."""

from __future__ import annotations

from celery import shared_task

from scoring import judge


@shared_task(ignore_result=True)
def judge_run(judge_review_id: int) -> None:
    judge.judge_run(judge_review_id)


@shared_task(ignore_result=True)
def judge_new_runs() -> None:
    judge.queue_new_runs()

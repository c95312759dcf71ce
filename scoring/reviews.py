"""Saving a review: drafts, validation against the run's rubric, and submitting.

What the review page shows is scoring.review_page; this module only writes.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from runs import diffs
from runs.models import Run
from scoring import queue
from scoring.models import VERDICTS, Criterion, Review, ReviewVersion
from scoring.review_page import MERGE_KEY, criteria_for_run

VERDICT_VALUES = {value for value, _ in VERDICTS}
MAX_LINE_COMMENTS = 500
MAX_COMMENT_CHARS = 5_000
MAX_NOTES_CHARS = 50_000
MAX_TIME_SPENT_S = 7 * 24 * 3600


class ReviewInvalid(ValueError):
    """A submitted review that does not fit the rubric; ``errors`` maps a field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = errors


# --- drafts and submission -----------------------------------------------------------------------


def clean_line_comments(value: Any) -> list[dict]:
    """Line comments from the form (a list or its JSON): [{path, line, side, text}], bounded."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            raise ReviewInvalid({"line_comments": "Line comments are not valid JSON."}) from None
    if not isinstance(value, list):
        raise ReviewInvalid({"line_comments": "Line comments must be a list."})
    comments = []
    for item in value[:MAX_LINE_COMMENTS]:
        if not isinstance(item, dict):
            continue
        text = diffs.strip_control(str(item.get("text") or "")).strip()[:MAX_COMMENT_CHARS]
        try:
            line = int(item.get("line"))
        except (TypeError, ValueError):
            continue
        side = item.get("side") if item.get("side") in ("old", "new") else "new"
        path = diffs.strip_control(str(item.get("path") or ""))[:1000]
        if text and path and line > 0:
            comments.append({"path": path, "line": line, "side": side, "text": text})
    return comments


def _clean_time(value: Any) -> int:
    try:
        return max(0, min(int(value or 0), MAX_TIME_SPENT_S))
    except (TypeError, ValueError):
        return 0


def _valid_answers(criteria: list[Criterion], answers: dict) -> dict[str, str]:
    """Only answers that are options of an applicable criterion (drafts keep what fits)."""
    allowed = {c.key: {v for v, _ in c.options()} for c in criteria}
    return {
        key: str(value)
        for key, value in (answers or {}).items()
        if key in allowed and str(value) in allowed[key]
    }


def clean_acceptance(run: Run, value: Any) -> list[str]:
    """The acceptance criteria ticked, from their 1-based positions in the run's prompt, as the
    criteria's own text (so the list still reads right if the prompt set is edited later)."""
    criteria = [str(c) for c in (run.snapshot.get("prompt") or {}).get("acceptance_criteria") or []]
    if isinstance(value, str | int):
        value = [value]
    ticked = set()
    for item in value if isinstance(value, list | tuple) else []:
        try:
            ticked.add(int(item))
        except (TypeError, ValueError):
            continue
    return [text for index, text in enumerate(criteria, start=1) if index in ticked]


def save_draft(run: Run, user, data: dict) -> Review:
    """Keep what the reviewer has entered so far. A submitted review is never overwritten by a
    draft: changing it goes through ``submit_review``, which keeps a version."""
    criteria = criteria_for_run(run)
    with transaction.atomic():
        # A draft racing a submit can never un-submit it, nor make the row it is about to insert.
        queue.lock(run)
        review, _ = Review.objects.select_for_update().get_or_create(run=run, reviewer=user)
        if review.is_submitted:
            return review
        _apply_draft(run, review, criteria, data)
        review.save()
    return review


def _apply_draft(run: Run, review: Review, criteria, data: dict) -> None:
    answers = _valid_answers(criteria, data.get("answers") or {})
    verdict = str(data.get("verdict") or answers.get(MERGE_KEY) or "")
    try:
        comments = clean_line_comments(data.get("line_comments", []))
    except ReviewInvalid:
        comments = review.line_comments
    review.answers = answers
    review.verdict = verdict if verdict in VERDICT_VALUES else ""
    review.notes = diffs.strip_control(str(data.get("notes") or ""))[:MAX_NOTES_CHARS]
    review.line_comments = comments
    review.acceptance_met = clean_acceptance(run, data.get("acceptance", []))
    review.time_spent_s = max(review.time_spent_s, _clean_time(data.get("time_spent_s")))


def submit_review(
    run: Run,
    user,
    answers: dict,
    verdict: str,
    notes: str,
    line_comments: Any,
    time_spent_s: Any,
    acceptance: Any = (),
) -> Review:
    """Validate a review against the run's rubric and submit it.

    Every applicable criterion needs an answer among its options (N/A where the criterion may
    not apply). The "merge" criterion's answer is the verdict (either may be given; if both,
    they must agree). ``acceptance`` lists the 1-based positions of the acceptance criteria the
    reviewer ticked. Resubmitting a changed review keeps the previous submitted state as a
    ReviewVersion. Raises ``ReviewInvalid``, or ``queue.NoPlaceLeft`` for a first review of a
    run that has all the reviews it wants.
    """
    criteria = criteria_for_run(run)
    answers = {k: str(v) for k, v in (answers or {}).items() if v not in (None, "")}
    verdict = str(verdict or "")
    errors: dict[str, str] = {}
    if any(c.key == MERGE_KEY for c in criteria):
        merge_answer = answers.get(MERGE_KEY, "")
        if verdict and merge_answer and verdict != merge_answer:
            errors[MERGE_KEY] = "The verdict and the merge answer disagree."
        verdict = verdict or merge_answer
        if verdict:
            answers[MERGE_KEY] = verdict
    for criterion in criteria:
        value = answers.get(criterion.key)
        if value is None:
            errors.setdefault(criterion.key, "Please answer this.")
        elif value not in {v for v, _ in criterion.options()}:
            errors.setdefault(criterion.key, f"{value!r} is not one of the options.")
    unknown = sorted(set(answers) - {c.key for c in criteria})
    if unknown:
        errors["answers"] = f"Not in this rubric: {', '.join(unknown)}."
    if verdict not in VERDICT_VALUES:
        errors.setdefault(MERGE_KEY, "Choose a verdict: would you merge this?")
    comments = []
    try:
        comments = clean_line_comments(line_comments)
    except ReviewInvalid as exc:
        errors.update(exc.errors)
    if errors:
        raise ReviewInvalid(errors)

    notes = diffs.strip_control(str(notes or ""))[:MAX_NOTES_CHARS]
    met = clean_acceptance(run, acceptance or [])
    with transaction.atomic():
        # The run's row is the lock that keeps two last-place submissions from both getting in,
        # and no other request makes this user's review of it meanwhile: a new one is one insert.
        wanted = queue.lock(run)
        review = Review.objects.select_for_update().filter(run=run, reviewer=user).first()
        review = review or Review(run=run, reviewer=user)
        if review.is_submitted:
            changed = (
                review.answers,
                review.verdict,
                review.notes,
                review.line_comments,
                review.acceptance_met,
            ) != (answers, verdict, notes, comments, met)
            if not changed:
                return review
            ReviewVersion.objects.create(
                review=review,
                answers=review.answers,
                verdict=review.verdict,
                notes=review.notes,
                line_comments=review.line_comments,
                acceptance_met=review.acceptance_met,
                submitted_at=review.submitted_at,
            )
        else:
            queue.check_place(run, user, wanted)
        review.answers = answers
        review.verdict = verdict
        review.notes = notes
        review.line_comments = comments
        review.acceptance_met = met
        review.time_spent_s = max(review.time_spent_s, _clean_time(time_spent_s))
        review.submitted_at = timezone.now()
        review.save()
        queue.release(run, user)
    return review

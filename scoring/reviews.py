"""Reviewing one run: what the review page shows, drafts, and submitting a review.

The page is blind until the reviewer has submitted: no contestant, model, harness, provider or
cost, and no other reviewer's opinion, so that a verdict is about the change and not about who
made it. Who made the run is revealed on its own page once the review is in.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from runs import diffs
from runs.identity import identity_terms, redactor
from runs.models import Run
from runs.templatetags.runs_tags import render_markdown  # the site's one markdown policy
from scoring import queue
from scoring.models import VERDICTS, Criterion, Review, ReviewVersion, Rubric

MERGE_KEY = "merge"
VERDICT_VALUES = {value for value, _ in VERDICTS}
# Bump when the cached shape of a rendered diff changes, so stale caches are re-rendered.
RENDER_VERSION = 2  # 2: hidden and bidirectional Unicode shown as marks
RENDERED_DIFF_ARTIFACT = "rendered_diff.json"
RENDERED_REFERENCE_ARTIFACT = "rendered_reference.json"
# A transcript entry longer than this is cut for the page; the raw transcript stays downloadable.
MAX_TRANSCRIPT_CHARS = 20_000
MAX_LINE_COMMENTS = 500
MAX_COMMENT_CHARS = 5_000
MAX_NOTES_CHARS = 50_000
MAX_TIME_SPENT_S = 7 * 24 * 3600


class ReviewInvalid(ValueError):
    """A submitted review that does not fit the rubric; ``errors`` maps a field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors.items()))
        self.errors = errors


# --- rendering helpers ---------------------------------------------------------------------------


def _empty_diff(error: str = "") -> dict:
    return {"files": [], "totals": {"files": 0, "additions": 0, "deletions": 0}, "error": error}


_RECENT: OrderedDict[tuple, dict] = OrderedDict()
_RECENT_SIZE = 8


def _render_cached(run: Run, artifact: str, render) -> dict:
    # A reviewer moves between a handful of runs: keep the last few parsed in memory, since
    # decoding a large rendered diff costs more than the rest of the page.
    key = (str(settings.MEDIA_ROOT), run.pk, artifact, run.finished_at)
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    rendered = _load_or_render(run, artifact, render)
    _RECENT[key] = rendered
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return rendered


def _load_or_render(run: Run, artifact: str, render) -> dict:
    cached = run.read_json_artifact(artifact)
    if isinstance(cached, dict) and cached.get("version") == RENDER_VERSION:
        return cached["diff"]
    try:
        rendered = render()
        rendered.setdefault("error", "")
    except ValueError as exc:
        rendered = _empty_diff(f"The diff could not be read: {diffs.strip_control(str(exc))}")
    _add_range_sizes(rendered)
    run.save_artifact(artifact, json.dumps({"version": RENDER_VERSION, "diff": rendered}))
    return rendered


def _add_range_sizes(rendered: dict) -> None:
    """Give each expandable range its line count and new-minus-old offset, for the links."""
    for entry in rendered.get("files", []):
        ranges = [hunk.get("expand_before") for hunk in entry.get("hunks", [])]
        for span in [*ranges, entry.get("expand_after")]:
            if span:
                span["count"] = span["old_end"] - span["old_start"] + 1
                span["delta"] = span["new_start"] - span["old_start"]


def rendered_diff(run: Run) -> dict:
    """The run's diff rendered for the page; computed once per run and cached as an artifact."""

    def render() -> dict:
        before = run.read_json_artifact("before.json", {}) or {}
        after = run.read_json_artifact("after.json", {}) or {}
        return diffs.render_diff(run.diff, before, after)

    return _stamped(run, "diff", _render_cached(run, RENDERED_DIFF_ARTIFACT, render))


def rendered_reference(run: Run) -> dict | None:
    """The prompt's reference patch ("what we would have written"), rendered and cached."""
    patch = (run.snapshot.get("prompt") or {}).get("reference_patch") or ""
    if not patch.strip():
        return None
    rendered = _render_cached(run, RENDERED_REFERENCE_ARTIFACT, lambda: diffs.render_diff(patch))
    return _stamped(run, "reference", rendered)


def _stamped(run: Run, kind: str, rendered: dict) -> dict:
    """Name this rendering for the template fragment cache: the HTML of each file's rows is
    rendered once and then served from the cache (a 10,000-line diff is ~100k template lookups)."""
    ended = run.finished_at.timestamp() if run.finished_at else 0
    # The cached rows hold links named by the run's review key, so the key is in the name.
    return {**rendered, "stamp": f"{kind}-{run.review_key}-{ended}"}


def context_for_range(run: Run, file_index: int, start: int, end: int, delta: int) -> list[dict]:
    """Unchanged lines ``start``..``end`` (old-side numbers) of the diff's ``file_index``-th file
    (1-based), as rows {"old", "new", "html"}; ``delta`` is new minus old line number there."""
    files = rendered_diff(run)["files"]
    if not 1 <= file_index <= len(files):
        return []
    entry = files[file_index - 1]
    raw_path = entry.get("raw_path") or ""
    before = run.read_json_artifact("before.json", {}) or {}
    old_text = before.get(entry.get("raw_old_path") or raw_path)
    if old_text is not None:
        rows = diffs.context_rows(old_text, raw_path, start, end)
        return [{"old": r["no"], "new": r["no"] + delta, "html": r["html"]} for r in rows]
    after = run.read_json_artifact("after.json", {}) or {}
    new_text = after.get(raw_path)
    if new_text is None:
        return []
    rows = diffs.context_rows(new_text, raw_path, start + delta, end + delta)
    return [{"old": r["no"] - delta, "new": r["no"], "html": r["html"]} for r in rows]


# --- blindness and the transcript ----------------------------------------------------------------


def has_submitted(run: Run, user) -> bool:
    return Review.objects.submitted().filter(run=run, reviewer=user).exists()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return diffs.strip_control(value)


def _cut(text: str) -> tuple[str, int]:
    """Text cut for display, and how many characters were left out."""
    if len(text) <= MAX_TRANSCRIPT_CHARS:
        return text, 0
    return text[:MAX_TRANSCRIPT_CHARS], len(text) - MAX_TRANSCRIPT_CHARS


def _call_summary(name: str, arguments: Any) -> str:
    if isinstance(arguments, dict):
        for key in ("command", "path", "pattern", "question", "summary"):
            if isinstance(arguments.get(key), str):
                return arguments[key].splitlines()[0][:160] if arguments[key] else ""
    return ""


def transcript_timeline(transcript: dict | None, *, blind: bool, terms: dict | None) -> dict:
    """An ATIF transcript as display rows. Blind: no model name, no cost, identity terms hidden.

    Each step: {"id", "source", "message", "message_cut", "calls": [{"id", "name", "summary",
    "arguments", "output", "output_cut", "has_output"}], "orphans": [...], "prompt_tokens",
    "completion_tokens", "cost"}.
    """
    if not isinstance(transcript, dict):
        return {"steps": [], "agent": None, "final": {}}
    redact = redactor(terms) if blind else (lambda text: text)

    def clean(value: Any) -> tuple[str, int]:
        return _cut(redact(_text(value)))

    steps = []
    for index, step in enumerate(transcript.get("steps") or [], start=1):
        if not isinstance(step, dict):
            continue
        results: dict[str, Any] = {}
        orphans = []
        observation = step.get("observation") or {}
        for result in (observation.get("results") if isinstance(observation, dict) else []) or []:
            if not isinstance(result, dict):
                continue
            call_id = result.get("source_call_id")
            if call_id and call_id not in results:
                results[call_id] = result.get("content")
            else:
                text, cut = clean(result.get("content"))
                orphans.append({"output": text, "output_cut": cut})
        calls = []
        for call in step.get("tool_calls") or []:
            if not isinstance(call, dict):
                continue
            name = redact(_text(call.get("function_name") or "tool"))
            arguments, arguments_cut = clean(call.get("arguments"))
            call_id = call.get("tool_call_id")
            has_output = call_id in results
            output, output_cut = clean(results.pop(call_id)) if has_output else ("", 0)
            calls.append(
                {
                    "id": _text(call_id),
                    "name": name,
                    "summary": redact(
                        diffs.strip_control(_call_summary(name, call.get("arguments")))
                    ),
                    "arguments": arguments,
                    "arguments_cut": arguments_cut,
                    "output": output,
                    "output_cut": output_cut,
                    "has_output": has_output,
                }
            )
        for content in results.values():  # results whose call we never saw
            text, cut = clean(content)
            orphans.append({"output": text, "output_cut": cut})
        metrics = step.get("metrics") if isinstance(step.get("metrics"), dict) else {}
        message, message_cut = clean(step.get("message"))
        source = (
            step.get("source") if step.get("source") in ("system", "user", "agent") else "agent"
        )
        steps.append(
            {
                "id": step.get("step_id") or index,
                "source": source,
                "message": message,
                "message_cut": message_cut,
                "calls": calls,
                "orphans": orphans,
                "prompt_tokens": metrics.get("prompt_tokens"),
                "completion_tokens": metrics.get("completion_tokens"),
                "cost": None if blind else metrics.get("cost_usd"),
            }
        )
    final = (
        transcript.get("final_metrics") if isinstance(transcript.get("final_metrics"), dict) else {}
    )
    final = {k: v for k, v in final.items() if not (blind and "cost" in k)}
    agent = transcript.get("agent") if isinstance(transcript.get("agent"), dict) else {}
    agent_view = None
    if not blind and agent:
        agent_view = {
            "name": _text(agent.get("name")),
            "model_name": _text(agent.get("model_name")),
        }
    return {"steps": steps, "agent": agent_view, "final": final}


def question_rows(run: Run, *, blind: bool, terms: dict | None) -> list[dict]:
    redact = redactor(terms) if blind else (lambda text: text)
    rows = []
    for entry in run.questions or []:
        if isinstance(entry, dict):
            rows.append(
                {
                    "question": redact(_text(entry.get("question"))),
                    "answer": None if entry.get("answer") is None else _text(entry.get("answer")),
                    "source": _text(entry.get("source")),
                }
            )
    return rows


# --- the rubric ----------------------------------------------------------------------------------


def criteria_for_run(run: Run) -> list[Criterion]:
    rubric = Rubric.for_campaign(run.campaign)
    if rubric is None:
        return []
    return rubric.criteria_for(run.snapshot.get("prompt") or {})


def criterion_rows(criteria: list[Criterion], answers: dict) -> list[dict]:
    rows = []
    for criterion in criteria:
        options = criterion.options()
        rows.append(
            {
                "key": criterion.key,
                "label": criterion.label,
                "help": criterion.help,
                "scale": criterion.scale,
                "is_verdict": criterion.key == MERGE_KEY,
                "options": [
                    {"value": value, "label": label, "hotkey": str(i)}
                    for i, (value, label) in enumerate(options, start=1)
                ],
                "answer": str(answers.get(criterion.key, "") or ""),
            }
        )
    return rows


def answer_labels(criteria: list[Criterion], answers: dict) -> list[tuple[str, str]]:
    """(criterion label, answer label) for showing a review to someone."""
    out = []
    for criterion in criteria:
        value = answers.get(criterion.key)
        if value in (None, ""):
            continue
        labels = dict(criterion.options())
        out.append((criterion.label, labels.get(str(value), str(value))))
    return out


# --- the page ------------------------------------------------------------------------------------


def review_page_data(run: Run, user) -> dict:
    """Everything the review page shows, already filtered for blindness.

    The caller has checked that ``user`` may review ``run`` (a reviewable run, scorer role).
    """
    mine = Review.objects.filter(run=run, reviewer=user).first()
    blind = not (mine and mine.is_submitted)
    terms = identity_terms(run)
    redact = redactor(terms) if blind else (lambda text: text)
    criteria = criteria_for_run(run)
    prompt = run.snapshot.get("prompt") or {}
    met = set(mine.acceptance_met) if mine else set()
    answers = dict(mine.answers) if mine else {}
    if mine and mine.verdict and MERGE_KEY not in answers:
        answers[MERGE_KEY] = mine.verdict
    has_merge = any(c.key == MERGE_KEY for c in criteria)

    others = []
    if not blind:
        for review in (
            Review.objects.submitted()
            .filter(run=run)
            .exclude(reviewer=user)
            .select_related("reviewer")
            .order_by("submitted_at")
        ):
            others.append(
                {
                    "reviewer": review.reviewer.get_username(),
                    "verdict": review.get_verdict_display(),
                    "answers": answer_labels(criteria, review.answers),
                    "notes": review.notes,
                    "line_comments": review.line_comments,
                    "submitted_at": review.submitted_at,
                }
            )

    identity = None
    if not blind:
        contestant = run.contestant
        identity = {
            "contestant": contestant.label,
            "scripted": contestant.is_scripted,
            "harness": contestant.get_harness_display(),
            "model": contestant.model.name,
            "model_id": contestant.model.model_id,
            "provider": contestant.model.get_provider_display(),
            "cost_usd": run.cost_usd,
        }

    return {
        "run": run,
        "blind": blind,
        "review": mine,
        "submitted": not blind,
        "prompt": {
            "title": prompt.get("title", ""),
            "key": prompt.get("key", ""),
            "tags": prompt.get("tags") or [],
            "commit": prompt.get("commit", ""),
            "repository": prompt.get("repository", ""),
            "instructions_html": render_markdown(prompt.get("instructions", "")),
            "acceptance_criteria": [
                {"index": index, "text": _text(text), "met": str(text) in met}
                for index, text in enumerate(prompt.get("acceptance_criteria") or [], start=1)
            ],
            "expected_files": prompt.get("expected_files") or [],
            "test_command": prompt.get("test", ""),
        },
        "diff": rendered_diff(run),
        "reference": rendered_reference(run),
        "transcript": transcript_timeline(run.transcript, blind=blind, terms=terms),
        "questions": question_rows(run, blind=blind, terms=terms),
        "tests": {
            "exit_code": run.test_exit_code,
            "ok": run.tests_ok,
            "passed": run.tests_passed,
            "failed": run.tests_failed,
            "output_tail": redact(_text(run.test_output_tail)),
            "test_files_modified": list(run.test_files_modified),
        },
        "stats": {
            "status": run.status,
            "agent_status": run.agent_status,
            "steps": run.steps,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "duration_s": run.duration_s,
            "expected_files_recall": run.expected_files_recall,
        },
        "criteria": criterion_rows(criteria, answers),
        "needs_verdict_field": not has_merge,
        "verdict": answers.get(MERGE_KEY, mine.verdict if mine else ""),
        "verdicts": VERDICTS,
        "notes": mine.notes if mine else "",
        "line_comments": mine.line_comments if mine else [],
        "time_spent_s": mine.time_spent_s if mine else 0,
        "identity": identity,
        "others": others,
    }


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
        # Locked like submit_review, so a draft racing a submit can never un-submit it.
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
        # The run's row is the lock that keeps two last-place submissions from both getting in.
        locked_run = (
            Run.objects.select_for_update(of=("self",)).select_related("campaign").get(pk=run.pk)
        )
        review, _ = Review.objects.select_for_update().get_or_create(run=run, reviewer=user)
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
            queue.check_place(locked_run, user)
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

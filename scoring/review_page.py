"""What the review page shows of one run: its diff, transcript, questions and rubric, blind until
the reviewer has submitted. Reading only; saving drafts and reviews is scoring.reviews.

Blind means no contestant, model, harness, provider or cost, and no other reviewer's opinion, so
that a verdict is about the change and not about who made it. Who made the run is revealed on its
own page once the review is in.
"""

from __future__ import annotations

import functools
import json
from collections import OrderedDict
from typing import Any

from django.core.files.storage import default_storage
from django.db import connection
from django.db.models import Q

from evalsite import rawsql
from evalsite import storage as artifact_storage
from runs import diffs, rendered_diffs
from runs.identity import IDENTITY_FIELDS, identity_terms, redactor
from runs.models import Campaign, Contestant, LanguageModel, Run
from runs.templatetags.runs_tags import render_markdown  # the site's one markdown policy
from scoring.models import VERDICTS, Comparison, Criterion, Review, Rubric

MERGE_KEY = "merge"
# A transcript entry longer than this is cut for the page; the raw transcript stays downloadable.
MAX_TRANSCRIPT_CHARS = 20_000


# --- the run ------------------------------------------------------------------------------------


def page_run(review_key: str) -> Run | None:
    """The reviewable run with this review key, as the page reads it, or None.

    The whole run; of its campaign, how many reviews it wants; of who made it, what hides them
    while blind and names them once revealed (IDENTITY_FIELDS). Not the model's API key, which
    would be decrypted for every page, nor the prompt: the page shows the run's snapshot of it,
    as the agent was given it. One statement written out once: the ORM built this four-table
    query anew for every page, which cost an eighth of the web's CPU under a team's load.
    """
    statement, loaders = _page_statement()
    with connection.cursor() as cursor:
        cursor.execute(statement, [review_key, *Run.REVIEWABLE_STATUSES])
        row = cursor.fetchone()
    if row is None:
        return None
    loaded, start = [], 0
    for loader in loaders:
        loaded.append(loader.load(row[start : start + loader.width]))
        start += loader.width
    run, campaign, contestant, model = loaded
    contestant.model = model
    run.campaign, run.contestant = campaign, contestant
    return run


@functools.cache
def _page_statement() -> tuple[str, list[rawsql.Loader]]:
    """`page_run`'s statement, and the loaders of its row's run, campaign, contestant and
    model, in the order of their columns."""
    identity: dict[str, list[str]] = {"contestant": ["id", "model"], "model": ["id"]}
    for path in IDENTITY_FIELDS:  # contestant__name, contestant__model__name, ...
        *relation, name = path.split("__")
        identity[relation[-1]].append(name)
    loaders = [
        rawsql.Loader(Run, "r"),
        rawsql.Loader(Campaign, "c", ["id", "reviews_wanted"]),
        rawsql.Loader(Contestant, "ct", identity["contestant"]),
        rawsql.Loader(LanguageModel, "m", identity["model"]),
    ]
    statuses = ", ".join(["%s"] * len(Run.REVIEWABLE_STATUSES))
    statement = f"""
        SELECT {", ".join(loader.columns for loader in loaders)}
        FROM {Run._meta.db_table} r
        INNER JOIN {Campaign._meta.db_table} c ON c.id = r.campaign_id
        INNER JOIN {Contestant._meta.db_table} ct ON ct.id = r.contestant_id
        INNER JOIN {LanguageModel._meta.db_table} m ON m.id = ct.model_id
        WHERE r.review_key = %s AND r.status IN ({statuses})
    """
    return statement, loaders


# --- rendering helpers ---------------------------------------------------------------------------


_RECENT: OrderedDict[tuple, dict] = OrderedDict()
_RECENT_SIZE = 8


def _render_cached(run: Run, artifact: str, render) -> dict:
    # A reviewer moves between a handful of runs: keep the last few parsed in memory, since
    # decoding a large rendered diff costs more than the rest of the page.
    key = (artifact_storage.describe(default_storage), run.pk, artifact, run.finished_at)
    if key in _RECENT:
        _RECENT.move_to_end(key)
        return _RECENT[key]
    rendered = rendered_diffs.load_or_render(run, artifact, render)
    _RECENT[key] = rendered
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)
    return rendered


def rendered_diff(run: Run) -> dict:
    """The run's diff rendered for the page: stored by the worker when the run ended
    (runs/rendered_diffs.py), rendered here only when that rendering is missing or outdated."""
    rendered = _render_cached(
        run, rendered_diffs.DIFF_ARTIFACT, lambda: rendered_diffs.render_diff(run)
    )
    return _stamped(run, "diff", rendered)


def rendered_reference(run: Run) -> dict | None:
    """The prompt's reference patch ("what we would have written"), rendered and cached."""
    patch = rendered_diffs.reference_patch(run)
    if not patch:
        return None
    rendered = _render_cached(
        run, rendered_diffs.REFERENCE_ARTIFACT, lambda: diffs.render_diff(patch)
    )
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
    criteria = Rubric.criteria_of_campaign(run.campaign_id)
    return Criterion.applying_to(criteria, run.snapshot.get("prompt") or {})


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
    mine = Review.of(run.pk, user.pk)
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
        for review in Review.submitted_by_others(run.pk, user.pk):
            others.append(
                {
                    "reviewer": review.reviewer_name,
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
        # Shown under their lines (static/js/app.js), only once this reviewer has submitted.
        "others_comments_json": json.dumps(
            [
                {**comment, "reviewer": other["reviewer"]}
                for other in others
                for comment in other["line_comments"]
                if isinstance(comment, dict)
            ]
        ),
    }


# --- the lead's view of a run --------------------------------------------------------------------


def run_judgement_data(run: Run) -> dict:
    """What a lead sees of a run's judgement on its run page: the rendered diff, every review
    with its reviewer's name (drafts as "in progress"), and the pairwise votes that include it.
    Leads are never blind, so nothing here is hidden."""
    criteria = criteria_for_run(run)
    reviews = []
    in_progress = []
    for review in (
        Review.objects.filter(run=run).select_related("reviewer").order_by("submitted_at", "id")
    ):
        if not review.is_submitted:
            in_progress.append(review.reviewer.get_username())
            continue
        reviews.append(
            {
                "reviewer": review.reviewer.get_username(),
                "verdict": review.get_verdict_display(),
                "answers": answer_labels(criteria, review.answers),
                "notes": review.notes,
                "line_comments": review.line_comments,
                "submitted_at": review.submitted_at,
                "time_spent_s": review.time_spent_s,
            }
        )
    votes = []
    for vote in (
        Comparison.objects.exclude(outcome="")
        .filter(Q(run_a=run) | Q(run_b=run))
        .select_related("reviewer", "run_a__contestant", "run_b__contestant")
        .order_by("decided_at", "id")
    ):
        this_is_a = vote.run_a_id == run.pk
        other = vote.run_b if this_is_a else vote.run_a
        won = {Comparison.A: this_is_a, Comparison.B: not this_is_a}.get(vote.outcome)
        votes.append(
            {
                "reviewer": vote.reviewer.get_username(),
                "other_run": other,
                "other_label": other.contestant.label,
                "result": {True: "better", False: "worse"}.get(won, vote.get_outcome_display()),
                "reason": vote.reason,
                "decided_at": vote.decided_at,
            }
        )
    comments = [
        {**comment, "reviewer": review["reviewer"]}
        for review in reviews
        for comment in review["line_comments"]
        if isinstance(comment, dict)
    ]
    return {
        "run": run,
        "diff": rendered_diff(run),
        "reviews": reviews,
        "in_progress": in_progress,
        "votes": votes,
        # Placed under their lines by static/js/app.js (a data attribute: htmx drops <script>).
        "comments_json": json.dumps(comments),
    }

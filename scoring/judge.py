"""The LLM judge: a model reviewing finished runs with the campaign's rubric, kept apart from
the humans.

    appoint(campaign, model, user, max_cost_usd)   # a Judge, and every reviewable run queued
    queue_unjudged(judge)                           # runs that became reviewable since
    judge_run(judge_review_id)                      # the task's work: one run, one call

A judgement is one chat call through a run gateway of its own (runs.gateway), which holds the
real key, meters the call and refuses it once the judge's per-run cost limit is spent. The model
sees what a blind reviewer sees (scoring.review_page with the same identity redaction): the
prompt, the diff, the tests, the questions the agent asked and the transcript's messages, with
everything naming the contestant hidden. It must answer with JSON giving every criterion and
the verdict, each with a short rationale; anything else is stored as a failed judgement with the
reason. The judge's reviews are JudgeReview rows, which no human-facing query reads.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from runs import enqueue, providers
from runs import gateway as run_gateway
from runs.identity import identity_terms, redactor
from runs.models import Campaign, KeyUnavailable, LanguageModel, Run
from scoring.models import VERDICTS, Criterion, Judge, JudgeReview
from scoring.review_page import MERGE_KEY, criteria_for_run, transcript_timeline

MAX_DIFF_CHARS = 60_000
MAX_TRANSCRIPT_CHARS = 20_000
MAX_RATIONALE_CHARS = 2_000
MAX_REPLY_CHARS = 20_000  # of the model's answer kept on the review, for the lead to read
VERDICT_KEY = "verdict"
# A judge's answer is a short JSON object; a cap keeps a runaway answer from running up a bill.
MAX_OUTPUT_TOKENS = 2_000


class JudgeError(ValueError):
    """A judge that cannot be appointed; the message says why."""


def appoint(
    campaign: Campaign, model: LanguageModel, user, max_cost_usd: float | None
) -> tuple[Judge, int]:
    """Make `model` a judge of `campaign` (or take the one it is already) and queue every
    reviewable run it has not judged. Returns the judge and how many runs were queued."""
    if model.is_scripted:
        raise JudgeError(
            f"Model {model.name} is scripted: a judge must be a real model (OpenAI-compatible or "
            "Anthropic) so that it can be called through a run gateway."
        )
    if model.archived:
        raise JudgeError(f"Model {model.name} is archived.")
    with transaction.atomic():
        judge, created = Judge.objects.get_or_create(
            campaign=campaign,
            model=model,
            defaults={"max_cost_usd": max_cost_usd, "created_by": user},
        )
        if not created and judge.max_cost_usd != max_cost_usd:
            judge.max_cost_usd = max_cost_usd
            judge.save(update_fields=["max_cost_usd"])
        return judge, queue_unjudged(judge)


def _add_new_runs(judge: Judge) -> list[int]:
    """Pending judge reviews for the campaign's reviewable runs this judge has none of."""
    judged = JudgeReview.objects.filter(judge=judge).values("run_id")
    added = JudgeReview.objects.bulk_create(
        JudgeReview(judge=judge, run=run)
        for run in Run.objects.reviewable().filter(campaign=judge.campaign).exclude(pk__in=judged)
    )
    return [review.pk for review in added]


def queue_unjudged(judge: Judge) -> int:
    """Queue the campaign's reviewable runs this judge has no review of, and its failed ones
    again. Returns how many were queued."""
    with transaction.atomic():
        _add_new_runs(judge)
        JudgeReview.objects.filter(judge=judge, status=JudgeReview.FAILED).update(
            status=JudgeReview.PENDING, error=""
        )
        pending = list(
            JudgeReview.objects.filter(judge=judge, status=JudgeReview.PENDING).values_list(
                "pk", flat=True
            )
        )
        enqueue.judge_reviews(pending)
    return len(pending)


def queue_new_runs() -> int:
    """For every judge, queue the runs that became reviewable since it last looked (beat calls
    this every MERGEABLE_JUDGE_SWEEP_SECONDS; failed judgements wait for a lead's retry).
    Returns how many were queued."""
    queued = 0
    for judge in Judge.objects.filter(campaign__runs__in=Run.objects.reviewable()).distinct():
        with transaction.atomic():
            added = _add_new_runs(judge)
            enqueue.judge_reviews(added)
        queued += len(added)
    return queued


# --- what the model is told -----------------------------------------------------------------------


def instructions(criteria: list[Criterion]) -> str:
    """The rubric rendered as the judge's system prompt."""
    lines = [
        "You review a change an AI coding agent made to a repository, as a careful senior "
        "engineer on the team would. You do not know which agent made it; do not guess.",
        "",
        "Answer every question below, each with a short rationale (one to three sentences).",
        "",
        "Questions:",
    ]
    for criterion in criteria:
        allowed = ", ".join(f'"{value}" ({label})' for value, label in criterion.options())
        lines.append(f'- "{criterion.key}": {criterion.label}')
        if criterion.help:
            lines.append(f"  {criterion.help}")
        lines.append(f"  Answer one of: {allowed}.")
    verdicts = ", ".join(f'"{value}" ({label})' for value, label in VERDICTS)
    lines += [
        f'- "{VERDICT_KEY}": Would you merge this change? Answer one of: {verdicts}.',
        "",
        "Reply with one JSON object and nothing else, in this shape:",
        json.dumps(
            {
                "criteria": {
                    criterion.key: {"answer": "...", "rationale": "..."} for criterion in criteria
                },
                VERDICT_KEY: {"answer": "...", "rationale": "..."},
            },
            indent=2,
        ),
    ]
    return "\n".join(lines)


def _capped(text: str, limit: int, what: str) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {what} cut at {limit:,} characters of {len(text):,}]"


def material(run: Run) -> str:
    """What a blind reviewer sees of `run`, as text, with the contestant's identity hidden."""
    terms = identity_terms(run)
    hide = redactor(terms)
    prompt = run.snapshot.get("prompt") or {}
    parts = [
        f"# Task: {prompt.get('title', '')}",
        str(prompt.get("instructions", "")),
    ]
    acceptance = prompt.get("acceptance_criteria") or []
    if acceptance:
        parts.append("## Acceptance criteria\n" + "\n".join(f"- {text}" for text in acceptance))
    parts.append("## The change (unified diff)\n" + _capped(hide(run.diff), MAX_DIFF_CHARS, "diff"))
    tests = [f"exit code {run.test_exit_code}" if run.test_exit_code is not None else "not run"]
    if run.tests_passed is not None or run.tests_failed is not None:
        tests.append(f"{run.tests_passed or 0} passed, {run.tests_failed or 0} failed")
    if run.test_files_modified:
        tests.append(
            "the agent changed test files (they were restored before the tests ran): "
            + ", ".join(map(str, run.test_files_modified))
        )
    parts.append("## Tests\n" + "; ".join(tests))
    if run.test_output_tail:
        parts.append("Test output (end):\n" + hide(str(run.test_output_tail)))
    questions = [q for q in run.questions or [] if isinstance(q, dict)]
    if questions:
        parts.append(
            "## Questions the agent asked\n"
            + "\n".join(
                f"- Q: {hide(str(q.get('question', '')))}\n  A: {hide(str(q.get('answer', '')))}"
                for q in questions
            )
        )
    timeline = transcript_timeline(run.transcript, blind=True, terms=terms)
    messages = [
        f"[{step['source']}] {step['message']}" for step in timeline["steps"] if step["message"]
    ]
    if messages:
        parts.append(
            "## The agent's messages\n"
            + _capped("\n".join(messages), MAX_TRANSCRIPT_CHARS, "transcript")
        )
    return "\n\n".join(parts)


# --- reading the answer ---------------------------------------------------------------------------


class MalformedAnswer(ValueError):
    pass


def _answer(entry: object, where: str, allowed: list[str]) -> tuple[str, str]:
    if not isinstance(entry, dict):
        raise MalformedAnswer(f"{where} must be an object with answer and rationale")
    answer, rationale = entry.get("answer"), entry.get("rationale")
    if not isinstance(answer, str) or answer not in allowed:
        raise MalformedAnswer(f"{where}.answer must be one of {allowed}, got {answer!r}")
    if not isinstance(rationale, str) or not rationale.strip():
        raise MalformedAnswer(f"{where}.rationale must be a non-empty string")
    if len(rationale) > MAX_RATIONALE_CHARS:
        raise MalformedAnswer(f"{where}.rationale is longer than {MAX_RATIONALE_CHARS} characters")
    return answer, rationale.strip()


def parse_answer(text: str, criteria: list[Criterion]) -> tuple[dict, str, dict]:
    """(answers, verdict, rationales) from the model's reply; MalformedAnswer naming what is
    wrong otherwise. A reply fenced as a ```json block is read inside the fence; nothing else
    is repaired."""
    body = text.strip()
    if body.startswith("```") and body.endswith("```"):
        body = body[3:-3]
        body = body[4:] if body.startswith("json") else body
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedAnswer(f"the reply is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise MalformedAnswer("the reply must be a JSON object")
    given = data.get("criteria", {})
    if not isinstance(given, dict):
        raise MalformedAnswer("criteria must be an object keyed by criterion")
    answers, rationales = {}, {}
    for criterion in criteria:
        if criterion.key not in given:
            raise MalformedAnswer(f'criterion "{criterion.key}" is not answered')
        allowed = [value for value, _ in criterion.options()]
        answers[criterion.key], rationales[criterion.key] = _answer(
            given[criterion.key], f"criteria.{criterion.key}", allowed
        )
    verdict, rationales[VERDICT_KEY] = _answer(
        data.get(VERDICT_KEY), VERDICT_KEY, [value for value, _ in VERDICTS]
    )
    return answers, verdict, rationales


# --- the task's work -----------------------------------------------------------------------------


def judged_criteria(run: Run) -> list[Criterion]:
    """The run's criteria but the merge question, which the verdict answers."""
    return [criterion for criterion in criteria_for_run(run) if criterion.key != MERGE_KEY]


def judge_run(judge_review_id: int) -> None:
    """Have the judge review the run once, through a gateway with the judge's cost limit, and
    store the result or the reason it failed. A review no longer pending is left alone."""
    claimed = JudgeReview.objects.filter(pk=judge_review_id, status=JudgeReview.PENDING)
    review = claimed.select_related("judge__model", "run__campaign", "run__contestant__model")
    review = review.first()
    if review is None:
        return
    run, judge = review.run, review.judge
    criteria = judged_criteria(run)
    result: dict = {"status": JudgeReview.FAILED}
    gateway_dir = Path(tempfile.mkdtemp(prefix="mergeable-judge-"))
    try:
        config = judge.model.provider_config()
        if "max_completion_tokens" not in config.params:
            config.params = {**config.params, "max_tokens": MAX_OUTPUT_TOKENS}
        # A few calls: the provider retries a call that failed on the way.
        limits = run_gateway.GatewayLimits(max_cost_usd=judge.max_cost_usd, max_calls=3)
        with run_gateway.Gateway(config, gateway_dir / "gateway.sock", limits=limits) as gateway:
            try:
                with providers.for_model(gateway.worker_model()) as provider:
                    reply = provider.complete(
                        [
                            {"role": "system", "content": instructions(criteria)},
                            {"role": "user", "content": material(run)},
                        ],
                        [],
                    )
            except providers.ProviderError as exc:
                result["error"] = gateway.limit_message() or f"The model call failed: {exc}"
            else:
                result["reply"] = reply.text[:MAX_REPLY_CHARS]
                try:
                    answers, verdict, rationales = parse_answer(reply.text, criteria)
                except MalformedAnswer as exc:
                    result["error"] = f"Malformed answer: {exc}."
                else:
                    result.update(
                        status=JudgeReview.DONE,
                        answers=answers,
                        verdict=verdict,
                        rationales=rationales,
                    )
            totals = gateway.totals
            result.update(
                input_tokens=totals.input_tokens,
                output_tokens=totals.output_tokens,
                cost_usd=totals.cost_usd,
                model_calls=totals.calls,
            )
    except (ValueError, OSError, KeyUnavailable) as exc:
        # A model the gateway cannot serve (no base URL, a key that does not decrypt) or a
        # socket that cannot be made: said on the review, never raised into the worker.
        result["error"] = f"The judge could not be run: {exc}"
    finally:
        shutil.rmtree(gateway_dir, ignore_errors=True)
    # Conditional: a review reset or judged meanwhile is not overwritten.
    claimed.update(judged_at=timezone.now(), **result)

"""How far an LLM judge can be trusted against the team's own reviewers, and what it alone says.

`calibration(judge)`, per criterion and for the verdict, over the runs both the judge and at
least one human reviewed:

- Krippendorff's alpha with the humans as the other rater: every (run, human review) pair is a
  unit with two values, the judge's and that human's. Ordinal for 1–5 criteria (N/A left out)
  and for the verdict (no < after small changes < yes), nominal otherwise.
- Cohen's kappa against the reference: for the verdict the lead's adjudication where there is
  one, else the humans' majority; for a criterion the humans' majority. A run whose humans tie
  has no majority and is left out (counted in `no_reference`).
- The confusion matrix (the judge's answer by row, the reference by column) and n.

`judge_board(judge)`: the judge's own merge rate per contestant, shown apart from and never
mixed into the human leaderboard.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

from runs.models import Contestant
from scoring import stats
from scoring.leaderboard.formatting import interval, number, rate_text
from scoring.models import (
    VERDICT_NO,
    VERDICT_SMALL_CHANGES,
    VERDICT_YES,
    VERDICTS,
    Adjudication,
    Criterion,
    Judge,
    JudgeReview,
    Review,
    Rubric,
)
from scoring.review_page import MERGE_KEY

VERDICT_ORDER = [VERDICT_NO, VERDICT_SMALL_CHANGES, VERDICT_YES]


def cohen_kappa(pairs: list[tuple[str, str]], values: list[str]) -> float:
    """Cohen's kappa of (rater, reference) pairs over `values`; nan when it is undefined (no
    pairs, or chance agreement is certain because both used one and the same value)."""
    if not pairs:
        return math.nan
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    rows = Counter(a for a, _ in pairs)
    columns = Counter(b for _, b in pairs)
    expected = sum(rows[value] * columns[value] for value in values) / (n * n)
    if expected >= 1:
        return math.nan
    return (observed - expected) / (1 - expected)


def _majority(answers: list[str]) -> str | None:
    """The most common answer, or None when two answers tie for most."""
    ranked = Counter(answers).most_common(2)
    if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def _item(
    key: str,
    label: str,
    values: list[tuple[str, str]],
    judged: dict[int, str],
    humans: dict[int, list[str]],
    adjudicated: dict[int, str],
    order: list[str] | None,
) -> dict:
    codes = [value for value, _ in values]
    # Alpha: one unit per (run, human review) that both answered.
    judge_row, human_row = [], []
    for run_id, answer in judged.items():
        for human in humans.get(run_id, []):
            if order is not None and (answer not in order or human not in order):
                continue  # N/A has no place on an ordered scale
            judge_row.append(answer)
            human_row.append(human)
    level = "ordinal" if order is not None else "nominal"
    alpha = (
        stats.krippendorff_alpha([judge_row, human_row], level, value_order=order)
        if judge_row
        else math.nan
    )
    pairs, no_reference = [], 0
    for run_id, answer in judged.items():
        if run_id not in humans and run_id not in adjudicated:
            continue
        reference = adjudicated.get(run_id) or _majority(humans.get(run_id, []))
        if reference is None:
            no_reference += 1
            continue
        pairs.append((answer, reference))
    kappa = cohen_kappa(pairs, codes)
    counts = Counter(pairs)
    return {
        "key": key,
        "label": label,
        "alpha": number(alpha, 3),
        "alpha_text": "—" if math.isnan(alpha) else f"{alpha:.2f}",
        "alpha_reading": stats.interpret_alpha(alpha),
        "alpha_pairs": len(judge_row),
        "kappa": number(kappa, 3),
        "kappa_text": "—" if math.isnan(kappa) else f"{kappa:.2f}",
        "n": len(pairs),
        "agreement": number(sum(a == b for a, b in pairs) / len(pairs), 3) if pairs else None,
        "no_reference": no_reference,
        "values": [{"value": value, "label": text} for value, text in values],
        # judge's answer (row) x reference (column), in the order of `values`
        "confusion": [
            {"answer": row, "label": text, "counts": [counts[(row, column)] for column in codes]}
            for row, text in values
        ],
    }


def calibration(judge: Judge) -> dict:
    """{"verdict": item, "criteria": [item, ...], "judged_runs", "human_reviewed_runs"}, each
    item {key, label, alpha, kappa, n, agreement, no_reference, values, confusion, ...}."""
    done = list(
        JudgeReview.objects.filter(judge=judge, status=JudgeReview.DONE).values_list(
            "run_id", "answers", "verdict"
        )
    )
    run_ids = [run_id for run_id, _, _ in done]
    human_verdicts: dict[int, list[str]] = defaultdict(list)
    human_answers: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for run_id, verdict, answers in (
        Review.objects.submitted()
        .filter(run_id__in=run_ids)
        .order_by("run_id", "reviewer_id")
        .values_list("run_id", "verdict", "answers")
    ):
        if verdict:
            human_verdicts[run_id].append(verdict)
        for key, answer in (answers or {}).items():
            if answer not in (None, ""):
                human_answers[key][run_id].append(str(answer))
    adjudicated = dict(
        Adjudication.objects.filter(run_id__in=run_ids).values_list("run_id", "verdict")
    )
    verdict = _item(
        "verdict",
        "Would you merge it? (verdict)",
        list(VERDICTS),
        {run_id: given for run_id, _, given in done if given},
        human_verdicts,
        adjudicated,
        VERDICT_ORDER,
    )
    criteria = []
    rubric = Rubric.for_campaign(judge.campaign)
    for criterion in rubric.criteria.all() if rubric else []:
        if criterion.key == MERGE_KEY:
            continue
        judged = {
            run_id: str(answers[criterion.key])
            for run_id, answers, _ in done
            if (answers or {}).get(criterion.key) not in (None, "")
        }
        order = [str(i) for i in range(1, 6)] if criterion.scale == Criterion.ONE_TO_FIVE else None
        criteria.append(
            _item(
                criterion.key,
                criterion.label,
                criterion.options(),
                judged,
                human_answers[criterion.key],
                {},
                order,
            )
        )
    return {
        "verdict": verdict,
        "criteria": criteria,
        "judged_runs": len(done),
        "human_reviewed_runs": len(human_verdicts.keys() | adjudicated.keys()),
    }


def judge_board(judge: Judge) -> list[dict]:
    """Per contestant, best first: the judge's merge rate with a 95% interval that resamples
    whole prompts, like the human board's. Judge reviews only; never mixed with humans'."""
    rubric = Rubric.for_campaign(judge.campaign)
    small_changes = rubric.small_changes_value if rubric else 0.5
    worth = {VERDICT_YES: 1.0, VERDICT_SMALL_CHANGES: small_changes, VERDICT_NO: 0.0}
    values: dict[int, list[float]] = defaultdict(list)
    prompts: dict[int, list[int]] = defaultdict(list)
    for contestant_id, prompt_id, verdict in JudgeReview.objects.filter(
        judge=judge, status=JudgeReview.DONE
    ).values_list("run__contestant_id", "run__prompt_id", "verdict"):
        values[contestant_id].append(worth[verdict])
        prompts[contestant_id].append(prompt_id)
    contestants = Contestant.objects.select_related("model").in_bulk(values.keys())
    rows = []
    for contestant_id, mine in values.items():
        bounds = stats.rate_interval(mine, prompts[contestant_id])
        k, n = float(np.sum(mine)), len(mine)
        rows.append(
            {
                "contestant": contestants[contestant_id].label,
                "judged_runs": n,
                "merge_rate": number(k / n, 3),
                "merge_rate_ci": interval(bounds),
                "merge_rate_text": rate_text(k, n, bounds),
            }
        )
    return sorted(rows, key=lambda row: (-row["merge_rate"], row["contestant"]))

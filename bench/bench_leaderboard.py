"""Benchmark: the leaderboard page and the Bradley-Terry bootstrap on a team-sized campaign.

200 prompts x 10 contestants x 3 repeats (6,000 runs), 3 submitted reviews per run (18,000) and
20,000 pairwise votes, in a throwaway SQLite database. Prints one JSON object of figures with
their targets: the warm (cached) page within 500 ms, bradley_terry_ci with 1,000 rounds within
1 s. Exits non-zero when a target is missed.

    DEBUG=true .venv/bin/python bench/bench_leaderboard.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = 200
CONTESTANTS = 10
REPEATS = 3
REVIEWS_PER_RUN = 3
REVIEWERS = 8
VOTES = 20_000
WARM_REQUESTS = 7
TARGET_WARM_MS = 500
TARGET_BT_MS = 1000


def _setup_django(var_dir: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "evalsite.settings"
    os.environ["DEBUG"] = "true"
    os.environ["MERGEABLE_VAR_DIR"] = var_dir
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the test client's "testserver" host through
    call_command("migrate", verbosity=0)


def _populate(rng: random.Random) -> dict:
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from evalsite.roles import LEAD, SCORER, set_role
    from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
    from scoring.models import Comparison, Review

    user_model = get_user_model()
    lead = user_model.objects.create_user(username="bench-lead")
    set_role(lead, LEAD)
    reviewers = []
    for index in range(REVIEWERS):
        user = user_model.objects.create_user(username=f"bench-reviewer-{index}")
        set_role(user, SCORER)
        reviewers.append(user)

    repo = Repository.objects.create(name="bench", url="https://git.example.com/bench.git")
    prompt_set = PromptSet.objects.create(name="bench")
    tags = ["multi-file", "sql", "frontend", "ambiguous-spec", "refactor"]
    prompts = Prompt.objects.bulk_create(
        Prompt(
            prompt_set=prompt_set, key=f"task-{i}", title=f"Task {i}", instructions="Do it.",
            repository=repo, commit="a" * 40, tags=rng.sample(tags, 2),
            expected_files=[f"app/m{i}.py", f"app/t{i}.py"], test_command="pytest -q",
            clarification_expected=i % 10 == 0, position=i,
        )
        for i in range(PROMPTS)
    )  # fmt: skip
    for prompt in prompts:
        prompt.repository = repo
    model = LanguageModel.objects.create(name="bench-model", provider="openai")
    contestants = [
        Contestant.objects.create(name=f"agent-{c}", model=model, benchmarks={"swe": 20 + 5 * c})
        for c in range(CONTESTANTS)
    ]
    campaign = Campaign.objects.create(name="Bench", prompt_set=prompt_set, repeats=REPEATS)
    campaign.contestants.set(contestants)

    now = timezone.now()
    quality = {c.pk: 0.2 + 0.6 * index / CONTESTANTS for index, c in enumerate(contestants)}
    snapshots = {p.pk: p.snapshot() for p in prompts}
    runs = []
    for prompt in prompts:
        for contestant in contestants:
            for repeat in range(REPEATS):
                good = rng.random() < quality[contestant.pk]
                runs.append(
                    Run(
                        campaign=campaign, prompt=prompt, contestant=contestant, repeat=repeat,
                        snapshot={"prompt": snapshots[prompt.pk]}, status=Run.FINISHED,
                        started_at=now, finished_at=now, agent_status="finished",
                        steps=rng.randint(3, 40), input_tokens=rng.randint(5_000, 90_000),
                        output_tokens=rng.randint(500, 9_000), cost_usd=rng.random(),
                        files_changed=[f"app/m{prompt.position}.py"] if good else ["x.py"],
                        additions=rng.randint(1, 400), deletions=rng.randint(0, 100),
                        test_exit_code=0 if good or rng.random() < 0.3 else 1,
                        questions=[{"question": "Which?", "answer": "This"}] if good else [],
                    )
                )  # fmt: skip
    runs = Run.objects.bulk_create(runs, batch_size=1000)

    reviews = []
    for run in runs:
        good = run.test_exit_code == 0
        for reviewer in rng.sample(reviewers, REVIEWS_PER_RUN):
            roll = rng.random()
            verdict = (
                ("yes" if roll < 0.7 else "small_changes" if roll < 0.9 else "no")
                if good
                else ("no" if roll < 0.7 else "small_changes" if roll < 0.9 else "yes")
            )
            answers = {
                "right_files": rng.choice(["yes", "no"]),
                "conventions": str(rng.randint(1, 5)),
                "recovered": rng.choice(["yes", "no"]),
                "merge": verdict,
            }
            reviews.append(
                Review(run=run, reviewer=reviewer, verdict=verdict, answers=answers,
                       started_at=now, submitted_at=now)
            )  # fmt: skip
    Review.objects.bulk_create(reviews, batch_size=2000)

    by_prompt: dict[int, list] = {}
    for run in runs:
        by_prompt.setdefault(run.prompt_id, []).append(run)
    seen: set[tuple[int, int, int]] = set()
    votes = []
    while len(votes) < VOTES:
        prompt = rng.choice(prompts)
        first, second = rng.sample(by_prompt[prompt.pk], 2)
        if first.contestant_id == second.contestant_id:
            continue
        reviewer = rng.choice(reviewers)
        key = (first.pk, second.pk, reviewer.pk)
        if key in seen:
            continue
        seen.add(key)
        stronger = quality[first.contestant_id] - quality[second.contestant_id]
        roll = rng.random() - stronger / 2
        outcome = "a" if roll < 0.4 else "b" if roll < 0.8 else rng.choice(["tie", "both_bad"])
        votes.append(
            Comparison(prompt=prompt, run_a=first, run_b=second, reviewer=reviewer,
                       outcome=outcome, decided_at=now)
        )  # fmt: skip
    Comparison.objects.bulk_create(votes, batch_size=2000)
    return {"lead": lead, "campaign": campaign, "runs": len(runs), "reviews": len(reviews)}


def _time_ms(action) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


def main() -> int:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="mergeable-bench-") as var_dir:
        _setup_django(var_dir)
        from django.core.cache import cache
        from django.test import Client
        from django.urls import reverse

        from runs.models import Run
        from scoring import leaderboard, stats
        from scoring.models import Comparison

        started = time.perf_counter()
        world = _populate(rng)
        populate_s = time.perf_counter() - started

        client = Client()
        client.force_login(world["lead"])
        url = reverse("scoring:leaderboard")
        params = {"campaign": world["campaign"].pk}

        def get_page() -> None:
            response = client.get(url, params)
            assert response.status_code == 200, response.status_code

        cache.clear()
        cold_ms = _time_ms(get_page)
        warm = [_time_ms(get_page) for _ in range(WARM_REQUESTS)]
        cache.clear()
        agreement_cold_ms = _time_ms(
            lambda: client.get(reverse("scoring:leaderboard_agreement"), params)
        )
        cache.clear()
        disagreements_cold_ms = _time_ms(
            lambda: client.get(reverse("scoring:leaderboard_disagreements"), params)
        )

        outcome_value = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
        contestant_of = dict(Run.objects.values_list("id", "contestant_id"))
        outcomes = [
            (str(contestant_of[a]), str(contestant_of[b]), outcome_value[outcome])
            for a, b, outcome in Comparison.objects.values_list("run_a_id", "run_b_id", "outcome")
        ]
        bt_ms = statistics.median(
            _time_ms(lambda: stats.bradley_terry_ci(outcomes, rounds=1000)) for _ in range(3)
        )
        rows = leaderboard.rows(leaderboard.Filters(campaign_id=world["campaign"].pk))

    warm_ms = statistics.median(warm)
    figures = {
        "benchmark": "leaderboard",
        "runs": world["runs"],
        "reviews": world["reviews"],
        "votes": len(outcomes),
        "contestants": len(rows),
        "populate_s": round(populate_s, 1),
        "page_cold_ms": round(cold_ms, 1),
        "page_warm_median_ms": round(warm_ms, 1),
        "page_warm_target_ms": TARGET_WARM_MS,
        "page_warm_ok": warm_ms <= TARGET_WARM_MS,
        "agreement_cold_ms": round(agreement_cold_ms, 1),
        "disagreements_cold_ms": round(disagreements_cold_ms, 1),
        "bradley_terry_ci_1000_rounds_ms": round(bt_ms, 1),
        "bradley_terry_target_ms": TARGET_BT_MS,
        "bradley_terry_ok": bt_ms <= TARGET_BT_MS,
    }
    print(json.dumps(figures))
    return 0 if figures["page_warm_ok"] and figures["bradley_terry_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

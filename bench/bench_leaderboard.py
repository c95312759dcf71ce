"""Benchmark: the leaderboard pages at a team's size and at `--scale` times it, side by side.

One size (1x) is 200 prompts x 10 contestants x 3 repeats (6,000 runs), 3 submitted reviews per
reviewable run (about 18,000) and 20,000 pairwise votes; `--scale N` (default 10) multiplies the
prompts and the votes by N. Each size is built in a fresh database by a child process of this
script (`--size N`), with `bulk_create` and then `rebuild_aggregates` (bulk writes bypass the
upkeep that review and vote saving does), and measured there:

- cold pages (empty cache) through Django's test client: the board, agreement, disagreements
  and history, each the median of COLD_REPEATS requests;
- the warm board (cached), the median of WARM_REQUESTS;
- `stats.bradley_terry_ci` with 1,000 rounds on every vote;
- the peak memory (resident set) of a fresh process that serves one cold board, and how far
  the page raised it above the process's size before it.

The parent prints one JSON object: each size's figures, `ratio` (Nx over 1x per timing: linear
cost gives N or less) and `met` against the targets (board and agreement cold <= 1 s at Nx,
<= 200 ms at 1x, warm <= 20 ms, peak memory <= 500 MB). `--postgres` runs on PostgreSQL
(database `mergeable_bench_board` on 127.0.0.1:5432, created and dropped here) when it answers,
otherwise on SQLite, which `backend` says.

    DEBUG=true .venv/bin/python bench/bench_leaderboard.py --scale 10 [--postgres] [--strict]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    ROOT,
    answers,
    as_after_autovacuum,
    emit,
    log,
    make_var_dir,
    median,
    r,
    setup_django,
)

PROMPTS = 200
CONTESTANTS = 10
REPEATS = 3
REVIEWS_PER_RUN = 3
REVIEWERS = 8
VOTES = 20_000
COLD_REPEATS = 3
WARM_REQUESTS = 7
TARGET_COLD_MS_1X = 200
TARGET_COLD_MS_SCALED = 1000
TARGET_WARM_MS = 20
TARGET_PEAK_MB = 500
PG_NAME = "mergeable_bench_board"
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
TIMINGS = (
    "page_cold_ms",
    "page_warm_median_ms",
    "agreement_cold_ms",
    "disagreements_cold_ms",
    "history_cold_ms",
    "bradley_terry_ci_1000_rounds_ms",
)


# --- the parent: one child per size ------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="the larger size, times 1x")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL when it answers")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)  # a child: measure one size
    parser.add_argument("--page-memory", help=argparse.SUPPRESS)  # a grandchild: one cold page
    args = parser.parse_args()
    if args.scale < 1:
        parser.error("--scale must be at least 1")
    if args.page_memory:
        print(json.dumps(page_memory(Path(args.page_memory), args.postgres)), flush=True)
        return 0
    if args.size is not None:
        print(json.dumps(measure(args.size, args.postgres)), flush=True)
        return 0

    backend, note = "sqlite", ""
    if args.postgres:
        if answers("127.0.0.1", 5432):
            backend = "postgresql"
        else:
            note = "PostgreSQL does not answer on 127.0.0.1:5432; measured on SQLite"
    sizes = sorted({1, args.scale})
    results = {}
    for size in sizes:
        log(f"building and measuring {size}x on {backend}")
        command = [sys.executable, __file__, "--size", str(size)]
        if backend == "postgresql":
            command.append("--postgres")
        child = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        results[f"{size}x"] = json.loads(child.stdout.strip().splitlines()[-1])

    small, large = results["1x"], results[f"{sizes[-1]}x"]
    checks = {
        "page_cold_1x": small["page_cold_ms"] <= TARGET_COLD_MS_1X,
        "agreement_cold_1x": small["agreement_cold_ms"] <= TARGET_COLD_MS_1X,
        "page_cold_scaled": large["page_cold_ms"] <= TARGET_COLD_MS_SCALED,
        "agreement_cold_scaled": large["agreement_cold_ms"] <= TARGET_COLD_MS_SCALED,
        "page_warm": all(result["page_warm_median_ms"] <= TARGET_WARM_MS for result in results.values()),
        "peak_memory": all(result["page_cold_peak_rss_mb"] <= TARGET_PEAK_MB for result in results.values()),
    }  # fmt: skip
    emit(
        {
            "benchmark": "leaderboard",
            "backend": backend,
            "backend_note": note,
            "scale": args.scale,
            **results,
            "ratio": {
                name: r(large[name] / small[name], 2) if small[name] else None for name in TIMINGS
            },
            "targets": {
                "page_and_agreement_cold_ms_1x": TARGET_COLD_MS_1X,
                "page_and_agreement_cold_ms_scaled": TARGET_COLD_MS_SCALED,
                "page_warm_ms": TARGET_WARM_MS,
                "page_cold_peak_rss_mb": TARGET_PEAK_MB,
            },
            "checks": checks,
            "met": all(checks.values()),
            "load_average_1m": r(os.getloadavg()[0], 2),
        }
    )
    return 0


# --- a child: one size -------------------------------------------------------------------------


def measure(size: int, postgres: bool) -> dict:
    var_dir = make_var_dir("bench-board")
    extra = {"LOG_LEVEL": "ERROR"}
    if postgres:
        _recreate_database()
        extra["DATABASE_URL"] = PG_URL
    try:
        setup_django(var_dir, **extra)
        figures = _measure(size, random.Random(7))
        # Memory in a fresh process that serves one cold page of the database just built, as
        # a web worker would: this process still holds everything it built.
        command = [sys.executable, __file__, "--page-memory", str(var_dir)]
        if postgres:
            command.append("--postgres")
        child = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        figures.update(json.loads(child.stdout.strip().splitlines()[-1]))
        return figures
    finally:
        if postgres:
            from django.db import connections

            connections.close_all()
            _drop_database()
        import shutil

        shutil.rmtree(var_dir, ignore_errors=True)


def _measure(size: int, rng: random.Random) -> dict:
    from django.core.cache import cache
    from django.core.management import call_command
    from django.test import Client
    from django.urls import reverse

    from runs.models import Run
    from scoring import stats
    from scoring.models import Comparison

    _serve_like_a_server()
    started = time.perf_counter()
    world = _populate(rng, size)
    populate_s = time.perf_counter() - started
    started = time.perf_counter()
    call_command("rebuild_aggregates", verbosity=0)
    rebuild_s = time.perf_counter() - started
    as_after_autovacuum()
    log(f"{size}x: built in {populate_s:.0f} s, aggregates rebuilt in {rebuild_s:.1f} s")

    client = Client()
    client.force_login(world["lead"])
    params = {"campaign": world["campaign"].pk}

    cpu: dict[str, float] = {}

    def cold_ms(name: str) -> float:
        url = reverse(name)
        timings, cpu_timings = [], []
        for _ in range(COLD_REPEATS):
            cache.clear()
            started_cpu = time.process_time()
            timings.append(_time_ms(lambda: _get(client, url, params)))
            cpu_timings.append((time.process_time() - started_cpu) * 1000)
        cpu[name] = median(cpu_timings)
        return median(timings)

    figures = {
        "runs": world["runs"],
        "reviews": world["reviews"],
        "votes": world["votes"],
        "populate_s": r(populate_s, 1),
        "rebuild_aggregates_s": r(rebuild_s, 1),
        "page_cold_ms": r(cold_ms("scoring:leaderboard"), 1),
    }
    board = reverse("scoring:leaderboard")
    figures["page_warm_median_ms"] = r(
        median([_time_ms(lambda: _get(client, board, params)) for _ in range(WARM_REQUESTS)]), 1
    )
    for name, page in (
        ("agreement", "scoring:leaderboard_agreement"),
        ("disagreements", "scoring:leaderboard_disagreements"),
        ("history", "scoring:leaderboard_history"),
    ):
        figures[f"{name}_cold_ms"] = r(cold_ms(page), 1)

    # This process's CPU time for the same requests: on a busy machine the wall time also
    # counts waiting for a core. On SQLite it includes the database's work; on PostgreSQL not.
    for name, page in (
        ("page", "scoring:leaderboard"),
        ("agreement", "scoring:leaderboard_agreement"),
    ):
        figures[f"{name}_cold_cpu_ms"] = r(cpu[page], 1)

    outcome_value = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    contestant_of = dict(Run.objects.values_list("id", "contestant_id"))
    outcomes = [
        (str(contestant_of[a]), str(contestant_of[b]), outcome_value[outcome])
        for a, b, outcome in Comparison.objects.values_list("run_a_id", "run_b_id", "outcome")
    ]
    figures["bradley_terry_ci_1000_rounds_ms"] = r(
        median([_time_ms(lambda: stats.bradley_terry_ci(outcomes, rounds=1000)) for _ in range(3)]),
        1,
    )
    figures["load_average_1m"] = r(os.getloadavg()[0], 2)
    return figures


def _serve_like_a_server() -> None:
    """Let the test client's "testserver" host through without `setup_test_environment`,
    whose template instrumentation copies the context of every template rendered (tens of
    milliseconds on a board): the figures are what a web server spends."""
    from django.conf import settings

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]


def _get(client, url: str, params: dict) -> None:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)


def _time_ms(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def page_memory(var_dir: Path, postgres: bool) -> dict:
    """The peak resident set of this process, which sets Django up and serves one cold board
    (`page_cold_peak_rss_mb`), and how far one cold page raised it above the process's size
    once set up (`page_cold_rss_rise_mb`)."""
    setup_django(var_dir, LOG_LEVEL="ERROR", **({"DATABASE_URL": PG_URL} if postgres else {}))
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse

    from runs.models import Campaign

    _serve_like_a_server()
    client = Client()
    client.force_login(get_user_model().objects.get(username="bench-lead"))
    params = {"campaign": Campaign.objects.get(name="Bench").pk}
    _get(client, reverse("runs:campaigns"), {})  # imports, templates, session: not the board's
    gc.collect()
    before = _status_kb("VmRSS")
    _get(client, reverse("scoring:leaderboard"), params)
    peak = _status_kb("VmHWM")
    return {
        "page_cold_peak_rss_mb": r(peak / 1024, 1),
        "page_cold_rss_rise_mb": r((peak - before) / 1024, 1),
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _populate(rng: random.Random, size: int) -> dict:
    """A campaign of size x 200 prompts, built with bulk_create. A few runs errored or timed
    out, a quarter of the prompts have acceptance criteria, and 1% of runs are adjudicated."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from evalsite.roles import LEAD, SCORER, set_role
    from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
    from scoring.models import Adjudication, Comparison, Review

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
            acceptance_criteria=["It works", "It is tested"] if i % 4 == 0 else [],
            clarification_expected=i % 10 == 0, position=i,
        )
        for i in range(PROMPTS * size)
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
    snapshots = {p.pk: {"prompt": p.snapshot()} for p in prompts}
    runs = []
    for prompt in prompts:
        for contestant in contestants:
            for repeat in range(REPEATS):
                good = rng.random() < quality[contestant.pk]
                roll = rng.random()
                status = (
                    Run.ERRORED if roll < 0.02 else Run.TIMED_OUT if roll < 0.03 else Run.FINISHED
                )
                runs.append(
                    Run(
                        campaign=campaign, prompt=prompt, contestant=contestant, repeat=repeat,
                        snapshot=snapshots[prompt.pk], status=status,
                        started_at=now, finished_at=now, agent_status="finished",
                        steps=rng.randint(3, 40), input_tokens=rng.randint(5_000, 90_000),
                        output_tokens=rng.randint(500, 9_000), cost_usd=rng.random(),
                        files_changed=[f"app/m{prompt.position}.py"] if good else ["x.py"],
                        additions=rng.randint(1, 400), deletions=rng.randint(0, 100),
                        test_exit_code=0 if good or rng.random() < 0.3 else 1,
                        questions=[{"question": "Which?", "answer": "This"}] if good else [],
                    )
                )  # fmt: skip
    runs = Run.objects.bulk_create(runs, batch_size=2000)

    reviews = []
    adjudications = []
    for run in runs:
        if run.status == Run.ERRORED:
            continue
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
                "recovered": rng.choice(["yes", "no", "n/a"]),
                "merge": verdict,
            }
            accepted = run.snapshot["prompt"]["acceptance_criteria"]
            reviews.append(
                Review(run=run, reviewer=reviewer, verdict=verdict, answers=answers,
                       acceptance_met=accepted[: rng.randint(0, len(accepted))],
                       started_at=now, submitted_at=now)
            )  # fmt: skip
        if rng.random() < 0.01:
            adjudications.append(
                Adjudication(run=run, verdict="yes", note="Settled.", decided_by=lead)
            )
    Review.objects.bulk_create(reviews, batch_size=2000)
    Adjudication.objects.bulk_create(adjudications, batch_size=2000)

    by_prompt: dict[int, list] = {}
    for run in runs:
        if run.status != Run.ERRORED:
            by_prompt.setdefault(run.prompt_id, []).append(run)
    seen: set[tuple[int, int, int]] = set()
    votes = []
    while len(votes) < VOTES * size:
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
    return {
        "lead": lead,
        "campaign": campaign,
        "runs": len(runs),
        "reviews": len(reviews),
        "votes": len(votes),
    }


def _recreate_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")
        connection.execute(f"CREATE DATABASE {PG_NAME}")


def _drop_database() -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())

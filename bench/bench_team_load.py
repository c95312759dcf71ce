"""Benchmark: a team at work on one machine, in the production shape.

gunicorn (evalsite/gunicorn_config.py: gthread, sized from the CPUs), bin/worker with 8 run slots
and Celery beat, on PostgreSQL (database `mergeable_bench_team_load`, created and dropped here)
and Redis (db 10, flushed) when both answer on 127.0.0.1, else SQLite and the embedded queue.
DEBUG is off, as in production (static files collected first).

While a campaign of RUNS runs executes (a scripted agent whose command burns CPU for a few
seconds, then writes a file: checkout, sandbox, diff capture, all real), N scorers (default 20)
log in at once through the login form, then review through the review form: "review next" (the
redirect and the review page), then submit. A lead polls the campaign page and the leaderboard.
Once the runs have ended, the same load goes on for AFTER_S seconds more.

By default scorers do not pause (`--think=0`): twenty clients that wait only on the server keep
it saturated, so the figures measure capacity (`reviews_per_s`) and the queueing it causes.
`--think=S` has each scorer read a run for 0.5 to 1.5 times S seconds before submitting, as
people reading a diff do (minutes, in practice): the latency a team would see at that pace.

Reports per phase ("during_runs", "after_runs") and request kind: count, errors, p50/p95/p99 in
ms; the 20 simultaneous logins' p95 and the time until every scorer was in; the peak RSS of the
web server's and the worker's process trees; the share of the CPUs the simulated browsers took
("load_generator_cpu_share": they run here, on the machine they measure). Targets (issue 20):
while runs execute, p95 of every page <= 1 s and no errors; after, p95 <= 300 ms; "met" also
needs every scorer to have found a run to review on every visit ("nothing_left" 0). The figures
depend on the machine and on what else runs on it: "password_hash" times Django's PBKDF2 default
as a yardstick (0.9 s on the machine the issue measured), and see "load_average_1m".

    DEBUG=true .venv/bin/python bench/bench_team_load.py [--scorers=20] [--runs=40] [--after=30]
        [--think=0]
"""

from __future__ import annotations

import http.cookiejar
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

from _common import (
    ROOT,
    ServiceBackend,
    answers,
    as_after_autovacuum,
    emit,
    int_arg,
    log,
    make_repo,
    make_var_dir,
    median,
    percentile,
    r,
    setup_django,
)

SCORERS = int_arg("scorers", 20)
RUNS = int_arg("runs", 40)
AFTER_S = int_arg("after", 30)
THINK_S = int_arg("think", 0)
SLOTS = 8
BURN = "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"  # a few CPU seconds in sh
REVIEWABLE = 400  # finished runs to review (20 prompts x 20 contestants)
# Reviews each of them wants: one from every scorer, so that they do not run out before the end
# (8,000 places; 70 reviews a second for two minutes take 8,400, and no run takes that long). Once
# they run out they only find "nothing left", the server idles between their visits, and the
# figures stop measuring the load asked for: "nothing_left" counts those visits, and any of them
# means the targets are not shown met. With 12 wanted (4,800 places) a faster server ran out.
REVIEWS_WANTED = 20
PASSWORD = "correct horse battery staple"
DURING_TARGET_MS = 1000
AFTER_TARGET_MS = 300
TIMEOUT_S = 240

SERVICES = ServiceBackend("mergeable_bench_team_load", redis_db=10)

SCRIPT = """\
- tool_calls: [{name: run_command, arguments: {command: "%(burn)s"}}]
- tool_calls: [{name: write_file, arguments: {path: done.txt, content: "done\\n"}}]
- tool_calls: [{name: finish, arguments: {summary: done}}]
"""
ANSWERS = {"right_files": "yes", "conventions": "4", "recovered": "yes", "merge": "yes"}


# --- the site ------------------------------------------------------------------------------


def build_world(var_dir: Path):
    """Scorers and a lead with real (Argon2) passwords, REVIEWABLE finished runs to review (their
    diffs rendered and stored, as the worker leaves them), and the campaign that will execute
    (not launched yet)."""
    from django.contrib.auth import get_user_model

    from evalsite.roles import LEAD, SCORER, set_role
    from runs import rendered_diffs
    from runs.models import Contestant, LanguageModel, Prompt, PromptSet, Repository
    from tests.scoring.test_review import make_contestant, make_prompt, make_run

    users = get_user_model()
    for index in range(SCORERS):
        set_role(users.objects.create_user(f"scorer{index}", password=PASSWORD), SCORER)
    set_role(users.objects.create_user("lead", password=PASSWORD), LEAD)

    prompts = [make_prompt(key=f"review-{index}") for index in range(20)]
    contestants = [make_contestant(f"agent-{index}", f"model-{index}") for index in range(20)]
    reviewed = None
    for contestant in contestants:
        for prompt in prompts[: REVIEWABLE // len(contestants)]:
            reviewed = make_run(prompt, contestant, campaign=reviewed and reviewed.campaign)
    campaign = reviewed.campaign
    campaign.reviews_wanted = REVIEWS_WANTED
    campaign.save(update_fields=["reviews_wanted"])
    for run in campaign.runs.all():
        rendered_diffs.prerender(run)  # as the worker does once a run's diff is captured

    sha = make_repo(var_dir / "repos" / "app", {"README.md": "hello\n"})
    repository = Repository.objects.create(name="app", url=str(var_dir / "repos" / "app"))
    prompt_set = PromptSet.objects.create(name="executing")
    for index in range(RUNS):
        Prompt.objects.create(
            prompt_set=prompt_set,
            key=f"p{index}",
            title=f"P{index}",
            instructions="go",
            repository=repository,
            commit=sha,
            position=index,
        )
    model = LanguageModel.objects.create(
        name="busy", provider="scripted", script=SCRIPT % {"burn": BURN}
    )
    executing = Contestant.objects.create(name="busy", model=model)
    return campaign, prompt_set, executing


def password_hash_cost() -> dict:
    """What one login's password hash costs on this machine, in CPU ms: the site's Argon2 and,
    beside it, Django's PBKDF2 default (a fixed amount of work: the yardstick for a machine's
    speed). Measured before the load starts."""
    from django.contrib.auth.hashers import Argon2PasswordHasher, PBKDF2PasswordHasher

    from evalsite.hashers import MergeableArgon2PasswordHasher

    def cpu_ms(hasher, verify, times: int) -> float:
        encoded = hasher.encode(PASSWORD, hasher.salt())
        seconds = []
        for _ in range(times):
            started = time.thread_time()
            verify(hasher, PASSWORD, encoded)
            seconds.append(time.thread_time() - started)
        return median(seconds) * 1000

    # The site's hasher runs on its hashing thread, whose CPU this thread cannot read: the same
    # work (the parameters are in the hash), on this thread.
    argon2_ms = cpu_ms(MergeableArgon2PasswordHasher(), Argon2PasswordHasher.verify, 7)
    pbkdf2_ms = cpu_ms(PBKDF2PasswordHasher(), PBKDF2PasswordHasher.verify, 3)
    return {
        "argon2_ms": r(argon2_ms, 1),
        "pbkdf2_default_ms": r(pbkdf2_ms, 1),
        "argon2_share_of_pbkdf2": r(argon2_ms / pbkdf2_ms, 3),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers_page(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def start(argv: list[str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as output:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class PeakRss:
    """The peak resident memory of each process tree (the process and all its descendants)."""

    def __init__(self, **roots: subprocess.Popen) -> None:
        self.roots = roots
        self.peak_kb = dict.fromkeys(roots, 0)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)

    def _sample(self) -> None:
        while not self.stopped.wait(0.5):
            children: dict[int, list[int]] = defaultdict(list)
            rss: dict[int, int] = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                children[int(stat[1])].append(int(entry))
                rss[int(entry)] = int(stat[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
            for name, process in self.roots.items():
                total, stack = 0, [process.pid]
                while stack:
                    pid = stack.pop()
                    total += rss.get(pid, 0)
                    stack.extend(children.get(pid, []))
                self.peak_kb[name] = max(self.peak_kb[name], total)


# --- the team ------------------------------------------------------------------------------


PHASES = ("during_runs", "after_runs")


class Timings:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase = PHASES[0]
        self.seconds: dict[tuple[str, str], list[float]] = defaultdict(list)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.nothing_left: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []

    def timed(self, kind: str, call, *args):
        phase = self.phase
        started = time.perf_counter()
        try:
            result = call(*args)
        except Exception as exc:  # an HTTP error, a timeout, a refused connection
            with self.lock:
                self.errors[(phase, kind)] += 1
                if len(self.error_samples) < 5:
                    self.error_samples.append(f"{kind}: {exc!r}"[:300])
            return None
        with self.lock:
            self.seconds[(phase, kind)].append(time.perf_counter() - started)
        return result

    def figures(self, phase: str) -> dict:
        kinds = sorted({kind for p, kind in [*self.seconds, *self.errors] if p == phase})
        out = {}
        for kind in kinds:
            values = self.seconds.get((phase, kind), [])
            out[kind] = {
                "count": len(values),
                "errors": self.errors.get((phase, kind), 0),
                **{
                    f"p{int(q * 100)}_ms": r(percentile(values, q) * 1000, 1) if values else None
                    for q in (0.5, 0.95, 0.99)
                },
            }
        return out


# One TLS handler for every browser: by default each opener loads the system's CA certificates
# (about 18 ms of CPU), which twenty scorers starting at once would take from the server they
# measure. The site is served over plain HTTP here; nothing uses it.
_HTTPS = urllib.request.HTTPSHandler(context=ssl.create_default_context())


class Browser:
    """One person's browser: cookies, the CSRF token of the last form, redirects followed."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _HTTPS
        )

    def get(self, path: str) -> tuple[str, str]:
        with self.opener.open(self.base + path, timeout=60) as response:
            return response.geturl(), response.read().decode()

    def post(self, path: str, fields: dict, page: str) -> tuple[str, str]:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token and token[1]})
        request = urllib.request.Request(
            self.base + path, data=data.encode(), headers={"Referer": self.base + path}
        )
        with self.opener.open(request, timeout=60) as response:
            return response.geturl(), response.read().decode()

    def log_in(self, username: str) -> bool:
        _url, page = self.get("/login/")
        url, _page = self.post("/login/", {"username": username, "password": PASSWORD}, page)
        if "/login/" in url:
            raise RuntimeError(f"{username} could not log in")
        return True


def submit_review(browser: Browser, path: str, page: str) -> None:
    fields = {f"answer-{key}": value for key, value in ANSWERS.items()}
    fields.update({"notes": "", "line_comments": "[]", "time_spent_s": "30"})
    after, _page = browser.post(f"{path}submit/", fields, page)
    if "/review/runs/" not in after:
        raise RuntimeError(f"submit went to {after}")


def scorer(name: str, base: str, timings: Timings, stop: threading.Event, logged_in: list) -> None:
    browser = Browser(base)
    pace = random.Random(name)
    if timings.timed("login", lambda: browser.log_in(name)) is None:
        return
    logged_in.append(time.monotonic())
    while not stop.is_set():
        found = timings.timed("review_next_and_page", lambda: browser.get("/review/next/"))
        if found is None:
            time.sleep(1)
            continue
        url, page = found
        if "/review/runs/" not in url or 'id="submit-review"' not in page:
            # Nothing left for this scorer, or other scorers took the places left as they asked
            # (the page says so, and has no submit button): a person would come back later.
            timings.nothing_left[timings.phase] += 1
            time.sleep(1)
            continue
        path = urllib.parse.urlparse(url).path
        if THINK_S and stop.wait(pace.uniform(0.5, 1.5) * THINK_S):
            break
        timings.timed("review_submit", submit_review, browser, path, page)


def lead(base: str, campaign_url: str, timings: Timings, stop: threading.Event) -> None:
    browser = Browser(base)
    timings.timed("login", lambda: browser.log_in("lead"))
    while not stop.wait(1.0):
        timings.timed("lead_campaign", lambda: browser.get(campaign_url))
        timings.timed("lead_leaderboard", lambda: browser.get("/leaderboard/"))


def main() -> None:
    var_dir = make_var_dir("bench-team-load")
    backend, env, why = SERVICES.choose()
    log(f"backend: {backend} {why}")
    web = worker = beat = None
    production = {
        "DEBUG": "false",
        "SECRET_KEY": "bench-team-load-not-a-secret-" + "x" * 40,
        "MERGEABLE_ENCRYPTION_KEYS": "YmVuY2gtdGVhbS1sb2FkLW5vdC1hLXNlY3JldC0zMiE=",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_COOKIES": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATIC_ROOT": str(var_dir / "static"),
        "AXES_ENABLED": "false",
    }
    try:
        setup_django(var_dir, **env, **production)
        from django.urls import reverse

        from runs import campaigns
        from runs.models import Run

        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
            cwd=ROOT,
            check=True,
        )
        reviewed, prompt_set, executing = build_world(var_dir)
        as_after_autovacuum()
        hash_cost = password_hash_cost()
        campaign_url = reviewed.get_absolute_url()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        web = start(
            [gunicorn, "evalsite.wsgi:application", "--config=python:evalsite.gunicorn_config"]
            + [f"--bind=127.0.0.1:{port}"],
            var_dir / "web.log",
        )
        worker = start(
            [str(ROOT / "bin" / "worker"), f"--concurrency={SLOTS}"], var_dir / "worker.log"
        )
        beat = start(
            [sys.executable, "-m", "celery", "-A", "evalsite", "beat", "--loglevel=WARNING"],
            var_dir / "beat.log",
        )
        deadline = time.monotonic() + 60
        while not answers("127.0.0.1", port):
            if time.monotonic() > deadline or web.poll() is not None:
                raise SystemExit("gunicorn did not start; see web.log")
            time.sleep(0.2)
        assert reverse("scoring:review_next") == "/review/next/"
        # The load starts on a running system, not on processes still importing: the worker
        # has announced itself (its heartbeat), the web server has answered a page.
        from evalsite.models import WorkerHeartbeat

        while not WorkerHeartbeat.objects.exists() or not _answers_page(base + "/login/"):
            if time.monotonic() > deadline + 60 or worker.poll() is not None:
                raise SystemExit("the worker did not start; see worker.log")
            time.sleep(0.2)

        timings, stopping, logged_in = Timings(), threading.Event(), []
        with PeakRss(web=web, worker=worker) as memory:
            log(f"launching {RUNS} runs; {SCORERS} scorers log in at once and start reviewing")
            running = campaigns.launch(
                prompt_set=prompt_set, contestants=[executing], name="executing"
            )
            time.sleep(2)  # the first runs are starting
            storm_started, cpu_at = time.monotonic(), [time.process_time()]
            team = [
                threading.Thread(
                    target=scorer, args=(f"scorer{i}", base, timings, stopping, logged_in)
                )
                for i in range(SCORERS)
            ]
            team.append(threading.Thread(target=lead, args=(base, campaign_url, timings, stopping)))
            for member in team:
                member.start()
            while running.runs.filter(status__in=Run.ACTIVE_STATUSES).exists():
                if time.monotonic() - storm_started > TIMEOUT_S:
                    log("the campaign did not end in time; measuring 'after' anyway")
                    break
                time.sleep(1)
            during_s = time.monotonic() - storm_started
            log(f"runs ended after {during_s:.0f} s; {AFTER_S} s more without runs")
            timings.phase = PHASES[1]
            cpu_at.append(time.process_time())
            time.sleep(AFTER_S)
            cpu_at.append(time.process_time())
            stopping.set()
            for member in team:
                member.join(timeout=90)

        from scoring.models import Review

        during, after = timings.figures("during_runs"), timings.figures("after_runs")
        logins = timings.seconds.get(("during_runs", "login"), [])
        worst_during = max((k["p95_ms"] or 0 for k in during.values()), default=0)
        worst_after = max((k["p95_ms"] or 0 for k in after.values()), default=0)
        errors = sum(timings.errors.values())
        cores = len(os.sched_getaffinity(0))
        figures = {
            "benchmark": "team_load",
            "backend": backend,
            **({"backend_note": why} if why else {}),
            "scorers": SCORERS,
            "think_s": THINK_S,
            "executing_runs": RUNS,
            "run_slots": SLOTS,
            "cores": cores,
            "runs_phase_s": r(during_s, 1),
            "after_phase_s": AFTER_S,
            "during_runs": during,
            "after_runs": after,
            "password_hash": hash_cost,
            "simultaneous_logins": {
                "count": len(logins),
                "p95_ms": r(percentile(logins, 0.95) * 1000, 1) if logins else None,
                "max_ms": r(max(logins) * 1000, 1) if logins else None,
                "all_in_s": r(max(logged_in) - storm_started, 2) if logged_in else None,
            },
            "reviews_submitted": Review.objects.filter(submitted_at__isnull=False).count(),
            # Visits to "review next" that found nothing to review (or lost every race).
            "nothing_left": {phase: timings.nothing_left[phase] for phase in PHASES},
            # What the machine sustained: submitted reviews a second, per phase.
            "reviews_per_s": {
                "during_runs": r(during.get("review_submit", {}).get("count", 0) / during_s, 2),
                "after_runs": r(after.get("review_submit", {}).get("count", 0) / AFTER_S, 2),
            },
            "run_status_counts": dict(Counter(running.runs.values_list("status", flat=True))),
            "errors": errors,
            "error_samples": timings.error_samples,
            # The simulated browsers run on the machine they measure, in this process (beside its
            # once-a-second checks): the share of the CPUs they took from the server.
            "load_generator_cpu_share": {
                "during_runs": r((cpu_at[1] - cpu_at[0]) / (during_s * cores), 2),
                "after_runs": r((cpu_at[2] - cpu_at[1]) / (AFTER_S * cores), 2),
            },
            "web_peak_rss_mb": r(memory.peak_kb["web"] / 1024, 1),
            "worker_peak_rss_mb": r(memory.peak_kb["worker"] / 1024, 1),
            "target_during_p95_ms": DURING_TARGET_MS,
            "target_after_p95_ms": AFTER_TARGET_MS,
            "worst_p95_during_ms": worst_during,
            "worst_p95_after_ms": worst_after,
            "met": errors == 0
            and not any(timings.nothing_left.values())
            and worst_during <= DURING_TARGET_MS
            and worst_after <= AFTER_TARGET_MS,
            "load_average_1m": r(os.getloadavg()[0], 2),
        }
        emit(figures)
    finally:
        for process in (web, worker, beat):
            stop(process)
        SERVICES.cleanup(backend, var_dir)


if __name__ == "__main__":
    main()

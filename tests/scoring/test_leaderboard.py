"""The leaderboard pages as a lead reads them: order, rates, intervals, ties, breakdowns."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from evalsite.roles import SCORER, set_role
from runs import campaigns
from runs.models import Campaign, Contestant, LanguageModel, Prompt, PromptSet, Repository, Run
from scoring import adjudications, leaderboard, stats
from scoring.leaderboard import Filters
from scoring.models import CampaignRubric, Comparison, Review, Rubric

BOARD = reverse("scoring:leaderboard")
EXPORT = reverse("scoring:leaderboard_export")
AGREEMENT = reverse("scoring:leaderboard_agreement")
HISTORY = reverse("scoring:leaderboard_history")
DISAGREEMENTS = reverse("scoring:leaderboard_disagreements")


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


class Builder:
    """A small campaign built straight through the ORM, as finished runs would leave it."""

    def __init__(self) -> None:
        self.repo = Repository.objects.create(name="shop", url="https://git.example.com/s.git")
        self.prompt_set = PromptSet.objects.create(name="backend")
        self.real_model = LanguageModel.objects.create(name="gpt", provider="openai")
        self.scripted_model = LanguageModel.objects.create(
            name="replay", provider="scripted", script="- text: hi\n"
        )
        self.prompts: dict[str, Prompt] = {}
        self.contestants: dict[str, Contestant] = {}
        self.reviewers: list = []

    def prompt(self, key: str, tags=(), **fields) -> Prompt:
        if key not in self.prompts:
            self.prompts[key] = Prompt.objects.create(
                prompt_set=self.prompt_set, key=key, title=key, instructions="Do it",
                repository=self.repo, commit="a" * 40, tags=list(tags), **fields,
            )  # fmt: skip
        return self.prompts[key]

    def contestant(self, name: str, scripted: bool = False, **fields) -> Contestant:
        if name not in self.contestants:
            model = self.scripted_model if scripted else self.real_model
            self.contestants[name] = Contestant.objects.create(name=name, model=model, **fields)
        return self.contestants[name]

    def campaign(self, name: str = "March", days_ago: int = 0) -> Campaign:
        return Campaign.objects.create(
            name=name,
            prompt_set=self.prompt_set,
            created_at=timezone.now() - timedelta(days=days_ago),
        )

    def reviewer(self, index: int):
        while len(self.reviewers) <= index:
            user = get_user_model().objects.create_user(username=f"rev{len(self.reviewers)}")
            set_role(user, SCORER)
            self.reviewers.append(user)
        return self.reviewers[index]

    def run(
        self, campaign, prompt: Prompt, contestant: Contestant, verdicts=(), repeat: int = 0,
        status: str = Run.FINISHED, answers=None, **fields,
    ) -> Run:  # fmt: skip
        now = timezone.now()
        run = Run.objects.create(
            campaign=campaign, prompt=prompt, contestant=contestant, repeat=repeat,
            status=status, snapshot={"prompt": prompt.snapshot(), "contestant": contestant.snapshot()},
            **{"started_at": now - timedelta(seconds=60), "finished_at": now, **fields},
        )  # fmt: skip
        for index, verdict in enumerate(verdicts):
            Review.objects.create(
                run=run, reviewer=self.reviewer(index), verdict=verdict,
                answers=dict(answers or {}, merge=verdict), submitted_at=now,
            )  # fmt: skip
        return run

    def series(self, campaign, contestant: Contestant, merges: int, total: int, **fields):
        """`total` runs on distinct prompts, the first `merges` reviewed yes, the rest no."""
        for index in range(total):
            verdict = "yes" if index < merges else "no"
            self.run(campaign, self.prompt(f"p{index}"), contestant, [verdict], **fields)


@pytest.fixture
def build(db):
    return Builder()


def page(client, url=BOARD, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def rows_in_order(html: str) -> list[str]:
    return re.findall(r'class="board-row" data-contestant="([^"]+)"', html)


def percent(value: float) -> str:
    return f"{round(100 * value)}%"


def rate_text(k: int, n: int) -> str:
    """A Wilson interval's text: completion rates, and merge rates of runs on distinct prompts
    with one verdict each, where resampling prompts cannot widen the interval further."""
    low, high = stats.wilson_interval(k, n)
    return f"{percent(k / n)} ({percent(low)}–{percent(high)}, {k} of {n})"


def merge_text(values: list[float], prompts: list) -> str:
    low, high = stats.rate_interval(values, prompts)
    total = f"{round(sum(values), 1):g}"
    return f"{percent(sum(values) / len(values))} ({percent(low)}–{percent(high)}, {total} of {len(values)})"


def row_of(filters: Filters, contestant: str) -> dict:
    return next(r for r in leaderboard.rows(filters) if r["contestant"] == contestant)


def test_it_ranks_contestants_by_merge_rate_with_prompt_bootstrap_intervals(
    build, client_for, lead
):
    campaign = build.campaign()
    build.series(campaign, build.contestant("weak"), merges=1, total=10)
    build.series(campaign, build.contestant("strong"), merges=9, total=10)

    html = page(client_for(lead))

    assert rows_in_order(html) == ["strong", "weak"]
    prompts = [build.prompts[f"p{i}"].pk for i in range(10)]
    assert merge_text([1.0] * 9 + [0.0], prompts) in html
    assert merge_text([1.0] + [0.0] * 9, prompts) in html
    rows = leaderboard.rows(Filters(campaign_id=campaign.pk))
    assert [(r["contestant"], r["rank"], r["tied"]) for r in rows] == [
        ("strong", 1, False),
        ("weak", 2, False),
    ]
    low, high = stats.rate_interval([1.0] * 9 + [0.0], prompts)
    assert rows[0]["merge_rate_ci"] == [round(low, 3), round(high, 3)]


def test_it_widens_the_interval_when_repeats_of_a_prompt_agree(build, lead):
    """Ten runs on two prompts are two pieces of evidence, not ten: the interval resamples
    prompts, so it is wider than a Wilson interval that treats the runs as independent."""
    campaign = build.campaign()
    bot = build.contestant("bot")
    for repeat in range(5):
        build.run(campaign, build.prompt("easy"), bot, ["yes"], repeat=repeat)
        build.run(campaign, build.prompt("hard"), bot, ["no"], repeat=repeat)

    row = row_of(Filters(campaign_id=campaign.pk), "bot")

    wilson = stats.wilson_interval(5, 10)
    assert row["merge_rate"] == 0.5
    assert row["merge_rate_ci"][0] < round(wilson[0], 3)
    assert row["merge_rate_ci"][1] > round(wilson[1], 3)


def test_it_shares_a_rank_when_intervals_overlap(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("alpha"), merges=3, total=5)
    build.series(campaign, build.contestant("beta"), merges=2, total=5)

    html = page(client_for(lead))

    rows = leaderboard.rows(Filters(campaign_id=campaign.pk))
    assert [(r["contestant"], r["rank"], r["tied"]) for r in rows] == [
        ("alpha", 1, True),
        ("beta", 1, True),
    ]
    assert html.count(">tied</span>") == 2


def test_it_labels_scripted_contestants(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("demo-bot", scripted=True), merges=1, total=2)

    html = page(client_for(lead))

    assert "demo-bot (scripted)" in html
    assert leaderboard.latest_summary()["rows"][0]["label"] == "demo-bot (scripted)"


@pytest.fixture
def mixed(build):
    """Three reviewed runs, one with only a draft, one errored (its review ignored)."""
    campaign = build.campaign()
    bot = build.contestant("bot")
    build.run(campaign, build.prompt("a"), bot, ["yes", "yes", "no"])
    build.run(campaign, build.prompt("b"), bot, ["yes", "no"])
    build.run(campaign, build.prompt("c"), bot, ["small_changes", "yes", "no"])
    draft_only = build.run(campaign, build.prompt("d"), bot)
    Review.objects.create(run=draft_only, reviewer=build.reviewer(0), verdict="yes")
    build.run(campaign, build.prompt("e"), bot, ["yes"], status=Run.ERRORED)
    return campaign


def test_it_takes_the_mean_of_a_runs_verdicts(build, mixed, client_for, lead):
    row = row_of(Filters(campaign_id=mixed.pk), "bot")

    # a: 2/3, b: 1/2, c: (0.5 + 1 + 0) / 3 = 1/2; d has only a draft; e errored and counts 0.
    values = [2 / 3, 0.5, 0.5, 0.0]
    assert (row["counted_runs"], row["reviewed_runs"], row["runs"]) == (4, 3, 5)
    assert row["merges"] == pytest.approx(sum(values), abs=1e-3)
    assert row["merge_rate"] == pytest.approx(sum(values) / 4, abs=1e-3)
    assert (row["acceptable"], row["reviews"]) == (2, 8)
    prompts = [build.prompts[key].pk for key in "abce"]
    assert merge_text(values, prompts) in page(client_for(lead), campaign=mixed.pk)


def test_it_reads_verdicts_by_strict_majority_when_asked(build, mixed, client_for, lead):
    row = row_of(Filters(campaign_id=mixed.pk, verdict="majority"), "bot")

    # Only a has a strict majority of yes; b is split; e errored.
    assert (row["merges"], row["counted_runs"]) == (1, 4)
    html = page(client_for(lead), campaign=mixed.pk, verdict="majority")
    prompts = [build.prompts[key].pk for key in "abce"]
    assert merge_text([1.0, 0.0, 0.0, 0.0], prompts) in html
    assert 'A run counts as "would merge" when a strict majority' in html


def test_it_rejects_an_unknown_reading(build, client_for, lead):
    client = client_for(lead)
    assert client.get(BOARD, {"verdict": "loudest"}).status_code == 400
    assert client.get(BOARD, {"errored": "maybe"}).status_code == 400
    assert client.get(EXPORT, {"verdict": "loudest"}).status_code == 400


def test_it_counts_small_changes_at_the_rubrics_value(build, lead):
    campaign = build.campaign()
    strict = Rubric.objects.create(name="Strict", small_changes_value=0.2)
    CampaignRubric.objects.create(campaign=campaign, rubric=strict)
    build.run(campaign, build.prompt("a"), build.contestant("bot"), ["small_changes", "yes"])

    row = row_of(Filters(campaign_id=campaign.pk), "bot")

    assert row["merge_rate"] == 0.6  # (0.2 + 1) / 2
    board = leaderboard.board(Filters(campaign_id=campaign.pk))
    assert board["reading"]["small_changes_values"] == [0.2]


def test_it_leaves_errored_runs_out_when_asked(build, mixed, client_for, lead):
    row = row_of(Filters(campaign_id=mixed.pk, errored="exclude"), "bot")

    assert (row["counted_runs"], row["errored_runs"], row["runs"]) == (3, 1, 5)
    assert row["merge_rate"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3, abs=1e-3)
    html = page(client_for(lead), campaign=mixed.pk, errored="exclude")
    assert "Errored runs are left out of the merge rate (1 on this board)" in html
    assert "Count them as would not merge" in html
    default = page(client_for(lead), campaign=mixed.pk)
    assert 'Errored runs count as "would not merge" (1 on this board)' in default


def test_it_shows_errored_and_timed_out_runs_with_a_completion_rate(build, client_for, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    build.run(campaign, build.prompt("a"), bot, ["yes"])
    build.run(campaign, build.prompt("b"), bot, ["no"], status=Run.FAILED)
    build.run(campaign, build.prompt("c"), bot, ["no"], status=Run.TIMED_OUT)
    build.run(campaign, build.prompt("d"), bot, status=Run.ERRORED)
    build.run(campaign, build.prompt("e"), bot, status=Run.CANCELLED)  # a person stopped it
    build.run(campaign, build.prompt("f"), bot, status=Run.RUNNING)  # not ended yet

    row = row_of(Filters(campaign_id=campaign.pk), "bot")
    html = page(client_for(lead), campaign=campaign.pk)

    assert (row["runs"], row["errored_runs"], row["timed_out_runs"]) == (4, 1, 1)
    assert (row["completed_runs"], row["completion_rate"]) == (2, 0.5)
    low, high = stats.wilson_interval(2, 4)
    assert row["completion_rate_ci"] == [round(low, 3), round(high, 3)]
    assert rate_text(2, 4) in html
    assert '<span class="errored-runs">1 errored</span>' in html
    assert '<span class="timed-out-runs">1 timed out</span>' in html


@pytest.mark.parametrize("errored", ["count", "exclude"])
def test_it_lists_a_contestant_whose_every_run_errored_last(build, client_for, lead, errored):
    campaign = build.campaign()
    build.run(campaign, build.prompt("a"), build.contestant("modest"), ["no"])
    broken = build.contestant("broken")
    for key in "abc":
        build.run(campaign, build.prompt(key), broken, status=Run.ERRORED)

    html = page(client_for(lead), campaign=campaign.pk, errored=errored)

    assert rows_in_order(html) == ["modest", "broken"]
    row = row_of(Filters(campaign_id=campaign.pk, errored=errored), "broken")
    assert (row["rank"], row["only_errored"], row["errored_runs"]) == (None, True, 3)
    assert row["completion_rate"] == 0.0
    assert row_of(Filters(campaign_id=campaign.pk, errored=errored), "modest")["rank"] == 1
    assert "every run errored" in html


def test_it_uses_the_adjudicated_verdict_and_shows_agreement_before_and_after(
    build, client_for, lead
):
    campaign = build.campaign()
    bot = build.contestant("bot")
    disputed = build.run(campaign, build.prompt("a"), bot, ["yes", "no"])
    build.run(campaign, build.prompt("b"), bot, ["yes", "yes"])
    build.run(campaign, build.prompt("c"), bot, ["no", "no"])
    client = client_for(lead)
    before = row_of(Filters(campaign_id=campaign.pk), "bot")
    assert (before["merges"], before["adjudicated_runs"]) == (1.5, 0)

    adjudications.adjudicate(disputed, lead, "yes", "The failing test was flaky.")

    row = row_of(Filters(campaign_id=campaign.pk), "bot")
    assert (row["merges"], row["adjudicated_runs"]) == (2, 1)
    agreement = leaderboard.board(Filters(campaign_id=campaign.pk))["verdict_agreement"]
    order = ["no", "small_changes", "yes"]
    assert agreement["before"]["alpha"] == pytest.approx(
        stats.krippendorff_alpha(
            [["yes", "yes", "no"], ["no", "yes", "no"]], "ordinal", value_order=order
        ),
        abs=1e-3,
    )
    assert agreement["after"]["alpha"] == 1.0
    html = page(client, campaign=campaign.pk)
    assert '<div class="muted small adjudicated">1 run adjudicated</div>' in html
    assert "before adjudication; α 1.00: reliable" in html


def test_it_breaks_the_merge_rate_down_by_tag(build, client_for, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    build.run(campaign, build.prompt("a", tags=["multi-file"]), bot, ["yes"])
    build.run(campaign, build.prompt("b", tags=["multi-file", "sql"]), bot, ["small_changes"])
    build.run(campaign, build.prompt("c", tags=["sql"]), bot, ["no"])

    html = page(client_for(lead))

    tags = {entry["tag"]: entry["cells"][0] for entry in leaderboard.board(
        Filters(campaign_id=campaign.pk))["tags"]}  # fmt: skip
    assert (tags["multi-file"]["merges"], tags["multi-file"]["counted_runs"]) == (1.5, 2)
    assert (tags["sql"]["merges"], tags["sql"]["counted_runs"]) == (0.5, 2)
    assert re.search(r"<td>multi-file</td><td>75% \(1.5 of 2\)</td>", html)
    assert re.search(r"<td>sql</td><td>25% \(0.5 of 2\)</td>", html)


def test_it_narrows_results_with_filters(build, client_for, lead):
    old = build.campaign("January", days_ago=40)
    new = build.campaign("March")
    bot = build.contestant("bot")
    build.run(old, build.prompt("a", tags=["sql"]), bot, ["no"])
    build.run(new, build.prompt("b"), bot, ["yes"])
    build.run(new, build.prompt("c", tags=["sql"]), bot, ["yes"])
    Run.objects.filter(campaign=old).update(finished_at=timezone.now() - timedelta(days=40))
    client = client_for(lead)

    # A plain visit shows the latest campaign with reviews.
    assert rate_text(2, 2) in page(client)
    assert rate_text(0, 1) in page(client, campaign=old.pk)
    assert rate_text(2, 3) in page(client, campaign="")
    a, c = build.prompts["a"].pk, build.prompts["c"].pk
    assert merge_text([0.0, 1.0], [a, c]) in page(client, campaign="", tag="sql")
    since = (timezone.now() - timedelta(days=10)).date().isoformat()
    assert rate_text(2, 2) in page(client, campaign="", date_from=since)
    assert "No finished runs match" in page(client, campaign=new.pk, tag="no-such-tag")


def test_it_rejects_an_inverted_date_range(build, client_for, lead):
    response = client_for(lead).get(BOARD, {"date_from": "2025-03-02", "date_to": "2025-03-01"})
    assert response.status_code == 400
    assert "The start date is after the end date." in response.content.decode()


def test_it_reports_rubric_means_with_prompt_bootstrap_intervals(build, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    scores = [5, 4, 2, 5, 3]
    for index, score in enumerate(scores):
        build.run(
            campaign, build.prompt(f"p{index}"), bot, ["yes"], answers={"conventions": str(score)}
        )

    [row] = leaderboard.rows(Filters(campaign_id=campaign.pk))

    low, high = stats.bootstrap_mean_ci(
        scores, clusters=[build.prompts[f"p{i}"].pk for i in range(5)]
    )
    assert row["criteria"]["conventions"]["mean"] == pytest.approx(3.8)
    assert row["criteria"]["conventions"]["ci"] == [round(low, 3), round(high, 3)]
    assert "merge" not in row["criteria"]  # the verdict is the merge rate, not a rubric mean


def test_it_rates_contestants_from_pairwise_votes_when_nobody_reviewed(build, client_for, lead):
    campaign = build.campaign()
    good, bad = build.contestant("good"), build.contestant("bad")
    for index in range(12):
        prompt = build.prompt(f"p{index}")
        run_good = build.run(campaign, prompt, good)
        run_bad = build.run(campaign, prompt, bad)
        outcome = "a" if index < 10 else "both_bad"
        Comparison.objects.create(
            prompt=prompt, run_a=run_good, run_b=run_bad, reviewer=build.reviewer(0),
            outcome=outcome, decided_at=timezone.now(),
        )  # fmt: skip
    Comparison.objects.create(  # undecided: ignored
        prompt=prompt, run_a=run_good, run_b=run_bad, reviewer=build.reviewer(1)
    )

    html = page(client_for(lead))

    board = leaderboard.board(Filters(campaign_id=campaign.pk))
    assert board["rank_basis"] == "pairwise votes"
    assert rows_in_order(html) == ["good", "bad"]
    expected = stats.bradley_terry(
        [(str(good.pk), str(bad.pk), 1.0)] * 10 + [(str(good.pk), str(bad.pk), 0.5)] * 2
    )
    strengths = {row["contestant"]: row["strength"] for row in board["rows"]}
    assert strengths["good"] == pytest.approx(expected[str(good.pk)], abs=1e-3)
    assert [row["votes"] for row in board["rows"]] == [12, 12]
    assert "Ranks come from the 95% intervals of the pairwise votes" in html


def test_it_measures_automatic_signals_per_contestant(build, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    ambiguous = build.prompt("vague", clarification_expected=True, expected_files=["a.py", "b.py"])
    build.run(campaign, ambiguous, bot, ["yes"], test_exit_code=0, files_changed=["a.py"],
              questions=[{"question": "Which?", "answer": "This"}], cost_usd=0.5,
              input_tokens=100, output_tokens=20)  # fmt: skip
    build.run(campaign, build.prompt("clear"), bot, ["no"], test_exit_code=1, cost_usd=1.5,
              input_tokens=300, output_tokens=20)  # fmt: skip

    [row] = leaderboard.rows(Filters(campaign_id=campaign.pk))

    assert (row["tests_passed"], row["tests_run"], row["tests_pass_rate"]) == (1, 2, 0.5)
    assert row["expected_files_recall"] == 0.5
    assert (row["clarification_asked"], row["clarification_prompts"]) == (1, 1)
    assert row["median_cost_usd"] == 1.0
    assert row["median_tokens"] == 220
    assert row["median_duration_s"] == 60


def test_it_says_which_signals_predict_the_verdict(build, client_for, lead):
    campaign = build.campaign()
    for name, benchmark, merges in (("a", 10, 1), ("b", 20, 2), ("c", 30, 3), ("d", 40, 4)):
        contestant = build.contestant(name, benchmarks={"swe-bench": benchmark})
        for index in range(5):
            merged = index < merges
            build.run(
                campaign, build.prompt(f"p{index}"), contestant, ["yes" if merged else "no"],
                test_exit_code=0 if merged else 1, additions=10 if merged else 300,
            )  # fmt: skip

    html = page(client_for(lead))

    assert "Tests passing predicted the verdict well (AUC 1.00 over 20 runs)." in html
    assert "Diff size predicted the verdict well, in reverse" in html
    assert "Expected-files recall: not enough data (0 reviewed runs" in html
    assert (
        "Benchmark swe-bench predicted the merge rate well (Spearman 1.00 over 4 contestants)."
        in html
    )


def test_it_says_when_there_is_not_enough_data_to_predict(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("bot"), merges=1, total=3, test_exit_code=0)

    assert "Tests passing: not enough data (3 reviewed runs" in page(client_for(lead))


def test_it_shows_reviewer_agreement(build, client_for, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    pattern = ["yes", "no", "small_changes", "yes", "no", "yes"]
    for index, verdict in enumerate(pattern):
        contrarian = "no" if verdict != "no" else "yes"
        build.run(campaign, build.prompt(f"p{index}"), bot, [verdict, verdict, verdict, contrarian])
    build.run(campaign, build.prompt("lonely"), bot)  # no reviews yet

    html = page(client_for(lead), AGREEMENT)

    result = leaderboard.agreement(Filters(campaign_id=campaign.pk))
    verdict = result["measures"][0]
    expected = stats.krippendorff_alpha(
        [pattern, pattern, pattern, ["no" if v != "no" else "yes" for v in pattern]],
        "ordinal", value_order=["no", "small_changes", "yes"],
    )  # fmt: skip
    assert verdict["alpha"] == pytest.approx(expected, abs=1e-3)
    assert verdict["words"] == stats.interpret_alpha(expected) == "unreliable"
    assert result["histogram"] == [
        {"reviews": 0, "runs": 1}, {"reviews": 1, "runs": 0},
        {"reviews": 2, "runs": 0}, {"reviews": 3, "runs": 0}, {"reviews": 4, "runs": 6},
    ]  # fmt: skip
    shares = {r["username"]: (r["agree"], r["compared"]) for r in result["reviewers"]}
    assert shares == {"rev0": (6, 6), "rev1": (6, 6), "rev2": (6, 6), "rev3": (0, 6)}
    assert "100% (6 of 6)" in html and "0% (0 of 6)" in html
    assert "Unreliable" in html
    assert "<svg" in html and 'class="bar"' in html


def test_it_tracks_history_across_campaigns(build, client_for, lead):
    january, march = build.campaign("January", days_ago=60), build.campaign("March")
    bot = build.contestant("bot")
    build.run(january, build.prompt("a"), bot, ["no"])
    build.run(january, build.prompt("b"), bot, ["no"])
    build.run(march, build.prompt("a"), bot, ["yes"])
    build.run(march, build.prompt("b"), bot, ["no"])

    build.run(march, build.prompt("c"), bot, status=Run.ERRORED)

    html = page(client_for(lead), HISTORY)

    result = leaderboard.history(Filters())
    assert [c["name"] for c in result["campaigns"]] == ["January", "March"]
    [contestant] = result["contestants"]
    assert [p["merge_rate"] for p in contestant["points"]] == [0.0, 0.333]
    assert [m["label"] for m in result["models"]] == ["gpt"]
    assert html.index("January") < html.index("March")
    a, b, c = (build.prompts[key].pk for key in "abc")
    assert merge_text([1.0, 0.0, 0.0], [a, b, c]) in html
    left_out = leaderboard.history(Filters(errored="exclude"))["contestants"][0]
    assert [p["merge_rate"] for p in left_out["points"]] == [0.0, 0.5]


def test_it_draws_each_contestant_with_its_interval(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("bot"), merges=1, total=2)

    html = page(client_for(lead))

    svg = html[html.index('<svg class="chart merge-chart"') : html.index("</svg>")]
    assert svg.count('class="point"') == 1 and svg.count('class="interval"') == 1
    assert "style=" not in html


def test_it_refreshes_when_a_review_is_submitted(build, client_for, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    run = build.run(campaign, build.prompt("a"), bot, ["no"])
    client = client_for(lead)
    assert rate_text(0, 1) in page(client)

    Review.objects.create(
        run=run, reviewer=build.reviewer(1), verdict="yes", submitted_at=timezone.now()
    )
    Review.objects.create(
        run=run, reviewer=build.reviewer(2), verdict="yes", submitted_at=timezone.now()
    )

    assert merge_text([2 / 3], [run.prompt_id]) in page(client)


@pytest.mark.parametrize("ending", [Run.FINISHED, Run.ERRORED])
def test_it_shows_a_run_on_the_very_next_request_after_it_ends(build, client_for, lead, ending):
    """Workers end runs with .update(), which sends no signal: the board must notice anyway."""
    campaign = build.campaign()
    bot = build.contestant("bot")
    build.run(campaign, build.prompt("a"), bot, ["yes"])
    going = build.run(campaign, build.prompt("b"), bot, status=Run.TESTING, finished_at=None)
    client = client_for(lead)
    assert rate_text(1, 1) in page(client, campaign=campaign.pk)  # completion: 1 of 1
    assert rate_text(1, 1) in page(client, campaign=campaign.pk)  # now from the cache

    # As the engine's `_end` does, in the same statement.
    Run.objects.filter(pk=going.pk).update(status=ending, finished_at=timezone.now())

    html = page(client, campaign=campaign.pk)
    completed = 2 if ending == Run.FINISHED else 1
    assert rate_text(completed, 2) in html
    row = row_of(Filters(campaign_id=campaign.pk), "bot")
    assert row["runs"] == 2


@pytest.mark.parametrize("scope", ["campaign", "all campaigns"])
def test_it_drops_a_run_on_the_very_next_request_after_it_is_retried_or_deleted(
    build, client_for, lead, scope
):
    """A retried run leaves the board (it is queued again) without a signal; a deleted one
    leaves no trace in the runs at all."""
    campaign = build.campaign()
    bot = build.contestant("bot")
    # Neither is the newest run nor the latest to finish: what they go through must show
    # by itself. Neither has a review, whose deletion would announce it.
    an_hour_ago = timezone.now() - timedelta(hours=1)
    errored = build.run(
        campaign, build.prompt("c"), bot, status=Run.ERRORED, finished_at=an_hour_ago
    )
    unreviewed = build.run(campaign, build.prompt("d"), bot, finished_at=an_hour_ago)
    build.run(campaign, build.prompt("a"), bot, ["yes"])
    build.run(campaign, build.prompt("b"), bot, ["no"])  # the merge rate reads "1 of 2"
    client = client_for(lead)
    params = {"campaign": campaign.pk if scope == "campaign" else ""}
    assert rate_text(3, 4) in page(client, **params)  # completion: 3 of 4
    assert rate_text(3, 4) in page(client, **params)  # now from the cache

    assert campaigns.retry_run(errored)

    assert rate_text(3, 3) in page(client, **params)

    Run.objects.filter(pk=errored.pk).update(status=Run.ERRORED, finished_at=an_hour_ago)
    cache.clear()
    assert rate_text(3, 4) in page(client, **params)
    unreviewed.delete()

    assert rate_text(2, 3) in page(client, **params)


def _bigger(build, prompts: int, contestants: int) -> Campaign:
    campaign = build.campaign()
    for c in range(contestants):
        contestant = build.contestant(f"c{c}", benchmarks={"bench": c})
        for p in range(prompts):
            prompt = build.prompt(f"p{p}", tags=["t"], expected_files=["a.py"])
            run = build.run(campaign, prompt, contestant, ["yes", "no"][: 1 + (p % 2)],
                            answers={"conventions": "3"}, test_exit_code=p % 2)  # fmt: skip
            if c:
                Comparison.objects.create(
                    prompt=prompt, run_a=run, run_b=Run.objects.get(
                        campaign=campaign, prompt=prompt, contestant=build.contestant("c0")),
                    reviewer=build.reviewer(0), outcome="a", decided_at=timezone.now(),
                )  # fmt: skip
    return campaign


@pytest.mark.parametrize("size", [(2, 2), (6, 4)])
def test_it_keeps_a_fixed_query_budget(
    build, client_for, lead, size, django_assert_max_num_queries
):
    campaign = _bigger(build, *size)
    client = client_for(lead)
    client.get(reverse("dashboard"))  # the session and role lookups are not the board's cost
    cache.clear()

    with django_assert_max_num_queries(15):
        page(client, campaign=campaign.pk)
    with django_assert_max_num_queries(13):
        page(client, AGREEMENT, campaign=campaign.pk)
    with django_assert_max_num_queries(13):
        page(client, HISTORY)
    with django_assert_max_num_queries(15):
        page(client, DISAGREEMENTS, campaign=campaign.pk)
    with django_assert_max_num_queries(12):
        page(client, EXPORT, campaign=campaign.pk, format="csv")
    # cached: only the session, user and form queries, and the runs' stamp
    with django_assert_max_num_queries(7):
        page(client, campaign=campaign.pk)


def test_it_summarises_the_latest_reviewed_campaign_for_the_dashboard(build):
    assert leaderboard.latest_summary() is None
    older = build.campaign("Older", days_ago=5)
    build.series(older, build.contestant("bot"), merges=1, total=1)
    build.campaign("Newest, not reviewed yet")

    summary = leaderboard.latest_summary()

    assert summary["campaign"] == older
    assert summary["rows"] == [{"rank": 1, "label": "bot", "merge_rate_text": rate_text(1, 1)}]


def test_it_says_when_reviewers_never_varied_their_answer(build, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    for index in range(2):
        build.run(campaign, build.prompt(f"p{index}"), bot, ["yes", "yes"],
                  answers={"conventions": "3"})  # fmt: skip

    measures = {m["key"]: m for m in leaderboard.agreement(Filters())["measures"]}

    assert measures["conventions"]["alpha"] is None
    assert measures["conventions"]["units"] == 2
    assert "cannot be measured" in measures["conventions"]["words"]


def test_it_swaps_only_the_board_and_its_header_for_htmx_filter_requests(build, client_for, lead):
    campaign = build.campaign()
    build.series(campaign, build.contestant("bot"), merges=1, total=2, test_exit_code=0)

    response = client_for(lead).get(
        BOARD, {"campaign": campaign.pk, "tag": "", "errored": "exclude"},
        headers={"HX-Request": "true"},
    )  # fmt: skip

    html = response.content.decode()
    assert html.lstrip().startswith('<div class="pagehead" id="page-head">')
    assert '<div id="board">' in html and "<form" not in html
    assert "Errored runs left out" in html  # the header says what the board shows
    assert "errored=exclude" in html  # and its links carry it


# --- Filters carry into the header and every link ----------------------------------------------

ACTIVE = {
    "prompt_set": None,  # filled in by the test: the prompt set's id
    "tag": "sql",
    "date_from": "2020-01-01",
    "date_to": "2099-12-31",
    "verdict": "majority",
    "errored": "exclude",
}


def leaderboard_links(html: str) -> list[str]:
    """Every link of the page's own content (the site's top navigation aside) that leads to a
    leaderboard page, and the adjudication form's way back."""
    if "<main" in html:
        html = html[html.index("<main") : html.index("</main>")]
    hrefs = [html_lib.unescape(h) for h in re.findall(r'href="([^"]*)"', html)]
    backs = [
        f"{DISAGREEMENTS}?{html_lib.unescape(v)}"
        for v in re.findall(r'name="query" value="([^"]*)"', html)
    ]
    pager = [f"{DISAGREEMENTS}{h}" for h in hrefs if h.startswith("?")]
    prefix = BOARD.rstrip("/")
    return [h for h in hrefs if h.startswith(prefix)] + pager + backs


@pytest.mark.parametrize(
    "url,htmx",
    [(BOARD, False), (BOARD, True), (AGREEMENT, False), (HISTORY, False), (DISAGREEMENTS, False)],
)
def test_it_carries_the_active_filters_into_the_header_and_every_link(
    build, client_for, lead, url, htmx, monkeypatch
):
    monkeypatch.setattr("scoring.views.leaderboard.DISPUTES_PER_PAGE", 1)  # to have a pager
    campaign = build.campaign()
    bot = build.contestant("bot")
    for key in ("a", "b", "c"):
        build.run(campaign, build.prompt(key, tags=["sql"]), bot, ["yes", "no"])
    active = {**ACTIVE, "campaign": str(campaign.pk), "prompt_set": str(build.prompt_set.pk)}
    headers = {"HX-Request": "true"} if htmx else {}

    response = client_for(lead).get(url, {**active, "page": 2}, headers=headers)

    assert response.status_code == 200
    html = response.content.decode()
    start = html.index('id="page-head"')
    header = html[start : html.index("</nav>", start)]
    for words in ("Tagged sql", "Finished from 2020-01-01", "Finished until 2099-12-31",
                  "strict majority", "Errored runs left out", "Prompt set backend"):  # fmt: skip
        if url == HISTORY and words == "Tagged sql":
            continue  # history is across campaigns and tags, and says so
        assert words in header, words
    start = html.find('class="card filters"')
    form = html[start : html.index("</form>", start)] if start >= 0 else ""
    hidden = {HISTORY: "campaign tag", AGREEMENT: "readings", DISAGREEMENTS: "readings"}.get(
        url, ""
    )
    for name in hidden.split():  # fields a page ignores still ride along in its form
        for field in ("verdict", "errored") if name == "readings" else (name,):
            assert f'type="hidden" name="{field}" value="{active[field]}"' in form, field
    links = leaderboard_links(html)
    expected_pages = {BOARD, AGREEMENT, HISTORY, DISAGREEMENTS, EXPORT}
    assert expected_pages <= {urlsplit(link).path for link in links}
    if url == BOARD:
        assert {"csv", "json"} <= {
            parse_qs(urlsplit(link).query).get("format", [""])[0] for link in links
        }
    for link in links:
        query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
        # A link may offer the other reading of one thing, by naming it.
        flipped = {
            name
            for name, other in (("verdict", "mean"), ("errored", "count"))
            if query.get(name) == other
        }
        assert len(flipped) <= 1, link
        for name, value in active.items():
            if name not in flipped:
                assert query.get(name) == value, f"{link} lost {name}"


def test_it_counts_the_runs_whose_agent_changed_its_tests(build, client_for, lead):
    campaign = build.campaign()
    bot = build.contestant("bot")
    build.run(campaign, build.prompt("a"), bot, ["yes"], test_files_modified=["tests/test_a.py"])
    build.run(campaign, build.prompt("b"), bot, ["yes"])

    row = row_of(Filters(campaign_id=campaign.pk), "bot")

    assert row["test_files_modified_runs"] == 1
    assert "1 changed its tests" in page(client_for(lead), campaign=campaign.pk)


def test_it_reports_the_acceptance_criteria_reviewers_ticked_per_contestant(
    build, client_for, lead
):
    campaign = build.campaign()
    bot = build.contestant("bot")
    prompt = build.prompt("a")
    prompt.acceptance_criteria = ["Adds", "Has a test"]
    prompt.save()
    run = build.run(campaign, prompt, bot, ["yes", "no"])
    # Saved as a reviewer's ticks are, so that the run's tally counts them.
    first, second = run.reviews.order_by("reviewer__username")
    first.acceptance_met = ["Adds", "Has a test"]
    first.save()
    second.acceptance_met = ["Adds"]
    second.save()

    row = row_of(Filters(campaign_id=campaign.pk), "bot")

    assert (row["acceptance_met_rate"], row["acceptance_reviews"]) == (0.75, 2)
    assert "75% <span" in page(client_for(lead), campaign=campaign.pk)

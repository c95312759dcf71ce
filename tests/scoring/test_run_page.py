"""The lead's run page: the rendered diff, tests, setup, the gateway's calls, reviews and votes."""

from __future__ import annotations

import html
import json

from django.urls import reverse

from runs.models import Run
from scoring import reviews
from scoring.models import Comparison
from tests.scoring.test_review import ANSWERS, TRANSCRIPT, make_contestant, make_run

GATEWAY_LOG = "\n".join(
    [
        json.dumps(
            {
                "index": 0, "method": "POST", "path": "/v1/chat/completions", "status": 200,
                "latency_s": 1.25, "stream": False, "input_tokens": 1234, "output_tokens": 56,
                "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0123,
                "request": '{"model": "zeta-9000", "messages": ["<script>x</script>"]}',
                "response": '{"choices": []}', "error": "", "started_at": "2025-01-01T00:00:00Z",
            }
        ),
        json.dumps(
            {
                "index": 1, "method": "POST", "path": "/v1/chat/completions", "status": 429,
                "latency_s": 0.1, "stream": True, "input_tokens": 0, "output_tokens": 0,
                "cost_usd": 0, "request": "{}", "response": "", "error": "rate limited",
            }
        ),
        '{"index": 2, "method": "POST", "pa',  # a run cut short mid-line
    ]
)  # fmt: skip


def test_it_shows_tests_setup_and_the_gateway_log(lead, client_for):
    run = make_run(transcript=TRANSCRIPT, tests_passed=3, tests_failed=1, test_exit_code=1)
    run.save_artifact("test_output.txt", "FAILED test_app.py::test_fifteen\n3 passed, 1 failed")
    run.save_artifact("setup_output.txt", "pip install -e . done")
    run.save_artifact("raw/gateway.jsonl", GATEWAY_LOG)
    body = client_for(lead).get(reverse("runs:run", args=[run.pk])).content.decode()
    assert "JUnit: 3 passed, 1 failed" in body
    assert "FAILED test_app.py::test_fifteen" in body
    assert "pip install -e . done" in body
    assert "/v1/chat/completions" in body and "rate limited" in body
    assert "1 line of the log could not be read" in body
    assert "&lt;script&gt;x&lt;/script&gt;" in body and "<script>x</script>" not in body
    assert "1234 in / 56 out" in body  # usage per transcript step
    assert f'href="/campaigns/{run.campaign_id}/#run-{run.pk}"' in body
    assert reverse("scoring:run_judgement", args=[run.pk]) in body


def test_the_gateway_log_is_for_leads_only(scorer, lead, client_for):
    run = make_run()
    run.save_artifact("raw/gateway.jsonl", GATEWAY_LOG)
    url = reverse("runs:run_artifact", args=[run.pk]) + "?name=gateway"
    assert client_for(scorer).get(url).status_code == 404
    response = client_for(lead).get(url)
    assert b"zeta-9000" in b"".join(response.streaming_content)


def test_it_shows_the_diff_reviews_votes_and_comments_by_name(
    lead, scorer, other_scorer, client_for
):
    run = make_run()
    other = make_run(prompt=run.prompt, contestant=make_contestant("rival"), campaign=run.campaign)
    comment = {"path": "app.py", "line": 15, "side": "new", "text": "Why <b>fifteen</b>?"}
    reviews.submit_review(
        run, scorer, answers=ANSWERS, verdict="", notes="Looks right.",
        line_comments=json.dumps([comment]), time_spent_s="40", acceptance=[],
    )  # fmt: skip
    reviews.save_draft(run, other_scorer, {"answers": {}, "notes": "half done"})
    Comparison.objects.create(
        prompt=run.prompt, run_a=other, run_b=run, reviewer=other_scorer,
        outcome=Comparison.B, reason="cleaner", decided_at=run.finished_at,
    )  # fmt: skip

    client = client_for(lead)
    url = reverse("scoring:run_judgement", args=[run.pk])
    fragment = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in fragment
    assert "fifteen</span>" in fragment  # the highlighted diff
    assert scorer.username in fragment and "Looks right." in fragment
    assert f"In progress: {other_scorer.username}" in fragment
    assert "rival (run" in fragment and "better" in fragment and "cleaner" in fragment
    data = fragment.split('id="judgement-comments"')[1].split('data-comments="')[1].split('"')[0]
    assert "&lt;b&gt;fifteen" in data  # escaped in the attribute, placed as text by app.js
    assert json.loads(html.unescape(data))[0]["reviewer"] == scorer.username
    assert "Why &lt;b&gt;fifteen&lt;/b&gt;?" in fragment  # and listed under the review


def test_the_panel_is_for_leads(scorer, client_for):
    run = make_run(status=Run.ERRORED)
    assert (
        client_for(scorer).get(reverse("scoring:run_judgement", args=[run.pk])).status_code == 403
    )

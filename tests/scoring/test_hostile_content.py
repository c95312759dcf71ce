"""Agent output, prompt text and file names are hostile input: the pages must never run them."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from scoring import pairing, reviews
from scoring.models import Review
from tests.scoring.test_review import make_contestant, make_prompt, make_run

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
CONTROL = "bell\x07escape\x1b[31mred\x00nul"
# PostgreSQL text columns cannot hold NUL at all (imports refuse it); files in storage can.
CONTROL_IN_COLUMNS = CONTROL.replace("\x00", "")
LONG = "x" * 50_000
EVIL = f"{SCRIPT}{IMG}"
NAME = "<script>alert(1)</script>.py"

HOSTILE_DIFF = (
    f"diff --git a/{NAME} b/{NAME}\n"
    "new file mode 100644\n"
    "--- /dev/null\n"
    f"+++ b/{NAME}\n"
    "@@ -0,0 +1,3 @@\n"
    f"+{EVIL}\n"
    f"+{CONTROL}\n"
    f"+{LONG}\n"
)
HOSTILE_TRANSCRIPT = {
    "agent": {"name": EVIL, "model_name": EVIL},
    "steps": [
        {
            "step_id": 1,
            "source": "agent",
            "message": f"{EVIL} {CONTROL} {LONG}",
            "tool_calls": [
                {"tool_call_id": "c1", "function_name": EVIL, "arguments": {"command": EVIL}}
            ],
            "observation": {"results": [{"source_call_id": "c1", "content": EVIL + CONTROL}]},
        }
    ],
}
INSTRUCTIONS = (
    f"# Task\n\n{SCRIPT}\n\n{IMG}\n\n[click me](javascript:alert(1))\n\n"
    f'<a href="javascript:alert(2)">raw</a>\n\n{CONTROL_IN_COLUMNS}\n\n{LONG}\n'
)


def assert_harmless(body: str) -> None:
    assert "<script>alert" not in body
    assert "<img src=x" not in body
    assert "onerror=alert" not in body.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "javascript:" not in body
    for char in ("\x07", "\x1b", "\x00"):
        assert char not in body


@pytest.fixture
def hostile_run(db, other_scorer):
    prompt = make_prompt(
        title=f"Title {SCRIPT}",
        instructions=INSTRUCTIONS,
        acceptance_criteria=[EVIL],
        expected_files=[NAME],
        reference_patch=HOSTILE_DIFF.replace("\x00", ""),  # a column: no NUL (see above)
    )
    run = make_run(
        prompt,
        diff=HOSTILE_DIFF,
        before={},
        after={NAME: f"{EVIL}\n{CONTROL}\n{LONG}\n"},
        transcript=HOSTILE_TRANSCRIPT,
        questions=[{"question": EVIL, "answer": EVIL, "source": EVIL}],
        test_output_tail=EVIL + CONTROL_IN_COLUMNS,
        agent_status=EVIL[:40],  # the column holds 40 characters
    )
    Review.objects.create(
        run=run,
        reviewer=other_scorer,
        verdict="no",
        notes=EVIL,
        answers={"merge": EVIL},
        line_comments=[{"path": NAME, "line": 1, "side": "new", "text": EVIL}],
        submitted_at=timezone.now(),
    )
    return run


def test_it_escapes_everything_on_a_blind_review_page(hostile_run, scorer, client_for):
    response = client_for(scorer).get(reverse("scoring:review", kwargs={"run_id": hostile_run.pk}))
    body = response.content.decode()
    assert response.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body  # shown as text, not dropped
    assert_harmless(body)


def test_it_escapes_everything_after_submitting(hostile_run, scorer, client_for):
    reviews.submit_review(
        hostile_run,
        scorer,
        {"right_files": "no", "conventions": "1", "recovered": "no"},
        "no",
        EVIL,
        [{"path": NAME, "line": 1, "side": "new", "text": EVIL}],
        3,
    )
    body = (
        client_for(scorer)
        .get(reverse("scoring:review", kwargs={"run_id": hostile_run.pk}))
        .content.decode()
    )
    assert "Other reviews" in body
    assert_harmless(body)


def test_it_cuts_a_50000_character_line(hostile_run, scorer, client_for):
    body = (
        client_for(scorer)
        .get(reverse("scoring:review", kwargs={"run_id": hostile_run.pk}))
        .content.decode()
    )
    diff_part = body[body.index('id="diff"') : body.index('id="transcript"')]
    assert "x" * 50_000 not in diff_part
    assert "line truncated" in diff_part
    assert "more characters not shown" in body  # the transcript message, too


def test_it_drops_javascript_links_from_markdown():
    html = reviews.render_markdown("[a](javascript:alert(1)) [b](https://example.com) " + SCRIPT)
    assert "javascript:" not in html
    assert 'href="https://example.com"' in html
    assert "<script" not in html


def test_it_escapes_the_collapsed_file_fragment_and_context(hostile_run, scorer, client_for):
    client = client_for(scorer)
    fragment = client.get(
        reverse("scoring:review_file", kwargs={"run_id": hostile_run.pk}),
        {"file": 1},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert_harmless(fragment)
    context = client.get(
        reverse("scoring:review_context", kwargs={"run_id": hostile_run.pk}),
        {"file": 1, "start": 1, "end": 3, "view": "unified"},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert_harmless(context)


def test_it_escapes_the_pairwise_page_and_history(hostile_run, scorer, lead, client_for):
    other = make_run(
        hostile_run.prompt,
        make_contestant("second", "second-1"),
        campaign=hostile_run.campaign,
        diff=HOSTILE_DIFF,
        before={},
        after={},
    )
    assert other.pk
    comparison = pairing.next_comparison_for(scorer)
    body = (
        client_for(scorer)
        .get(reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk}))
        .content.decode()
    )
    assert_harmless(body)
    pairing.record_vote(comparison, "tie", EVIL)
    history = client_for(lead).get(reverse("scoring:review_history")).content.decode()
    assert_harmless(history)


def test_it_escapes_the_queue(hostile_run, scorer, client_for):
    assert_harmless(client_for(scorer).get(reverse("scoring:queue")).content.decode())

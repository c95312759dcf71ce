"""Agent output, prompt text and file names are hostile input: the pages must never run them."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from runs import text_policy
from runs.templatetags.runs_tags import render_markdown
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
    url = reverse("scoring:review", kwargs={"review_key": hostile_run.review_key})
    response = client_for(scorer).get(url)
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
        .get(reverse("scoring:review", kwargs={"review_key": hostile_run.review_key}))
        .content.decode()
    )
    assert "Other reviews" in body
    assert_harmless(body)


def test_it_cuts_a_50000_character_line(hostile_run, scorer, client_for):
    body = (
        client_for(scorer)
        .get(reverse("scoring:review", kwargs={"review_key": hostile_run.review_key}))
        .content.decode()
    )
    diff_part = body[body.index('id="diff"') : body.index('id="transcript"')]
    assert "x" * 50_000 not in diff_part
    assert "line truncated" in diff_part
    assert "more characters not shown" in body  # the transcript message, too


def test_it_drops_javascript_links_from_markdown():
    html = render_markdown("[a](javascript:alert(1)) [b](https://example.com) " + SCRIPT)
    assert "javascript:" not in html
    assert 'href="https://example.com"' in html
    assert "<script" not in html


def test_it_escapes_the_collapsed_file_fragment_and_context(hostile_run, scorer, client_for):
    client = client_for(scorer)
    fragment = client.get(
        reverse("scoring:review_file", kwargs={"review_key": hostile_run.review_key}),
        {"file": 1},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert_harmless(fragment)
    context = client.get(
        reverse("scoring:review_context", kwargs={"review_key": hostile_run.review_key}),
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


# --- Trojan Source: invisible and bidirectional characters are shown as marks, never raw --------

RLO, LRI, PDI, ZWSP = "\u202e", "\u2066", "\u2069", "\u200b"
RLO_MARK = '<span class="invisible-char" title="RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>'
ZWSP_MARK = '<span class="invisible-char" title="ZERO WIDTH SPACE">⟨U+200B⟩</span>'
WARNING = "hidden or bidirectional Unicode"
TROJAN = (
    f"if access_level != 'none{RLO}{LRI}': # Check if admin {PDI}{LRI}' and access_level != 'user'"
)
AUTH_BEFORE = f'access_level = "user"\nif access_level != "none":\n    print("admin{ZWSP}")\n'
AUTH_AFTER = f'access_level = "user"\n{TROJAN}\n    print("admin{ZWSP}")\n'
HIDDEN_NAME = f"hid{ZWSP}den.py"
TROJAN_DIFF = (
    "diff --git a/auth.py b/auth.py\n"
    "--- a/auth.py\n"
    "+++ b/auth.py\n"
    "@@ -1,2 +1,2 @@\n"
    ' access_level = "user"\n'
    '-if access_level != "none":\n'
    f"+{TROJAN}\n"
    "diff --git a/clean.py b/clean.py\n"
    "--- a/clean.py\n"
    "+++ b/clean.py\n"
    "@@ -1 +1 @@\n"
    "-x = 1\n"
    "+x = 2\n"
    # git quotes a name with non-ASCII bytes: \342\200\213 is U+200B in UTF-8.
    'diff --git "a/hid\\342\\200\\213den.py" "b/hid\\342\\200\\213den.py"\n'
    "new file mode 100644\n"
    "--- /dev/null\n"
    '+++ "b/hid\\342\\200\\213den.py"\n'
    "@@ -0,0 +1 @@\n"
    "+y = 1\n"
)
TROJAN_TRANSCRIPT = {
    "steps": [
        {
            "step_id": 1,
            "source": "agent",
            "message": f"All done{RLO} (the check is safe)",
            "tool_calls": [
                {"tool_call_id": "c1", "function_name": "bash", "arguments": {"command": "ls"}}
            ],
            "observation": {"results": [{"source_call_id": "c1", "content": f"{HIDDEN_NAME}\n"}]},
        }
    ],
}


def assert_no_raw_invisible(body: str) -> None:
    raw = text_policy.INVISIBLE.intersection(body)
    assert not raw, sorted(f"U+{ord(char):04X}" for char in raw)


def diff_section(body: str, path: str) -> str:
    start = body.index(f'data-path="{path}"')
    end = body.find('<section class="diff"', start)
    return body[start : end if end != -1 else len(body)]


@pytest.fixture
def trojan_run(db):
    prompt = make_prompt(
        title=f"Harden auth{RLO}txt.exe",
        tags=[f"secu{ZWSP}rity"],
        instructions=f"Keep **admins** out{RLO}.",
        acceptance_criteria=[f"Only admins{LRI} pass"],
        expected_files=[HIDDEN_NAME],
    )
    return make_run(
        prompt,
        diff=TROJAN_DIFF,
        before={"auth.py": AUTH_BEFORE, "clean.py": "x = 1\n"},
        after={"auth.py": AUTH_AFTER, "clean.py": "x = 2\n", HIDDEN_NAME: "y = 1\n"},
        transcript=TROJAN_TRANSCRIPT,
        files_changed=["auth.py", "clean.py", HIDDEN_NAME],
        test_output_tail=f"1 passed{LRI}",
    )


@pytest.mark.parametrize("view", ["split", "unified"])
def test_it_marks_hidden_unicode_on_the_review_page(trojan_run, scorer, client_for, view):
    response = client_for(scorer).get(
        reverse("scoring:review", kwargs={"review_key": trojan_run.review_key}), {"view": view}
    )
    body = response.content.decode()

    assert response.status_code == 200
    assert_no_raw_invisible(body)
    auth = diff_section(body, "auth.py")
    assert WARNING in auth
    assert RLO_MARK in auth and "⟨U+2066⟩" in auth and "⟨U+2069⟩" in auth
    assert WARNING in diff_section(body, "hid&#x200B;den.py")
    assert f"hid{ZWSP_MARK}den.py" in diff_section(body, "hid&#x200B;den.py")
    assert WARNING not in diff_section(body, "clean.py")
    assert "<title>Review · Harden auth⟨U+202E⟩txt.exe · Mergeable</title>" in body
    assert f"<h1>Harden auth{RLO_MARK}txt.exe</h1>" in body
    assert f'<span class="badge">secu{ZWSP_MARK}rity</span>' in body
    assert f"out{RLO_MARK}." in body  # the instructions, rendered from markdown
    assert f"<code>{HIDDEN_NAME.replace(ZWSP, ZWSP_MARK)}</code>" in body  # expected files
    transcript = body[body.index('id="transcript"') :]
    assert f"All done{RLO_MARK} (the check is safe)" in transcript
    assert f'<pre class="output">hid{ZWSP_MARK}den.py' in transcript


def test_it_marks_hidden_unicode_in_expanded_context(trojan_run, scorer, client_for):
    context = (
        client_for(scorer)
        .get(
            reverse("scoring:review_context", kwargs={"review_key": trojan_run.review_key}),
            {"file": 1, "start": 3, "end": 3, "view": "unified"},
            headers={"HX-Request": "true"},
        )
        .content.decode()
    )

    assert_no_raw_invisible(context)
    assert ZWSP_MARK in context  # line 3, print("admin​"), outside the hunk


def test_it_marks_hidden_unicode_on_the_run_page(trojan_run, lead, client_for):
    # The run page is for leads; a scorer is sent to the blind review page.
    body = client_for(lead).get(reverse("runs:run", args=[trojan_run.pk])).content.decode()

    assert_no_raw_invisible(body)
    assert f"Harden auth{RLO_MARK}txt.exe</h1>" in body
    assert f"auth.py, clean.py, hid{ZWSP_MARK}den.py" in body
    assert f"<pre>All done{RLO_MARK} (the check is safe)</pre>" in body
    assert f"<pre>hid{ZWSP_MARK}den.py" in body


def test_it_marks_hidden_unicode_in_titles_on_lists_and_pairwise(
    trojan_run, scorer, admin_user, client_for
):
    other = make_run(
        trojan_run.prompt,
        make_contestant("second", "second-1"),
        campaign=trojan_run.campaign,
        diff=TROJAN_DIFF,
        before={},
        after={},
    )
    assert other.pk
    client = client_for(scorer)
    comparison = pairing.next_comparison_for(scorer)
    pages = {
        "queue": client.get(reverse("scoring:queue")).content.decode(),
        "pairwise": client.get(
            reverse("scoring:pairwise", kwargs={"comparison_id": comparison.pk})
        ).content.decode(),
    }
    pages["prompt set"] = (
        client_for(admin_user)
        .get(reverse("runs:prompt_set", kwargs={"prompt_set_id": trojan_run.prompt.prompt_set_id}))
        .content.decode()
    )

    for name, body in pages.items():
        assert f"Harden auth{RLO_MARK}txt.exe" in body, name
        assert_no_raw_invisible(body)
    assert WARNING in diff_section(pages["pairwise"], "auth.py")
    assert f'<span class="badge">secu{ZWSP_MARK}rity</span>' in pages["prompt set"]

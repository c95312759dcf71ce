from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runs import diffs
from runs.diffs import STYLE_CSS, context_rows, render_diff, strip_control
from runs.text_policy import INVISIBLE

# The only markup render_diff may emit; everything else in an html field must be escaped text.
OWN_TAGS = re.compile(
    r'<span class="(?:tok-[a-z0-9]+|diff-[a-z-]+|invisible-char)"(?: title="[^"<>]*")?>|</span>'
)
UNSAFE = re.compile(r'[<>"\x00-\x08\x0b-\x1f\x7f-\x9f]')


class Repo:
    """A throwaway git repository whose staged changes become the diff under test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        }
        self.git("init", "-q")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=self.root, env=self.env, capture_output=True, check=True
        )
        return done.stdout.decode("utf-8", errors="replace")

    def write(self, path: str, content: str | bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        target.write_bytes(content)

    def commit(self) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "base")

    def diff(self, *extra: str) -> str:
        self.git("add", "-A")
        return self.git("diff", "--cached", "--binary", "-M", *extra)

    def before(self, path: str) -> str:
        return self.git("show", f"HEAD:{path}")

    def after(self, path: str) -> str:
        return (self.root / path).read_text()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def numbered(count: int, changed: dict[int, str] | None = None) -> str:
    changed = changed or {}
    return "".join(changed.get(no, f"line {no}") + "\n" for no in range(1, count + 1))


def by_path(result: dict) -> dict[str, dict]:
    return {file["raw_path"]: file for file in result["files"]}


def html_fields(result: dict):
    """Every string render_diff marks as pre-escaped HTML (paths, headers, code)."""
    for file in result["files"]:
        yield file["path"]
        if file["old_path"] is not None:
            yield file["old_path"]
        yield file["language"]
        for hunk in file["hunks"]:
            yield hunk["header"]
            for row in hunk["unified"]:
                yield row["html"]
            for row in hunk["split"]:
                yield row["left"]["html"]
                yield row["right"]["html"]


def assert_all_safe(result: dict) -> None:
    for markup in html_fields(result):
        leftover = OWN_TAGS.sub("", markup)
        assert not UNSAFE.search(leftover), markup[:200]
        assert "<script" not in markup.lower()


def test_it_renders_git_changes_of_every_kind(repo: Repo) -> None:
    repo.write("app.py", numbered(30))
    repo.write("gone.txt", "old\n")
    repo.write("moved.txt", numbered(20))
    repo.write("logo.png", b"\x89PNG\x00\x01\x02")
    repo.write("tail.txt", "no newline")
    repo.commit()
    repo.write("app.py", numbered(30, {15: "line fifteen"}))
    (repo.root / "gone.txt").unlink()
    (repo.root / "moved.txt").rename(repo.root / "renamed.txt")
    repo.write("renamed.txt", numbered(20, {2: "second"}))
    repo.write("logo.png", b"\x89PNG\x00\x01\x03")
    repo.write("tail.txt", "still no newline")
    repo.write("pkg/new.py", "def f():\n    return 1\n")

    result = render_diff(repo.diff())
    files = by_path(result)

    assert set(files) == {"app.py", "gone.txt", "renamed.txt", "logo.png", "tail.txt", "pkg/new.py"}
    assert files["app.py"]["status"] == "modified"
    assert files["gone.txt"]["status"] == "deleted"
    assert files["gone.txt"]["deletions"] == 1
    assert files["renamed.txt"]["status"] == "renamed"
    assert files["renamed.txt"]["old_path"] == "moved.txt"
    assert files["logo.png"] == files["logo.png"] | {
        "status": "binary",
        "binary": True,
        "hunks": [],
    }
    assert files["pkg/new.py"]["status"] == "added"
    assert files["pkg/new.py"]["additions"] == 2
    assert files["pkg/new.py"]["language"] == "Python"
    assert [f["anchor"] for f in result["files"]] == [f"file-{n}" for n in range(1, 7)]
    json.dumps(result)  # it is cached as JSON


def test_it_counts_additions_and_deletions(repo: Repo) -> None:
    repo.write("a.txt", numbered(10))
    repo.write("b.txt", numbered(10))
    repo.commit()
    repo.write("a.txt", numbered(10, {3: "three", 4: "four"}) + "eleven\n")
    repo.write("b.txt", numbered(8))

    result = render_diff(repo.diff())
    files = by_path(result)

    assert (files["a.txt"]["additions"], files["a.txt"]["deletions"]) == (3, 2)
    assert (files["b.txt"]["additions"], files["b.txt"]["deletions"]) == (0, 2)
    assert result["totals"] == {"files": 2, "additions": 3, "deletions": 4}


def test_it_marks_a_missing_newline_at_end_of_file(repo: Repo) -> None:
    repo.write("tail.txt", "no newline")
    repo.commit()
    repo.write("tail.txt", "still no newline")

    rows = render_diff(repo.diff())["files"][0]["hunks"][0]["unified"]

    assert [row["kind"] for row in rows] == ["del", "add"]
    assert all("diff-no-newline" in row["html"] for row in rows)
    assert rows[1]["html"].startswith("still no newline")


def test_it_pairs_deletions_with_additions_in_split_view(repo: Repo) -> None:
    repo.write("a.txt", "keep\nold 1\nold 2\nold 3\nkeep too\n")
    repo.commit()
    repo.write("a.txt", "keep\nnew 1\nkeep too\nextra\n")

    split = render_diff(repo.diff())["files"][0]["hunks"][0]["split"]
    cells = [
        ((row["left"]["kind"], row["left"]["no"]), (row["right"]["kind"], row["right"]["no"]))
        for row in split
    ]

    assert cells == [
        (("context", 1), ("context", 1)),
        (("del", 2), ("add", 2)),
        (("del", 3), ("empty", None)),
        (("del", 4), ("empty", None)),
        (("context", 5), ("context", 3)),
        (("empty", None), ("add", 4)),
    ]
    assert split[1]["left"]["html"] == "old 1"
    assert split[1]["right"]["html"] == "new 1"


def test_it_keeps_diff_order_when_deletions_follow_additions() -> None:
    diff = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n+c\n-d\n"

    split = render_diff(diff)["files"][0]["hunks"][0]["split"]

    assert [(row["left"]["html"], row["right"]["html"]) for row in split] == [
        ("a", "b"),
        ("", "c"),
        ("d", ""),
    ]


def test_it_numbers_unified_rows_on_both_sides(repo: Repo) -> None:
    repo.write("a.txt", "a\nb\nc\n")
    repo.commit()
    repo.write("a.txt", "a\nB\nc\n")

    rows = render_diff(repo.diff())["files"][0]["hunks"][0]["unified"]

    assert [(row["kind"], row["old"], row["new"]) for row in rows] == [
        ("context", 1, 1),
        ("del", 2, None),
        ("add", None, 2),
        ("context", 3, 3),
    ]


def test_it_offers_expand_ranges_from_the_stored_text(repo: Repo) -> None:
    repo.write("a.txt", numbered(40))
    repo.commit()
    repo.write("a.txt", numbered(40, {10: "ten"}).replace("line 30\n", "line 30\nnew\n"))
    diff = repo.diff()

    result = render_diff(diff, {"a.txt": repo.before("a.txt")}, {"a.txt": repo.after("a.txt")})
    file = result["files"][0]
    first, second = file["hunks"]

    assert (first["old_start"], first["old_len"]) == (7, 7)
    assert first["expand_before"] == {"old_start": 1, "old_end": 6, "new_start": 1, "new_end": 6}
    assert second["expand_before"] == {
        "old_start": 14,
        "old_end": 27,
        "new_start": 14,
        "new_end": 27,
    }
    assert file["expand_after"] == {"old_start": 34, "old_end": 40, "new_start": 35, "new_end": 41}
    rows = context_rows(repo.before("a.txt"), "a.txt", 14, 27)
    assert [row["no"] for row in rows] == list(range(14, 28))
    assert rows[0]["html"] == "line 14"


def test_it_computes_expand_ranges_around_hunks_without_context(repo: Repo) -> None:
    repo.write("a.txt", numbered(10))
    repo.commit()
    repo.write("a.txt", numbered(10).replace("line 3\n", "line 3\nnew a\nnew b\n"))
    diff = repo.diff("-U0")

    file = render_diff(diff, {"a.txt": repo.before("a.txt")})["files"][0]
    hunk = file["hunks"][0]

    assert (hunk["old_start"], hunk["old_len"], hunk["new_start"], hunk["new_len"]) == (3, 0, 4, 2)
    assert hunk["expand_before"] == {"old_start": 1, "old_end": 3, "new_start": 1, "new_end": 3}
    assert file["expand_after"] == {"old_start": 4, "old_end": 10, "new_start": 6, "new_end": 12}


def test_it_offers_no_expand_ranges_without_stored_text(repo: Repo) -> None:
    repo.write("a.txt", numbered(40))
    repo.commit()
    repo.write("a.txt", numbered(40, {20: "twenty"}))

    file = render_diff(repo.diff())["files"][0]

    assert file["hunks"][0]["expand_before"] is None
    assert file["expand_after"] is None


def test_it_ignores_stored_text_that_disagrees_with_the_diff(repo: Repo) -> None:
    repo.write("a.txt", numbered(40))
    repo.commit()
    repo.write("a.txt", numbered(40, {20: "twenty"}))

    stale = numbered(40, {19: "something else"})
    file = render_diff(repo.diff(), {"a.txt": stale}, {"a.txt": stale})["files"][0]

    assert file["hunks"][0]["expand_before"] is None
    assert [row["html"] for row in file["hunks"][0]["unified"]][2:5] == [
        "line 19",
        "line 20",
        "twenty",
    ]


def test_it_highlights_lines_using_the_whole_file(repo: Repo) -> None:
    # Line 6 is inside a docstring that opens on line 1, outside the hunk's own lines.
    text = '"""Docs\n\n\n\n\nplain words here\n"""\n' + numbered(10)
    repo.write("m.py", text)
    repo.commit()
    repo.write("m.py", text.replace("plain words here", "changed words here"))
    diff = repo.diff()

    with_text = render_diff(diff, {"m.py": repo.before("m.py")}, {"m.py": repo.after("m.py")})
    rows = with_text["files"][0]["hunks"][0]["unified"]
    added = next(row for row in rows if row["kind"] == "add")

    assert added["html"] == '<span class="tok-sd">changed words here</span>'
    without_text = render_diff(diff)["files"][0]["hunks"][0]["unified"]
    added_alone = next(row for row in without_text if row["kind"] == "add")
    assert added_alone["html"] != added["html"]
    assert "changed" in added_alone["html"]


def test_it_escapes_and_strips_hostile_content_from_git(repo: Repo) -> None:
    repo.write("ok.js", "var a = 1;\n")
    repo.commit()
    hostile = (
        'var a = "<script>alert(1)</script>";\n'
        '// " onmouseover="x\n'
        'let u = "javascript:alert(1)";\n'
        "bell\x07 esc\x1b[31m red \x9b csi\r\n"
    )
    repo.write("ok.js", hostile)
    repo.write('<script>alert(1)</script>/" onmouseover="x\x1b.js', hostile)
    diff = repo.diff()

    result = render_diff(diff, {}, {'<script>alert(1)</script>/" onmouseover="x\x1b.js': hostile})

    assert_all_safe(result)
    names = [file["path"] for file in result["files"]]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;/&quot; onmouseover=&quot;x.js" in names
    hostile_file = by_path(result)['<script>alert(1)</script>/" onmouseover="x\x1b.js']
    code = "".join(row["html"] for row in hostile_file["hunks"][0]["unified"])
    assert "&lt;script&gt;" in code
    assert "javascript:alert(1)" in code  # shown as text, never as a link
    assert "bell esc[31m red  csi" in OWN_TAGS.sub("", code)


def test_it_escapes_hostile_content_in_a_handwritten_diff() -> None:
    diff = (
        'diff --git "a/x\\000<img src=x onerror=alert(1)>.py" "b/x\\000<img src=x onerror=alert(1)>.py"\n'
        "--- a/x<img src=x onerror=alert(1)>.py\n"
        "+++ b/x<img src=x onerror=alert(1)>.py\n"
        '@@ -1 +1 @@ def f(): "<script>alert(1)</script>"\n'
        "-a\x00b\n"
        '+" onmouseover="x\x1b\x00 <script>alert(1)</script>\n'
    )

    result = render_diff(diff)

    assert_all_safe(result)
    file = result["files"][0]
    assert file["path"] == "x&lt;img src=x onerror=alert(1)&gt;.py"
    assert "&lt;script&gt;" in file["hunks"][0]["header"]
    assert file["hunks"][0]["unified"][0]["html"] == '<span class="tok-n">ab</span>'


RLO, LRI, PDI, ZWSP = "\u202e", "\u2066", "\u2069", "\u200b"
RLO_MARK = '<span class="invisible-char" title="RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>'
# The Trojan Source paper's "early return" trick in Python: a reader sees the rest of the line
# as a comment, Python sees a string that never equals "none".
TROJAN = (
    f"if access_level != 'none{RLO}{LRI}': # Check if admin {PDI}{LRI}' and access_level != 'user'"
)
AUTH_BEFORE = f'access_level = "user"\nif access_level != "none":\n    print("admin{ZWSP}")\n'
AUTH_AFTER = f'access_level = "user"\n{TROJAN}\n    print("admin{ZWSP}")\n'


def assert_no_raw_invisible(result: dict) -> None:
    for markup in html_fields(result):
        assert not INVISIBLE.intersection(markup), markup[:200]


def test_it_marks_bidirectional_characters_inside_their_highlighted_tokens(repo: Repo) -> None:
    repo.write("auth.py", AUTH_BEFORE)
    repo.write("clean.py", "x = 1\n")
    repo.commit()
    repo.write("auth.py", AUTH_AFTER)
    repo.write("clean.py", "x = 2\n")

    result = render_diff(repo.diff(), {"auth.py": AUTH_BEFORE}, {"auth.py": AUTH_AFTER})

    assert_all_safe(result)
    assert_no_raw_invisible(result)
    auth, clean = by_path(result)["auth.py"], by_path(result)["clean.py"]
    added = next(row for row in auth["hunks"][0]["unified"] if row["kind"] == "add")
    # The override sits inside the string token, which is what the lexer (and Python) see.
    assert f'<span class="tok-s1">&#x27;none{RLO_MARK}' in added["html"]
    assert "⟨U+2066⟩" in added["html"] and "⟨U+2069⟩" in added["html"]
    split_right = [row["right"]["html"] for row in auth["hunks"][0]["split"]]
    assert any(RLO_MARK in html for html in split_right)
    assert auth["hidden_unicode"] is True
    assert clean["hidden_unicode"] is False


def test_it_marks_invisible_characters_in_paths_and_plain_lines(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write(f"hid{ZWSP}den.txt", f"a{RLO}b\n")
    monkeypatch.setattr(diffs, "HIGHLIGHT_LINE_BUDGET", 0)  # past the budget: escaped, not lexed

    result = render_diff(repo.diff())

    assert_no_raw_invisible(result)
    file = result["files"][0]
    assert file["raw_path"] == f"hid{ZWSP}den.txt"  # the real name, for looking files up
    assert (
        file["path"]
        == 'hid<span class="invisible-char" title="ZERO WIDTH SPACE">⟨U+200B⟩</span>den.txt'
    )
    assert file["hunks"][0]["unified"][0]["html"] == f"a{RLO_MARK}b"
    assert file["hidden_unicode"] is True


def test_it_warns_about_a_file_whose_unchanged_text_hides_a_character() -> None:
    diff = "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"

    result = render_diff(diff, {"a.py": "x = 1\ny = 1\n"}, {"a.py": f"x = 2\ny = {ZWSP}1\n"})

    assert result["files"][0]["hidden_unicode"] is True
    assert render_diff(diff)["files"][0]["hidden_unicode"] is False


def test_it_marks_a_leading_byte_order_mark_that_pygments_would_drop() -> None:
    rows = context_rows("\ufeffimport os\n", "m.py", 1, 1)

    assert rows[0]["html"].startswith(
        '<span class="invisible-char" title="ZERO WIDTH NO-BREAK SPACE">⟨U+FEFF⟩</span>'
    )
    assert "\ufeff" not in rows[0]["html"]
    assert '<span class="tok-kn">import</span>' in rows[0]["html"]


def test_it_marks_invisible_characters_in_expanded_context() -> None:
    rows = context_rows(AUTH_AFTER, "auth.py", 2, 3)

    assert RLO_MARK in rows[0]["html"]
    assert "⟨U+200B⟩" in rows[1]["html"]
    assert not any(INVISIBLE.intersection(row["html"]) for row in rows)


def test_it_cuts_very_long_lines(repo: Repo) -> None:
    repo.write("data.txt", "short\n")
    repo.commit()
    repo.write("data.txt", "short\n" + "<" * 100_000 + "\n")

    result = render_diff(repo.diff(), collapse_lines=10_000)
    added = result["files"][0]["hunks"][0]["unified"][-1]

    assert added["html"].endswith("… (line truncated)</span>")
    assert len(added["html"]) < 2000 * len("&lt;") + 200
    assert_all_safe(result)
    rows = context_rows("<" * 100_000 + "\n", "data.txt", 1, 1)
    assert rows[0]["html"].endswith("… (line truncated)</span>")


def test_it_collapses_generated_and_large_files(repo: Repo) -> None:
    repo.write("package-lock.json", "{}\n")
    repo.write("vendor/lib.py", "x = 1\n")
    repo.write("app.min.js", "a\n")
    repo.write("big.txt", numbered(10))
    repo.write("small.txt", "a\n")
    repo.commit()
    repo.write("package-lock.json", '{"a": 1}\n')
    repo.write("vendor/lib.py", "x = 2\n")
    repo.write("app.min.js", "b\n")
    repo.write("big.txt", numbered(10, {n: f"changed {n}" for n in range(1, 11)}))
    repo.write("small.txt", "b\n")

    files = by_path(render_diff(repo.diff(), collapse_lines=15))

    for generated in ("package-lock.json", "vendor/lib.py", "app.min.js"):
        assert files[generated]["collapsed"], generated
        assert files[generated]["collapse_reason"] == "Generated file"
        assert files[generated]["hunks"], "collapsed files still carry their rows for on-demand"
    assert files["big.txt"]["collapsed"]
    assert "20 changed lines" in files["big.txt"]["collapse_reason"]
    assert not files["small.txt"]["collapsed"]
    assert files["small.txt"]["collapse_reason"] is None


def test_it_renders_pure_renames_and_empty_new_files(repo: Repo) -> None:
    repo.write("old name.txt", numbered(5))
    repo.commit()
    (repo.root / "old name.txt").rename(repo.root / "new name.txt")
    repo.write("empty.txt", "")

    files = by_path(render_diff(repo.diff()))

    assert files["new name.txt"]["status"] == "renamed"
    assert files["new name.txt"]["old_path"] == "old name.txt"
    assert files["new name.txt"]["hunks"] == []
    assert files["empty.txt"]["status"] == "added"
    assert files["empty.txt"]["hunks"] == []


def test_it_unquotes_paths_git_had_to_quote(repo: Repo) -> None:
    repo.write('say "hi".txt', "a\n")
    repo.write("café.txt", "a\n")
    repo.commit()
    repo.write('say "hi".txt', "b\n")
    repo.write("café.txt", "b\n")

    files = by_path(render_diff(repo.diff()))

    assert set(files) == {'say "hi".txt', "café.txt"}
    assert files['say "hi".txt']["path"] == "say &quot;hi&quot;.txt"


def test_it_returns_nothing_for_an_empty_diff() -> None:
    assert render_diff("") == {"files": [], "totals": {"files": 0, "additions": 0, "deletions": 0}}


@pytest.mark.parametrize(
    "diff",
    [
        "hello world\n",
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n-b\n",
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n c\n",
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -x +1 @@\n a\n",
        "diff --git a/x b/x\n--- a/x\n",
        'diff --git "a/x b/x\n',
        "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -5 +5 @@\n-a\n+b\n@@ -1 +1 @@\n-a\n+b\n",
        "diff --git a/x b/x\nBinary files a/x and b/x differ\n@@ -1 +1 @@\n-a\n+b\n",
    ],
    ids=[
        "not-a-diff",
        "short-hunk",
        "long-hunk",
        "bad-hunk-header",
        "missing-plus-line",
        "unterminated-quote",
        "hunks-out-of-order",
        "hunk-in-binary",
    ],
)
def test_it_rejects_malformed_diffs_with_value_error(diff: str) -> None:
    with pytest.raises(ValueError):
        render_diff(diff)


def test_it_rejects_input_that_is_not_text() -> None:
    with pytest.raises(ValueError):
        render_diff(b"diff --git a/x b/x\n")  # type: ignore[arg-type]


def test_it_falls_back_to_plain_text_past_the_highlight_budget(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("a.py", "x = 1\n")
    repo.commit()
    repo.write("a.py", 'x = "<b>"\n')
    monkeypatch.setattr(diffs, "HIGHLIGHT_LINE_BUDGET", 0)

    result = render_diff(repo.diff())

    rows = result["files"][0]["hunks"][0]["unified"]
    assert [row["html"] for row in rows] == ["x = 1", "x = &quot;&lt;b&gt;&quot;"]


def test_it_clamps_context_rows_to_the_file() -> None:
    text = "one\ntwo\nthree\n"

    assert [row["no"] for row in context_rows(text, "a.txt", 0, 99)] == [1, 2, 3]
    assert context_rows(text, "a.txt", 5, 9) == []
    assert context_rows(text, "a.txt", 3, 2) == []


def test_it_highlights_context_rows_with_earlier_lines_in_view() -> None:
    rows = context_rows('s = """\n<b>\n"""\nx = 1\n', "m.py", 2, 2)

    assert rows == [{"no": 2, "html": '<span class="tok-s2">&lt;b&gt;</span>'}]


def test_it_strips_control_characters() -> None:
    assert strip_control("a\r\nb\x00c\x1b[0m\td\x7f\x85e\u2028\n") == "a\nbc[0m\tde\u2028\n"


def test_it_exports_css_for_the_token_classes() -> None:
    assert ".tok-k " in STYLE_CSS
    assert ".tok-s2 " in STYLE_CSS
    assert ".diff-truncated" in STYLE_CSS


DIFF_LINES = st.sampled_from(
    [
        "diff --git a/x.py b/x.py",
        'diff --git "a/q\\"x" "b/q\\"x"',
        "--- a/x.py",
        "+++ b/x.py",
        "--- /dev/null",
        "+++ /dev/null",
        "@@ -1 +1 @@",
        "@@ -1,2 +1,2 @@ <b>",
        "@@ -0,0 +1 @@",
        " <script>",
        "-a\x00",
        "+b\x1b",
        "\\ No newline at end of file",
        "rename from x",
        "rename to y",
        "new file mode 100644",
        "GIT binary patch",
        "Binary files a/x and b/x differ",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(DIFF_LINES, max_size=12))
def test_it_either_renders_safely_or_raises_value_error(lines: list[str]) -> None:
    try:
        result = render_diff("\n".join(lines) + "\n")
    except ValueError:
        return
    json.dumps(result)
    assert_all_safe(result)

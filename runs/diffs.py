"""Unified git diff -> files, hunks, side-by-side rows and highlighted, escaped HTML.

A run's diff is rendered once (``render_diff``) and the result is cached as JSON; templates only
loop over it. Every value ending up in the page is either a number, a fixed word, or HTML that is
already escaped (and may be marked safe). Control characters are stripped everywhere, and
invisible or bidirectional characters are shown as marks (``runs.text_policy``).

Shape returned by ``render_diff`` (all plain dicts, lists, str, int, bool and None)::

    {"files": [{
        "path": str,            # escaped HTML of the file's path (new path; old path if deleted)
        "old_path": str|None,   # escaped HTML of the previous path, for renames (and copies)
        "raw_path": str,        # the real path (git quoting undone), NOT escaped: for looking up
        "raw_old_path": str|None,  # before/after text and building expand URLs, never |safe
        "status": "added"|"deleted"|"modified"|"renamed"|"binary",
        "additions": int, "deletions": int, "binary": bool,
        "language": str,        # escaped pygments lexer name, e.g. "Python", "Text only"
        "collapsed": bool,      # generated or > collapse_lines changed lines: load on demand
        "collapse_reason": str|None,   # plain words, e.g. "Generated file"
        "hidden_unicode": bool, # the file (path, diff lines or stored text) holds an invisible
                                # or bidirectional character: the page warns about it
        "anchor": str,          # a safe DOM id: "file-1", "file-2", ... in diff order
        "hunks": [{
            "header": str,      # escaped "@@ -1,3 +1,4 @@ def f():"
            "old_start": int, "old_len": int, "new_start": int, "new_len": int,
            "expand_before": Range|None,   # unchanged lines between the previous hunk and this one
            "unified": [{"kind": "context"|"add"|"del", "old": int|None, "new": int|None,
                         "html": str}],
            "split": [{"left":  {"no": int|None, "kind": "context"|"del"|"empty", "html": str},
                       "right": {"no": int|None, "kind": "context"|"add"|"empty", "html": str}}],
        }],
        "expand_after": Range|None,        # unchanged lines after the last hunk
    }],
     "totals": {"files": int, "additions": int, "deletions": int}}

    Range = {"old_start": int, "old_end": int, "new_start": int, "new_end": int}  # 1-based, inclusive

``before`` and ``after`` are keyed by repository path (``raw_old_path or raw_path`` for before,
``raw_path`` for after). An expand range is offered only when one of those texts is stored and
agrees with the diff. To serve it, call ``context_rows(before[raw_old_path or raw_path],
raw_path, old_start, old_end)``, or ``context_rows(after[raw_path], raw_path, new_start,
new_end)`` when only the after text is stored; a row's other line number is offset by
``new_start - old_start``.

Highlighting runs over each whole file (so multi-line strings and comments colour correctly) when
its before/after text is given and agrees with the diff; otherwise over the diff's own lines.
Collapsed files are highlighted from the diff lines only, as whole lockfiles are not worth lexing.
Pygments is slow (about 15k Python lines a second), so one call lexes at most
``HIGHLIGHT_LINE_BUDGET`` lines, visible files first; the rest is escaped plain text.
A line with no newline at the end of the file carries ``<span class="diff-no-newline">``; a line
cut at ``MAX_LINE_CHARS`` ends with ``<span class="diff-truncated">… (line truncated)</span>``.

The diff must use git's default a/ b/ prefixes (pass --src-prefix=a/ --dst-prefix=b/ to be
immune to diff.noprefix or diff.mnemonicPrefix in a user's config).

We parse git's format ourselves rather than with unidiff: unidiff silently drops lines beyond a
hunk's counts, ignores malformed hunk headers and keeps C-quoted names ("a/x\\"y") quoted, while a
review page must show exactly what the agent changed or refuse with ``ValueError``.
"""

from __future__ import annotations

import functools
import html
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import get_lexer_for_filename
from pygments.lexers.special import TextLexer
from pygments.token import STANDARD_TYPES, Error, Text, Token, Whitespace
from pygments.util import ClassNotFound

from runs.text_policy import escape_and_mark, has_invisible, strip_control

MAX_LINE_CHARS = 2000
# Files bigger than this are highlighted from the diff lines only, to keep rendering fast.
MAX_HIGHLIGHT_CHARS = 1_000_000
# Lines pygments may lex per render_diff call. Its lexers manage roughly 15k (Python) to 50k
# (JavaScript) lines a second, so this keeps a huge diff well under a second; past it, files
# are highlighted from their diff lines only, then shown as plain escaped text.
HIGHLIGHT_LINE_BUDGET = 6_000
CLASS_PREFIX = "tok-"
TRUNCATED_HTML = '<span class="diff-truncated">… (line truncated)</span>'
NO_NEWLINE_HTML = '<span class="diff-no-newline" title="No newline at end of file"></span>'

GENERATED_NAMES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "poetry.lock",
        "uv.lock",
        "pdm.lock",
        "pipfile.lock",
        "cargo.lock",
        "go.sum",
        "gemfile.lock",
        "composer.lock",
        "flake.lock",
        "mix.lock",
        "packages.lock.json",
        "podfile.lock",
    }
)
GENERATED_SUFFIXES = (".min.js", ".min.css", ".min.map", ".js.map", ".css.map", ".svg", "_pb2.py")
GENERATED_DIRS = frozenset(
    {"vendor", "vendored", "node_modules", "third_party", "bower_components"}
)
# Minified code: changed lines this long on average are not worth reading line by line.
MINIFIED_AVERAGE_CHARS = 500

_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_C_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
# Extended header lines git writes between "diff --git" and the hunks; their values are parsed
# below where they matter, the rest only need recognising.
_EXTENDED_HEADERS = (
    "old mode ",
    "new mode ",
    "deleted file mode ",
    "new file mode ",
    "similarity index ",
    "dissimilarity index ",
    "index ",
    "copy from ",
    "copy to ",
    "rename from ",
    "rename to ",
)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _safe_text(text: str) -> str:
    return escape_and_mark(strip_control(text))


# --- parsing -----------------------------------------------------------------------------------


@dataclass
class _Line:
    kind: str  # "context" | "add" | "del"
    text: str
    old: int | None
    new: int | None
    no_newline: bool = False


@dataclass
class _Hunk:
    header: str
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: list[_Line] = field(default_factory=list)

    @property
    def old_first(self) -> int:
        # "-3,0" means "after line 3": the hunk covers no old line, the next one would be 4.
        return self.old_start if self.old_len else self.old_start + 1

    @property
    def old_last(self) -> int:
        return self.old_start + self.old_len - 1 if self.old_len else self.old_start

    @property
    def new_first(self) -> int:
        return self.new_start if self.new_len else self.new_start + 1

    @property
    def new_last(self) -> int:
        return self.new_start + self.new_len - 1 if self.new_len else self.new_start


@dataclass
class _FileDiff:
    old_path: str | None = None  # None for added files
    new_path: str | None = None  # None for deleted files
    git_paths: tuple[str, str] | None = None
    is_rename: bool = False
    is_copy: bool = False
    is_binary: bool = False
    is_new: bool = False
    is_deleted: bool = False
    hunks: list[_Hunk] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or (self.git_paths[1] if self.git_paths else "")


def _c_unquote(quoted: str) -> str:
    """Undo git's C-style quoting of a path (the text between the double quotes)."""
    out = bytearray()
    i = 0
    while i < len(quoted):
        char = quoted[i]
        if char != "\\":
            out += char.encode("utf-8")
            i += 1
            continue
        if i + 1 >= len(quoted):
            raise ValueError(f"bad escape at the end of quoted path {quoted!r}")
        nxt = quoted[i + 1]
        if nxt in _C_ESCAPES:
            out.append(_C_ESCAPES[nxt])
            i += 2
        elif re.fullmatch(r"[0-3][0-7]{2}", quoted[i + 1 : i + 4]):
            out.append(int(quoted[i + 1 : i + 4], 8))
            i += 4
        else:
            raise ValueError(f"bad escape \\{nxt} in quoted path {quoted!r}")
    return out.decode("utf-8", errors="replace")


def _take_quoted(text: str) -> tuple[str, str]:
    """Split a leading C-quoted token off ``text``: (unquoted value, rest after it)."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return _c_unquote(text[1:i]), text[i + 1 :]
        i += 1
    raise ValueError(f"unterminated quoted path in {text!r}")


def _parse_path(value: str, prefix: str | None) -> str | None:
    """A path from a ---/+++/rename line: unquote, drop a tab suffix and the a/ or b/ prefix."""
    if value.startswith('"'):
        path, _ = _take_quoted(value)
    else:
        # git ends names containing spaces with a tab; other tools add "\t<timestamp>".
        path = value.split("\t", 1)[0]
    if path == "/dev/null":
        return None
    if prefix and path.startswith(prefix):
        path = path[len(prefix) :]
    if not path:
        raise ValueError(f"empty path in {value!r}")
    return path


def _parse_git_header(rest: str) -> tuple[str, str]:
    """The two paths of "diff --git a/X b/Y", used only when no ---/+++ or rename lines follow."""
    if rest.startswith('"'):
        old, remainder = _take_quoted(rest)
        new = _parse_path(remainder.lstrip(" "), None) or ""
    elif rest.endswith('"') and ' "' in rest:
        split_at = rest.rindex(' "')
        old, new = rest[:split_at], _take_quoted(rest[split_at + 1 :])[0]
    else:
        # Unquoted names may hold spaces; when both names are equal the halves are symmetric.
        half = (len(rest) - 1) // 2
        if len(rest) % 2 == 1 and rest[half] == " " and rest[2:half] == rest[half + 3 :]:
            old, new = rest[:half], rest[half + 1 :]
        elif " b/" in rest:
            old, new = rest.split(" b/", 1)
            new = "b/" + new
        else:
            raise ValueError(f"cannot read the paths of 'diff --git {rest}'")
    old = old[2:] if old.startswith("a/") else old
    new = new[2:] if new.startswith("b/") else new
    return old, new


def _parse(diff_text: str) -> list[_FileDiff]:
    lines = diff_text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    files: list[_FileDiff] = []
    current: _FileDiff | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("diff --git "):
            current = _FileDiff(git_paths=_parse_git_header(line[len("diff --git ") :]))
            files.append(current)
            i += 1
            i = _parse_extended_headers(lines, i, current)
            continue
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            # A plain unified diff without git's "diff --git" line.
            current = _FileDiff()
            files.append(current)
            i = _parse_extended_headers(lines, i, current)
            continue
        if line.strip() == "":
            # Not from git, but pasted or hand-trimmed diffs carry stray blank lines between files.
            i += 1
            continue
        if current is None:
            raise ValueError(f"line {i + 1}: expected 'diff --git', got {_preview(line)}")
        if line.startswith("@@"):
            i = _parse_hunk(lines, i, current)
            continue
        raise ValueError(f"line {i + 1}: unexpected {_preview(line)} in {current.path!r}")
    if diff_text.strip() and not files:
        raise ValueError("not a unified diff: no file headers found")
    return files


def named_paths(diff_text: str) -> list[str]:
    """Every path a diff names, old and new, without git's a/ and b/, in order; ValueError when
    the text is not a diff this module reads. Imports check them before `git apply` runs."""
    paths: list[str] = []
    for diff in _parse(diff_text):
        for path in (diff.old_path, diff.new_path, *(diff.git_paths or ())):
            if path and path not in paths:
                paths.append(path)
    return paths


def _parse_extended_headers(lines: list[str], i: int, current: _FileDiff) -> int:
    saw_minus = False
    while i < len(lines):
        line = lines[i]
        if line.startswith("rename from "):
            current.is_rename = True
            current.old_path = _parse_path(line[len("rename from ") :], None)
        elif line.startswith("rename to "):
            current.new_path = _parse_path(line[len("rename to ") :], None)
        elif line.startswith("copy from "):
            current.is_copy = True
            current.old_path = _parse_path(line[len("copy from ") :], None)
        elif line.startswith("copy to "):
            current.new_path = _parse_path(line[len("copy to ") :], None)
        elif line.startswith("new file mode "):
            current.is_new = True
        elif line.startswith("deleted file mode "):
            current.is_deleted = True
        elif line.startswith(_EXTENDED_HEADERS):
            pass
        elif line.startswith("Binary files ") and line.endswith(" differ"):
            current.is_binary = True
        elif line == "GIT binary patch":
            current.is_binary = True
            # Skip the base85 literal/delta blocks; they never start like a file header.
            i += 1
            while i < len(lines) and not lines[i].startswith("diff --git "):
                i += 1
            return i
        elif line.startswith("--- "):
            path = _parse_path(line[4:], "a/")
            current.old_path = path
            current.is_new = current.is_new or path is None
            saw_minus = True
        elif line.startswith("+++ ") and saw_minus:
            path = _parse_path(line[4:], "b/")
            current.new_path = path
            current.is_deleted = current.is_deleted or path is None
            return i + 1
        else:
            break
        i += 1
    if saw_minus:
        raise ValueError(f"line {i + 1}: '--- ' without a following '+++ '")
    # No ---/+++ lines (mode change, pure rename, empty or binary file): paths from the header.
    if current.git_paths:
        old, new = current.git_paths
        if current.old_path is None and not current.is_new:
            current.old_path = old
        if current.new_path is None and not current.is_deleted:
            current.new_path = new
    return i


def _parse_hunk(lines: list[str], i: int, current: _FileDiff) -> int:
    header = lines[i]
    match = _HUNK_RE.match(header)
    if not match:
        raise ValueError(f"line {i + 1}: malformed hunk header {_preview(header)}")
    old_start, old_len, new_start, new_len = (
        int(match.group(1)),
        int(match.group(2) if match.group(2) is not None else 1),
        int(match.group(3)),
        int(match.group(4) if match.group(4) is not None else 1),
    )
    hunk = _Hunk(header, old_start, old_len, new_start, new_len)
    if current.hunks:
        previous = current.hunks[-1]
        if hunk.old_first <= previous.old_last or hunk.new_first <= previous.new_last:
            raise ValueError(f"line {i + 1}: hunk overlaps the previous one in {current.path!r}")
    if current.is_binary:
        raise ValueError(f"line {i + 1}: hunk in binary file {current.path!r}")
    current.hunks.append(hunk)
    old_no, new_no = old_start, new_start
    old_left, new_left = old_len, new_len
    i += 1
    while i < len(lines) and (old_left or new_left):
        line = lines[i]
        marker, text = (line[:1], line[1:]) if line else (" ", "")
        if marker == " " and old_left and new_left:
            hunk.lines.append(_Line("context", text, old_no, new_no))
            old_no, new_no, old_left, new_left = old_no + 1, new_no + 1, old_left - 1, new_left - 1
        elif marker == "-" and old_left:
            hunk.lines.append(_Line("del", text, old_no, None))
            old_no, old_left = old_no + 1, old_left - 1
        elif marker == "+" and new_left:
            hunk.lines.append(_Line("add", text, None, new_no))
            new_no, new_left = new_no + 1, new_left - 1
        elif marker == "\\" and hunk.lines:
            hunk.lines[-1].no_newline = True
        else:
            raise ValueError(
                f"line {i + 1}: hunk {_preview(header)} in {current.path!r} ends early or "
                f"does not match its line counts (at {_preview(line)})"
            )
        i += 1
    if old_left or new_left:
        raise ValueError(f"diff ends inside hunk {_preview(header)} of {current.path!r}")
    while i < len(lines) and lines[i].startswith("\\"):
        if hunk.lines:
            hunk.lines[-1].no_newline = True
        i += 1
    return i


def _preview(line: str) -> str:
    return repr(line[:80] + ("…" if len(line) > 80 else ""))


# --- highlighting ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def _lexer_for(basename: str) -> Lexer:
    # stripnl=False keeps leading blank lines, so line numbers stay right.
    options = {"stripnl": False, "stripall": False, "ensurenl": True, "tabsize": 0}
    try:
        return get_lexer_for_filename(basename, **options)
    except ClassNotFound:
        return TextLexer(**options)
    except Exception:  # a broken third-party lexer plugin must not break the review page
        return TextLexer(**options)


def _lexer_for_path(path: str) -> Lexer:
    return _lexer_for(posixpath.basename(path) or path)


@functools.lru_cache(maxsize=1024)
def _css_class(ttype: Any) -> str:
    # The nearest standard ancestor keeps classes short and always covered by STYLE_CSS.
    while ttype not in STANDARD_TYPES:
        ttype = ttype.parent
    if ttype in (Token, Text, Whitespace, Error):
        # Plain text needs no span, and lexers' "error" tokens are usually just unknown syntax.
        return ""
    return CLASS_PREFIX + STANDARD_TYPES[ttype]


def _cut_long_lines(lines: list[str]) -> tuple[list[str], set[int]]:
    """Cut lines over MAX_LINE_CHARS before lexing (bounds lexer time); return the cut indexes."""
    cut: set[int] = set()
    for index, line in enumerate(lines):
        if len(line) > MAX_LINE_CHARS:
            lines[index] = line[:MAX_LINE_CHARS]
            cut.add(index)
    return lines, cut


def _plain_lines(lines: list[str]) -> list[str]:
    lines, cut = _cut_long_lines(list(lines))
    return [
        escape_and_mark(line) + (TRUNCATED_HTML if i in cut else "") for i, line in enumerate(lines)
    ]


def _highlight_lines(lines: list[str], lexer: Lexer) -> list[str]:
    """Highlight a list of lines (already control-stripped) as one text; one HTML string per line.

    Invisible characters are marked in each token's text as it is escaped, not replaced before
    lexing: the lexer sees the real text, so a mark lands in the token the compiler would put
    it in (a right-to-left override inside a string or a comment shows as being there).
    """
    lines, cut = _cut_long_lines(list(lines))
    text = "\n".join(lines)
    # Pygments silently drops byte order marks at the start of its input; lex without them and
    # put their marks back, or a leading U+FEFF would be the one character never shown.
    boms = len(text) - len(text.lstrip("\ufeff"))
    try:
        html_lines = _tokens_to_lines(text[boms:], lexer)
    except Exception:  # pygments lexers are not meant to fail, but a review page must not either
        html_lines = []
    # ensurenl may add a final empty line; a missing one would mean a lexer swallowed text.
    if len(html_lines) < len(lines):
        html_lines = [escape_and_mark(line) for line in lines]
    elif boms:
        html_lines[0] = escape_and_mark("\ufeff" * boms) + html_lines[0]
    del html_lines[len(lines) :]
    for index in cut:
        html_lines[index] += TRUNCATED_HTML
    return html_lines


def _tokens_to_lines(text: str, lexer: Lexer) -> list[str]:
    out: list[str] = []
    parts: list[str] = []
    run: list[str] = []  # raw text of consecutive tokens with the same class: one span for all
    run_css = ""

    def close_run() -> None:
        if run:
            escaped = escape_and_mark("".join(run))
            parts.append(f'<span class="{run_css}">{escaped}</span>' if run_css else escaped)
            run.clear()

    for ttype, value in lexer.get_tokens(text):
        css = _css_class(ttype)
        if css != run_css:
            close_run()
            run_css = css
        if "\n" not in value:
            run.append(value)
            continue
        for index, piece in enumerate(value.split("\n")):
            if index:
                close_run()
                out.append("".join(parts))
                parts = []
            if piece:
                run.append(piece)
    close_run()
    out.append("".join(parts))
    return out


def _split_text(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def context_rows(text: str, path: str, start: int, end: int) -> list[dict]:
    """Highlighted, escaped lines ``start``..``end`` (1-based, inclusive) of a stored file text.

    The range is clamped to the file, so an out-of-range request returns fewer rows (or none).
    Each row is ``{"no": int, "html": str}``.
    """
    lines = _split_text(strip_control(text))
    start, end = max(1, start), min(end, len(lines))
    if start > end:
        return []
    # Lexing stops at ``end``: what follows cannot change how earlier lines look.
    html_lines = _highlight_lines(lines[:end], _lexer_for_path(path))
    return [{"no": no, "html": html_lines[no - 1]} for no in range(start, end + 1)]


# --- rendering ---------------------------------------------------------------------------------


def _collapse_reason(diff: _FileDiff, collapse_lines: int) -> str | None:
    if diff.is_binary:
        return None
    changed = [line for hunk in diff.hunks for line in hunk.lines if line.kind != "context"]
    path = diff.path.lower()
    parts = path.split("/")
    if (
        parts[-1] in GENERATED_NAMES
        or path.endswith(GENERATED_SUFFIXES)
        or GENERATED_DIRS.intersection(parts[:-1])
    ):
        return "Generated file"
    if len(changed) > collapse_lines:
        return f"Large diff: {len(changed):,} changed lines"
    if changed and sum(len(line.text) for line in changed) / len(changed) > MINIFIED_AVERAGE_CHARS:
        return "Minified or generated content"
    return None


@dataclass
class _Budget:
    lines: int

    def take(self, count: int) -> bool:
        if count > self.lines:
            return False
        self.lines -= count
        return True


def _side_html(
    diff: _FileDiff,
    side: str,
    stored: str | None,
    lexer: Lexer,
    whole_file: bool,
    budget: _Budget,
) -> tuple[dict[int, str], int | None]:
    """HTML per line number for one side ("old"/"new"), and that side's line count if known.

    Whole-file highlighting is used only when the stored text agrees with every diff line on this
    side and the budget allows; otherwise the diff's own lines are highlighted, and past the
    budget they are only escaped. A stale text also gives no line count, so no expand ranges.
    """
    wanted = [
        line
        for hunk in diff.hunks
        for line in hunk.lines
        if line.kind == "context" or line.kind == ("del" if side == "old" else "add")
    ]
    numbers = [line.old if side == "old" else line.new for line in wanted]
    file_lines = _split_text(strip_control(stored)) if stored is not None else None
    line_count = len(file_lines) if file_lines is not None else None
    agrees = file_lines is not None and all(
        no is not None and no <= len(file_lines) and file_lines[no - 1] == line.text
        for no, line in zip(numbers, wanted, strict=True)
    )
    if not agrees:
        line_count = None
    if not wanted:
        return {}, line_count
    if agrees and whole_file and file_lines is not None:
        last = max(no for no in numbers if no is not None)
        if budget.take(last):
            html_lines = _highlight_lines(file_lines[:last], lexer)
            return {no: html_lines[no - 1] for no in numbers if no is not None}, line_count
    texts = [line.text for line in wanted]
    if budget.take(len(texts)):
        html_lines = _highlight_lines(texts, lexer)
    else:
        html_lines = _plain_lines(texts)
    return {no: html for no, html in zip(numbers, html_lines, strict=True) if no is not None}, (
        line_count
    )


def _cell(no: int | None, kind: str, markup: str) -> dict:
    return {"no": no, "kind": kind, "html": markup}


_EMPTY_CELL = {"no": None, "kind": "empty", "html": ""}


def _render_hunk(hunk: _Hunk, old_html: dict[int, str], new_html: dict[int, str]) -> dict:
    unified: list[dict] = []
    split: list[dict] = []
    dels: list[dict] = []
    adds: list[dict] = []

    def flush() -> None:
        for index in range(max(len(dels), len(adds))):
            left = dels[index] if index < len(dels) else dict(_EMPTY_CELL)
            right = adds[index] if index < len(adds) else dict(_EMPTY_CELL)
            split.append({"left": left, "right": right})
        dels.clear()
        adds.clear()

    for line in hunk.lines:
        marker = NO_NEWLINE_HTML if line.no_newline else ""
        if line.kind == "context":
            flush()
            assert line.old is not None and line.new is not None
            left_html = old_html.get(line.old, "") + marker
            right_html = new_html.get(line.new, "") + marker
            unified.append(
                {"kind": "context", "old": line.old, "new": line.new, "html": right_html}
            )
            split.append(
                {
                    "left": _cell(line.old, "context", left_html),
                    "right": _cell(line.new, "context", right_html),
                }
            )
        elif line.kind == "del":
            if adds:  # a deletion after additions starts a new change block
                flush()
            assert line.old is not None
            html = old_html.get(line.old, "") + marker
            unified.append({"kind": "del", "old": line.old, "new": None, "html": html})
            dels.append(_cell(line.old, "del", html))
        else:
            assert line.new is not None
            html = new_html.get(line.new, "") + marker
            unified.append({"kind": "add", "old": None, "new": line.new, "html": html})
            adds.append(_cell(line.new, "add", html))
    flush()
    return {
        "header": _safe_text(hunk.header),
        "old_start": hunk.old_start,
        "old_len": hunk.old_len,
        "new_start": hunk.new_start,
        "new_len": hunk.new_len,
        "expand_before": None,
        "unified": unified,
        "split": split,
    }


def _range(old_start: int, old_end: int, new_start: int) -> dict | None:
    if old_end < old_start:
        return None
    return {
        "old_start": old_start,
        "old_end": old_end,
        "new_start": new_start,
        "new_end": new_start + (old_end - old_start),
    }


def _add_expand_ranges(diff: _FileDiff, hunks: list[dict], line_count: int | None, old: bool):
    """Fill in expand_before of each hunk; return expand_after. ``line_count`` counts the side
    the stored text belongs to (old when ``old``), None when no text is stored."""
    if line_count is None:
        return None
    old_next, new_next = 1, 1
    for hunk, rendered in zip(diff.hunks, hunks, strict=True):
        rendered["expand_before"] = _range(old_next, hunk.old_first - 1, new_next)
        old_next, new_next = hunk.old_last + 1, hunk.new_last + 1
    if not diff.hunks:
        return None
    remaining = line_count - (old_next if old else new_next) + 1
    return _range(old_next, old_next + remaining - 1, new_next)


def _render_file(
    diff: _FileDiff,
    index: int,
    before: dict[str, str],
    after: dict[str, str],
    reason: str | None,
    budget: _Budget,
) -> dict:
    changed = [line for hunk in diff.hunks for line in hunk.lines if line.kind != "context"]
    additions = sum(1 for line in changed if line.kind == "add")
    lexer = _lexer_for_path(diff.path)
    old_text = before.get(diff.old_path) if diff.old_path and not diff.is_new else None
    new_text = after.get(diff.new_path) if diff.new_path and not diff.is_deleted else None

    def small(text: str | None) -> bool:
        return text is not None and len(text) <= MAX_HIGHLIGHT_CHARS

    whole = reason is None
    old_html, old_count = _side_html(
        diff, "old", old_text, lexer, whole and small(old_text), budget
    )
    new_html, new_count = _side_html(
        diff, "new", new_text, lexer, whole and small(new_text), budget
    )
    hunks = [_render_hunk(hunk, old_html, new_html) for hunk in diff.hunks]
    if old_count is not None:
        expand_after = _add_expand_ranges(diff, hunks, old_count, old=True)
    else:
        expand_after = _add_expand_ranges(diff, hunks, new_count, old=False)

    if diff.is_binary:
        status = "binary"
    elif diff.is_new or diff.is_copy:
        status = "added"
    elif diff.is_deleted:
        status = "deleted"
    elif diff.is_rename:
        status = "renamed"
    else:
        status = "modified"
    shows_old = (diff.is_rename or diff.is_copy) and diff.old_path != diff.new_path
    raw_old_path = diff.old_path if shows_old else None
    # The stored texts count too: expanding the context shows them.
    hidden_unicode = any(
        has_invisible(text)
        for text in (
            diff.path,
            raw_old_path or "",
            old_text or "",
            new_text or "",
            *(hunk.header for hunk in diff.hunks),
            *(line.text for hunk in diff.hunks for line in hunk.lines),
        )
    )
    return {
        "path": _safe_text(diff.path),
        "old_path": _safe_text(raw_old_path) if raw_old_path is not None else None,
        "raw_path": diff.path,
        "raw_old_path": raw_old_path,
        "status": status,
        "additions": additions,
        "deletions": len(changed) - additions,
        "binary": diff.is_binary,
        "language": _escape(lexer.name),
        "collapsed": reason is not None,
        "collapse_reason": reason,
        "hidden_unicode": hidden_unicode,
        "anchor": f"file-{index}",
        "hunks": hunks,
        "expand_after": expand_after,
    }


def render_diff(
    diff_text: str,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
    *,
    collapse_lines: int = 400,
) -> dict:
    """Parse a unified git diff and render it for the review page (shape in the module docstring).

    ``before`` and ``after`` map paths (as in the repository, without a/ b/ prefixes) to the full
    text of changed files before and after the run. Raises ``ValueError`` on a malformed diff.
    """
    if not isinstance(diff_text, str):
        raise ValueError(f"diff must be text, not {type(diff_text).__name__}")
    try:
        parsed = _parse(strip_control(diff_text))
    except ValueError:
        raise
    except Exception as exc:  # the contract is ValueError for any input we cannot read
        raise ValueError(f"cannot parse diff: {exc}") from exc
    reasons = [_collapse_reason(diff, collapse_lines) for diff in parsed]
    budget = _Budget(HIGHLIGHT_LINE_BUDGET)
    rendered: dict[int, dict] = {}
    # Files shown at once get the highlighting budget before the collapsed ones.
    for index in sorted(range(len(parsed)), key=lambda index: reasons[index] is not None):
        rendered[index] = _render_file(
            parsed[index], index + 1, before or {}, after or {}, reasons[index], budget
        )
    files = [rendered[index] for index in range(len(parsed))]
    return {
        "files": files,
        "totals": {
            "files": len(files),
            "additions": sum(f["additions"] for f in files),
            "deletions": sum(f["deletions"] for f in files),
        },
    }


def _style_css() -> str:
    formatter = HtmlFormatter(style="friendly", classprefix=CLASS_PREFIX)
    rules = [
        rule
        for rule in formatter.get_token_style_defs("")
        # We never emit these classes (see _css_class), so their rules would be dead weight.
        if not rule.lstrip().startswith((".tok-err ", ".tok-w "))
    ]
    rules.append(".diff-truncated { color: #6e7781; font-style: italic; user-select: none }")
    rules.append(
        '.diff-no-newline::after { content: "\\2298"; color: #cf222e; margin-left: .25em }'
    )
    return "\n".join(rule.strip() for rule in rules) + "\n"


STYLE_CSS: str = _style_css()

"""How every page shows text the site did not write: repository files, diffs, prompts, transcripts.

The one policy, in one place:

- **Control characters are removed.** C0 and C1 controls and DEL, except tab and newline; CRLF
  becomes LF. On a page they do nothing useful, and escape sequences or backspaces can make a
  copied command differ from the one read.
- **Invisible and bidirectional characters are shown, never emitted raw.** Each becomes a visible
  mark such as ``⟨U+202E⟩``. Bidirectional overrides and isolates make source code display in an
  order other than the one the compiler reads ("Trojan Source", CVE-2021-42574); zero-width and
  tag characters hide words from a human reader while a model or compiler still sees them.
  Removing them would hide exactly what a reviewer must notice, so they are marked instead.

Use ``strip_control`` on text before parsing or storing it, ``escape_and_mark`` when building
HTML in Python, the ``show_invisible`` template filter (``visible_html``) wherever such text reaches
a page (``show_invisible_as_text`` where markup cannot go, ``escape_invisible`` in an attribute
that must keep the exact text), and ``has_invisible`` to warn about a file.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

from django.utils.safestring import SafeData, SafeString, mark_safe

# (first, last) code points, inclusive: Unicode's default-ignorable characters (they render as
# nothing) plus the bidirectional formatting characters. Variation selectors are left out on
# purpose: they change how the character before them looks (emoji) and are everywhere in text.
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # arabic letter mark (bidirectional)
    (0x115F, 0x1160),  # hangul fillers: blank "letters" that make invisible identifiers
    (0x17B4, 0x17B5),  # khmer inherent vowels
    (0x180E, 0x180E),  # mongolian vowel separator
    (0x200B, 0x200F),  # zero width space, non-joiner, joiner; left-to-right and right-to-left marks
    (0x202A, 0x202E),  # bidirectional embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated formats
    (0x3164, 0x3164),  # hangul filler
    (0xFEFF, 0xFEFF),  # zero width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),  # halfwidth hangul filler
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol formatting
    (0xE0000, 0xE007F),  # tag characters: invisible copies of ASCII, used to smuggle text
)
INVISIBLE: frozenset[str] = frozenset(
    chr(code) for first, last in INVISIBLE_RANGES for code in range(first, last + 1)
)
MARK_CLASS = "invisible-char"

_INVISIBLE_RE = re.compile(
    "[" + "".join(f"\\U{first:08x}-\\U{last:08x}" for first, last in INVISIBLE_RANGES) + "]"
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# A start or end tag as escape() and nh3 write them: attribute values are always quoted, and
# text never holds a raw "<". Only what lies outside these is text that may take a <span>.
_TAG_OR_INVISIBLE_RE = re.compile(
    r"(<[^<>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^<>\"']*)*>)|(" + _INVISIBLE_RE.pattern + ")"
)


def strip_control(text: str) -> str:
    """Remove C0/C1 control characters (and DEL) except tab and newline; CRLF becomes LF."""
    return _CONTROL_RE.sub("", text.replace("\r\n", "\n"))


def has_invisible(text: str) -> bool:
    """Whether ``text`` holds an invisible or bidirectional character."""
    return _INVISIBLE_RE.search(text) is not None


@functools.cache
def mark(char: str) -> str:
    """The visible stand-in for one invisible character, e.g. ``⟨U+202E⟩``."""
    return f"⟨U+{ord(char):04X}⟩"


@functools.cache
def _mark_span(char: str) -> str:
    # Unicode names are upper-case ASCII letters, digits, spaces and hyphens; escaped anyway.
    name = html.escape(unicodedata.name(char, ""), quote=True)
    title = f' title="{name}"' if name else ""
    return f'<span class="{MARK_CLASS}"{title}>{mark(char)}</span>'


def mark_invisible(text: str) -> str:
    """Plain ``text`` with each invisible character replaced by its mark; escape it afterwards.

    For places that cannot hold markup: a page's <title>, an attribute, a text/plain response.
    """
    return _INVISIBLE_RE.sub(lambda match: mark(match.group()), text)


def escape_and_mark(text: str) -> str:
    """Plain ``text`` as escaped HTML, each invisible character a ``<span>`` around its mark."""
    return _INVISIBLE_RE.sub(lambda match: _mark_span(match.group()), html.escape(text))


def escape_invisible(text: str) -> str:
    """Escaped HTML of ``text``, each invisible character a character reference (``&#x202E;``).

    For attribute values that must keep the exact text, such as a file's path for line comments:
    the browser decodes the reference back, and the page itself holds no raw invisible character.
    """
    return _INVISIBLE_RE.sub(lambda match: f"&#x{ord(match.group()):X};", html.escape(text))


def mark_invisible_html(markup: str) -> str:
    """Marks in HTML that is already safe (escaped text, or nh3's sanitized output).

    In text the mark is a ``<span>``; inside a tag (a link's href or title) it is the plain mark,
    since markup there would break the attribute. The tag pattern relies on attribute values being
    quoted and text holding no raw "<", which escaping and nh3 both guarantee.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return mark_invisible(match.group(1))
        return _mark_span(match.group(2))

    return _TAG_OR_INVISIBLE_RE.sub(replace, markup)


def visible_html(value: object) -> SafeString:
    """Any value as safe HTML under the whole policy: controls stripped, escaped, marks shown.

    A value already marked safe (rendered markdown, a rendered diff) is kept as HTML and only
    gains marks; anything else is escaped first. This is the ``show_invisible`` template filter.
    """
    if isinstance(value, SafeData):
        markup = strip_control(str(value))
    else:
        markup = html.escape(strip_control(str(value)))
    return mark_safe(mark_invisible_html(markup))  # escaped just above, or safe already

"""The site's one policy for untrusted text: controls stripped, invisible characters marked."""

from __future__ import annotations

from django.template import Context, Template
from django.utils.safestring import SafeString, mark_safe

from runs.text_policy import (
    INVISIBLE,
    escape_and_mark,
    escape_invisible,
    has_invisible,
    mark_invisible,
    mark_invisible_html,
    strip_control,
    visible_html,
)

RLO_SPAN = '<span class="invisible-char" title="RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>'


def test_it_covers_the_bidirectional_and_zero_width_characters() -> None:
    wanted = [*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065)]
    wanted += [*range(0x2066, 0x206A), 0xFEFF, 0x061C, 0xE0041]
    assert {chr(code) for code in wanted} <= INVISIBLE
    # Ordinary text, emoji variation selectors and line separators are not marked.
    assert not INVISIBLE.intersection("abc é 日本 \u2764\ufe0f \t\n\u2028 ")


def test_it_marks_invisible_characters_as_plain_text() -> None:
    assert mark_invisible("pay\u202eusd\u200b") == "pay⟨U+202E⟩usd⟨U+200B⟩"
    assert mark_invisible("tag \U000e0041") == "tag ⟨U+E0041⟩"
    assert mark_invisible("plain <b>") == "plain <b>"  # escaping is the caller's job


def test_it_tells_whether_text_hides_a_character() -> None:
    assert has_invisible("x\u2066y")
    assert not has_invisible("x = 1  # café\n")


def test_it_escapes_before_marking() -> None:
    assert escape_and_mark('<b title="x">\u202e') == f"&lt;b title=&quot;x&quot;&gt;{RLO_SPAN}"


def test_it_marks_text_but_not_inside_tags_of_safe_html() -> None:
    html = '<a href="https://x.test/\u200b" title="a>\u202e">go\u202e</a>'

    marked = mark_invisible_html(html)

    assert marked == ('<a href="https://x.test/⟨U+200B⟩" title="a>⟨U+202E⟩">go' + RLO_SPAN + "</a>")


def test_it_escapes_plain_values_and_keeps_safe_ones_as_html() -> None:
    assert visible_html("<i>\x1b[31m\u202e") == f"&lt;i&gt;[31m{RLO_SPAN}"
    assert visible_html(mark_safe("<i>\u202e</i>")) == f"<i>{RLO_SPAN}</i>"
    assert isinstance(visible_html("x"), SafeString)


def test_it_keeps_the_exact_text_in_attributes_as_references() -> None:
    assert escape_invisible('a"\u200b.py') == "a&quot;&#x200B;.py"


def test_it_strips_control_characters_but_keeps_tab_and_newline() -> None:
    assert strip_control("a\r\nb\x00\x07\x1b\x7f\x85\tc\n\u202e") == "a\nb\tc\n\u202e"


def test_it_offers_template_filters() -> None:
    template = Template(
        "{% load runs_tags %}<title>{{ text|show_invisible_as_text }}</title>"
        "<h1>{{ text|show_invisible }}</h1><p>{{ text|show_invisible|linebreaksbr }}</p>"
    )

    html = template.render(Context({"text": "<x>\n\u202e"}))

    assert "<title>&lt;x&gt;\n⟨U+202E⟩</title>" in html
    assert f"<h1>&lt;x&gt;\n{RLO_SPAN}</h1>" in html
    assert f"<p>&lt;x&gt;<br>{RLO_SPAN}</p>" in html
    assert "\u202e" not in html

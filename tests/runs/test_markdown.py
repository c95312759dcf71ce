"""The `markdown` filter: a prompt's instructions rendered, then sanitized."""

from __future__ import annotations

from django.template import Context, Template
from django.utils.safestring import SafeString

from runs.templatetags.runs_tags import render_markdown


def test_it_renders_common_markdown():
    html = render_markdown("# Refunds\n\n* **one**\n* `two`\n\n|a|b|\n|-|-|\n|1|2|")
    assert "<h1>Refunds</h1>" in html
    assert "<li><strong>one</strong></li>" in html and "<code>two</code>" in html
    assert "<td>1</td>" in html
    assert isinstance(html, SafeString)


def test_it_removes_script_tags_and_their_content():
    html = render_markdown("Hi <script>alert('pwned')</script> there")
    assert "<script" not in html and "pwned" not in html
    assert "Hi" in html and "there" in html


def test_it_removes_event_handlers_and_images():
    html = render_markdown('<img src="x" onerror="alert(1)"> <b onclick="steal()">bold</b>')
    assert "onerror" not in html and "onclick" not in html and "<img" not in html
    assert "<b>bold</b>" in html


def test_it_drops_javascript_and_data_links_but_keeps_safe_ones():
    html = render_markdown(
        "[a](javascript:alert(1)) [b](JaVaScRiPt:alert(1)) [c](data:text/html,x) "
        "[d](https://example.com/doc) [e](docs/design.md)"
    )
    assert "javascript" not in html.lower() and "data:" not in html
    assert 'href="https://example.com/doc"' in html and 'href="docs/design.md"' in html


def test_it_marks_links_noopener():
    html = render_markdown("[docs](https://example.com)")
    assert 'rel="noopener noreferrer"' in html


def test_it_removes_style_iframes_and_forms():
    html = render_markdown(
        '<style>body{display:none}</style><iframe src="https://x"></iframe>'
        '<form action="/x"><input name="a"></form><p style="color:red">text</p>'
    )
    for fragment in ("<style", "display:none", "<iframe", "<form", "<input", "style="):
        assert fragment not in html
    assert "text" in html


def test_it_strips_control_characters_and_marks_invisible_ones():
    html = render_markdown("safe\x00\x07\x1b[31m text \u202egnp.exe\x7f [x](https://a.test/\u200b)")
    assert not any(ch in html for ch in "\x00\x07\x1b\x7f\u202e\u200b")
    assert "safe" in html and "[31m text" in html
    assert '<span class="invisible-char" title="RIGHT-TO-LEFT OVERRIDE">⟨U+202E⟩</span>gnp' in html
    assert 'href="https://a.test/⟨U+200B⟩"' in html  # inside a tag: the plain mark, no markup


def test_it_escapes_html_inside_code_blocks():
    html = render_markdown("```\n<script>x()</script>\n```")
    assert "&lt;script&gt;" in html and "<script>" not in html


def test_it_renders_nothing_for_empty_text():
    assert render_markdown("") == "" and render_markdown(None) == ""


def test_it_works_as_a_template_filter():
    template = Template("{% load runs_tags %}{{ text|markdown }}")
    html = template.render(Context({"text": "**x** <script>bad()</script>"}))
    assert html.strip() == "<p><strong>x</strong> </p>"


def test_it_renders_a_text_shown_again_once(monkeypatch):
    # Every review page of a campaign's runs shows one of a few tasks.
    from runs.templatetags import runs_tags

    rendered = []
    real = runs_tags.markdown_lib.markdown
    monkeypatch.setattr(
        runs_tags.markdown_lib,
        "markdown",
        lambda text, **kw: rendered.append(text) or real(text, **kw),
    )
    task = "# A task seen by one test only\n\n<script>x()</script>*done*"
    first, again = render_markdown(task), render_markdown(task)
    assert first == again
    assert "<h1>A task seen by one test only</h1>" in first and "<script" not in first
    assert rendered == [task]
    assert render_markdown(task + "!") != first and len(rendered) == 2

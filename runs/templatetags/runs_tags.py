"""Template helpers for the runs app: `{% load runs_tags %}`."""

from __future__ import annotations

import re

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Enough for a PRD-like task description; no images (they can track readers), no forms,
# no iframes, no style. Anything else is dropped with its tags, keeping its text.
ALLOWED_TAGS = set(
    "a abbr b blockquote br code dd del details div dl dt em h1 h2 h3 h4 h5 h6 hr i kbd li ol p"
    " pre s span strong sub summary sup table tbody td th thead tr ul".split()
)
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "abbr": {"title"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
}
# Relative links (docs inside the repository) stay; javascript:, data:, vbscript: etc. go.
URL_SCHEMES = {"http", "https", "mailto"}
MARKDOWN_EXTENSIONS = ["fenced_code", "tables", "sane_lists"]

# C0 and C1 control characters except tab and newlines, DEL, and the bidirectional overrides
# that can make text read differently from what it is ("trojan source").
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def strip_control_characters(text: str) -> str:
    return _CONTROL.sub("", text)


def render_markdown(text: str | None) -> SafeString:
    """Markdown to HTML that is safe to put in a page, whatever the text contains.

    Raw HTML in the markdown is allowed through the renderer and then sanitized by nh3, so the
    allow-list above is the only thing that decides what reaches the browser.
    """
    source = strip_control_characters(text or "")
    html = markdown_lib.markdown(source, extensions=MARKDOWN_EXTENSIONS, output_format="html")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return mark_safe(clean)  # sanitized by nh3 just above


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return render_markdown(text)


@register.filter
def isotime(value: str | None):
    """An ISO timestamp stored in JSON back to a datetime, for `naturaltime` and `date`."""
    from django.utils.dateparse import parse_datetime

    if not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None

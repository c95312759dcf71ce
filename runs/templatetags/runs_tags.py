"""Template helpers for the runs app: `{% load runs_tags %}`."""

from __future__ import annotations

import functools

import markdown as markdown_lib
import nh3
from django import template
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString, mark_safe

from runs import text_policy

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


def render_markdown(text: str | None) -> SafeString:
    """Markdown to HTML that is safe to put in a page, whatever the text contains.

    Raw HTML in the markdown is allowed through the renderer and then sanitized by nh3, so the
    allow-list above is the only thing that decides what reaches the browser. Invisible and
    bidirectional characters are marked in the sanitized result (``runs.text_policy``).
    """
    return _render_markdown(text or "")


# Each review page shows its run's task, and a campaign's runs share a few dozen tasks: the
# HTML of the latest texts is kept (the renderer costs about a millisecond a text).
@functools.lru_cache(maxsize=256)
def _render_markdown(text: str) -> SafeString:
    source = text_policy.strip_control(text)
    html = markdown_lib.markdown(source, extensions=MARKDOWN_EXTENSIONS, output_format="html")
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return mark_safe(text_policy.mark_invisible_html(clean))  # sanitized by nh3 just above


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return render_markdown(text)


@register.filter
def show_invisible(value) -> SafeString:
    """Untrusted text for a page: `{{ prompt.title|show_invisible }}`. Escapes it (unless it is
    already safe HTML), strips control characters and shows invisible ones as marks."""
    return text_policy.visible_html(value)


@register.filter
def show_invisible_as_text(value) -> str:
    """The same marks as plain text, for where markup cannot go (a page's <title>); Django's
    autoescaping escapes the result."""
    return text_policy.mark_invisible(text_policy.strip_control(str(value)))


@register.filter
def escape_invisible(value) -> SafeString:
    """For an attribute that must keep the exact text (a path line comments refer to): escaped,
    with invisible characters as character references the browser decodes back."""
    return mark_safe(text_policy.escape_invisible(str(value)))  # escaped by escape_invisible


@register.filter
def isotime(value: str | None):
    """An ISO timestamp stored in JSON back to a datetime, for `naturaltime` and `date`."""
    if not value:
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None

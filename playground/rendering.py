"""Model output as safe HTML: Markdown rendered on the server, then sanitized with an allow-list.

Model output is untrusted text. Markdown's raw-HTML passthrough is switched off, so ``<script>`` in an answer is
shown as the text the model wrote; the result still passes ``nh3`` (an allow-list sanitizer) so that no script,
event handler or ``javascript:`` URL can survive whatever Markdown produces.
"""

from __future__ import annotations

import markdown
import nh3
from markdown.extensions import Extension

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "b",
    "i",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}}
URL_SCHEMES = {"http", "https", "mailto"}


class _EscapeRawHtml(Extension):
    """Treat HTML in the source as text instead of passing it through."""

    def extendMarkdown(self, md):
        md.preprocessors.deregister("html_block")
        md.inlinePatterns.deregister("html")


EXTENSIONS = ["fenced_code", "tables", "sane_lists", "nl2br", _EscapeRawHtml()]


def render_markdown(text: str) -> str:
    """Sanitized HTML for a message: code blocks, lists, tables and links; never raw HTML from the model."""
    if not text:
        return ""
    rendered = markdown.markdown(text, extensions=EXTENSIONS, output_format="html")
    return nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )

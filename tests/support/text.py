"""The text a reader sees on a page: element text outside code, and the attributes shown or read aloud."""

from __future__ import annotations

from html.parser import HTMLParser

SHOWN_ATTRIBUTES = {"title", "placeholder", "aria-label", "alt", "data-confirm", "label"}
VERBATIM = {"pre", "code", "script", "style", "kbd", "samp"}  # code the user copies, not words to translate
_VOID = {"br", "img", "input", "meta", "link", "hr", "source", "wbr", "col", "area", "base", "embed", "track"}


class ShownTexts(HTMLParser):
    """Collects each shown text of an HTML document (or template with its tags replaced) in ``found``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _VOID:
            self.open.append(tag)
        self.found.extend(value for name, value in attrs if name in SHOWN_ATTRIBUTES and value)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            while self.open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if not VERBATIM.intersection(self.open) and data.strip():
            self.found.append(data)


def shown_texts(html: str) -> list[str]:
    parser = ShownTexts()
    parser.feed(html)
    return parser.found


def visible_text(html: str) -> str:
    """The page's shown texts, whitespace collapsed, joined by spaces."""
    return " ".join(" ".join(t.split()) for t in shown_texts(html))

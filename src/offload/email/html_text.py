"""Readable plain text from an HTML email body, with the stdlib parser only.

Mail clients that cannot show HTML (and spam filters that score its absence) need a text
part; deriving it keeps the two in step without writing every template twice.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

# Elements whose content is never shown to the reader.
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})
# Elements that start on a new line in a browser.
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset",
        "figure", "footer", "form", "header", "hr", "main", "nav", "ol", "section",
        "table", "tr", "ul",
    }
)  # fmt: skip
# Elements that are separated from their neighbours by a blank line.
_PARAGRAPHS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre"})
_SPACES = re.compile(r"[ \t\r\n\f\v]+")


class _TextExtractor(HTMLParser):
    """Collects text as a list of lines; block elements end the current line."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._links: list[str | None] = []
        self._link_text: list[int] = []

    def _newlines(self, count: int) -> None:
        text = "".join(self.out).rstrip(" ")
        trailing = len(text) - len(text.rstrip("\n"))
        if text and trailing < count:
            self.out = [text, "\n" * (count - trailing)]
        else:
            self.out = [text]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _PARAGRAPHS:
            self._newlines(2)
            self._pre += tag == "pre"
        elif tag in _BLOCKS:
            self._newlines(1)
            if tag == "hr":
                self.out.append("-" * 20 + "\n")
        elif tag == "li":
            self._newlines(1)
            self.out.append("- ")
        elif tag in {"td", "th"}:
            current = "".join(self.out)
            if current and not current.endswith(("\n", " ")):
                self.out.append(" ")
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))
            self._link_text.append(len("".join(self.out)))
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.handle_data(alt)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _PARAGRAPHS:
            self._pre -= tag == "pre" and self._pre > 0
            self._newlines(2)
        elif tag in _BLOCKS or tag == "li":
            self._newlines(1)
        elif tag == "a" and self._links:
            href = self._links.pop()
            start = self._link_text.pop()
            shown = "".join(self.out)[start:].strip()
            # Show the target unless the link text already is the address.
            if href and not href.startswith(("#", "mailto:")) and href != shown:
                self.out.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        if self._pre:
            self.out.append(data)
            return
        text = _SPACES.sub(" ", data)
        current = "".join(self.out)
        if not current or current.endswith(("\n", " ")):
            text = text.lstrip(" ")
        self.out.append(text)


def html_to_text(html: str) -> str:
    """Turn an HTML body into plain text: paragraphs, line breaks, list bullets and link
    targets survive; markup, scripts and styles do not."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.out).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"

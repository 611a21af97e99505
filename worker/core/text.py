"""Text normalisation for matching: HTML to plain text, folding, word splitting.

Folding implements SPEC §5: case-insensitive, Unicode-aware, ß ≡ ss, ä/ö/ü ≡ ae/oe/ue; and it
drops the default-ignorable code points (soft hyphens, zero-width spaces and joiners, bidi
controls, variation selectors, ...; see charsets), which a reader never sees.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

from worker.core.charsets import BIDI_CONTROL, IGNORABLE, without_ignorables

_UMLAUTS = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"))
_SPACE = re.compile(r"\s+")
# Tags that separate words visually; text on either side must not run together.
_BLOCK_TAGS = frozenset(
    [
        "p",
        "br",
        "div",
        "li",
        "ul",
        "ol",
        "tr",
        "td",
        "th",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "hr",
        "pre",
    ]
)
_SKIPPED_TAGS = frozenset({"script", "style", "template", "noscript"})


def fold(text: str, printable: bool | None = None) -> str:
    """Fold text so that equivalent spellings compare equal (casefold turns ß into ss).

    `printable`: what text.isprintable() said, if the caller asked (the matcher does); False
    promises nothing and is always safe.
    On the hot path of matching: ignorables are looked for before any work is done on them,
    str.replace per umlaut is several times faster than str.translate with a mapping, and the
    NFC check skips the (rare) normalisation. Ignorables go first, so that a soft hyphen between
    a letter and its combining mark does not keep NFC from joining them."""
    text = without_ignorables(text, printable)
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = text.casefold()
    for umlaut, spelled in _UMLAUTS:
        if umlaut in text:
            text = text.replace(umlaut, spelled)
    return text


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    if "<" not in markup:  # most titles: no tags to parse, perhaps an entity
        return _SPACE.sub(" ", html.unescape(markup) if "&" in markup else markup).strip()
    extractor = _TextExtractor()  # convert_charrefs: the text it hands over is decoded once
    extractor.feed(markup)
    extractor.close()
    return _SPACE.sub(" ", "".join(extractor.parts)).strip()


def one_line(text: str) -> str:
    """Collapse every kind of line break and control character into single spaces.

    Invisible characters stay as the feed wrote them (a soft hyphen or zero-width joiner turned
    into a space would split the word or emoji a reader sees), except bidi controls, which could
    make the line read backwards: they go."""
    cleaned = "".join(
        " " if unicodedata.category(ch)[0] in "CZ" and not IGNORABLE.fullmatch(ch) else ch
        for ch in BIDI_CONTROL.sub("", text)
    )
    return _SPACE.sub(" ", cleaned).strip()


# What may steer a terminal or reorder what a reader sees: C0 and C1 controls (ESC opens colour,
# screen-clearing and OSC 8 hyperlink sequences; 0x9B is a one-byte CSI), DEL, line and paragraph
# separators, the bidirectional marks, embeddings, overrides and isolates ("Trojan Source"), and
# lone surrogates, which cannot even be written out as UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """Text from outside made safe for a terminal or a log line: each character that could steer
    the terminal or reorder the line is shown as an escape (`\\x1b`, `\\u202e`) instead, so a
    reader still sees that it was there; everything else (umlauts, emoji) is kept. One line."""
    if _UNPRINTABLE.search(text) is None:  # nearly always: one scan, no copy
        return text
    return _UNPRINTABLE.sub(_escape, text)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

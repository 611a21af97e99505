"""Alerts as chat messages (the apprise channel): a one-line title and a body, in Markdown
for targets that take Markdown or HTML (Apprise turns it into Slack's mrkdwn, Teams' cards,
HTML), in plain text for the rest.

Everything shown comes from feeds, so in Markdown it is escaped: a title cannot turn into a
link, an image (a tracking pixel) or a heading, nor break out of the link next to it. In both
forms nothing can mention @everyone / @channel, and links are http(s) only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from worker.core.ops import details, headline, is_ops_event
from worker.core.text import one_line

SUMMARY_MAX = 300  # characters of an item's summary in a single alert
DIGEST_MAX = 50  # items listed in a digest; the rest are counted
TITLE_MAX = 250

# The characters that make markup anywhere in a line: emphasis, code, links and images (an
# image needs "![", a link "]("), autolinks and HTML, strike-through, tables. Other marks
# ("#", "-", "1.", ">") make markup only at the start of a line: see _LINE_START. Escaping
# no more than this keeps the text readable where a dialect ignores backslashes.
_MARKDOWN = re.compile(r"([\\`*\[\]<>~|]|(?<![^\W_])_|_(?![^\W_]))")  # "_" between letters is none
_LINE_START = re.compile(r"^(\s*\d*)([#+\-=.)])")
# "@everyone", "@here", "@channel", "@user": a zero-width space after "@" keeps them words.
_MENTION = re.compile(r"@(?=\w)")
# What may not stand inside an autolink <...>: it would end the link or the line.
_URL_UNSAFE = re.compile(r"[\s<>\"\\`\x00-\x1f\x7f]")


def markdown_text(text: str) -> str:
    """Outside text as one line of Markdown that shows exactly that text."""
    escaped = _MARKDOWN.sub(r"\\\1", one_line(text))
    return _MENTION.sub("@\u200b", _LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), escaped))


def plain_text(text: str) -> str:
    """Outside text as one line of plain text."""
    return _MENTION.sub("@\u200b", one_line(text))


def web_link(link: str | None) -> str:
    """An http(s) link with nothing in it that would end it or its line, or "" for any other."""
    if not link or not link.lower().startswith(("http://", "https://")):
        return ""
    return _URL_UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", link)


def markdown_link(link: str | None) -> str:
    """An http(s) link as a Markdown autolink `<url>`, or "" for any other link."""
    url = web_link(link)
    return f"<{url}>" if url else ""


class _Style:
    def __init__(self, markdown: bool) -> None:
        self.text: Callable[[str], str] = markdown_text if markdown else plain_text
        self.link: Callable[[str | None], str] = markdown_link if markdown else web_link
        self.em = "_" if markdown else ""
        self.strong = "**" if markdown else ""


def plain_title(text: str) -> str:
    """A title as targets show it in their own title field, as plain text: one line, capped,
    no mentions. (Targets without a title field put it above the body.)"""
    return _MENTION.sub("@\u200b", _cut(one_line(text) or "(no title)", TITLE_MAX))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _meta(entry: dict[str, Any], style: _Style) -> str:
    """`feed · topics: a, b · matched: x`, emphasised in Markdown."""
    item = entry["item"]
    parts = [style.text(str(item.get("feed") or ""))]
    topics = [t for t in item.get("topics") or [] if isinstance(t, str)]
    if topics:
        parts.append("topics: " + ", ".join(style.text(t) for t in topics))
    matched = [m for m in entry.get("matched") or [] if isinstance(m, str)]
    if matched:
        parts.append("matched: " + ", ".join(style.text(m) for m in matched))
    text = " · ".join(p for p in parts if p)
    return f"{style.em}{text}{style.em}" if text else ""


def chat_message(payload: dict[str, Any], markdown: bool = True) -> tuple[str, str]:
    """(title, body) of an alert, digest or feed health event payload (SPEC §6, §11); the body
    in Markdown or plain text.

    Alert: the item's title; the body holds its summary, link, feed, topics and matched terms.
    Digest: "N alerts for <alert>"; the body lists each item with its link."""
    style = _Style(markdown)
    if is_ops_event(payload):  # a feed's health event (ops.channels): its headline, its details
        return plain_title(headline(payload)), "\n\n".join(style.text(line) for line in details(payload))
    data = payload["data"]
    if "items" in data:
        return _digest(data, style)
    item = data["item"]
    title = plain_title(item.get("title") or "(no title)")
    lines = []
    summary = one_line(item.get("summary") or "")
    if summary:
        lines.append(style.text(_cut(summary, SUMMARY_MAX)))
    link = style.link(item.get("link"))
    if link:
        lines.append(link)
    lines.append(_meta({"item": item, "matched": data.get("matched")}, style))
    # Apprise sends no message without a body: an item with nothing but a title repeats it.
    return title, "\n\n".join(line for line in lines if line) or style.text(title)


def _digest(data: dict[str, Any], style: _Style) -> tuple[str, str]:
    entries = [e for e in data["items"] if isinstance(e, dict) and isinstance(e.get("item"), dict)]
    count = len(entries)
    title = plain_title(f"{count} alert{'' if count == 1 else 's'} for {data.get('alert') or ''}")
    lines = []
    for entry in entries[:DIGEST_MAX]:
        item = entry["item"]
        heading = style.text(_cut(one_line(item.get("title") or "") or "(no title)", TITLE_MAX))
        link = style.link(item.get("link"))
        first = f"- {style.strong}{heading}{style.strong} {link}".rstrip()
        # Markdown: two spaces end a line inside a list item; plain text: an indented line.
        lines.append(first + ("  " if style.strong else "") + f"\n  {_meta(entry, style)}")
    if count > DIGEST_MAX:
        lines.append(f"- … and {count - DIGEST_MAX} more")
    return title, "\n".join(lines) or style.text(title)

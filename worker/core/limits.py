"""Caps on the text of one item, so a feed cannot make a log line, a webhook body or a queued
job as large as its own response (a 9.5 MB title became a 9.5 MB log line and webhook body).

The caps are far beyond real news (a headline is under 200 characters, a full article under
50,000) and keep the beginning of each field, which is what matching reads first. An item's
identity is computed before the cap, from what the feed says, so capping never changes it.
"""

from __future__ import annotations

from dataclasses import replace

from worker.core.models import Item

MAX_TITLE = 1_000  # characters
MAX_TEXT = 100_000  # summary and content together; the summary keeps its part first
MAX_CATEGORY = 200  # characters per category
MAX_CATEGORIES = 50
MAX_LINK = 8_192  # characters; longer is no address a browser or server takes: dropped
CUT = "…"  # marks a field that was cut


def cap_item(item: Item) -> Item:
    """The item with each text field within its cap; the item itself when all are (nearly always)."""
    if _within_caps(item):
        return item
    summary = _cut(item.summary, MAX_TEXT)
    return replace(
        item,
        title=_cut(item.title, MAX_TITLE),
        summary=summary,
        content=_cut(item.content, MAX_TEXT - len(summary)),
        categories=tuple(_cut(c, MAX_CATEGORY) for c in item.categories[:MAX_CATEGORIES]),
        link=_short_link(item.link),
        canonical_link=_short_link(item.canonical_link),
    )


def _within_caps(item: Item) -> bool:
    return (
        len(item.title) <= MAX_TITLE
        and len(item.summary) + len(item.content) <= MAX_TEXT
        and len(item.categories) <= MAX_CATEGORIES
        and all(len(c) <= MAX_CATEGORY for c in item.categories)
        and len(item.link or "") <= MAX_LINK
        and len(item.canonical_link or "") <= MAX_LINK
    )


def _short_link(link: str | None) -> str | None:
    return link if link is None or len(link) <= MAX_LINK else None


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(CUT)] + CUT if limit > len(CUT) else ""

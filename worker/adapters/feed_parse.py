"""Bytes we fetched -> Items. feedparser only parses here; it never fetches."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime
from typing import Any

import feedparser

from worker.core.errors import FeedParseError
from worker.core.identity import primary_identity
from worker.core.links import canonical_link
from worker.core.models import Item
from worker.core.text import html_to_text
from worker.core.topics import split_categories


def parse_feed(feed: str, body: bytes, url: str, content_type: str = "") -> list[Item]:
    """Parse a feed body; raises FeedParseError when nothing in it is a feed."""
    headers = {"content-location": url}
    if content_type:
        headers["content-type"] = content_type
    # We never output feed HTML as-is, so feedparser's (slow) sanitiser is not needed here.
    parsed = feedparser.parse(body, response_headers=headers, sanitize_html=False)
    if not parsed.entries and not parsed.feed.get("title") and not parsed.get("version"):
        raise FeedParseError(_not_a_feed_message(content_type, parsed))
    return [_item(feed, entry) for entry in parsed.entries]


def _not_a_feed_message(content_type: str, parsed: Any) -> str:
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and "xml" not in media_type and "rss" not in media_type and "atom" not in media_type:
        return f"not a feed: {media_type}"
    if parsed.get("bozo"):
        reason = parsed.get("bozo_exception")
        return f"malformed XML: {_first_line(str(reason))}" if reason else "malformed XML"
    return "not a feed: no RSS, Atom or RDF content"


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else ""


def _published(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed: time.struct_time | None = entry.get(key)
        if parsed:
            try:
                return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError):
                continue
    return None


def _content_text(entry: Any, summary: str) -> str:
    parts = [html_to_text(c.get("value", "")) for c in entry.get("content") or []]
    return " ".join(p for p in parts if p and p != summary)


def _item(feed: str, entry: Any) -> Item:
    guid = (entry.get("id") or "").strip() or None
    link = (entry.get("link") or "").strip() or None
    title = html_to_text(entry.get("title") or "")
    summary = html_to_text(entry.get("summary") or "")
    published = _published(entry)
    return Item(
        feed=feed,
        guid=guid,
        link=link,
        canonical_link=canonical_link(link),
        title=title,
        summary=summary,
        content=_content_text(entry, summary),
        categories=split_categories(t.get("term") or "" for t in entry.get("tags") or []),
        published=published,
        id=primary_identity(feed, guid, link, title, published),
    )

"""The `feed` source: RSS 0.9x/1.0/2.0, Atom and RDF bytes -> raw entries, with feedparser.

feedparser only parses here, from a stream of bytes we fetched ourselves; it never fetches and
never opens anything (given bytes or a str, feedparser.parse would first try them as a file
name or URL).
"""

from __future__ import annotations

import calendar
import io
import time
from datetime import UTC, datetime
from typing import Any

import feedparser

from worker.core.dates import DateCandidate
from worker.core.errors import FeedParseError
from worker.core.items import RawEntry
from worker.sources.base import Page, SourceResult
from worker.sources.discovery import linked_feeds

_DATE_KEYS = ("published", "updated", "created")


def read(page: Page, config: object = None) -> SourceResult:
    """Parse a feed body; raises FeedParseError when nothing in it is a feed."""
    # We never output feed HTML as-is, so feedparser's sanitiser and relative-URI rewriting (both
    # re-parse every embedded HTML fragment) would be work for nothing: 2.3x the parse time.
    # Nor is it told the feed's address: with one, it resolves a base URI on every element
    # (a seventh of the parse); make_item resolves item links against the address instead.
    headers = {"content-type": page.content_type} if page.content_type else {}
    parsed = feedparser.parse(
        io.BytesIO(page.body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    if not parsed.entries and not parsed.feed.get("title") and not parsed.get("version"):
        raise FeedParseError(_not_a_feed_message(page, parsed))
    ttl = str(parsed.feed.get("ttl") or "").strip()
    return SourceResult([_entry(entry) for entry in parsed.entries], float(ttl) if ttl.isdigit() else None)


def _not_a_feed_message(page: Page, parsed: Any) -> str:
    media_type = page.content_type.split(";")[0].strip().lower()
    if media_type and "xml" not in media_type and "rss" not in media_type and "atom" not in media_type:
        return f"not a feed: {media_type}{_links_note(page, media_type)}"
    if parsed.get("bozo"):
        reason = parsed.get("bozo_exception")
        return f"malformed XML: {_first_line(str(reason))}" if reason else "malformed XML"
    return "not a feed: no RSS, Atom or RDF content"


def _links_note(page: Page, media_type: str) -> str:
    """For an HTML page: the feeds it links to, so the user can take one (SPEC §8)."""
    if "html" not in media_type:
        return ""
    links = [link for link in linked_feeds(page.body, page.content_type, page.url) if link != page.url]
    if not links:
        return ""
    more = f" and {len(links) - 1} more" if len(links) > 1 else ""
    return f" (the page links to {links[0]}{more})"


def _first_line(text: str) -> str:
    return text.splitlines()[0][:200] if text else ""


def _dates(entry: Any) -> tuple[DateCandidate, ...]:
    """Per date field: its text (make_item reads European zone names right, which feedparser
    takes for UTC), then feedparser's own reading of it, which knows many more formats."""
    candidates: list[DateCandidate] = []
    for key in _DATE_KEYS:
        # dict.get: FeedParserDict.get would map updated_parsed to published_parsed with a warning
        text = dict.get(entry, key)
        if isinstance(text, str):
            candidates.append(text)
        parsed: time.struct_time | None = dict.get(entry, f"{key}_parsed")
        if parsed:
            candidates.append(_utc(parsed))
    return tuple(candidates)


def _utc(parsed: time.struct_time) -> datetime | None:
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _entry(entry: Any) -> RawEntry:
    return RawEntry(
        title=entry.get("title") or "",
        link=entry.get("link") or None,
        guid=entry.get("id") or None,
        summary=entry.get("summary") or "",
        content=tuple(c.get("value", "") for c in entry.get("content") or []),
        categories=tuple(t.get("term") or "" for t in entry.get("tags") or []),
        dates=_dates(entry),
    )

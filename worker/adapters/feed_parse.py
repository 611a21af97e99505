"""Bytes we fetched -> Items. feedparser only parses here; it never fetches."""

from __future__ import annotations

import calendar
import io
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from worker.core.errors import FeedParseError
from worker.core.identity import link_identity, primary_identity, story_id
from worker.core.links import canonical_link
from worker.core.models import Item
from worker.core.text import html_to_text
from worker.core.topics import split_categories

# Dates further ahead than this are a feed's mistake, not news from the future: shown as unknown.
FUTURE_TOLERANCE = timedelta(days=1)

# feedparser reads German and other European zone names as UTC ("15:51 MESZ" -> 15:51Z).
_ZONE_OFFSETS = {
    "CET": "+0100", "MEZ": "+0100", "CEST": "+0200", "MESZ": "+0200",
    "WET": "+0000", "WEZ": "+0000", "WEST": "+0100", "WESZ": "+0100",
    "EET": "+0200", "OEZ": "+0200", "EEST": "+0300", "OESZ": "+0300",
}  # fmt: skip
_ZONE_NAME = re.compile(r"^(.*\d)\s+(" + "|".join(_ZONE_OFFSETS) + r")\s*$", re.IGNORECASE)


def _european_zone_date(text: str) -> time.struct_time | None:
    match = _ZONE_NAME.match(text.strip())
    if not match:
        return None
    try:
        moment = parsedate_to_datetime(f"{match.group(1)} {_ZONE_OFFSETS[match.group(2).upper()]}")
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC).timetuple()


feedparser.registerDateHandler(_european_zone_date)  # process-wide, tried before feedparser's own


@dataclass(frozen=True)
class ParsedFeed:
    items: list[Item]
    ttl_minutes: float | None  # RSS <ttl>: how long the publisher says the feed may be cached


def parse_feed(
    feed: str, body: bytes, url: str, content_type: str = "", now: datetime | None = None
) -> ParsedFeed:
    """Parse a feed body; raises FeedParseError when nothing in it is a feed."""
    # We never output feed HTML as-is, so feedparser's sanitiser and relative-URI rewriting (both
    # re-parse every embedded HTML fragment) would be work for nothing: 2.3x the parse time.
    # Nor is it told the feed's address: with one, it resolves a base URI on every element
    # (a seventh of the parse); item links are resolved against the address here instead.
    # A stream, never the bytes themselves: given bytes or a str, feedparser first tries them as
    # a file name or URL, so a feed whose body is "/etc/passwd" would be read from our disk.
    headers = {"content-type": content_type} if content_type else {}
    parsed = feedparser.parse(
        io.BytesIO(body), response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    if not parsed.entries and not parsed.feed.get("title") and not parsed.get("version"):
        raise FeedParseError(_not_a_feed_message(content_type, parsed))
    latest = (now or datetime.now(UTC)) + FUTURE_TOLERANCE
    ttl = str(parsed.feed.get("ttl") or "").strip()
    return ParsedFeed(
        [_item(feed, entry, url, latest) for entry in parsed.entries],
        float(ttl) if ttl.isdigit() else None,
    )


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


def _published(entry: Any, latest: datetime) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        # dict.get: FeedParserDict.get would map updated_parsed to published_parsed with a warning
        parsed: time.struct_time | None = dict.get(entry, key)
        if parsed:
            try:
                moment = datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC)
            except (OverflowError, ValueError, OSError):
                continue
            return moment if moment <= latest else None
    return None


def _content_text(entry: Any, summary: str) -> str:
    parts = [html_to_text(c.get("value", "")) for c in entry.get("content") or []]
    return " ".join(p for p in parts if p and p != summary)


def _link(raw: str, feed_url: str) -> str | None:
    """The item's link made absolute against the feed's address (or the xml:base feedparser
    applied); only http(s) links are kept, so no javascript: link reaches an alert."""
    link = raw.strip()
    if not link:
        return None
    if link.startswith(("http://", "https://")):
        return link
    link = urljoin(feed_url, link)
    return link if urlsplit(link).scheme in ("http", "https") else None


def _item(feed: str, entry: Any, feed_url: str, latest: datetime) -> Item:
    guid = (entry.get("id") or "").strip() or None
    link = _link(entry.get("link") or "", feed_url)
    title = html_to_text(entry.get("title") or "")
    summary = html_to_text(entry.get("summary") or "")
    published = _published(entry, latest)
    canonical = canonical_link(link)
    primary = primary_identity(feed, guid, link, title, published)
    return Item(
        feed=feed,
        guid=guid,
        link=link,
        canonical_link=canonical,
        title=title,
        summary=summary,
        content=_content_text(entry, summary),
        categories=split_categories(t.get("term") or "" for t in entry.get("tags") or []),
        published=published,
        id=story_id(primary, link_identity(canonical)),
    )

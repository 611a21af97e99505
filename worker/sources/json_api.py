"""The `json` source: a news API's JSON -> raw entries, by the feed's JMESPath `map` (SPEC §8).

Each expression of `map` is optional: unset ones try the names news APIs commonly use. The
body is decoded with json.loads from memory (nothing here takes a string as a path or URL).
An API answering HTML, or an error object instead of items, is a FeedParseError that says so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult

from worker.config import FeedConfig, JsonMap
from worker.core.dates import DateCandidate
from worker.core.errors import FeedParseError
from worker.core.items import RawEntry
from worker.sources import structured
from worker.sources.base import Page, SourceResult

# What each field is looked up as when the map does not say.
DEFAULTS = {
    "items": "data || items || articles || news || results || entries || hits || @",
    "id": "id || guid || uuid",
    "title": "title || headline || name",
    "link": "url || link || realUrl || href",
    "published": "published || publishedAt || published_at || datetime || date || pubDate || created_at",
    "summary": "summary || description || teaser || abstract || excerpt",
    "categories": "categories || category || tags || keywords || topics",
    "author": "author || authors || byline",
}
MAX_ITEMS = 1000
_ERROR_KEYS = ("error", "errors", "message", "detail", "error_description")


def read(page: Page, config: FeedConfig) -> SourceResult:
    data = _decode(page)
    fields = _expressions(config.map or JsonMap())
    found = _search(fields["items"], data)
    if not isinstance(found, list):
        raise FeedParseError(_no_items_message(data))
    entries = [_entry(item, fields) for item in found[:MAX_ITEMS] if isinstance(item, dict)]
    warning = (
        f"the API answered {len(found)} items; only the first {MAX_ITEMS} are read"
        if len(found) > MAX_ITEMS
        else None
    )
    return SourceResult([e for e in entries if e.title or e.link], warning=warning)


def _decode(page: Page) -> Any:
    media_type = page.content_type.split(";")[0].strip().lower()
    if media_type and "json" not in media_type and not media_type.startswith("text/plain"):
        raise FeedParseError(f"not JSON: {media_type}")
    try:
        return json.loads(page.body)
    except (ValueError, RecursionError) as e:
        raise FeedParseError(f"invalid JSON: {str(e)[:100]}") from e


def _no_items_message(data: Any) -> str:
    if isinstance(data, dict):
        for key in _ERROR_KEYS:
            if data.get(key):
                return f"the API answered an error: {_error_text(data[key])[:200] or key}"
    return "no list of items in the JSON (check map.items)"


def _error_text(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("message", "detail", "description", "error", "code"):
            if value.get(key):
                return _error_text(value[key])
    return structured.text(value)


@lru_cache(maxsize=512)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def _expressions(mapping: JsonMap) -> dict[str, ParsedResult]:
    return {name: _compiled(getattr(mapping, name) or default) for name, default in DEFAULTS.items()}


def _search(expression: ParsedResult, data: Any) -> Any:
    try:
        return expression.search(data)
    except (JMESPathError, TypeError, ValueError):
        return None  # an expression that does not fit this item's shape finds nothing


def _entry(item: dict[str, Any], fields: dict[str, ParsedResult]) -> RawEntry:
    value = {name: _search(expression, item) for name, expression in fields.items() if name != "items"}
    return RawEntry(
        title=structured.text(value["title"]),
        link=structured.url(value["link"]) or None,
        guid=structured.text(value["id"]) or None,
        summary=structured.text(value["summary"]),
        categories=tuple(structured.texts(value["categories"])),
        dates=(_date(value["published"]),),
        author=", ".join(structured.texts(value["author"])),
    )


def _date(value: Any) -> DateCandidate:
    """ISO 8601 (or any text make_item reads), or epoch seconds (milliseconds, if that large)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 100_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return structured.text(value) or None

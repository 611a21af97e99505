"""Sources: one adapter per feed `type` (SPEC §8), each turning a fetched page into raw entries.

`read_items` picks the adapter by the feed's type and makes Items of what it found with the one
`make_item` of worker/core, so identity, links, dates and categories are the same for all.
Article pages (`articles: true`) are read by `article.read_article` and merged into their items
by `core.items.merge_article` (worker/articles.py does the fetching).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from worker.config import FeedConfig
from worker.core.items import make_item
from worker.core.models import Item
from worker.sources import feed, html, json_api
from worker.sources.base import Page, SourceResult

__all__ = ["SOURCES", "Page", "ParsedItems", "SourceResult", "read_items"]

Source = Callable[[Page, FeedConfig], SourceResult]
SOURCES: dict[str, Source] = {"feed": feed.read, "html": html.read, "json": json_api.read}


@dataclass(frozen=True)
class ParsedItems:
    items: list[Item]
    ttl_minutes: float | None = None
    # Items the page yielded, for sources whose layout can change under us (html, json): a page
    # that yielded some and now yields none is reported. None for feeds.
    found: int | None = None
    warning: str | None = None


def read_items(config: FeedConfig, page: Page, now: datetime) -> ParsedItems:
    """The items of a fetched page, read by the feed's source type; raises FeedParseError."""
    result = SOURCES[config.type](page, config)
    items = [make_item(e, config.name, page.url, now) for e in result.entries]
    found = None if config.type == "feed" else len(items)
    return ParsedItems(items, result.ttl_minutes, found, result.warning)

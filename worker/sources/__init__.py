"""Sources: one adapter per feed `type` (SPEC §8), each turning a fetched page into raw entries.

`read_items` picks the adapter by the feed's type and makes Items of what it found with the one
`make_item` of worker/core, so identity, links, dates and categories are the same for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from worker.config import FeedConfig
from worker.core.items import make_item
from worker.core.models import Item
from worker.sources import feed
from worker.sources.base import Page, SourceResult

__all__ = ["SOURCES", "Page", "ParsedItems", "SourceResult", "read_items"]

Source = Callable[[Page], SourceResult]
SOURCES: dict[str, Source] = {"feed": feed.read}


@dataclass(frozen=True)
class ParsedItems:
    items: list[Item]
    ttl_minutes: float | None = None


def read_items(config: FeedConfig, page: Page, now: datetime) -> ParsedItems:
    """The items of a fetched page, read by the feed's source type; raises FeedParseError."""
    result = SOURCES[config.type](page)
    return ParsedItems([make_item(e, config.name, page.url, now) for e in result.entries], result.ttl_minutes)

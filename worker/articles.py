"""`articles: true` (SPEC §8): after the pre-filter, each NEW item's own page is fetched once,
newest first, at most `max_articles` per poll, read (worker/sources/article.py) and merged into
the item before it is queued, so topics and alerts see the page's date, tags and main text.

Nothing is dropped. Items over `max_articles` wait for the next poll, and so do items whose
page did not answer (a timeout, a 5xx) for up to MAX_TRIES polls; the poll is then not
"complete" and its validators are not stored (worker/core/poll.py), so the next poll reads
the page again. A page that cannot be read for good (404, robots.txt, a redirect off the site,
not HTML) leaves its item as the listing showed it, and status says which page failed.
Once an item is on the queue it is marked (adapters/article_marks.py): a poll that comes
before the worker has marked it seen neither fetches its page again nor queues it twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.adapters.article_marks import QUEUED, ArticleMarks
from worker.adapters.robots import MemoryRobotsStorage, RedisRobotsStorage, RobotsStorage
from worker.config import FeedConfig
from worker.core.errors import FeedParseError, FetchError
from worker.core.items import merge_article
from worker.core.models import Item
from worker.pages import PageFetcher, is_transient
from worker.runtime import Runtime
from worker.sources.article import read_article
from worker.sources.base import Page

log = logging.getLogger(__name__)

MAX_TRIES = 3  # polls on which a page that does not answer is tried before its item goes without it
_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ArticleBatch:
    items: list[Item]  # to queue now, each with its page read (or as listed, if it cannot be)
    complete: bool = True  # False: some new items wait for a later poll
    problem: str | None = None  # article pages that could not be read, in words, for status


def page_fetcher(rt: Runtime, feed: FeedConfig, in_redis: bool = True) -> PageFetcher:
    """The polite fetcher for a feed's pages; robots.txt cached in Redis, or (for preview and
    discover, which write nothing) in this process."""
    storage: RobotsStorage = RedisRobotsStorage(rt.redis) if in_redis else MemoryRobotsStorage(rt.clock)
    return PageFetcher(rt.http, rt.settings, feed, storage, rt.clock)


def complete(rt: Runtime, feed: FeedConfig, fresh: list[Item], baseline: bool = False) -> ArticleBatch:
    """The new items of a poll, with their pages read: what to queue now, and whether that is all."""
    if not feed.articles or not fresh or baseline:  # a baseline alerts nothing: its pages can wait
        return ArticleBatch(fresh)
    marks = ArticleMarks(rt.redis)
    known = marks.read([item.id for item in fresh])
    todo = newest_first([item for item in fresh if known.get(item.id) != QUEUED])
    now_items, later = todo[: feed.max_articles], todo[feed.max_articles :]
    tries = {item.id: int(known[item.id]) for item in now_items if known.get(item.id, "").isdigit()}
    pages = page_fetcher(rt, feed)
    ready, held, failed = read_pages(rt, feed, pages, now_items, tries)
    if held:
        marks.failed(held)
    if later:
        log.info("feed=%s %d article pages wait for the next poll (max_articles)", feed.name, len(later))
    return ArticleBatch(ready, complete=not later and not held, problem=_problem(rt, failed, len(now_items)))


def queued(rt: Runtime, feed: FeedConfig, batch: ArticleBatch) -> None:
    """Mark the batch's items as on the queue (call after queuing them)."""
    if feed.articles and batch.items:
        ArticleMarks(rt.redis).queued(item.id for item in batch.items)


def newest_first(items: Sequence[Item]) -> list[Item]:
    """Dated items newest first; undated ones after them, in the page's order (a listing's
    order is usually newest first already)."""
    return sorted(items, key=lambda i: (i.published is None, -(i.published or _OLDEST).timestamp()))


def read_pages(
    rt: Runtime, feed: FeedConfig, pages: PageFetcher, items: Sequence[Item], tries: dict[str, int]
) -> tuple[list[Item], dict[str, int], list[tuple[Item, str]]]:
    """Each item with its page read; the ones held for a later try (with their count); the
    pages that failed for good, with why."""
    ready: list[Item] = []
    held: dict[str, int] = {}
    failed: list[tuple[Item, str]] = []
    for item in items:
        try:
            ready.append(with_article(rt, pages, item))
            continue
        except FetchError as e:
            count = tries.get(item.id, 0) + 1
            if is_transient(e) and count < MAX_TRIES:
                held[item.id] = count
                log.info(
                    "feed=%s item=%s article page failed (%s); trying again next poll", feed.name, item.id, e
                )
                continue
            reason = str(e)
        except FeedParseError as e:
            reason = str(e)
        log.warning(
            "feed=%s item=%s article page not read, item kept as listed: %s", feed.name, item.id, reason
        )
        failed.append((item, reason))
        ready.append(item)
    return ready, held, failed


def with_article(rt: Runtime, pages: PageFetcher, item: Item) -> Item:
    """The item merged with what its page says; raises FetchError or FeedParseError."""
    if not item.link:
        return item
    result = pages.article(item.link)
    article = read_article(Page(result.url, result.body, result.content_type))
    return merge_article(item, article, rt.clock())


def _problem(rt: Runtime, failed: list[tuple[Item, str]], tried: int) -> str | None:
    if not failed:
        return None
    item, reason = failed[-1]
    where = rt.config.redact(item.link or item.id)
    last = reason if where in reason else f"{where}: {reason}"
    return f"{len(failed)} of {tried} article pages not read (last: {last})"

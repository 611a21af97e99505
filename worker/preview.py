"""`newswatch discover URL` and `newswatch preview FEED | --url URL [--type T]` (SPEC §8): look
at a source once, the way the pipeline would, and write nothing to Redis (robots.txt is cached
in this process only, no item is marked seen, no article page is marked fetched).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from worker import articles
from worker.adapters.http_fetch import FetchLimits, FetchResult, fetch
from worker.config import Config, FeedConfig
from worker.core.errors import FeedParseError, FetchError
from worker.core.models import Item, utc_iso
from worker.core.rules import classify, too_old_to_alert
from worker.core.text import printable
from worker.pages import PageFetcher, source_request
from worker.runtime import Runtime
from worker.sources import Page, feed, read_items
from worker.sources.discovery import common_feed_urls, feed_links
from worker.sources.document import parse_html

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
SourceType = Literal["feed", "html", "json"]
_SHOWN = 20  # items listed by discover


def _runtime(config: Config) -> Runtime:
    return Runtime(config, redis=None)  # type: ignore[arg-type]  # nothing here touches Redis


def _limits(config: Config) -> FetchLimits:
    polling = config.settings.polling
    return FetchLimits(polling.timeout.total_seconds(), polling.max_bytes, polling.max_redirects)


def _get(rt: Runtime, source: FeedConfig, pages: PageFetcher, url: str | None = None) -> Page:
    """Fetch a source's own URL (or `url`) as a poll would: robots.txt first, its headers."""
    target = url or source.url
    pages.obey_robots(target)
    result: FetchResult = fetch(rt.http, target, _limits(rt.config), rt.clock(), **source_request(source))
    return Page(result.url, result.body, result.content_type)


# --- preview ---------------------------------------------------------------------------------


@dataclass
class Previewed:
    item: Item
    topics: tuple[str, ...] = ()
    alerts: list[str] = field(default_factory=list)
    note: str | None = None  # why its article page was not read, if it was not


def preview(config: Config, name: str | None, url: str | None, kind: SourceType | None, as_json: bool) -> int:
    try:
        source = _preview_source(config, name, url, kind)
    except KeyError:
        print(f"newswatch: unknown feed {name!r}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError:
        print("newswatch: --url must be an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    rt = _runtime(config)
    pages = articles.page_fetcher(rt, source, in_redis=False)
    try:
        page = _get(rt, source, pages)
        if kind is None and name is None:
            source = source.model_copy(update=_guessed_type(page))
        parsed = read_items(source, page, rt.clock())
    except (FetchError, FeedParseError) as e:
        print(f"{source.name}: error: {_printable(rt.config.redact(str(e)))}", file=sys.stderr)
        return EXIT_FAILURE
    shown = [_previewed(rt, item) for item in _with_articles(rt, source, pages, parsed.items)]
    if as_json:
        print(json.dumps(_preview_json(source, shown, parsed.warning), ensure_ascii=False, indent=2))
    else:
        _print_preview(rt, source, shown, parsed.warning)
    return EXIT_OK


def _preview_source(config: Config, name: str | None, url: str | None, kind: SourceType | None) -> FeedConfig:
    if name is not None:
        return config.settings.feed(name)
    chosen = kind or "feed"
    return FeedConfig(name="preview", url=url or "", type=chosen, articles=chosen == "html")


def _guessed_type(page: Page) -> dict[str, Any]:
    """--url without --type: what the answer says it is."""
    media_type = page.content_type.split(";")[0].strip().lower()
    if "html" in media_type:
        return {"type": "html", "articles": True}
    if "json" in media_type and "feed+json" not in media_type:
        return {"type": "json"}
    return {}


def _with_articles(
    rt: Runtime, source: FeedConfig, pages: PageFetcher, items: list[Item]
) -> list[tuple[Item, str | None]]:
    if not source.articles:
        return [(item, None) for item in items]
    order = {item.id: n for n, item in enumerate(articles.newest_first(items))}
    shown: list[tuple[Item, str | None]] = []
    for item in items:
        if order[item.id] >= source.max_articles:
            shown.append((item, f"article page not read now: over max_articles ({source.max_articles})"))
            continue
        try:
            shown.append((articles.with_article(rt, pages, item), None))
        except (FetchError, FeedParseError) as e:
            shown.append((item, f"article page not read: {e}"))
    return shown


def _previewed(rt: Runtime, shown: tuple[Item, str | None]) -> Previewed:
    item, note = shown
    classified = classify(item, rt.config.rules)
    old = too_old_to_alert(item, rt.clock(), rt.settings.polling.max_age)
    alerts = [
        m.alert + (" (not sent: older than polling.max_age)" if old else "") for m in classified.matches
    ]
    return Previewed(item, classified.topics, alerts, note)


def _preview_json(source: FeedConfig, shown: list[Previewed], warning: str | None) -> dict[str, Any]:
    return {
        "feed": source.name,
        "url": source.url,
        "type": source.type,
        "warning": warning,
        "items": [
            {
                "title": p.item.title,
                "link": p.item.link,
                "published": utc_iso(p.item.published) if p.item.published else None,
                "author": p.item.author,
                "categories": list(p.item.categories),
                "topics": list(p.topics),
                "alerts": p.alerts,
                "note": p.note,
            }
            for p in shown
        ],
    }


def _print_preview(rt: Runtime, source: FeedConfig, shown: list[Previewed], warning: str | None) -> None:
    print(f"{source.name} ({source.type}): {len(shown)} items from {rt.config.redact(source.url)}")
    if warning:
        print(f"warning: {_printable(warning)}")
    for p in shown:
        published = utc_iso(p.item.published) if p.item.published else "unknown"
        print(f"\n{_printable(p.item.title)}\n  link:       {_printable(p.item.link)}")
        print(f"  published:  {published}")
        print(f"  categories: {', '.join(map(_printable, p.item.categories)) or '-'}")
        print(f"  topics:     {', '.join(map(_printable, p.topics)) or '-'}")
        print(f"  alerts:     {', '.join(p.alerts) or '-'}")
        if p.note:
            print(f"  note:       {_printable(p.note)}")


def _printable(text: str | None) -> str:
    """Outside text on a terminal: control characters and bidi overrides shown as escapes."""
    return printable(text or "")


# --- discover --------------------------------------------------------------------------------


def discover(config: Config, url: str, as_json: bool) -> int:
    rt = _runtime(config)
    try:
        source = FeedConfig(name=_name_for(url), url=url, type="html", articles=True)
    except ValidationError:
        print("newswatch: discover takes an http:// or https:// URL", file=sys.stderr)
        return EXIT_USAGE
    pages = articles.page_fetcher(rt, source, in_redis=False)
    try:
        page = _get(rt, source.model_copy(update={"type": "feed"}), pages)
    except FetchError as e:
        print(f"{_printable(url)}: error: {_printable(str(e))}", file=sys.stderr)
        return EXIT_FAILURE
    found = _discovered(rt, source, pages, page)
    if as_json:
        print(json.dumps(found, ensure_ascii=False, indent=2))
    else:
        _print_discovered(found)
    return EXIT_OK


def _discovered(rt: Runtime, source: FeedConfig, pages: PageFetcher, page: Page) -> dict[str, Any]:
    result: dict[str, Any] = {"url": page.url, "feeds": [], "html": None, "config": None}
    if _feed_items(page) is not None:  # the URL is a feed itself
        result["feeds"] = [{"url": page.url, "items": _feed_items(page)}]
    else:
        result["feeds"] = _working_feeds(rt, _candidates(page))
    if result["feeds"]:
        entry: dict[str, Any] = {"name": source.name, "url": result["feeds"][0]["url"]}
    else:
        result["html"] = _as_html_source(rt, source, pages, page)
        entry = {"name": source.name, "url": source.url, "type": "html", "articles": True}
    result["config"] = entry
    result["config_yaml"] = yaml.safe_dump([entry], allow_unicode=True, sort_keys=False)
    return result


def _candidates(page: Page) -> list[str]:
    try:
        linked = feed_links(parse_html(page.body, page.content_type), page.url)
    except FeedParseError:
        linked = []
    return linked or common_feed_urls(page.url)


def _working_feeds(rt: Runtime, urls: list[str]) -> list[dict[str, Any]]:
    working = []
    for url in urls[:12]:
        try:
            result = fetch(rt.http, url, _limits(rt.config), rt.clock())
        except FetchError:
            continue
        count = _feed_items(Page(result.url, result.body, result.content_type))
        if count is not None:
            working.append({"url": url, "items": count})
    return working


def _feed_items(page: Page) -> int | None:
    """How many items the page has if it is a feed, else None."""
    media_type = page.content_type.split(";")[0].strip().lower()
    if "html" in media_type:
        return None
    try:
        return len(feed.read(page).entries)
    except FeedParseError:
        return None


def _as_html_source(rt: Runtime, source: FeedConfig, pages: PageFetcher, page: Page) -> dict[str, Any]:
    try:
        pages.obey_robots(page.url)
        parsed = read_items(source, page, rt.clock())
    except (FetchError, FeedParseError) as e:
        return {"error": str(e), "items": []}
    items = [
        {"title": i.title, "link": i.link, "published": utc_iso(i.published) if i.published else None}
        for i in parsed.items
    ]
    return {"error": None, "warning": parsed.warning, "items": items}


def _print_discovered(found: dict[str, Any]) -> None:
    if found["feeds"]:
        print(f"{_printable(found['url'])} offers {len(found['feeds'])} feed(s):")
        for f in found["feeds"]:
            print(f"  {_printable(f['url'])}  ({f['items']} items)")
    else:
        html_source = found["html"]
        print(f"{_printable(found['url'])} links to no feed, and none answers at the usual addresses.")
        if html_source["error"]:
            print(f"As an html source: error: {_printable(html_source['error'])}")
        else:
            print(f"As an html source it yields {len(html_source['items'])} items:")
            for item in html_source["items"][:_SHOWN]:
                print(f"  {_printable(item['title'])}\n    {_printable(item['link'])}")
    print("\nConfig entry (under feeds:):")
    print("".join(f"  {line}\n" for line in found["config_yaml"].splitlines()), end="")


def _name_for(url: str) -> str:
    """A feed name from the site's host: "www.eulerpool.com" -> "eulerpool"."""
    host = (urlsplit(url).hostname or "site").removeprefix("www.")
    labels = host.split(".")
    if host.replace(".", "").isdigit():
        return host.replace(".", "-")
    return labels[-2] if len(labels) >= 2 else labels[0]

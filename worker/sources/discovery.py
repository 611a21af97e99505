"""Which feeds a web page offers: its `<link rel="alternate">` feeds, links that look like
feeds, and the addresses where sites commonly keep them (SPEC §8, `newswatch discover`)."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import lxml.html

from worker.core.errors import FeedParseError
from worker.sources.document import parse_html, text_of

FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/rdf+xml",
        "application/feed+json",
        "application/xml",
        "text/xml",
    }
)
# Tried by `discover` when a page links to no feed, relative to the site and to the page.
COMMON_PATHS = ("feed", "rss", "rss.xml", "feed.xml", "atom.xml", "index.xml", "feeds", "news/rss")
_FEED_WORDS = ("rss", "atom", "feed")


def feed_links(tree: lxml.html.HtmlElement, page_url: str) -> list[str]:
    """Feeds the page names: <link rel=alternate> of a feed type first, then <a> links whose
    address or text says RSS, Atom or feed. Absolute http(s) URLs, each once, in page order."""
    found: dict[str, None] = {}
    for link in tree.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").lower().split(";")[0].strip()
        if "alternate" in rel and kind in FEED_TYPES:
            _add(found, link.get("href"), page_url)
    for anchor in tree.iter("a"):
        href = (anchor.get("href") or "").strip()
        path = urlsplit(href).path.lower().rstrip("/")
        text = text_of(anchor).lower()
        last = path.rsplit("/", 1)[-1]
        if (
            last in _FEED_WORDS
            or last.endswith((".rss", ".atom", ".rdf"))
            or text in ("rss", "rss-feed", "atom")
        ):
            _add(found, href, page_url)
    return list(found)


def _add(found: dict[str, None], href: str | None, base: str) -> None:
    if not href or not href.strip():
        return
    url = urljoin(base, href.strip())
    if urlsplit(url).scheme in ("http", "https"):
        found.setdefault(url, None)


def linked_feeds(body: bytes, content_type: str, page_url: str) -> list[str]:
    """feed_links of an HTML body; none when it does not parse."""
    try:
        return feed_links(parse_html(body, content_type), page_url)
    except FeedParseError:
        return []


def common_feed_urls(page_url: str) -> list[str]:
    """Where a site without a feed link may still keep one: beside the page, then at the root."""
    parts = urlsplit(page_url)
    root = f"{parts.scheme}://{parts.netloc}/"
    page_dir = page_url if page_url.endswith("/") else page_url + "/"
    urls = [urljoin(page_dir, p) for p in COMMON_PATHS[:3]] + [urljoin(root, p) for p in COMMON_PATHS]
    return list(dict.fromkeys(urls))

"""Structured data in a page (JSON-LD, microdata), with extruct, read defensively.

extruct finds and decodes the data (JSON-LD with comments or HTML comment wrappers, the W3C
microdata algorithm); it is handed the tree worker/sources/document.py parsed, never a string.
What pages put there is often wrong: a list where an object belongs, a number where text
belongs, invalid JSON in one block of several. Every accessor here takes whatever shape comes
and gives text or nothing; a block that does not decode is skipped, the others are used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import lxml.html

from worker.sources.document import xpath_elements

log = logging.getLogger(__name__)

Thing = dict[str, Any]

# schema.org types that are one story. Any other type whose name ends in "Article" counts too.
_ARTICLE_TYPES = frozenset(
    {"NewsArticle", "Article", "BlogPosting", "ReportageNews", "LiveBlogPosting", "Report"}
)
_MAX_THINGS = 5000  # a page with more is not a news page; reading on would only cost time


def things(tree: lxml.html.HtmlElement, base_url: str) -> list[Thing]:
    """Every JSON-LD and microdata object of the page, @graph members and lists flattened."""
    # extruct is imported here, not at the top: with rdflib it costs ~190 ms and 25 MB, which
    # the worker processes (that never read pages) should not pay.
    from extruct.jsonld import JsonLdExtractor
    from extruct.w3cmicrodata import MicrodataExtractor

    found: list[Thing] = []
    jsonld = JsonLdExtractor()
    for script in xpath_elements(tree, '//script[@type="application/ld+json"]'):
        try:  # block by block (extruct's own loop stops at the first bad one)
            found.extend(_flatten(jsonld.extract_items(script)))
        except Exception as e:  # extruct raises what json/jstyleson raise: one bad block, skipped
            log.debug("invalid JSON-LD block skipped: %s", e.__class__.__name__)
    try:
        for item in MicrodataExtractor().extract_items(tree, base_url):
            found.extend(_flatten([_from_microdata(item)]))
    except Exception as e:  # malformed microdata must not cost the rest of the page
        log.debug("microdata skipped: %s", e.__class__.__name__)
    return found[:_MAX_THINGS]


def _flatten(items: Any) -> Iterator[Thing]:
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, list):
            yield from _flatten(item)
        elif isinstance(item, dict):
            graph = item.get("@graph")
            if graph is not None:
                yield from _flatten(graph)
            if "@type" in item:
                yield item


def _from_microdata(item: dict[str, Any]) -> Thing:
    """extruct's microdata shape ({"type": url, "properties": {...}}) as JSON-LD's."""
    raw = item.get("properties")
    properties: dict[str, Any] = raw if isinstance(raw, dict) else {}
    converted: Thing = {"@type": item.get("type")}
    for key, value in properties.items():
        if isinstance(value, dict) and "properties" in value:
            value = _from_microdata(value)
        elif isinstance(value, list):
            value = [_from_microdata(v) if isinstance(v, dict) and "properties" in v else v for v in value]
        converted[key] = value
    return converted


def types_of(thing: Thing) -> set[str]:
    """The short schema.org type names of a thing ("https://schema.org/NewsArticle" -> NewsArticle)."""
    raw = thing.get("@type")
    names = raw if isinstance(raw, list) else [raw]
    return {n.rstrip("/").rsplit("/", 1)[-1] for n in names if isinstance(n, str) and n}


def is_article(thing: Thing) -> bool:
    return any(t in _ARTICLE_TYPES or t.endswith("Article") for t in types_of(thing))


def text(value: Any) -> str:
    """Text from a value of any shape: a string, a number, the first of a list, an object's name."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return ""
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return next((t for t in (text(v) for v in value) if t), "")
    if isinstance(value, dict):
        for key in ("name", "@value", "text", "headline"):
            if key in value:
                return text(value[key])
    return ""


def texts(value: Any) -> list[str]:
    """Every text of a value that may be one or a list (keywords, authors, sections)."""
    if isinstance(value, list):
        return [t for t in (text(v) for v in value) if t]
    single = text(value)
    return [single] if single else []


def url(value: Any) -> str:
    """A URL from a string, an object's url or @id, or the first of a list."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return next((u for u in (url(v) for v in value) if u), "")
    if isinstance(value, dict):
        return url(value.get("url")) or url(value.get("@id"))
    return ""

"""The `html` source: a news listing page -> raw entries (SPEC §8).

With `select`, exactly what its CSS selectors say. Without, the page's structured data first
(JSON-LD ItemList or articles, microdata), and failing that its article links
(worker/sources/teasers.py). Titles and teasers are taken as text, never as markup.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import lxml.html
from lxml.cssselect import CSSSelector
from lxml.etree import _Element

from worker.config import FeedConfig, SelectConfig
from worker.core.errors import FeedParseError
from worker.core.items import RawEntry, absolute_link
from worker.core.links import canonical_link
from worker.sources import structured
from worker.sources.base import Page, SourceResult
from worker.sources.document import as_markup, base_url, elements, parse_html, text_of
from worker.sources.teasers import MAX_TEASERS, article_links

# Media types that are certainly not a page of links (anything else is tried as HTML).
_NOT_HTML = ("image/", "audio/", "video/", "font/", "application/pdf", "application/zip", "application/json")


def read(page: Page, config: FeedConfig) -> SourceResult:
    """The items of a listing page; raises FeedParseError when it is not HTML."""
    tree = parse_page(page)
    if config.select is not None:
        return SourceResult(selected(tree, config.select))
    base = base_url(tree, page.url)
    teasers, found = article_links(tree, base)
    from_links = {
        canonical_link(t.link) or t.link: RawEntry(
            title=as_markup(t.title), link=t.link, summary=as_markup(t.summary), dates=tuple(t.dates)
        )
        for t in teasers
    }
    listed = from_structured_data(tree, base, from_links)
    # The publisher's own list first; stories its teasers show beyond it are not dropped (a
    # page's ItemList often names only the top few of the stories it shows).
    entries = {**listed, **{k: v for k, v in from_links.items() if k not in listed}} if listed else from_links
    total = len(entries) if listed else found
    return SourceResult(list(entries.values())[:MAX_TEASERS], warning=_too_many(total))


def parse_page(page: Page) -> lxml.html.HtmlElement:
    media_type = page.content_type.split(";")[0].strip().lower()
    if media_type.startswith(_NOT_HTML) or "rss" in media_type or "atom" in media_type:
        raise FeedParseError(f"not an HTML page: {media_type}")
    return parse_html(page.body, page.content_type)


def _too_many(found: int) -> str | None:
    if found <= MAX_TEASERS:
        return None
    return f"the page links to {found} articles; only the first {MAX_TEASERS} are read"


@lru_cache(maxsize=256)
def _selector(css: str) -> CSSSelector:
    return CSSSelector(css)


def selected(tree: lxml.html.HtmlElement, select: SelectConfig) -> list[RawEntry]:
    """One entry per element `select.item` finds; link, title, date, summary, tags inside it."""
    entries = []
    for element in _select(tree, select.item)[:MAX_TEASERS]:
        link_element = _first(element, select.link)
        href = link_element.get("href") if link_element is not None else element.get("href")
        title_element = _first(element, select.title) if select.title else link_element
        title = text_of(title_element)
        if not href or not title:
            continue
        date_element = _first(element, select.date) if select.date else None
        dates = () if date_element is None else (date_element.get("datetime") or "", text_of(date_element))
        tags = tuple(text_of(e) for e in _select(element, select.tags)) if select.tags else ()
        summary = text_of(_first(element, select.summary)) if select.summary else ""
        entries.append(
            RawEntry(
                title=as_markup(title), link=href, summary=as_markup(summary), dates=dates, categories=tags
            )
        )
    return entries


def _first(element: _Element, css: str | None) -> _Element | None:
    if not css:
        return None
    found = _select(element, css)
    return found[0] if found else None


def _select(root: _Element, css: str) -> list[_Element]:
    return elements(_selector(css)(root))


def from_structured_data(
    tree: lxml.html.HtmlElement, page_url: str, teasers: dict[str, RawEntry] | None = None
) -> dict[str, RawEntry]:
    """Stories the page lists in JSON-LD or microdata, by canonical link: ItemList members and
    articles with a link other than the page's own (an article page describes itself, it lists
    nothing). A member with a link but no name takes the headline of the page's teaser for it."""
    page = canonical_link(page_url)
    entries: dict[str, RawEntry] = {}
    for thing in structured.things(tree, page_url):
        for entry in _listed(thing):
            canonical = canonical_link(absolute_link(entry.link, page_url))
            if not canonical or canonical == page:
                continue
            teaser = (teasers or {}).get(canonical)
            if not entry.title and teaser is not None:
                entry = replace(entry, title=teaser.title, summary=entry.summary or teaser.summary)
            if entry.title:
                entries.setdefault(canonical, entry)
    return entries


def _listed(thing: structured.Thing) -> list[RawEntry]:
    if "ItemList" in structured.types_of(thing):
        elements = thing.get("itemListElement")
        members = elements if isinstance(elements, list) else [elements]
        return [e for e in (_list_member(m) for m in members) if e is not None]
    if structured.is_article(thing):
        return [_article_entry(thing)]
    return []


def _list_member(member: object) -> RawEntry | None:
    """A ListItem (its `item` the story, or a URL), or a story object itself, or a bare URL."""
    if isinstance(member, str):
        return RawEntry(link=member)  # its headline may come from the page's teaser
    if not isinstance(member, dict):
        return None
    inner = member.get("item")
    entry = _article_entry(inner if isinstance(inner, dict) else member)
    return replace(
        entry,
        title=entry.title or structured.text(member.get("name")),
        link=entry.link or structured.url(member) or structured.url(inner),
    )


def _article_entry(thing: structured.Thing) -> RawEntry:
    return RawEntry(
        title=structured.text(thing.get("headline")) or structured.text(thing.get("name")),
        link=structured.url(thing.get("url"))
        or structured.url(thing.get("mainEntityOfPage"))
        or structured.url(thing.get("@id")),
        summary=structured.text(thing.get("description")),
        dates=(structured.text(thing.get("datePublished")), structured.text(thing.get("dateCreated"))),
        categories=tuple(structured.texts(thing.get("keywords"))),
        author=", ".join(structured.texts(thing.get("author"))),
    )

"""An article's own page -> what it says about itself (SPEC §8, `articles: true`).

Title, publication date, author, tags and categories, description and main text, each from
the most reliable place a page has it: JSON-LD or microdata, then <meta> (Open Graph,
`article:*`, `keywords`), then the page itself (<h1>, <time>, German text dates, tag lines such
as "Finanzen / KI / DeepSeek / Huawei / Nvidia"). The main text is worker/sources/maintext.py's
(justext on the article's region without its chrome).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import lxml.html
from lxml import etree

from worker.core.dates import DateCandidate
from worker.core.items import RawEntry
from worker.core.links import canonical_link
from worker.sources import structured
from worker.sources.base import Page
from worker.sources.document import (
    ancestors,
    as_markup,
    first_meta,
    meta_values,
    tag_of,
    text_of,
    xpath_elements,
)
from worker.sources.html import parse_page
from worker.sources.maintext import main_text

log = logging.getLogger(__name__)

_TAG_SEPARATORS = re.compile(r"^[\s/|,·•›>»\-–]*$")
_TAG_LINE = re.compile(r"^[^/|·•]{1,40}(\s[/|·•]\s[^/|·•]{1,40}){2,}$")
_TAG_WORDS = frozenset(
    {"tag", "tags", "keywords", "schlagworte", "schlagwort", "themen", "topics", "stichworte"}
)
_CHROME = frozenset({"nav", "header", "footer", "aside", "form"})
_HOME = frozenset({"home", "startseite", "start", "homepage"})


def read_article(page: Page) -> RawEntry:
    """What the page says about its story; raises FeedParseError when it is not HTML."""
    tree = parse_page(page)
    things = structured.things(tree, page.url)
    story = _the_article(things, page.url)
    region = _article_region(tree)
    # Text from the DOM is escaped (as_markup); JSON-LD text may hold markup, as feeds' does.
    return RawEntry(
        title=structured.text(story.get("headline")) or as_markup(_title(tree, region)),
        summary=structured.text(story.get("description"))
        or as_markup(first_meta(tree, "og:description", "description")),
        content=(_body(tree, story, region),),
        categories=tuple(_categories(tree, story, things, region)),
        dates=tuple(_dates(tree, story, region)),
        author=_author(tree, story),
    )


def _body(tree: lxml.html.HtmlElement, story: structured.Thing, region: etree._Element) -> str:
    """The story's text on the page (maintext.py); else the publisher's articleBody."""
    return as_markup(main_text(tree, region)) or structured.text(story.get("articleBody"))


def _the_article(things: list[structured.Thing], page_url: str) -> structured.Thing:
    """The page's own article object: the one whose URL is the page's, else the first."""
    articles = [t for t in things if structured.is_article(t)]
    page = canonical_link(page_url)
    for thing in articles:
        if (
            canonical_link(structured.url(thing.get("url")) or structured.url(thing.get("mainEntityOfPage")))
            == page
        ):
            return thing
    return articles[0] if articles else {}


def _article_region(tree: lxml.html.HtmlElement) -> etree._Element:
    for path in ("//article", "//main", "//*[@role='main']"):
        found = xpath_elements(tree, path)
        if found:
            return max(found, key=lambda e: len(text_of(e)))
    around = _around_headline(tree)
    if around is not None:
        return around
    body: etree._Element | None = tree.find("body")
    return body if body is not None else tree


def _around_headline(tree: lxml.html.HtmlElement) -> etree._Element | None:
    """Without <article> or <main>: the smallest element around the <h1> that holds more than
    the headline (its byline and paragraphs), not the whole page with its header and footer."""
    heading = tree.find(".//h1")
    if heading is None:
        return None
    headline = len(text_of(heading))
    for element in ancestors(heading):
        if tag_of(element) in ("body", "html"):
            return None
        if len(text_of(element)) >= headline + 100:
            return element
    return None


def _title(tree: lxml.html.HtmlElement, region: etree._Element) -> str:
    title = first_meta(tree, "og:title", "twitter:title")
    if title:
        return title
    heading = region.find(".//h1")
    if heading is None:
        heading = tree.find(".//h1")
    if heading is not None and text_of(heading):
        return text_of(heading)
    return re.split(r"\s+[|–—]\s+", text_of(tree.find(".//title")))[0]


def _dates(
    tree: lxml.html.HtmlElement, story: structured.Thing, region: etree._Element
) -> Iterator[DateCandidate]:
    """In order of trust: structured data, <meta>, <time>, then a German text date in a short
    line of the article (its byline: "15. August 2025, 15:51 Uhr · Quelle: …")."""
    yield structured.text(story.get("datePublished")) or None
    for name in ("article:published_time", "og:published_time", "datePublished", "pubdate", "publishdate",
                 "date", "dc.date.issued", "dc.date", "parsely-pub-date", "sailthru.date"):  # fmt: skip
        yield from meta_values(tree, name)[:1]
    for time in region.iter("time"):
        yield time.get("datetime") or None
        yield text_of(time) or None
    yield from _short_lines(region)
    yield structured.text(story.get("dateModified")) or None


_BYLINE_CHARS = 120  # a byline or date line; a paragraph of the story is longer
_BYLINE_BLOCKS = frozenset({"div", "p", "span", "li", "small", "footer", "header", "section", "address"})


def _short_lines(region: etree._Element) -> Iterator[str]:
    """The article's short lines, in page order: where text dates are written. Paragraphs of
    the story are left out, so a date the story mentions ("am 3. März 2024") is not taken for
    the day it was published."""
    found = 0
    for element in region.iter(*_BYLINE_BLOCKS):
        if any(tag_of(child) in _BYLINE_BLOCKS or tag_of(child) == "p" for child in element):
            continue
        text = text_of(element)
        if 6 <= len(text) <= _BYLINE_CHARS:
            yield text
            found += 1
            if found >= 40:
                return


def _author(tree: lxml.html.HtmlElement, story: structured.Thing) -> str:
    names = structured.texts(story.get("author"))
    if not names:
        names = [a for a in meta_values(tree, "author", "article:author") if not a.startswith("http")][:1]
    if not names:
        names = [text_of(e) for e in xpath_elements(tree, "//*[@rel='author' or @itemprop='author']")[:1]]
    return ", ".join(dict.fromkeys(n for n in names if n))


def _categories(
    tree: lxml.html.HtmlElement,
    story: structured.Thing,
    things: list[structured.Thing],
    region: etree._Element,
) -> Iterator[str]:
    """Tags and sections: a tag line on the page, `article:tag`, keywords, breadcrumbs."""
    yield from _tag_lines(region)
    yield from meta_values(tree, "article:tag")
    yield from structured.texts(story.get("keywords"))
    yield from meta_values(tree, "news_keywords", "keywords")[:1]
    yield from structured.texts(story.get("articleSection"))
    yield from meta_values(tree, "article:section")
    for thing in things:
        if "BreadcrumbList" in structured.types_of(thing):
            yield from _breadcrumb(thing)


def _breadcrumb(thing: structured.Thing) -> Iterator[str]:
    elements = thing.get("itemListElement")
    names = [
        structured.text(e.get("name") or e.get("item"))
        for e in (elements if isinstance(elements, list) else [elements])
        if isinstance(e, dict)
    ]
    # The first crumb is the home page and the last is the article itself.
    for name in names[:-1]:
        if name and name.lower() not in _HOME:
            yield name


def _tag_lines(region: etree._Element) -> Iterator[str]:
    """Lines that are nothing but short links between separators ("Finanzen / KI / DeepSeek"),
    links marked rel=tag, and lists whose class or id says tags."""
    for element in region.iter():
        if not isinstance(element.tag, str) or _in_chrome(element, region):
            continue
        links = [child for child in element if tag_of(child) == "a"]
        words = set(re.split(r"[\s_\-]+", f"{element.get('class') or ''} {element.get('id') or ''}".lower()))
        if words & _TAG_WORDS:
            yield from (text_of(a) for a in element.iter("a") if 0 < len(text_of(a)) <= 40)
        elif len(links) >= 2 and _only_separators_between(element, links):
            yield from (text_of(a) for a in links if 0 < len(text_of(a)) <= 40)
        elif not len(element) and _TAG_LINE.match(text_of(element)):
            yield text_of(element)
    for link in xpath_elements(region, ".//a[contains(concat(' ', normalize-space(@rel), ' '), ' tag ')]"):
        yield text_of(link)


def _only_separators_between(element: etree._Element, links: list[etree._Element]) -> bool:
    """Links with nothing but separators between them, perhaps after a label ("Themen:")."""
    label = (element.text or "").strip()
    if len(links) != len(element) or (label and not (label.endswith(":") and len(label) <= 25)):
        return False
    between = [link.tail or "" for link in links[:-1]]
    return all(_TAG_SEPARATORS.match(t) and t.strip() for t in between) and not (links[-1].tail or "").strip()


def _in_chrome(element: etree._Element, region: etree._Element) -> bool:
    for parent in [element, *ancestors(element)]:
        if parent is region:
            return False
        if tag_of(parent) in _CHROME:
            return True
    return False

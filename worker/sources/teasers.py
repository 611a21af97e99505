"""The article links of a news listing page without structured data (SPEC §8, `type: html`).

A page's links are judged by what every news site has in common, never by one site's class
names: where a link sits (not in navigation, header, footer, forms, sidebars, ads), where it
points (same site; a story's address, with a slug or an id, not a section, tag, author, login
or page-2 address) and what it says (a headline: several words, not "Mehr lesen"). Links to the
same story (headline, image, "Mehr lesen", #comments, ?utm_source=…) are one item; its title
is the headline among them, else the heading of the teaser around them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urljoin, urlsplit

import lxml.html
from lxml import etree

from worker.core.links import canonical_link
from worker.sources.chrome import class_words, is_chrome, is_side, side_boxes
from worker.sources.document import ancestors, tag_of, text_of

MAX_TEASERS = 500  # items read from one page; more is a sitemap or an archive, not a listing

_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_HEADLINE_WORDS = frozenset({"headline", "title", "titel", "heading", "ueberschrift", "schlagzeile"})
# Label of a paid teaser, required by German law as a word of its own ("Anzeige").
_AD_LABELS = frozenset({"anzeige", "werbung", "sponsored", "advertorial", "gesponsert", "promotion"})
# Path segments of pages that are not one story.
_NOT_STORY_SEGMENTS = frozenset(
    {
        "kategorie", "kategorien", "category", "categories", "tag", "tags", "thema", "themen", "topic",
        "topics", "schlagwort", "schlagworte", "stichwort", "autor", "autoren", "author", "authors",
        "person", "personen", "rubrik", "ressort", "section", "login", "anmelden", "logout",
        "abmelden", "registrieren", "register", "signup", "konto", "account", "profil", "profile",
        "abo", "abonnement", "abonnieren", "subscribe", "newsletter", "suche", "search", "impressum",
        "datenschutz", "privacy", "agb", "kontakt", "contact", "page", "seite", "feed", "rss", "shop",
        "werbung", "anzeige", "anzeigen", "sponsored", "advertorial", "jobs", "karriere", "hilfe",
        "help", "faq", "mediadaten", "cookies", "barrierefreiheit", "nutzungsbedingungen", "archiv",
    }
)  # fmt: skip
_PAGE_PARAMS = frozenset({"page", "p", "seite", "offset", "start", "pg"})
_FILE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".gif",
    ".webp",
    ".svg",
    ".pdf",
    ".zip",
    ".mp3",
    ".mp4",
    ".xml",
    ".rss",
)
_GENERIC_TEXT = re.compile(
    r"^(mehr|weiter|weiterlesen|mehr lesen|zum artikel|artikel lesen|jetzt lesen|read more|more|"
    r"alle\b.*|weitere\b.*|mehr\b.*|zur startseite|startseite|home|\d+ kommentare?|kommentare?)\W*$",
    re.IGNORECASE,
)
_PAGE_SUFFIXES = frozenset({"html", "htm", "shtml", "php", "aspx", "jsp"})
_INDEX_PAGES = frozenset({"index", "default", "start", "home", "uebersicht", "overview", "main"})
_SLUG_WORD = re.compile(r"[-_]")
_ID = re.compile(r"\d{4,}")
_DATE_PATH = re.compile(r"/(19|20)\d\d/[01]?\d/")
_WORDS = re.compile(r"\w+")


@dataclass
class Teaser:
    """One story found on the page: its link, headline and what the teaser around it says."""

    link: str
    title: str = ""
    summary: str = ""
    dates: list[str] = field(default_factory=list)
    aside: bool = False  # found only in a sidebar ("Meistgelesen"): used when nothing else is


@dataclass
class _Group:
    link: str
    anchors: list[etree._Element] = field(default_factory=list)
    aside: bool = True


def article_links(tree: lxml.html.HtmlElement, page_url: str) -> tuple[list[Teaser], int]:
    """The stories the page links to, in page order, at most MAX_TEASERS; and how many it has."""
    groups = _group_links(tree, page_url)
    members = _members(groups)
    teasers = [t for t in (_teaser(g, members) for g in groups.values()) if t is not None]
    main = [t for t in teasers if not t.aside]
    chosen = main or teasers
    return chosen[:MAX_TEASERS], len(chosen)


def _group_links(tree: lxml.html.HtmlElement, page_url: str) -> dict[str, _Group]:
    """Same-site story links outside navigation and chrome, grouped by canonical link."""
    page = canonical_link(page_url)
    site = site_of(urlsplit(page_url).hostname or "")
    boxes = side_boxes(tree)
    groups: dict[str, _Group] = {}
    for anchor in tree.iter("a"):
        link = _story_link(anchor.get("href"), page_url, site)
        canonical = canonical_link(link)
        if link is None or canonical is None or canonical == page:
            continue
        place = _place(anchor, boxes)
        if place == "never" or _rel_paid(anchor):
            continue
        group = groups.setdefault(canonical, _Group(link))
        group.anchors.append(anchor)
        group.aside = group.aside and place == "aside"
    return groups


def _story_link(href: str | None, page_url: str, site: str) -> str | None:
    """The absolute link if it may be a story on this site, else None."""
    href = (href or "").strip()
    if not href or href.startswith(("#", "javascript:", "mailto:", "tel:", "data:")):
        return None
    link = urljoin(page_url, href)
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or site_of(parts.hostname or "") != site:
        return None
    return link if _looks_like_a_story(parts.path, parts.query) else None


def site_of(host: str) -> str:
    """The part of a host name that stays the same across a site's subdomains."""
    host = host.lower().rstrip(".")
    if host.replace(".", "").isdigit() or ":" in host:
        return host  # an IP address
    labels = host.split(".")
    # "co.uk", "com.au": a short second label belongs to the suffix.
    keep = 3 if len(labels) >= 3 and len(labels[-2]) <= 3 and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def _looks_like_a_story(path: str, query: str) -> bool:
    segments = [s.lower() for s in path.split("/") if s]
    if not segments or path.lower().endswith(_FILE_SUFFIXES):
        return False
    if any(s in _NOT_STORY_SEGMENTS or re.fullmatch(r"(page|seite)[-_]?\d+", s) for s in segments):
        return False
    params = {k.lower(): v for k, v in parse_qsl(query)}
    if any(k in _PAGE_PARAMS and v.isdigit() for k, v in params.items()):
        return False
    last, _, suffix = segments[-1].partition(".")
    return (
        len(_SLUG_WORD.findall(last)) >= 2
        or bool(_ID.search(last))
        or bool(_DATE_PATH.search(path))
        # "/wirtschaft/unternehmen/deepseek-100.html": a page of its own below a section
        or (suffix in _PAGE_SUFFIXES and len(segments) >= 2 and last not in _INDEX_PAGES)
        or any(k in ("id", "artikel", "article", "story") and v for k, v in params.items())
    )


def _place(anchor: etree._Element, boxes: set[etree._Element]) -> str:
    """Where a link sits: "never" (navigation, chrome, ads), "aside" (a sidebar) or "main"."""
    chain = [anchor, *ancestors(anchor)]
    in_article = any(tag_of(e) == "article" for e in chain)
    place = "main"
    for element in chain:
        if is_chrome(element) or (tag_of(element) == "header" and not in_article):
            return "never"  # a site's header; a teaser's own <header> is inside its <article>
        if is_side(element, boxes):
            place = "aside"
    return place


def _rel_paid(anchor: etree._Element) -> bool:
    rel = (anchor.get("rel") or "").lower().split()
    return "sponsored" in rel or "ugc" in rel


def _members(groups: dict[str, _Group]) -> dict[etree._Element, set[str]]:
    """For the few elements above each story link: which stories they hold. A teaser is the
    highest of them that holds one story only."""
    members: dict[etree._Element, set[str]] = {}
    for canonical, group in groups.items():
        for anchor in group.anchors:
            for depth, element in enumerate(ancestors(anchor)):
                if depth >= _TEASER_DEPTH:
                    break
                members.setdefault(element, set()).add(canonical)
    return members


_TEASER_DEPTH = 5


def _container(
    anchor: etree._Element, canonical: str, members: dict[etree._Element, set[str]]
) -> etree._Element:
    container = anchor
    for depth, element in enumerate(ancestors(anchor)):
        if (
            depth >= _TEASER_DEPTH
            or members.get(element, set()) != {canonical}
            or tag_of(element) in ("body", "main")
        ):
            break
        container = element
    return container


def _teaser(group: _Group, members: dict[etree._Element, set[str]]) -> Teaser | None:
    canonical = canonical_link(group.link) or group.link
    container = _container(group.anchors[0], canonical, members)
    if _is_advertising(container):
        return None
    title = _headline(group.anchors, container)
    if not title:
        return None
    return Teaser(
        link=group.link,
        title=title,
        summary=_summary(container, title),
        dates=list(_dates(container, title)),
        aside=group.aside,
    )


def _headline(anchors: list[etree._Element], container: etree._Element) -> str:
    """The story's headline: a heading in one of its links, else a link's own headline-like
    text, else the headline part of a link that wraps a whole teaser card (topline, headline,
    teaser text), else the heading of the teaser around them."""
    for anchor in anchors:
        for heading in anchor.iter(*_HEADINGS):
            text = text_of(heading)
            if _headline_like(text, heading=True):
                return text
    texts = [_anchor_text(a) for a in anchors]
    best = max((t for t in texts if _headline_like(t, heading=False)), key=len, default="")
    if best:
        return best
    for heading in container.iter(*_HEADINGS):
        text = text_of(heading)
        if _headline_like(text, heading=True):
            return text
    return ""


def _anchor_text(anchor: etree._Element) -> str:
    """A link's headline: its text; for a link around a whole card (topline, headline, teaser
    text in blocks of their own), the part whose class says headline or title, else the longest
    part that reads like one (a topline is shorter, a teaser text too long)."""
    parts = [e for e in anchor.iter() if e is not anchor and _is_text_block(e)]
    if len(parts) >= 2:
        marked = [e for e in parts if class_words(e) & _HEADLINE_WORDS]
        for group in (marked, parts):
            texts = [t for t in map(text_of, group) if _headline_like(t, heading=False) and len(t) <= 200]
            if texts:
                return max(texts, key=len)
    return text_of(anchor) or (anchor.get("title") or "").strip()


_CARD_BLOCKS = frozenset({"div", "p", "span", "strong", "em", "b", "section", "header", "footer", "time"})


def _is_text_block(element: etree._Element) -> bool:
    """A block of a card with text and no blocks inside it."""
    if tag_of(element) not in _CARD_BLOCKS or not text_of(element):
        return False
    return not any(tag_of(child) in _CARD_BLOCKS for child in element)


def _headline_like(text: str, heading: bool) -> bool:
    if not text or len(text) > 300 or _GENERIC_TEXT.match(text):
        return False
    words = len(_WORDS.findall(text))
    if heading:
        return words >= 2 and len(text) >= 10
    return words >= 3 and len(text) >= 20


def _is_advertising(container: etree._Element) -> bool:
    for element in container.iter():
        if not isinstance(element.tag, str) or len(element):
            continue  # labels are leaves
        if (element.text or "").strip().lower().strip(":") in _AD_LABELS:
            return True
    return False


def _summary(container: etree._Element, title: str) -> str:
    for element in container.iter("p", "div", "span"):
        if len(element) and tag_of(element) != "p":
            continue
        text = text_of(element)
        if len(text) >= 40 and title not in text:
            return text
    return ""


def _dates(container: etree._Element, title: str) -> Iterable[str]:
    """Date candidates of a teaser: <time datetime>, then short texts such as "15.08.2025, 15:51"."""
    for time in container.iter("time"):
        if time.get("datetime"):
            yield time.get("datetime", "")
        yield text_of(time)
    for element in container.iter("span", "div", "p", "small"):
        text = text_of(element)
        if not len(element) and 6 <= len(text) <= 60 and text != title:
            yield text

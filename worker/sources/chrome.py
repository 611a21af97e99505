"""What every news site's chrome looks like, whatever its class names: navigation, header,
footer, forms, sidebars and boxes such as "Meistgelesen", advertising. Listing pages
(teasers.py) skip the links in it; article pages (maintext.py) leave it out of the story's text.
"""

from __future__ import annotations

import re
from copy import deepcopy

import lxml.html
from lxml import etree

from worker.sources.document import tag_of, text_of

NEVER_INSIDE = frozenset({"nav", "footer", "form", "button", "select", "dialog", "menu"})
ROLES_NEVER = frozenset({"navigation", "banner", "contentinfo", "search", "menu", "menubar", "dialog"})
SIDE_ROLES = frozenset({"complementary"})
# Class and id words that mark navigation, chrome and advertising on sites of every make.
CHROME_WORDS = frozenset(
    {
        "nav", "navbar", "navigation", "menu", "menubar", "footer", "breadcrumb", "breadcrumbs",
        "pagination", "pager", "paging", "cookie", "cookies", "consent", "login", "signin", "account",
        "social", "share", "sharing", "newsletter", "ad", "ads", "advert", "advertisement", "anzeige",
        "werbung", "sponsored", "sponsor", "promo", "commercial", "outbrain", "taboola", "plista",
        "paywall", "skiplink", "skip",
    }
)  # fmt: skip
SIDE_WORDS = frozenset({"sidebar", "aside", "meistgelesen", "mostread", "popular", "trending", "rail"})
# Headings of boxes beside the story or listing: their links are other pages' stories.
SIDE_HEADING = re.compile(
    r"^(meistgelesen|meist gelesen|meistgeklickt|beliebt\w*|top[- ]?(artikel|themen|news|stories)|"
    r"most (read|popular)|popular|trending|auch interessant|das könnte sie (auch )?interessieren|"
    r"empfehlungen|empfohlen\w*|weitere (nachrichten|artikel|themen)|mehr zum thema|verwandte artikel|"
    r"related|lesen sie auch|auch lesenswert)\b",
    re.IGNORECASE,
)


def class_words(element: etree._Element) -> set[str]:
    """The words of an element's class and id ("teaser--sponsored" -> teaser, sponsored)."""
    words = f"{element.get('class') or ''} {element.get('id') or ''}".lower()
    return set(re.split(r"[\s_\-]+", words)) - {""}


def side_boxes(tree: etree._Element) -> set[etree._Element]:
    """Elements whose heading says they are a box beside the listing or story ("Meistgelesen")."""
    boxes = set()
    for heading in tree.iter("h2", "h3", "h4", "h5", "h6", "strong"):
        parent = heading.getparent()
        if parent is not None and SIDE_HEADING.match(text_of(heading)):
            boxes.add(parent)
    return boxes


def is_chrome(element: etree._Element) -> bool:
    """Navigation, footer, forms, advertising (never content)."""
    role = (element.get("role") or "").lower()
    return tag_of(element) in NEVER_INSIDE or role in ROLES_NEVER or bool(class_words(element) & CHROME_WORDS)


def is_side(element: etree._Element, boxes: set[etree._Element]) -> bool:
    """A sidebar or a box of other stories."""
    role = (element.get("role") or "").lower()
    return (
        tag_of(element) == "aside"
        or role in SIDE_ROLES
        or bool(class_words(element) & SIDE_WORDS)
        or element in boxes
    )


def without_chrome(region: lxml.html.HtmlElement) -> lxml.html.HtmlElement:
    """A copy of the region without chrome, sidebars, figure captions and the site's header."""
    copy: lxml.html.HtmlElement = deepcopy(region)
    boxes = side_boxes(copy)
    doomed = [
        e
        for e in copy.iter()
        if e is not copy
        and isinstance(e.tag, str)
        and (is_chrome(e) or is_side(e, boxes) or _caption_or_site_header(e))
    ]
    for element in doomed:
        if element.getparent() is not None:
            element.drop_tree()  # keeps the text that follows the element
    return copy


def _caption_or_site_header(element: etree._Element) -> bool:
    tag = tag_of(element)
    return tag == "figcaption" or (tag == "header" and not _in_article(element))


def _in_article(element: etree._Element) -> bool:
    parent = element.getparent()
    while parent is not None:
        if tag_of(parent) == "article":
            return True
        parent = parent.getparent()
    return False

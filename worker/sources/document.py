"""HTML bytes we fetched -> an lxml tree, safely, and the small questions every HTML reader asks
of it (text of an element, where it sits, what the page says in its <meta> tags).

Safety (issue 20, point 1): lxml, extruct and justext (and trafilatura and htmldate, which we
do not use) have entry points that take a string as a file name or URL (`lxml.html.parse`;
trafilatura's and htmldate's loaders fetch a string that looks like a URL). Here bytes are
decoded by w3lib (HTTP charset, BOM, <meta>, then detection: windows-1252 for pages that say
ISO-8859-1, as browsers do) and parsed from memory with `lxml.html.document_fromstring` and a
parser that has no network; every other library gets the resulting tree, never a string.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree
from w3lib.encoding import html_to_unicode

from worker.core.errors import FeedParseError

# No network (the default, said aloud), no entity expansion beyond HTML's own, comments dropped.
_PARSER = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True, huge_tree=False)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
# Elements whose text is never the page's text.
_INVISIBLE = frozenset({"script", "style", "template", "noscript", "svg", "iframe", "object"})
# Elements that end a line of text: words on either side must not run together.
_BLOCKS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "td", "section", "article"})


def decode(body: bytes, content_type: str) -> str:
    """The page's text, in the encoding its HTTP header, BOM or <meta> declares (else detected)."""
    _, text = html_to_unicode(content_type or None, body)
    return text


def parse_html(body: bytes, content_type: str = "") -> lxml.html.HtmlElement:
    """The page as a tree; raises FeedParseError when there is no HTML in it at all."""
    text = _XML_DECLARATION.sub("", decode(body, content_type), count=1)
    if not text.strip():
        raise FeedParseError("empty page")
    try:
        tree = lxml.html.document_fromstring(text, parser=_PARSER)
    except (etree.ParserError, ValueError) as e:
        raise FeedParseError(f"not HTML: {str(e)[:100]}") from e
    return tree


def base_url(tree: lxml.html.HtmlElement, page_url: str) -> str:
    """What the page's relative links are relative to: its `<base href>` where it has an
    http(s) one (HTML: the first), else its own URL."""
    base = tree.find(".//base[@href]")
    if base is None:
        return page_url
    resolved = urljoin(page_url, (base.get("href") or "").strip())
    return resolved if urlsplit(resolved).scheme in ("http", "https") else page_url


def as_markup(text: str) -> str:
    """Text taken from the page's DOM, escaped for RawEntry (whose title and summary may hold
    HTML that make_item turns into text): a headline that reads "<img onerror=…>" stays those
    words, instead of being taken for a tag a second time."""
    return html.escape(text, quote=False)


def text_of(element: etree._Element | None) -> str:
    """The visible text of an element, whitespace collapsed (scripts and styles left out)."""
    if element is None:
        return ""
    parts: list[str] = []
    _collect_text(element, parts)
    return _SPACE.sub(" ", "".join(parts)).strip()


def _collect_text(element: etree._Element, parts: list[str]) -> None:
    if isinstance(element.tag, str) and element.tag.lower() in _INVISIBLE:
        return
    if element.text and isinstance(element.tag, str):
        parts.append(element.text)
    for child in element:
        _collect_text(child, parts)
        if child.tail:
            parts.append(child.tail)
    if isinstance(element.tag, str) and element.tag.lower() in _BLOCKS:
        parts.append(" ")


def elements(found: object) -> list[etree._Element]:
    """The elements of an XPath or CSS selector result (which may also hold text or numbers)."""
    if not isinstance(found, list):
        return []
    return [e for e in found if isinstance(e, etree._Element)]


def xpath_elements(root: etree._Element, path: str) -> list[etree._Element]:
    return elements(root.xpath(path))


def tag_of(element: etree._Element) -> str:
    return element.tag.lower() if isinstance(element.tag, str) else ""


def ancestors(element: etree._Element) -> Iterator[etree._Element]:
    parent = element.getparent()
    while parent is not None:
        yield parent
        parent = parent.getparent()


def meta_values(tree: lxml.html.HtmlElement, *names: str) -> list[str]:
    """The content of every <meta name|property|itemprop=...> with one of these names, in page
    order (case-insensitive names: `article:tag`, `keywords`, `og:title`, ...)."""
    wanted = {n.lower() for n in names}
    values = []
    for meta in tree.iter("meta"):
        key = meta.get("property") or meta.get("name") or meta.get("itemprop") or ""
        content = (meta.get("content") or "").strip()
        if key.strip().lower() in wanted and content:
            values.append(content)
    return values


def first_meta(tree: lxml.html.HtmlElement, *names: str) -> str:
    """The first value of the first name that the page has."""
    for name in names:
        values = meta_values(tree, name)
        if values:
            return values[0]
    return ""

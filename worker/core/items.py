"""From what a source found to an Item: one function for every source type (SPEC §4, §8).

A source adapter (worker/sources/) turns fetched bytes into RawEntry values: the text as the
source wrote it (HTML allowed), links perhaps relative, dates as text or as the source's own
parsed datetime, categories perhaps combined ("Finanzen / KI / DeepSeek"). `make_item` does the
rest the same way for all of them: absolute http(s) links, the canonical link, plain text,
split categories, the publication date, and the item's identity. `merge_article` adds what an
item's own page says (SPEC §8, `articles: true`) without changing which story it is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urljoin, urlsplit

from worker.core.dates import DateCandidate, first_date
from worker.core.identity import link_identity, primary_identity, story_id
from worker.core.limits import cap_item
from worker.core.links import canonical_link
from worker.core.models import Item
from worker.core.text import html_to_text
from worker.core.topics import split_categories


@dataclass(frozen=True)
class RawEntry:
    """One entry as a source found it, before normalisation."""

    title: str = ""  # may hold HTML and entities
    link: str | None = None  # may be relative to the page or feed it was found on
    guid: str | None = None
    summary: str = ""  # HTML or plain text
    content: tuple[str, ...] = ()  # further HTML/text bodies (a feed's <content>, an article's text)
    categories: tuple[str, ...] = ()  # as written; combined lists are split by make_item
    dates: tuple[DateCandidate, ...] = ()  # in order of preference: published, updated, created
    author: str = ""


def absolute_link(raw: str | None, base_url: str) -> str | None:
    """The link made absolute against the address it was found at; only http(s) links are
    kept, so no javascript: link reaches an alert."""
    link = (raw or "").strip()
    if not link:
        return None
    if link.startswith(("http://", "https://")):
        return link
    link = urljoin(base_url, link)
    return link if urlsplit(link).scheme in ("http", "https") else None


def make_item(raw: RawEntry, feed: str, base_url: str, now: datetime) -> Item:
    guid = (raw.guid or "").strip() or None
    link = absolute_link(raw.link, base_url)
    title = html_to_text(raw.title)
    summary = html_to_text(raw.summary)
    published = first_date(raw.dates, now)
    canonical = canonical_link(link)
    primary = primary_identity(feed, guid, link, title, published)
    return cap_item(
        Item(  # a source cannot make an item (log line, webhook body) as big as its response
            feed=feed,
            guid=guid,
            link=link,
            canonical_link=canonical,
            title=title,
            summary=summary,
            content=_content_text(raw.content, summary),
            categories=split_categories(raw.categories),
            published=published,
            id=story_id(primary, link_identity(canonical)),
            author=_author(raw.author),
        )
    )


# What a summary keeps of an article's text when the page has no description of its own.
SUMMARY_CHARS = 600


def merge_article(item: Item, article: RawEntry, now: datetime) -> Item:
    """The item with what its own page says: title, date, author and categories from the page
    when it has them, its main text as `content` (matched as summary, SPEC §8), its description
    (or the start of its text) as `summary` when the listing had none. The link and identity
    stay the listing's: the page's own canonical URL does not make it another story."""
    text = html_to_text(" ".join(article.content))
    description = html_to_text(article.summary)
    summary = item.summary or description or _shortened(text)
    merged = replace(
        item,
        title=html_to_text(article.title) or item.title,
        summary=summary,
        content=text if text != summary else item.content,
        categories=split_categories((*article.categories, *item.categories)),
        published=first_date(article.dates, now) or item.published,
        author=_author(article.author) or item.author,
    )
    return cap_item(merged)  # an article page is no more able than a feed to make an item huge


def _shortened(text: str) -> str:
    if len(text) <= SUMMARY_CHARS:
        return text
    cut = text.rfind(" ", 0, SUMMARY_CHARS)
    return text[: cut if cut > 0 else SUMMARY_CHARS] + " …"


def _author(raw: str) -> str | None:
    return html_to_text(raw)[:200] or None


def _content_text(bodies: tuple[str, ...], summary: str) -> str:
    parts = [html_to_text(body) for body in bodies]
    return " ".join(p for p in parts if p and p != summary)

"""Where a query's terms are in an item: the words they matched, with character offsets into the
text as the item carries it (SPEC §10 `data.highlights`, `try`, `explain`).

Off the hot path: the matcher only says which terms an item holds; this pass runs for the items
an alert fired for (and for `try` and `explain`), finds each term again in each field's
normalised text (matcher.normalize_mapped, which says where each normalised character came
from) with the matcher's own word-boundary rules, and maps the hits back. So offsets point at
the characters as the feed wrote them, soft hyphens, umlauts and ß included ("Deep\\xadSeek" is
one word of 9 characters; "Straße" matches `strasse` as 6).

Offsets count Unicode code points (Python's str indices), end exclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from worker.core.matcher import Normalised, normalize, normalize_mapped
from worker.core.models import Item
from worker.core.query import Node, Term, all_terms, positive_terms

PAYLOAD_FIELDS = ("title", "summary", "categories")
_TERM_FIELD = {"title": "title", "summary": "summary", "content": "summary", "categories": "category"}


@dataclass(frozen=True)
class Mark:
    """One matched word: text[start:end] of the field (of categories[index] for categories)."""

    field: str
    start: int
    end: int
    text: str
    term: str  # the query term as written
    index: int | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"start": self.start, "end": self.end, "text": self.text, "term": self.term}
        return data if self.index is None else {"index": self.index, **data}


def _word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _possessive(text: str, end: int) -> int:
    """The end of a hit that ends in a genitive or possessive s, as the matcher allows it."""
    if text[end : end + 1] == "s" and (end + 1 == len(text) or not _word_char(text[end + 1])):
        return end + 1
    apostrophe = text[end : end + 1] in ("'", "’") and text[end + 1 : end + 2] == "s"
    if apostrophe and (end + 2 == len(text) or not _word_char(text[end + 2])):
        return end + 2
    return end


def find(normalised: str, term: Term) -> list[tuple[int, int]]:
    """Spans of normalised text that `term` matches, with the matcher's rules: whole words; a
    prefix runs to the end of its word; a trailing s, 's or ’s belongs to the word."""
    spans = []
    pattern = term.pattern
    at = normalised.find(pattern)
    while at >= 0:
        end = at + len(pattern)
        if at == 0 or not _word_char(normalised[at - 1]):
            if term.prefix:
                while end < len(normalised) and _word_char(normalised[end]):
                    end += 1
                spans.append((at, end))
            elif end == len(normalised) or not _word_char(normalised[end]):
                spans.append((at, _possessive(normalised, end)))
            elif (stretched := _possessive(normalised, end)) != end:
                spans.append((at, stretched))
        at = normalised.find(pattern, at + 1)
    return spans


@lru_cache(maxsize=4096)
def _mapped(text: str) -> Normalised:
    return normalize_mapped(text)


def marks_in(text: str, field: str, terms: Iterable[Term], index: int | None = None) -> list[Mark]:
    """Every word of `text` (one field) that one of the terms matches, in text order."""
    wanted = [t for t in terms if t.field is None or t.field == _TERM_FIELD[field]]
    # The mapping costs Python per character; a field where no term's text occurs needs none.
    quick = normalize(text)
    if not any(term.pattern in quick for term in wanted):
        return []
    mapped = _mapped(text)
    found: dict[tuple[int, int], Mark] = {}
    for term in wanted:
        for start, end in find(mapped.text, term):
            first, last = mapped.original_span(start, end)
            found.setdefault((first, last), Mark(field, first, last, text[first:last], term.source, index))
    return [found[span] for span in sorted(found)]


def item_marks(item: Item, terms: Sequence[Term], content: bool = False) -> list[Mark]:
    """The marks of every field a payload carries (and the content too, for `explain`)."""
    marks = marks_in(item.title, "title", terms) + marks_in(item.summary, "summary", terms)
    if content and item.content:
        marks += marks_in(item.content, "content", terms)
    for index, category in enumerate(item.categories):
        marks += marks_in(category, "categories", terms, index)
    return marks


def payload_highlights(item: Item, query: Node) -> dict[str, list[dict[str, object]]]:
    """`data.highlights`: per payload field, the words the query's (positive) terms matched."""
    result: dict[str, list[dict[str, object]]] = {name: [] for name in PAYLOAD_FIELDS}
    for mark in item_marks(item, positive_terms(query)):
        result[mark.field].append(mark.to_dict())
    return result


def query_terms(query: Node) -> list[tuple[Term, bool]]:
    """Every term of the query once, with whether it counts for it (False: under a NOT)."""
    positive = {id(t) for t in positive_terms(query)}
    return [(t, id(t) in positive) for t in all_terms(query)]

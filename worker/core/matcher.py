"""Find every term of every rule in an item in one pass (SPEC §5 matching rules).

All terms are compiled into one Aho-Corasick automaton (pyahocorasick, C) over normalised text;
only the hits are looked at in Python, to check word boundaries and the genitive/possessive s.
So the cost per item grows with the item's length and its hits, not with the number of terms:
10,000 alert terms cost about what 10 do.

Normalised text: folded (see text.fold), hyphens read as spaces, whitespace runs collapsed, so
`"KI Chips"` finds "KI-Chips" and a phrase matches across line breaks.

A batch of items (the items of one job) is joined into one text and scanned in one pass: one
fold and one automaton call per batch instead of per item.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import ahocorasick

from worker.core.text import fold

FIELDS = ("title", "summary", "category")
TermKey = tuple[str | None, str, bool]  # (field or None for every field, pattern, prefix)
_HYPHENS = ("-", "\u2010", "\u2011", "\u2013")
# Between items, between fields, and between summaries or categories: printable marks that are
# neither word characters nor whitespace, so no pattern contains them and no phrase spans them.
_ITEM_END, _TITLE_END, _SUMMARY_END, _JOIN = "\u241c", "\u241d", "\u241e", "\u241f"
_MARKS = str.maketrans(dict.fromkeys(_ITEM_END + _TITLE_END + _SUMMARY_END + _JOIN, " "))


def normalize(text: str) -> str:
    folded = fold(text)
    for hyphen in _HYPHENS:
        if hyphen in folded:
            # "A – B" to "A B", not "A   B": the dash between spaces goes with one of them.
            folded = folded.replace(f" {hyphen} ", " ").replace(hyphen, " ")
    # Parsed items arrive with single spaces already (html_to_text), so the split is rare.
    if "  " in folded or not folded.isprintable():
        return " ".join(folded.split())
    return folded.strip(" ")


@dataclass(slots=True)
class ItemText:
    """The terms found in one item; `has` answers for any term the index was built with."""

    found: set[TermKey]

    def has(self, key: TermKey) -> bool:
        return key in self.found


# What a hit adds to the found terms, by the field it is in: title, summary, category. Only the
# keys some query asks about: a field-less query finds nothing more in a field-specific key.
_ByField = tuple[tuple[TermKey, ...], tuple[TermKey, ...], tuple[TermKey, ...]]
Fields = tuple[str, Sequence[str], Sequence[str]]  # title, summaries, categories


def _by_field(pattern: str, prefix: bool, used: set[TermKey]) -> _ByField:
    keys = [
        tuple(k for k in ((name, pattern, prefix), (None, pattern, prefix)) if k in used) for name in FIELDS
    ]
    return keys[0], keys[1], keys[2]


def _joined(items: Sequence[Fields]) -> str:
    """The items as one text: fields and items separated by marks, told apart again by position."""
    return _ITEM_END.join(
        [
            f"{title}{_TITLE_END}{_JOIN.join([s for s in summaries if s])}"
            f"{_SUMMARY_END}{_JOIN.join(categories)}"
            for title, summaries, categories in items
        ]
    )


def _marks_ok(text: str, count: int) -> bool:
    """True when the joined text holds exactly the marks _joined put there, none of the items'."""
    return (
        text.count(_ITEM_END) == count - 1
        and text.count(_TITLE_END) == count
        and text.count(_SUMMARY_END) == count
    )


@dataclass
class TermIndex:
    """An automaton over every term pattern; built once per config."""

    patterns: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # pattern -> (exact, prefix)
    _automaton: ahocorasick.Automaton | None = None

    @classmethod
    def of(cls, keys: Iterable[TermKey]) -> TermIndex:
        index = cls()
        used = set(keys)
        for _, pattern, prefix in used:
            exact, pre = index.patterns.get(pattern, (False, False))
            index.patterns[pattern] = (exact or not prefix, pre or prefix)
        if index.patterns:
            automaton = ahocorasick.Automaton()
            for pattern, (exact, prefix) in index.patterns.items():
                automaton.add_word(
                    pattern,
                    (
                        len(pattern),
                        _by_field(pattern, False, used) if exact else None,
                        _by_field(pattern, True, used) if prefix else None,
                    ),
                )
            automaton.make_automaton()
            index._automaton = automaton
        return index

    def scan(self, title: str, summaries: Iterable[str], categories: Iterable[str]) -> ItemText:
        return self.scan_many([(title, tuple(summaries), tuple(categories))])[0]

    def scan_many(self, items: Sequence[Fields]) -> list[ItemText]:
        """The terms found in each item, in one fold and one automaton pass for all of them."""
        founds: list[set[TermKey]] = [set() for _ in items]
        automaton = self._automaton
        if automaton is None or not items:
            return [ItemText(found) for found in founds]
        joined = _joined(items)
        if not _marks_ok(joined, len(items)):  # an item brought marks of its own: drop them
            joined = _joined(
                [
                    (
                        t.translate(_MARKS),
                        [s.translate(_MARKS) for s in ss],
                        [c.translate(_MARKS) for c in cs],
                    )
                    for t, ss, cs in items
                ]
            )
        text = normalize(joined)
        # Where each item's title, summary and categories end, in order: a hit lies wholly
        # within one of these spans, and hits come in order of their end.
        bounds: list[int] = []
        position = 0
        for _ in items:
            title_end = text.find(_TITLE_END, position)
            summary_end = text.find(_SUMMARY_END, title_end)
            position = text.find(_ITEM_END, summary_end)
            bounds += (title_end, summary_end, position)
        bounds[-1] = len(text)
        span, bound, where = 0, bounds[0], 0
        add = founds[0].update
        last = len(text) - 1
        # On the hot path: the word-character test (isalnum or "_") is written out, not called.
        for end, (size, exact, prefix) in automaton.iter(text):
            if end > bound:
                while end > bound:
                    span += 1
                    bound = bounds[span]
                add = founds[span // 3].update
                where = span % 3
            start = end - size + 1
            if start:
                before = text[start - 1]
                if before.isalnum() or before == "_":
                    continue
            if prefix is not None:
                add(prefix[where])
            if exact is not None:
                if end != last:
                    after = text[end + 1]
                    if after.isalnum() or after == "_":
                        # The genitive or possessive s: "DeepSeeks", "DeepSeek's" (' is no word char).
                        if after != "s":
                            continue
                        if end + 1 != last:
                            beyond = text[end + 2]
                            if beyond.isalnum() or beyond == "_":
                                continue
                add(exact[where])
        return [ItemText(found) for found in founds]

"""Find every term of every rule in an item in one pass (SPEC §5 matching rules).

All terms are compiled into one Aho-Corasick automaton (pyahocorasick, C) over normalised text;
only the hits are looked at in Python, to check word boundaries and the genitive/possessive s.
So the cost per item grows with the item's length and its hits, not with the number of terms:
10,000 alert terms cost about what 10 do.

Normalised text: folded (see text.fold), hyphens read as spaces, whitespace runs collapsed, so
`"KI Chips"` finds "KI-Chips" and a phrase matches across line breaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import ahocorasick

from worker.core.text import fold

FIELDS = ("title", "summary", "category")
TermKey = tuple[str | None, str, bool]  # (field or None for every field, pattern, prefix)
_HYPHENS = ("-", "\u2010", "\u2011", "\u2013")
# Between fields, and between summaries or categories: printable marks that are neither word
# characters nor whitespace, so no pattern contains them and no phrase spans them.
_TITLE_END, _SUMMARY_END, _JOIN = "\u241d", "\u241e", "\u241f"


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


# What a hit adds to the found terms, by the field it is in: title, summary, category.
_ByField = tuple[tuple[TermKey, ...], tuple[TermKey, ...], tuple[TermKey, ...]]


def _by_field(pattern: str, prefix: bool) -> _ByField:
    keys = [((name, pattern, prefix), (None, pattern, prefix)) for name in FIELDS]
    return keys[0], keys[1], keys[2]


@dataclass
class TermIndex:
    """An automaton over every term pattern; built once per config."""

    patterns: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # pattern -> (exact, prefix)
    _automaton: ahocorasick.Automaton | None = None

    @classmethod
    def of(cls, keys: Iterable[TermKey]) -> TermIndex:
        index = cls()
        for _, pattern, prefix in keys:
            exact, pre = index.patterns.get(pattern, (False, False))
            index.patterns[pattern] = (exact or not prefix, pre or prefix)
        if index.patterns:
            automaton = ahocorasick.Automaton()
            for pattern, (exact, prefix) in index.patterns.items():
                automaton.add_word(
                    pattern,
                    (
                        len(pattern),
                        _by_field(pattern, False) if exact else None,
                        _by_field(pattern, True) if prefix else None,
                    ),
                )
            automaton.make_automaton()
            index._automaton = automaton
        return index

    def scan(self, title: str, summaries: Iterable[str], categories: Iterable[str]) -> ItemText:
        found: set[TermKey] = set()
        automaton = self._automaton
        if automaton is None:
            return ItemText(found)
        # One fold for the whole item: fields joined by marks, told apart again by position.
        summary = _JOIN.join([s for s in summaries if s])
        text = normalize(f"{title}{_TITLE_END}{summary}{_SUMMARY_END}{_JOIN.join(categories)}")
        title_end = text.find(_TITLE_END)
        summary_end = text.find(_SUMMARY_END, title_end)
        last = len(text) - 1
        add = found.update
        # On the hot path: the word-character test (isalnum or "_") is written out, not called.
        for end, (size, exact, prefix) in automaton.iter(text):
            start = end - size + 1
            if start:
                before = text[start - 1]
                if before.isalnum() or before == "_":
                    continue
            where = 0 if start < title_end else 1 if start < summary_end else 2
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
        return ItemText(found)

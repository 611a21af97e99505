"""Find every term of every rule in an item in one pass (SPEC §5 matching rules).

All terms are compiled into one Aho-Corasick automaton (pyahocorasick, C) over normalised text;
only the hits are looked at in Python, to check word boundaries and the genitive/possessive s.
So the cost per item grows with the item's length and its hits, not with the number of terms:
10,000 alert terms cost about what 10 do.

Normalised text: folded (see text.fold: invisible characters such as soft hyphens dropped, case
and umlauts folded), dashes read as spaces, whitespace runs collapsed, so `"KI Chips"` finds
"KI-Chips" and "KI – Chips", and a phrase matches across line breaks and non-breaking spaces.
`normalize_mapped` does the same off the hot path and says where each character came from.

A batch of items (the items of one job) is joined into one text and scanned in one pass: one
fold and one automaton call per batch instead of per item.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import ahocorasick

from worker.core.charsets import DASHES, IGNORABLE
from worker.core.text import fold

FIELDS = ("title", "summary", "category")
TermKey = tuple[str | None, str, bool]  # (field or None for every field, pattern, prefix)
# Between items, between fields, and between summaries or categories: printable marks that are
# neither word characters nor whitespace, so no pattern contains them and no phrase spans them.
_ITEM_END, _TITLE_END, _SUMMARY_END, _JOIN = "\u241c", "\u241d", "\u241e", "\u241f"
# Regular expressions find these faster than str.replace and `in` do (a third less, measured).
_SPACED_DASH = {dash: re.compile(f" {re.escape(dash)} ") for dash in DASHES}
_DOUBLE_SPACE = re.compile("  ")
_DASH_SET = frozenset(DASHES)
_MARKS = str.maketrans(dict.fromkeys(_ITEM_END + _TITLE_END + _SUMMARY_END + _JOIN, " "))


def normalize(text: str) -> str:
    """The text as terms are matched against it (see the module's docstring). On the hot path."""
    printable = text.isprintable()  # asked once, for both fold and the whitespace pass
    if not printable:
        # Line breaks, tabs, NBSP and other spaces first, so that fold finds text whose only
        # unprintable characters are ignorables, which it handles fastest. Parsed items arrive
        # single-spaced already (html_to_text), so this is rare.
        text = " ".join(text.split())
    folded = fold(text, printable)
    for dash in DASHES:  # a look with `in` per dash is far cheaper than one regex scan
        if dash in folded:
            # "A – B" to "A B", not "A   B": the dash between spaces goes with one of them.
            folded = _SPACED_DASH[dash].sub(" ", folded).replace(dash, " ")
    if _DOUBLE_SPACE.search(folded):  # a dash or an ignorable between spaces was removed
        return " ".join(folded.split())
    return folded.strip(" ")


@dataclass(frozen=True, slots=True)
class Normalised:
    """A normalised text and where each of its characters came from: text[i] stems from
    original[starts[i]:ends[i]] (two characters share a span where one became two: ä -> ae)."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original characters that text[start:end] (not empty) came from, as (start, end):
        invisible characters inside the span are in it, those around it are not."""
        return self.starts[start], self.ends[end - 1]


def normalize_mapped(text: str) -> Normalised:
    """normalize(text) with where each character came from, for highlights that must point at
    the text as the feed wrote it. Off the hot path."""
    return _mapped_in_place(text) or _mapped_by_characters(text)


def _mapped_in_place(text: str) -> Normalised | None:
    """The usual text: NFC already, no invisible characters, and each character folding on its
    own to one separator (a space or a dash) or to letters (ä: ae). Then normalize() gives each
    word's folds in place, and one space per run of separators between words, from the run's
    first character: found by one regular expression, with Python per word (per character only
    in words with a widening character), not per character and cluster. None for any other."""
    if IGNORABLE.search(text) is not None or not unicodedata.is_normalized("NFC", text):
        return None
    kinds = {ch: _kind(ch) for ch in set(text)}
    if -1 in kinds.values():
        return None
    separators = "".join(sorted(ch for ch, kind in kinds.items() if kind == 0))
    widths = {ch: kind for ch, kind in kinds.items() if kind > 1}
    starts: list[int] = []
    previous_end = -1
    for word in _words(separators).finditer(text):
        start, end = word.span()
        if previous_end >= 0:
            starts.append(previous_end)  # the space: the first separator after the last word
        previous_end = end
        starts += range(start, end)
    if widths:  # ä -> ae: both letters come from the ä; text order is index order
        for ch, width in widths.items():
            at = text.find(ch)
            while at >= 0:
                starts += [at] * (width - 1)
                at = text.find(ch, at + 1)
        starts.sort()
    normalised = normalize(text)
    if len(normalised) != len(starts):  # never seen; the long way is right by construction
        return None
    return Normalised(normalised, tuple(starts), tuple(start + 1 for start in starts))


@lru_cache(maxsize=8192)
def _kind(ch: str) -> int:
    """For _mapped_in_place: 0 for a separator (its fold is one space or dash), the width of its
    fold for a letter, -1 for a character that vanishes or folds to a separator and more."""
    folded = _fold_cluster(ch)
    if len(folded) == 1 and (folded.isspace() or folded in _DASH_SET):
        return 0
    if not folded or any(c.isspace() or c in _DASH_SET for c in folded):
        return -1
    return len(folded)


@lru_cache(maxsize=256)
def _words(separators: str) -> re.Pattern[str]:
    """Runs of characters that are not among `separators` (texts share a few sets of them)."""
    return re.compile(f"[^{re.escape(separators)}]+" if separators else ".+", re.DOTALL)


def _mapped_by_characters(text: str) -> Normalised:
    """normalize_mapped for any text: Python per character and cluster."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    separator: tuple[int, int] | None = None  # the first of a run of spaces and dashes
    for cluster, start, end in _clusters(text):
        for ch in _fold_cluster(cluster):
            if ch.isspace() or ch in _DASH_SET:
                separator = separator or (start, end)
                continue
            if separator and chars:  # runs inside the text become one space; at its ends, none
                chars.append(" ")
                starts.append(separator[0])
                ends.append(separator[1])
            separator = None
            chars.append(ch)
            starts.append(start)
            ends.append(end)
    return Normalised("".join(chars), tuple(starts), tuple(ends))


@lru_cache(maxsize=8192)
def _fold_cluster(cluster: str) -> str:
    """fold() of one character or cluster: texts repeat their characters, so it is asked once."""
    return fold(cluster)


def _clusters(text: str) -> Iterator[tuple[str, int, int]]:
    """The visible characters of text, in runs that NFC may join (a letter and its combining
    marks, Hangul jamo), each with its span in text: fold(text) is the join of their folds."""
    if IGNORABLE.search(text) is None:  # nearly always: no look per character
        visible = list(enumerate(text))
    else:
        visible = [(index, ch) for index, ch in enumerate(text) if not IGNORABLE.fullmatch(ch)]
    if unicodedata.is_normalized("NFC", "".join(ch for _, ch in visible)):
        yield from ((ch, index, index + 1) for index, ch in visible)  # the common case
        return
    run, run_start, run_end = "", 0, 0
    for index, ch in visible:
        if run and _starts_run(run, ch):
            yield run, run_start, run_end
            run = ""
        if not run:
            run_start = index
        run, run_end = run + ch, index + 1
    if run:
        yield run, run_start, run_end


def _starts_run(run: str, ch: str) -> bool:
    """Whether NFC leaves the run alone when ch follows it. Combining marks, and characters that
    decompose into one (Tibetan vowel signs), stay with the run: NFC reorders and composes them
    with what precedes; so do characters NFC joins to the run (Hangul jamo, a few scripts)."""
    if unicodedata.combining(unicodedata.normalize("NFD", ch)[0]):
        return False
    return _nfc(run + ch) == _nfc(run) + _nfc(ch)


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


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

"""Stories: which items are copies of one report (SPEC §10). Pure: features and decisions only;
worker.adapters.stories keeps them in Redis.

Syndication changes a report in predictable places: a wire or site marker before or after the
headline ("ROUNDUP:", "dpa-AFX:", "- Aktie", "| Finanzportal"), a dateline before the text
("FRANKFURT (dpa-AFX) -"), a teaser cut off after a few lines, a headline rewritten while the
text stays. So an item has two word sets, compared separately:

- its headline's words without wire and site markers, and
- its opening: the first LEAD_WORDS words of its text, without the dateline.

The similarity of two items is the higher of the two Jaccard similarities (each only when both
items have enough words for it; openings are compared as far as the shorter one goes): a cut
teaser keeps the opening, an edited headline keeps the text, a copy without text keeps the
headline. Stop words are left out, so that two reports do not
look alike for their articles and prepositions.

Finding earlier reports uses MinHash signatures (rensa) cut into LSH bands: two items share
a band key with high probability when they are similar, and the band keys are what Redis indexes.
The decision itself compares the stored word sets exactly, so a band collision never merges two
stories on its own. See docs/decisions.md for the measurements behind this choice.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from rensa import RMinHash

from worker.core.matcher import normalize
from worker.core.models import Item

FEATURES_VERSION = "2"  # in every band key: a change of features or parameters starts a fresh index
NUM_PERM = 64
LEAD_WORDS = 15  # words of the opening; a teaser is rarely cut before them
MAX_TITLE_WORDS = 30
MIN_TITLE_WORDS = 3  # "Dax im Plus": too few words to say two headlines are one story
MIN_LEAD_WORDS = 8
LSH_RECALL = 0.99  # chance that two items exactly at the threshold share a band
_SEED = 1  # pinned with rensa's version range: band keys persist in Redis

_WORD = re.compile(r"\w+")
# Markers that wires and portals put around a headline; folded spelling (see text.fold).
# A headline segment made only of these (and numbers) is not part of the story.
_MARKER_WORDS = """roundup korrektur wdh wiederholung eilmeldung eil update analyse flash aktie aktien im
fokus presse pressestimme pressestimmen kreise dpa afx reuters awp apa eqs dgap irw ots news nachricht
nachrichten boerse marktbericht schluss eroeffnung ausblick ueberblick ticker exklusiv kommentar
hintergrund online frankfurt new york europa asien usa wien zuerich london tokio paris devisen
anleihen rohstoffe"""
_MARKERS = frozenset(_MARKER_WORDS.split())
# German function words; folded spelling.
_STOP_WORDS = """der die das den dem des ein eine einen einem einer eines und oder aber als auch auf aus
bei bis durch fuer gegen in im ins mit nach ueber um unter von vom vor zu zum zur an am ist sind war
hat haben wird werden wurde soll sollen sich sein seine seiner seinen ihr ihre ihren es er sie wir
nicht noch nur so wie mehr dass da dies diese dieser diesem zwischen"""
_STOP = frozenset(_STOP_WORDS.split())
_PREFIX = re.compile(r"^\s*([^:|]{1,40}?)\s*:\s+")
_SUFFIX_DASH = re.compile(r"\s+[-\u2010-\u2015]\s+([^-\u2010-\u2015]{1,40})$")
_DOMAIN = re.compile(r"^[\w-]+(\.[\w-]+)*\.[a-z]{2,}$")
# "FRANKFURT (dpa-AFX) -", "Washington (Reuters) –", "(dpa) -": the place and the wire.
_DATELINE = re.compile(r"^\s*[^()\n]{0,40}\([^()]{2,30}\)\s*[-\u2010-\u2015:]\s*")
_CUT_WORD = re.compile(r"\w(?:…|\.\.\.)\s*$")


def _words(text: str) -> list[str]:
    return _WORD.findall(normalize(text))


def _all_markers(segment: str) -> bool:
    words = _words(segment)
    return bool(words) and all(w in _MARKERS or w.isdigit() for w in words)


def headline_core(title: str) -> str:
    """The headline without wire and site markers: "ROUNDUP 2/Aktie: X | Portal" -> "X"."""
    text = title.split(" | ")[0]
    for _ in range(3):  # "ROUNDUP: dpa-AFX: X"
        match = _PREFIX.match(text)
        if not match or not _all_markers(match.group(1)):
            break
        text = text[match.end() :]
    for _ in range(3):  # "X - Aktie - boerse.de"
        match = _SUFFIX_DASH.search(text)
        if not match:
            break
        tail = match.group(1).strip()
        if not (_all_markers(tail) or _DOMAIN.match(tail.lower())):
            break
        text = text[: match.start()]
    return text


def headline_words(title: str) -> list[str]:
    return [w for w in _words(headline_core(title)) if w not in _STOP][:MAX_TITLE_WORDS]


def opening_words(text: str) -> list[str]:
    """The first LEAD_WORDS words of the text after its dateline, each once, in order. A text
    cut off inside a word ("Trainingsläu…") ends in a word that is not evidence."""
    text = _DATELINE.sub("", text, count=1)
    words = list(dict.fromkeys(w for w in _words(text) if w not in _STOP))
    if _CUT_WORD.search(text) and len(words) <= LEAD_WORDS:
        words = words[:-1]
    return words[:LEAD_WORDS]


def _token_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")


@dataclass(frozen=True)
class Fingerprint:
    """An item's words as 32-bit word hashes (compact, exact to compare): the headline's as a
    set, the opening's in order; and its band keys."""

    title: frozenset[int]
    lead: tuple[int, ...]
    bands: tuple[str, ...] = field(default=(), compare=False)

    def pack(self) -> bytes:
        """Four bytes per word: what Redis keeps to compare later items with this one."""
        title = sorted(self.title)
        return struct.pack(
            f"<BB{len(title)}I{len(self.lead)}I", len(title), len(self.lead), *title, *self.lead
        )

    @classmethod
    def unpack(cls, data: bytes) -> Fingerprint:
        count_title, count_lead = data[0], data[1]
        values = struct.unpack_from(f"<{count_title + count_lead}I", data, 2)
        return cls(frozenset(values[:count_title]), tuple(values[count_title:]))


@dataclass(frozen=True)
class LshShape:
    bands: int
    rows: int


@cache
def lsh_shape(threshold: float, num_perm: int = NUM_PERM) -> LshShape:
    """The most rows per band (fewest candidates to check) that still make two items exactly at
    the threshold share a band with probability LSH_RECALL; the exact check follows anyway."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= LSH_RECALL:
            return LshShape(bands, rows)
    return LshShape(num_perm, 1)


def _band_keys(kind: str, words: Sequence[str], shape: LshShape) -> list[str]:
    signature = RMinHash(num_perm=NUM_PERM, seed=_SEED)
    signature.update(sorted(set(words)))
    raw = struct.pack(f"<{NUM_PERM}I", *signature.digest())  # one conversion, sliced per band
    width = shape.rows * 4
    return [f"{kind}{band}:{_digest(raw[band * width : (band + 1) * width])}" for band in range(shape.bands)]


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.blake2b(data, digest_size=6).digest()).decode("ascii")


def fingerprint(item: Item, threshold: float) -> Fingerprint | None:
    """The item's features, or None when it has too few words to be compared at all."""
    title = headline_words(item.title)
    lead = opening_words(item.summary or item.content)
    title = title if len(set(title)) >= MIN_TITLE_WORDS else []
    lead = lead if len(set(lead)) >= MIN_LEAD_WORDS else []
    if not title and not lead:
        return None
    shape = lsh_shape(threshold)
    # The opening is indexed by its first MIN_LEAD_WORDS words: a teaser cut after them still
    # shares them with the whole text, whose later words it lacks.
    bands = [
        *(_band_keys("t", title, shape) if title else ()),
        *(_band_keys("l", lead[:MIN_LEAD_WORDS], shape) if lead else ()),
    ]
    return Fingerprint(
        frozenset(_token_hash(w) for w in title),
        tuple(_token_hash(w) for w in lead),
        tuple(f"v{FEATURES_VERSION}:{key}" for key in bands),
    )


def _jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


def similarity(a: Fingerprint, b: Fingerprint) -> float:
    """The higher of the headlines' and the openings' Jaccard similarity; openings as far as the
    shorter one goes, so a teaser is as like its whole text as its words are."""
    common = min(len(a.lead), len(b.lead))
    lead = (
        _jaccard(frozenset(a.lead[:common]), frozenset(b.lead[:common])) if common >= MIN_LEAD_WORDS else 0.0
    )
    return max(_jaccard(a.title, b.title), lead)


@dataclass(frozen=True)
class Report:
    """An item already in the index: which story it belongs to, and its features."""

    item_id: str
    story: str
    fingerprint: Fingerprint


def closest(fp: Fingerprint, reports: Iterable[Report], threshold: float) -> Report | None:
    """The most similar report at or above the threshold (ties: the smaller story id, so every
    worker decides alike)."""
    best: tuple[float, str] | None = None
    chosen = None
    for report in reports:
        score = similarity(fp, report.fingerprint)
        if score >= threshold and (best is None or (-score, report.story) < best):
            best, chosen = (-score, report.story), report
    return chosen


def assign(
    batch: Sequence[tuple[str, Fingerprint | None]],
    members: Mapping[str, Sequence[str]],
    known: Mapping[str, Report],
    threshold: float,
) -> list[str]:
    """The story of each new item, in order: the story of the closest earlier report reached
    through a shared band key (in the index, or earlier in this batch), else a new story named
    after the item itself. `members`: band key -> item ids in the index; `known`: their reports."""
    local: dict[str, list[str]] = {}
    reports = dict(known)
    stories = []
    for item_id, fp in batch:
        if fp is None:
            stories.append(item_id)
            continue
        candidates = {i for band in fp.bands for i in (*members.get(band, ()), *local.get(band, ()))}
        match = closest(fp, (reports[i] for i in sorted(candidates) if i in reports), threshold)
        story = match.story if match else item_id
        stories.append(story)
        reports[item_id] = Report(item_id, story, fp)
        for band in fp.bands:
            local.setdefault(band, []).append(item_id)
    return stories


@dataclass
class StoryState:
    """What a story has seen: how many reports, and which alert fired with which item."""

    reports: int = 0
    alerted: dict[str, str] = field(default_factory=dict)

    def add_report(self, item_id: str, alerts: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """Count one more report; returns the alerts that fire for it (first time for this story)
        and those that do not, each with the item that fired it before."""
        self.reports += 1
        fire, held = [], {}
        for alert in dict.fromkeys(alerts):
            if alert in self.alerted:
                held[alert] = self.alerted[alert]
            else:
                self.alerted[alert] = item_id
                fire.append(alert)
        return fire, held


@dataclass(frozen=True)
class Placed:
    """Where a new item went: its story, its number among the story's reports (1: the first),
    the alerts that fire with it, and those that fired with an earlier report (alert -> item)."""

    story: str
    report: int
    fire: tuple[str, ...]
    held: dict[str, str]


def place(batch: Sequence[tuple[str, str, Sequence[str]]], states: Mapping[str, StoryState]) -> list[Placed]:
    """Count each new item (id, story, alerts it would fire) as a report of its story, in order:
    an alert fires once per story. `states` as read from the index (missing: a new story)."""
    current = {story: StoryState(s.reports, dict(s.alerted)) for story, s in states.items()}
    placed = []
    for item_id, story, alerts in batch:
        state = current.setdefault(story, StoryState())
        fire, held = state.add_report(item_id, alerts)
        placed.append(Placed(story, state.reports, tuple(fire), held))
    return placed


def alone(item_id: str, alerts: Sequence[str]) -> Placed:
    """With stories off: every item is a story of its own."""
    return Placed(item_id, 1, tuple(dict.fromkeys(alerts)), {})

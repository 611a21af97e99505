"""The story index in Redis: LSH band keys, recent reports' features, and each story's counts.

Used inside the seen-store's transaction (store.SeenStore.commit_new), like the outbox: the band
keys a batch touches are WATCHed with its seen-keys and read in the same MGET; `place` reads the
reports they lead to and the stories those belong to (WATCHing the story keys before reading
them), and decides in the pure core (core.stories); `write` queues the result after MULTI. A
worker that commits a report of the same story first changes a band key or story key this
batch watches, so this batch is retried and joins that story instead of opening a second one.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import redis
from redis.client import Pipeline

from worker.adapters import garbage, keys
from worker.core.stories import Fingerprint, Placed, Report, StoryState, assign, place

_BAND_MEMBERS = 16  # ids kept per band key: a bucket that full is boilerplate, not one story


@dataclass(frozen=True)
class NewReport:
    """A new item as the index sees it: id, features (None: too few words) and the alerts it
    would fire."""

    item_id: str
    fingerprint: Fingerprint | None
    alerts: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    placed: list[Placed]
    bands: dict[str, list[str]]  # band key -> member ids after this batch, to write
    garbled: frozenset[str] = frozenset()  # story keys of another type (garbage): replaced


class StoryIndex:
    def __init__(self, connection: redis.Redis, window: timedelta, threshold: float, keep: timedelta) -> None:
        self.redis = connection
        self.window = max(1, int(window.total_seconds()))
        self.story_ttl = max(self.window, int(keep.total_seconds()))
        self.threshold = threshold

    def band_keys(self, fingerprints: Sequence[Fingerprint | None]) -> list[str]:
        return sorted({keys.story_band(b) for fp in fingerprints if fp for b in fp.bands})

    def place(
        self, pipe: Pipeline, batch: Sequence[NewReport], bands: Mapping[str, bytes | None]
    ) -> Placement:
        """Decide each new item's story. `pipe` is in WATCH mode; `bands` holds the band keys'
        values as read under that WATCH."""
        # A band key holding garbage yields ids that lead nowhere; it is rewritten below.
        members = {key: (value or b"").decode("utf-8", "replace").split() for key, value in bands.items()}
        by_band = {band: members.get(keys.story_band(band), []) for r in batch if r.fingerprint
                   for band in r.fingerprint.bands}  # fmt: skip
        known = self._reports(pipe, sorted({i for ids in by_band.values() for i in ids}))
        stories = assign([(r.item_id, r.fingerprint) for r in batch], by_band, known, self.threshold)
        states, garbled = self._states(pipe, sorted(set(stories)))
        placed = place([(r.item_id, s, r.alerts) for r, s in zip(batch, stories, strict=True)], states)
        written = dict(members)
        for report in batch:
            for band in report.fingerprint.bands if report.fingerprint else ():
                key = keys.story_band(band)
                written[key] = [*written.get(key, []), report.item_id][-_BAND_MEMBERS:]
        return Placement(placed, written, garbled)

    def _reports(self, pipe: Pipeline, ids: list[str]) -> dict[str, Report]:
        if not ids:
            return {}
        values: list[bytes | None] = pipe.mget([keys.story_report(i) for i in ids])  # type: ignore[assignment]
        reports = {}
        for item_id, value in zip(ids, values, strict=True):  # immediate: WATCH mode
            if value:  # expired since the band key was written: out of the window
                story, _, packed = value.partition(b"\x00")
                try:
                    reports[item_id] = Report(item_id, story.decode(), Fingerprint.unpack(packed))
                except (ValueError, IndexError, struct.error):  # garbage: as if out of the window
                    garbage.found("story", keys.story_report(item_id), "does not read", "skipped")
        return reports

    def _states(self, pipe: Pipeline, stories: list[str]) -> tuple[dict[str, StoryState], frozenset[str]]:
        """The stories' states, and the story keys that hold another type (garbage: the story
        reads as new, and `write` replaces its key)."""
        story_keys = [keys.story(s) for s in stories]
        pipe.watch(*story_keys)  # type: ignore[no-untyped-call]
        # Read after the WATCH, in one round trip on another connection: a change by anyone
        # from now on still fails this transaction.
        with self.redis.pipeline(transaction=False) as reader:
            for key in story_keys:
                reader.hgetall(key)
            hashes = reader.execute(raise_on_error=False)
        for fields in hashes:
            if isinstance(fields, Exception) and not garbage.is_wrong_type(fields):
                raise fields
        garbled = frozenset(key for key, fields in zip(story_keys, hashes, strict=True) if _garbled(fields))
        for key in garbled:
            garbage.found("story", key, "holds another type than a hash", "the story starts afresh")
        states = {
            story: _state(fields)
            for story, fields in zip(stories, hashes, strict=True)
            if fields and not isinstance(fields, Exception)
        }
        return states, garbled

    def write(self, pipe: Pipeline, batch: Sequence[NewReport], placement: Placement) -> None:
        """Queue the decision (after MULTI): band members, each report's features, story counts."""
        touched = {keys.story_band(b) for r in batch if r.fingerprint for b in r.fingerprint.bands}
        for key in sorted(touched):
            pipe.set(key, " ".join(placement.bands[key]), ex=self.window)
        for report, placed in zip(batch, placement.placed, strict=True):
            if report.fingerprint:
                value = placed.story.encode() + b"\x00" + report.fingerprint.pack()
                pipe.set(keys.story_report(report.item_id), value, ex=self.window)
            fields: dict[str, str | int] = {"n": placed.report, f"r:{report.item_id}": placed.report}
            fields |= {f"a:{alert}": report.item_id for alert in placed.fire}
            if keys.story(placed.story) in placement.garbled:
                pipe.delete(keys.story(placed.story))
            pipe.hset(keys.story(placed.story), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.story(placed.story), self.story_ttl)

    def story_of(self, story_id: str) -> tuple[StoryState, dict[str, int]]:
        """A story's state and its reports (item id -> number), for `explain`. Garbage reads as
        absent: a key of another type as no story, a field that does not read as no field."""
        try:
            fields: dict[bytes, bytes] = self.redis.hgetall(keys.story(story_id))  # type: ignore[assignment]
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e):
                raise
            return StoryState(), {}
        reports = {
            _text(k)[2:]: n
            for k, v in fields.items()
            if k.startswith(b"r:") and (n := _number(v)) is not None
        }
        return _state(fields), reports


def _garbled(fields: object) -> bool:
    return isinstance(fields, Exception) and garbage.is_wrong_type(fields)


def _state(fields: Mapping[bytes, bytes]) -> StoryState:
    alerted = {_text(k)[2:]: _text(v) for k, v in fields.items() if k.startswith(b"a:")}
    return StoryState(_number(fields.get(b"n", b"0")) or 0, alerted)


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _number(value: bytes) -> int | None:
    """A count in a story's hash, or None when it holds garbage."""
    try:
        return max(0, int(value))
    except ValueError:
        return None

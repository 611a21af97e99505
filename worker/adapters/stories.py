"""The story index in Redis: LSH band keys, recent reports' features, and each story's counts.

Used inside the seen-store's transaction (store.SeenStore.commit_new), like the outbox: the band
keys a batch touches are WATCHed with its seen-keys and read in the same MGET; `place` reads the
reports they lead to and the stories those belong to (WATCHing the story keys before reading
them), and decides in the pure core (core.stories); `write` queues the result after MULTI. A
worker that commits a report of the same story first changes a band key or story key this
batch watches, so this batch is retried and joins that story instead of opening a second one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import redis
from redis.client import Pipeline

from worker.adapters import keys
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
        members = {key: (value or b"").decode().split() for key, value in bands.items()}
        by_band = {band: members.get(keys.story_band(band), []) for r in batch if r.fingerprint
                   for band in r.fingerprint.bands}  # fmt: skip
        known = self._reports(pipe, sorted({i for ids in by_band.values() for i in ids}))
        stories = assign([(r.item_id, r.fingerprint) for r in batch], by_band, known, self.threshold)
        states = self._states(pipe, sorted(set(stories)))
        placed = place([(r.item_id, s, r.alerts) for r, s in zip(batch, stories, strict=True)], states)
        written = dict(members)
        for report in batch:
            for band in report.fingerprint.bands if report.fingerprint else ():
                key = keys.story_band(band)
                written[key] = [*written.get(key, []), report.item_id][-_BAND_MEMBERS:]
        return Placement(placed, written)

    def _reports(self, pipe: Pipeline, ids: list[str]) -> dict[str, Report]:
        if not ids:
            return {}
        values: list[bytes | None] = pipe.mget([keys.story_report(i) for i in ids])  # type: ignore[assignment]
        reports = {}
        for item_id, value in zip(ids, values, strict=True):  # immediate: WATCH mode
            if value:  # expired since the band key was written: out of the window
                story, _, packed = value.partition(b"\x00")
                reports[item_id] = Report(item_id, story.decode(), Fingerprint.unpack(packed))
        return reports

    def _states(self, pipe: Pipeline, stories: list[str]) -> dict[str, StoryState]:
        story_keys = [keys.story(s) for s in stories]
        pipe.watch(*story_keys)  # type: ignore[no-untyped-call]
        # Read after the WATCH, in one round trip on another connection: a change by anyone
        # from now on still fails this transaction.
        with self.redis.pipeline(transaction=False) as reader:
            for key in story_keys:
                reader.hgetall(key)
            hashes = reader.execute()
        return {story: _state(fields) for story, fields in zip(stories, hashes, strict=True) if fields}

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
            pipe.hset(keys.story(placed.story), mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.story(placed.story), self.story_ttl)

    def story_of(self, story_id: str) -> tuple[StoryState, dict[str, int]]:
        """A story's state and its reports (item id -> number), for `explain`."""
        fields: dict[bytes, bytes] = self.redis.hgetall(keys.story(story_id))  # type: ignore[assignment]
        state = _state(fields)
        reports = {k.decode()[2:]: int(v) for k, v in fields.items() if k.startswith(b"r:")}
        return state, reports


def _state(fields: Mapping[bytes, bytes]) -> StoryState:
    alerted = {k.decode()[2:]: v.decode() for k, v in fields.items() if k.startswith(b"a:")}
    return StoryState(int(fields.get(b"n", b"0")), alerted)

"""Redis state: the seen-store (atomic dedupe, stories, archive) and per-feed poll state.

The one place where 'mark seen', 'place in a story', 'archive' and 'enqueue deliveries' become a
single MULTI/EXEC: a worker
that dies before EXEC leaves nothing behind (the batch is retried and finds the items unseen);
a worker that dies after EXEC leaves both the marks and the delivery jobs. There is no state in
between, so no alert is lost and none is enqueued twice.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TypeVar

import redis
from redis.client import Pipeline

from worker.adapters import counters, garbage, keys
from worker.adapters.archive import Archive
from worker.adapters.outbox import Outbox
from worker.adapters.stories import NewReport, Placement, StoryIndex
from worker.core.archive import ArchivedItem, outcomes
from worker.core.errors import NewswatchError
from worker.core.identity import guid_changed, seen_tag
from worker.core.models import Delivery, Item, parse_utc, utc_iso
from worker.core.outbox import Digested, Routing
from worker.core.poll import FeedState, StateUpdate
from worker.core.render import with_story
from worker.core.stories import Fingerprint, Placed, alone

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_WATCH_RETRIES = 20


@dataclass(frozen=True)
class Candidate:
    """An item and the deliveries it causes if it turns out to be new, with what the archive
    keeps of how it was classified."""

    item: Item
    deliveries: tuple[Delivery, ...] = ()
    topics: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()  # alerts whose query and filters match, whether they fire or not
    quiet: str | None = None  # why none of them fires ("baseline", the max_age rule)
    fingerprint: Fingerprint | None = None  # its story features (None: too short, or stories off)

    @property
    def key(self) -> str:
        """Its seen-key: the story's id decides (the canonical link, else GUID or title+date)."""
        return keys.seen(self.item.id)

    @property
    def tag(self) -> int:
        """The value of its seen-key: the feed and the GUID it was seen under (GUID churn)."""
        item = self.item
        return seen_tag(item.feed, item.guid, item.link, item.title, item.published)

    @property
    def alerts(self) -> tuple[str, ...]:
        """The alerts it would fire, each once."""
        return tuple(dict.fromkeys(d.alert for d in self.deliveries))


@dataclass(frozen=True)
class Committed:
    new: list[Candidate]  # the candidates that were new, now marked seen
    immediate: tuple[Delivery, ...]  # their deliveries that go out now (the rest wait for digests)
    placed: list[Placed] = field(default_factory=list)  # their stories, in the order of `new`


@dataclass(frozen=True)
class Lookup:
    fresh: list[Candidate]
    guid_churn: int  # items whose link this feed showed before under another GUID


@dataclass(frozen=True)
class _Decided:
    reports: list[NewReport]
    placement: Placement | None  # None with stories off
    placed: list[Placed]
    deliveries: list[Delivery]  # those that fire, placed in their stories


class SeenStore:
    def __init__(
        self,
        connection: redis.Redis,
        ttl: timedelta,
        stories: StoryIndex | None = None,
        archive: Archive | None = None,
    ) -> None:
        self.redis = connection
        self.ttl = int(ttl.total_seconds())
        self.stories = stories
        self.archive = archive

    def lookup(self, candidates: Sequence[Candidate]) -> Lookup:
        """Cheap pre-filter for the scheduler (one round trip): what is certainly seen is dropped,
        and GUID churn (a known story under another GUID) is counted."""
        if not candidates:
            return Lookup([], 0)
        values: list[bytes | None] = self.redis.mget([c.key for c in candidates])  # type: ignore[assignment]
        fresh = [c for c, value in zip(candidates, values, strict=True) if value is None]
        tags = {c.key: (c.tag, _tag(v)) for c, v in zip(candidates, values, strict=True) if v is not None}
        churn = sum(1 for tag, seen in tags.values() if seen is not None and guid_changed(seen, tag))
        self._replace_garbage({key: tag for key, (tag, seen) in tags.items() if seen is None})
        return Lookup(fresh, churn)

    def _replace_garbage(self, tags: dict[str, int]) -> None:
        """Seen-keys whose value is not a tag: the item was seen (only a commit writes the key,
        and the worker's commit reads any value as seen too), so its mark is rewritten with the
        tag of what is seen now, its TTL kept. (A key of another type reads as unseen: MGET
        cannot tell it from a missing key, and the commit's SET replaces it.)"""
        if not tags:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for key, tag in tags.items():
                pipe.set(key, tag, xx=True, keepttl=True)
            pipe.execute()
        for key in tags:
            garbage.found("seen", key, "held no seen-tag", "read as seen and rewritten")

    def commit_new(
        self, feed: str, candidates: Sequence[Candidate], outbox: Outbox, now: datetime
    ) -> Committed:
        """Atomically: keep the candidates whose item is not seen yet, place each in its story
        (an alert fires once per story), mark them seen, archive them and hand the deliveries
        that fire to the outbox. Returns the candidates that were new."""
        seen_keys = sorted({c.key for c in candidates})
        if not seen_keys:
            return Committed([], ())
        band_keys = self.stories.band_keys([c.fingerprint for c in candidates]) if self.stories else []
        all_deliveries = [d for c in candidates for d in c.deliveries]
        for _ in range(_MAX_WATCH_RETRIES):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(*seen_keys, *band_keys, *outbox.watch_keys(all_deliveries, now))  # type: ignore[no-untyped-call]
                    values: list[bytes | None] = pipe.mget(seen_keys + band_keys)  # type: ignore[assignment]
                    read = dict(zip(seen_keys + band_keys, values, strict=True))
                    new = _first_of_each_story(candidates, {k for k in seen_keys if read[k] is not None})
                    decided = self._decide(pipe, new, {k: read[k] for k in band_keys})
                    routing = outbox.plan(pipe, decided.deliveries, now)
                    pipe.multi()
                    self._write(pipe, feed, len(candidates), new, decided, now)
                    if new:
                        outbox.write(pipe, routing, now)
                        self._archive(pipe, new, decided, routing, now)
                    garbage.report(pipe.execute())
                    return Committed(new, routing.immediate if new else (), decided.placed)
                except redis.WatchError:
                    log.debug("feed=%s seen-store contention, retrying batch", feed)
        raise RuntimeError(f"feed={feed}: could not commit a batch after {_MAX_WATCH_RETRIES} tries")

    def _decide(self, pipe: Pipeline, new: list[Candidate], bands: dict[str, bytes | None]) -> _Decided:
        """Each new item's story, and the deliveries that fire: once per (alert, story)."""
        reports = [NewReport(c.item.id, c.fingerprint, c.alerts) for c in new]
        placement = self.stories.place(pipe, reports, bands) if self.stories and new else None
        placed = placement.placed if placement else [alone(r.item_id, r.alerts) for r in reports]
        deliveries = [
            with_story(d, p.story, p.report)
            for c, p in zip(new, placed, strict=True)
            for d in c.deliveries
            if d.alert in p.fire
        ]
        return _Decided(reports, placement, placed, deliveries)

    def _write(
        self, pipe: Pipeline, feed: str, batch: int, new: list[Candidate], decided: _Decided, now: datetime
    ) -> None:
        for candidate in new:
            pipe.set(candidate.key, candidate.tag, ex=self.ttl)
        if new:
            counters.increment(pipe, keys.feed_state(feed), "items_seen", len(new), replace_key=False)
        if self.stories and decided.placement:
            self.stories.write(pipe, decided.reports, decided.placement)
        # Counted inside the transaction, so the metrics say exactly what was committed.
        for kind, number in (("new", len(new)), ("duplicate", batch - len(new))):
            if number:
                counters.increment(pipe, keys.METRICS_ITEMS, f"{feed}\x1f{kind}", number, replace_key=True)

    def _archive(
        self,
        pipe: Pipeline,
        new: list[Candidate],
        decided: _Decided,
        routing: Routing,
        now: datetime,
    ) -> None:
        if self.archive is None:
            return
        # Grouped by item once: looking through every delivery of the batch for each item cost
        # a worker ~3 % of its CPU in a cold ingest.
        immediate: dict[str, set[str]] = {}
        for delivery in routing.immediate:
            immediate.setdefault(_item_of(delivery), set()).add(delivery.alert)
        digested: dict[str, dict[str, Digested]] = {}
        for held in routing.digested:
            digested.setdefault(_item_of(held.delivery), {})[held.delivery.alert] = held
        records = []
        for candidate, placed in zip(new, decided.placed, strict=True):
            item_id = candidate.item.id
            sent, waiting = immediate.get(item_id, set()), digested.get(item_id, {})
            results = outcomes(candidate.matched, candidate.quiet, placed, sent, waiting)
            records.append(
                ArchivedItem(candidate.item, candidate.topics, now, placed.story, placed.report, results)
            )
        self.archive.write(pipe, records, now)


def _item_of(delivery: Delivery) -> str:
    return str(delivery.payload["data"]["item"]["id"])


def _first_of_each_story(candidates: Sequence[Candidate], present: set[str]) -> list[Candidate]:
    taken = set(present)
    new = []
    for candidate in candidates:
        if candidate.key not in taken:
            taken.add(candidate.key)
            new.append(candidate)
    return new


def state_from_fields(data: dict[str, str], remembered: bool = False) -> FeedState:
    """A FeedState from the strings of its hash. A field that does not read (written by hand, by
    another version, or garbage) reads as unset rather than stopping the feed's polls; the state
    names it (`unreadable`, and `garbage`: the fields with what they held)."""
    read = _Reader(data)
    state = FeedState(
        url=data.get("url") or None,
        etag=data.get("etag") or None,
        last_modified=data.get("last_modified") or None,
        body_hash=data.get("body_hash") or None,
        last_poll=read.moment("last_poll"),
        last_success=read.moment("last_success"),
        error=data.get("error") or None,
        error_count=read.count("error_count") or 0,
        items_seen=read.count("items_seen") or 0,
        too_old=read.count(_TOO_OLD) or 0,
        disabled=read.flag("disabled"),
        not_before=read.moment("not_before"),
        moved_from=data.get("moved_from") or None,
        gone_url=data.get("gone_url") or None,
        warning=data.get("warning") or None,
        config=data.get("config") or None,
        lateness=read.seconds("lateness"),
        polled_by=data.get("polled_by") or None,
        items_found=read.count("items_found"),
        repaired=data.get("repaired") or None,
        repaired_at=read.moment("repaired_at"),
        error_since=read.moment("error_since"),
        last_new=read.moment("last_new"),
        gap_longest=read.seconds("gap_longest"),
        gaps_seen=read.count("gaps_seen") or 0,
        failing_told=read.moment("failing_told"),
        silent_told=read.moment("silent_told"),
        revision=data.get(_REVISION, ""),
        remembered=remembered,
    )
    if not read.unreadable:
        return state
    values = ", ".join(f"{name}={garbage.shown(data[name])}" for name in read.unreadable)
    return replace(state, unreadable=tuple(read.unreadable), garbage=values)


class _Reader:
    """Reads typed fields from a feed state's strings; an empty field is unset, a field that
    does not read is unset too, and remembered in `unreadable`."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data
        self.unreadable: list[str] = []

    def _parse(self, name: str, parse: Callable[[str], T]) -> T | None:
        text = self.data.get(name)
        if not text:
            return None
        try:
            return parse(text)
        except (ValueError, OverflowError):
            self.unreadable.append(name)
            return None

    def count(self, name: str) -> int | None:
        return self._parse(name, _count)

    def seconds(self, name: str) -> float | None:
        return self._parse(name, _seconds)

    def moment(self, name: str) -> datetime | None:
        return self._parse(name, parse_utc)

    def flag(self, name: str) -> bool:
        return bool(self._parse(name, _flag))


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


_REVISION = "rev"
_TOO_OLD = "too_old"
# Every write of a feed's state goes through this script: it sets the fields and a new revision
# (ARGV[4], random, so a revision is never seen twice, not even after a flush). With an expected
# revision (ARGV[1], "*" for none) it writes only if that is still the revision in Redis; with a
# lease token (ARGV[2], "" for none) only while that token still holds the feed's lease (KEYS[2],
# field ARGV[3]): a scheduler whose lease lapsed writes nothing. It returns whether it wrote, the
# revision it found, and, when it refused, why ("revision" or "lease").
_WRITE_STATE = """
local revision = redis.call('HGET', KEYS[1], 'rev') or ''
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[2] then
  return {0, revision, 'lease'}
end
if ARGV[1] ~= '*' and ARGV[1] ~= revision then
  return {0, revision, 'revision'}
end
redis.call('HSET', KEYS[1], 'rev', unpack(ARGV, 4))
return {1, revision, ''}
"""


# ARGV: field, value pairs: each field that still holds that value is unset (HDEL), as a fresh
# state has it. The revision stays: what the fields held read as unset before, too.
_RESET_FIELDS = """
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return 1
"""


class StaleStateError(NewswatchError):
    """A feed's state moved on in Redis since it was read: the poll must start again from it."""


class LeaseLostError(NewswatchError):
    """This scheduler's lease on the feed lapsed and another took it over: write nothing more."""


class FeedStateStore:
    """Per-feed poll state in one hash per feed.

    The store remembers, per feed, the state as this process last read or wrote it. A poll can
    start from that memory instead of reading Redis, and make its write conditional on the
    revision it started from: an unchanged poll is then one round trip, not two. If anyone else
    wrote in between (another process, a flushed Redis), the write is refused with
    StaleStateError and the poll is made again from the state Redis has (worker.polling). The
    status and the workers' counts read and write Redis directly; only polls use the memory."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self._write = connection.register_script(_WRITE_STATE)
        self._reset_fields = connection.register_script(_RESET_FIELDS)
        self._known: dict[str, dict[str, str]] = {}

    def get(self, feed: str, repair: bool = True) -> FeedState:
        """The state in Redis now. Garbage in it (a key of another type, fields that do not
        read) reads as unset and, unless `repair` is False (`status` only looks), is replaced
        at once: the state then says what was replaced (`garbage`)."""
        key = keys.feed_state(feed)
        try:
            raw: dict[bytes, bytes] = self.redis.hgetall(key)  # type: ignore[assignment]
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e):
                raise
            self._known.pop(feed, None)
            return self._wrong_type(feed, repair)
        fields = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()}
        state = state_from_fields(fields)
        if state.unreadable and repair:
            state = self._reset(feed, state, raw)
            fields = {k: v for k, v in fields.items() if k not in state.unreadable}
        elif state.unreadable:
            until = "read as unset until its next poll"
            state = replace(
                state, garbage=f"its state in Redis has unreadable values, {until}: {state.garbage}"
            )
        self._known[feed] = fields
        return state

    def _wrong_type(self, feed: str, repair: bool) -> FeedState:
        key = keys.feed_state(feed)
        held = self.redis.type(key).decode()  # type: ignore[union-attr]
        if repair and garbage.replace_wrong_type(
            self.redis, "feed_state", key, "hash", "the feed starts afresh"
        ):
            return FeedState(garbage=f"its state in Redis held {garbage.words(held)}, not a hash: replaced")
        until = "read as empty until its next poll"
        return FeedState(garbage=f"its state in Redis {garbage.wrong_type(held, 'hash')}: {until}")

    def _reset(self, feed: str, state: FeedState, raw: dict[bytes, bytes]) -> FeedState:
        """Unset the fields that did not read, each only if it still holds what was read."""
        by_name = {k.decode("utf-8", "replace"): (k, v) for k, v in raw.items()}
        pairs = [part for name in state.unreadable for part in by_name[name]]
        self._reset_fields(keys=[keys.feed_state(feed)], args=pairs)
        garbage.found("feed_state", keys.feed_state(feed), f"had unreadable values {state.garbage}", "unset")
        return replace(state, garbage=f"its state in Redis had unreadable values, unset: {state.garbage}")

    def get_remembered(self, feed: str, current: str | None = None) -> FeedState:
        """The state as this process last read or wrote it (it may have moved on in Redis since),
        or, when there is no such memory, the state in Redis now. Only a state with a revision
        is remembered: "no revision" is what a flushed Redis has too, so it proves nothing.
        With `current` (the revision Redis holds, as a scheduler's claim read it), a memory of
        another revision is not used: another scheduler polled the feed since."""
        fields = self._known.get(feed)
        if fields is None or not fields.get(_REVISION):
            return self.get(feed)
        if current is not None and fields.get(_REVISION) != current:
            return self.get(feed)
        return state_from_fields(fields, remembered=True)

    def ensure_current(self, feed: str, state: FeedState) -> None:
        """Raise StaleStateError unless Redis still holds the revision `state` was read at."""
        if not state.remembered:
            return
        revision = self.redis.hget(keys.feed_state(feed), _REVISION)
        if (revision or b"").decode() != state.revision:  # type: ignore[union-attr]
            self._known.pop(feed, None)
            raise StaleStateError(f"feed={feed}: state changed under the poll")

    def ensure_unchanged(self, feed: str, state: FeedState, lease: str | None = None) -> None:
        """Before queuing items on the strength of `state` (baseline or not, what is new): raise
        StaleStateError unless Redis still holds the revision it was read at, however it was read
        (a flush or another writer since the poll began), and LeaseLostError if `lease` no longer
        holds the feed."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.feed_state(feed), _REVISION)
            if lease is not None:  # a `newswatch poll` holds none: the lease hash is not its business
                pipe.hget(keys.LEASES, feed)
            revision, *holder = pipe.execute()
        if lease is not None and (holder[0] or b"").decode() != lease:
            raise LeaseLostError(f"feed={feed}: another scheduler holds its lease now")
        if (revision or b"").decode() != state.revision:
            self._known.pop(feed, None)
            raise StaleStateError(f"feed={feed}: state changed under the poll")

    def ensure_lease(self, feed: str, lease: str) -> None:
        """Raise LeaseLostError unless `lease` still holds the feed."""
        holder = self.redis.hget(keys.LEASES, feed)
        if (holder or b"").decode() != lease:  # type: ignore[union-attr]
            raise LeaseLostError(f"feed={feed}: another scheduler holds its lease now")

    def episodes_told(self, feeds: Sequence[str]) -> dict[str, tuple[bool, bool]]:
        """Per feed, whether a failing and a silent episode is told and not over (worker.core.ops),
        in one round trip, for the metrics. A state that does not read (garbage) is neither."""
        with self.redis.pipeline(transaction=False) as pipe:
            for feed in feeds:
                pipe.hmget(keys.feed_state(feed), "failing_told", "silent_told")
            replies = pipe.execute(raise_on_error=False)
        return {
            feed: (bool(reply[0]), bool(reply[1])) if isinstance(reply, list) else (False, False)
            for feed, reply in zip(feeds, replies, strict=True)
        }

    def count_too_old(self, feed: str, count: int) -> None:
        """Count new items of a feed that were too old to alert (`status` shows the total). Like
        items_seen, a counter beside the poll state: it leaves the revision alone."""
        if count:
            garbage.report([counters.increment(self.redis, keys.feed_state(feed), _TOO_OLD, count, False)])

    def write(
        self, feed: str, update: StateUpdate, expect: FeedState | None = None, lease: str | None = None
    ) -> None:
        """Write the update's fields (None is stored empty, so a write is one command;
        datetimes as ISO UTC). With `expect`, only if Redis still holds the revision that
        state was read at (else StaleStateError); with a `lease` token, only while it holds
        the feed's lease (else LeaseLostError). Nothing is written when refused."""
        to_set = {name: _field_text(value) for name, value in update.values().items()}
        revision = secrets.token_hex(8)
        arguments = ["*" if expect is None else expect.revision, lease or "", feed, revision]
        for name, text in to_set.items():
            arguments += (name, text)
        written, replaced, why = self._write(keys=[keys.feed_state(feed), keys.LEASES], args=arguments)
        known = self._known.get(feed)
        if written and known is not None and known.get(_REVISION) == replaced.decode():
            self._known[feed] = known | to_set | {_REVISION: revision}
        else:  # refused, or someone else wrote in between: the whole state is no longer known here
            self._known.pop(feed, None)
        if why == b"lease":
            raise LeaseLostError(f"feed={feed}: another scheduler holds its lease now")
        if not written:
            raise StaleStateError(f"feed={feed}: state changed under the poll")


def _field_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _tag(value: bytes) -> int | None:
    """A seen-key's value (core.identity.seen_tag), or None when it holds something else."""
    try:
        return int(value)
    except ValueError:
        return None

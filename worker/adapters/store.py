"""Redis state: the seen-store (atomic dedupe) and per-feed poll state.

The one place where 'mark seen' and 'enqueue deliveries' become a single MULTI/EXEC: a worker
that dies before EXEC leaves nothing behind (the batch is retried and finds the items unseen);
a worker that dies after EXEC leaves both the marks and the delivery jobs. There is no state in
between, so no alert is lost and none is enqueued twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis

from worker.adapters import keys
from worker.adapters.outbox import Outbox
from worker.core.identity import guid_tag, primary_identity
from worker.core.models import Delivery, Item, parse_utc, utc_iso

log = logging.getLogger(__name__)

_MAX_WATCH_RETRIES = 20


@dataclass(frozen=True)
class Candidate:
    """An item and the deliveries it causes if it turns out to be new."""

    item: Item
    deliveries: tuple[Delivery, ...] = ()

    @property
    def key(self) -> str:
        """Its seen-key: the story's id decides (the canonical link, else GUID or title+date)."""
        return keys.seen(self.item.id)

    @property
    def tag(self) -> int:
        item = self.item
        return guid_tag(primary_identity(item.feed, item.guid, item.link, item.title, item.published))


@dataclass(frozen=True)
class Committed:
    new: list[Candidate]  # the candidates that were new, now marked seen
    immediate: tuple[Delivery, ...]  # their deliveries that go out now (the rest wait for digests)


@dataclass(frozen=True)
class Lookup:
    fresh: list[Candidate]
    guid_churn: int  # items whose link is known under another GUID


class SeenStore:
    def __init__(self, connection: redis.Redis, ttl: timedelta) -> None:
        self.redis = connection
        self.ttl = int(ttl.total_seconds())

    def lookup(self, candidates: Sequence[Candidate]) -> Lookup:
        """Cheap pre-filter for the scheduler (one round trip): what is certainly seen is dropped,
        and GUID churn (a known story under another GUID) is counted."""
        if not candidates:
            return Lookup([], 0)
        values = self.redis.mget([c.key for c in candidates])
        fresh = [c for c, value in zip(candidates, values, strict=True) if value is None]
        churn = sum(1 for c, v in zip(candidates, values, strict=True) if v is not None and int(v) != c.tag)
        return Lookup(fresh, churn)

    def commit_new(
        self, feed: str, candidates: Sequence[Candidate], outbox: Outbox, now: datetime
    ) -> Committed:
        """Atomically: keep the candidates whose story is not seen yet, mark them seen and
        hand their deliveries to the outbox. Returns the candidates that were new."""
        seen_keys = sorted({c.key for c in candidates})
        if not seen_keys:
            return Committed([], ())
        all_deliveries = [d for c in candidates for d in c.deliveries]
        for _ in range(_MAX_WATCH_RETRIES):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(*seen_keys, *outbox.watch_keys(all_deliveries, now))  # type: ignore[no-untyped-call]
                    present = {
                        k for k, v in zip(seen_keys, pipe.mget(seen_keys), strict=True) if v is not None
                    }
                    new = _first_of_each_story(candidates, present)
                    routing = outbox.plan(pipe, [d for c in new for d in c.deliveries], now)
                    pipe.multi()
                    for candidate in new:
                        pipe.set(candidate.key, candidate.tag, ex=self.ttl)
                    if new:
                        pipe.hincrby(keys.feed_state(feed), "items_seen", len(new))
                        outbox.write(pipe, routing, now)
                    # Counted inside the transaction, so the metrics say exactly what was committed.
                    for kind, number in (("new", len(new)), ("duplicate", len(candidates) - len(new))):
                        if number:
                            pipe.hincrby(keys.METRICS_ITEMS, f"{feed}\x1f{kind}", number)
                    pipe.execute()
                    return Committed(new, routing.immediate if new else ())
                except redis.WatchError:
                    log.debug("feed=%s seen-store contention, retrying batch", feed)
        raise RuntimeError(f"feed={feed}: could not commit a batch after {_MAX_WATCH_RETRIES} tries")


def _first_of_each_story(candidates: Sequence[Candidate], present: set[str]) -> list[Candidate]:
    taken = set(present)
    new = []
    for candidate in candidates:
        if candidate.key not in taken:
            taken.add(candidate.key)
            new.append(candidate)
    return new


@dataclass
class FeedState:
    """What we remember about one feed between polls."""

    url: str | None = None  # where the feed now lives, when a permanent redirect moved it
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_poll: datetime | None = None
    last_success: datetime | None = None
    next_poll: datetime | None = None
    error: str | None = None
    error_count: int = 0
    items_seen: int = 0
    disabled: bool = False
    not_before: datetime | None = None  # backoff, Retry-After or cache lifetime: no poll before
    moved_from: str | None = None  # the configured URL that answered with a permanent redirect
    gone_url: str | None = None  # the URL that answered 410 Gone (disabled until the config changes)
    warning: str | None = None  # something odd but not an error (e.g. GUID churn)
    # A new random token with every write (see FeedStateStore); "" before the first.
    revision: str = field(default="", compare=False)
    # From this process's memory of its last read or write, not read from Redis just now.
    remembered: bool = field(default=False, compare=False)

    @classmethod
    def from_fields(cls, data: dict[str, str], remembered: bool = False) -> FeedState:
        return cls(
            url=data.get("url") or None,
            etag=data.get("etag") or None,
            last_modified=data.get("last_modified") or None,
            body_hash=data.get("body_hash") or None,
            last_poll=parse_utc(data.get("last_poll")),
            last_success=parse_utc(data.get("last_success")),
            next_poll=parse_utc(data.get("next_poll")),
            error=data.get("error") or None,
            error_count=int(data.get("error_count") or 0),
            items_seen=int(data.get("items_seen") or 0),
            disabled=data.get("disabled") == "1",
            not_before=parse_utc(data.get("not_before")),
            moved_from=data.get("moved_from") or None,
            gone_url=data.get("gone_url") or None,
            warning=data.get("warning") or None,
            revision=data.get(_REVISION, ""),
            remembered=remembered,
        )


_REVISION = "rev"
# Every write of a feed's state goes through this script: it sets the fields and a new revision
# (ARGV[2], random, so a revision is never seen twice, not even after a flush). With an expected
# revision (ARGV[1], "*" for none) it writes only if that is still the revision in Redis, and
# otherwise writes nothing. It returns whether it wrote, and the revision it replaced.
_WRITE_STATE = """
local revision = redis.call('HGET', KEYS[1], 'rev') or ''
if ARGV[1] ~= '*' and ARGV[1] ~= revision then
  return {0, revision}
end
redis.call('HSET', KEYS[1], 'rev', unpack(ARGV, 2))
return {1, revision}
"""


class FeedStateStore:
    """Per-feed poll state in one hash per feed.

    The store remembers, per feed, the state as this process last read or wrote it. A poll can
    start from that memory instead of reading Redis, and make its write conditional on the
    revision it started from: an unchanged poll is then one round trip, not two. If anyone else
    wrote in between (another process, a flushed Redis), the write is refused and the poll is
    made again from the state Redis has (pipeline._poll). The status and the workers' counts
    read and write Redis directly; only polls use the memory."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection
        self._write = connection.register_script(_WRITE_STATE)
        self._known: dict[str, dict[str, str]] = {}

    def get(self, feed: str) -> FeedState:
        """The state in Redis now."""
        raw = self.redis.hgetall(keys.feed_state(feed))
        fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}  # type: ignore[union-attr]
        self._known[feed] = fields
        return FeedState.from_fields(fields)

    def get_remembered(self, feed: str) -> FeedState:
        """The state as this process last read or wrote it (it may have moved on in Redis since),
        or, when there is no such memory, the state in Redis now. Only a state with a revision
        is remembered: "no revision" is what a flushed Redis has too, so it proves nothing."""
        fields = self._known.get(feed)
        if fields is None or not fields.get(_REVISION):
            return self.get(feed)
        return FeedState.from_fields(fields, remembered=True)

    def is_current(self, feed: str, state: FeedState) -> bool:
        """Whether Redis still holds the revision `state` was read at."""
        if not state.remembered:
            return True
        revision = self.redis.hget(keys.feed_state(feed), _REVISION)
        if (revision or b"").decode() == state.revision:  # type: ignore[union-attr]
            return True
        self._known.pop(feed, None)
        return False

    def update(self, feed: str, expect: FeedState | None = None, **values: Any) -> bool:
        """Set fields; None clears a field (stored empty, so a write is one command). Datetimes
        are stored as ISO UTC. With `expect`, only if Redis still holds the revision that state
        was read at: False (nothing written) when it does not."""
        to_set: dict[str, str] = {}
        for name, value in values.items():
            if value is None:
                to_set[name] = ""
            elif isinstance(value, datetime):
                to_set[name] = utc_iso(value)
            elif isinstance(value, bool):
                to_set[name] = "1" if value else "0"
            else:
                to_set[name] = str(value)
        revision = secrets.token_hex(8)
        arguments = ["*" if expect is None else expect.revision, revision]
        for name, text in to_set.items():
            arguments += (name, text)
        written, replaced = self._write(keys=[keys.feed_state(feed)], args=arguments)
        known = self._known.get(feed)
        if written and known is not None and known.get(_REVISION) == replaced.decode():
            self._known[feed] = known | to_set | {_REVISION: revision}
        else:  # refused, or someone else wrote in between: the whole state is no longer known here
            self._known.pop(feed, None)
        return bool(written)

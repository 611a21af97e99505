"""Redis state: the seen-store (atomic dedupe) and per-feed poll state.

The one place where 'mark seen' and 'enqueue deliveries' become a single MULTI/EXEC: a worker
that dies before EXEC leaves nothing behind (the batch is retried and finds the items unseen);
a worker that dies after EXEC leaves both the marks and the delivery jobs. There is no state in
between, so no alert is lost and none is enqueued twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
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

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> FeedState:
        data = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
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
        )


class FeedStateStore:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def get(self, feed: str) -> FeedState:
        return FeedState.from_hash(self.redis.hgetall(keys.feed_state(feed)))  # type: ignore[arg-type]

    def update(self, feed: str, **values: Any) -> None:
        """Set fields; None clears a field (stored empty: one HSET, not HSET and HDEL in a
        pipeline, on every poll). Datetimes are stored as ISO UTC."""
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
        if to_set:
            self.redis.hset(keys.feed_state(feed), mapping=to_set)  # type: ignore[arg-type]

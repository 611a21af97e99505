"""The poll schedule shared by every scheduler process, and the leases that make a feed polled
by one of them at a time (SPEC §9).

A sorted set holds each feed's due time. A scheduler claims due feeds atomically: their score
moves to the end of a lease and a lease hash names the claim's token. When the poll is done,
the scheduler that still holds the token sets the next due time. A scheduler that dies leaves
its feeds' scores at the end of their leases: they fall due again and another scheduler takes
them. A token that no longer matches (the lease lapsed and someone else claimed the feed) makes
every later write of the old holder a no-op: the token is the fence (see store.FeedStateStore).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis

from worker.adapters import garbage, keys
from worker.core.schedule import Due

# ARGV: now, lease end, token, feed state key prefix, feeds...  For each feed due by now: lease
# it. Returns per leased feed: its name, when it was due, and the revision of its state (so the
# scheduler knows whether its memory of that state is still current without reading it).
_CLAIM = """
redis.call('ZCARD', KEYS[1])  -- either key of another type fails the claim before it writes
redis.call('HLEN', KEYS[2])
local taken = {}
for i = 5, #ARGV do
  local feed = ARGV[i]
  local due = redis.call('ZSCORE', KEYS[1], feed)
  if due and tonumber(due) <= tonumber(ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], feed)
    redis.call('HSET', KEYS[2], feed, ARGV[3])
    taken[#taken + 1] = feed
    taken[#taken + 1] = due
    -- pcall: a feed state of another type (garbage) is the poll's to replace, not the claim's
    local revision = redis.pcall('HGET', ARGV[4] .. feed, 'rev')
    taken[#taken + 1] = type(revision) == 'string' and revision or ''
  end
end
return taken
"""
# ARGV: feed, token, next due. Only the holder of the lease sets the next time.
_COMPLETE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""
# ARGV: new score, release (1) or renew (0), then feed/token pairs: renew held leases until the
# new score, or hand them back, due at it.
_EXTEND = """
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    if ARGV[2] == '1' then redis.call('HDEL', KEYS[2], ARGV[i]) end
    n = n + 1
  end
end
return n
"""


# KEYS: schedule, schedule revision; ARGV: the caller's revision, then (score, feed) pairs. Puts
# the feeds back unless the schedule was last synced from another revision (a config this
# caller has not loaded yet): read and write in one step, so a sync in between cannot be undone.
_ADD_MISSING = """
local synced = redis.pcall('GET', KEYS[2])
if type(synced) == 'table' then synced = false end  -- garbage of another type: unknown
if synced and synced ~= ARGV[1] then return -1 end
local added = 0
for i = 2, #ARGV, 2 do
  added = added + redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
end
return added
"""


@dataclass(frozen=True)
class Lease:
    feed: str
    token: str
    due: datetime  # when the feed was due: lateness is measured from here
    revision: str = ""  # the revision of the feed's state when it was claimed


def _epoch(moment: datetime) -> float:
    return round(moment.timestamp(), 3)


# Scores are clamped to these times: garbage (inf, a year 30000) must not break a read.
_EARLIEST, _LATEST = 0.0, datetime(9999, 1, 1, tzinfo=UTC).timestamp()


def _moment(score: float | bytes | str) -> datetime:
    value = float(score)
    return datetime.fromtimestamp(min(max(value, _EARLIEST), _LATEST) if value == value else _EARLIEST, UTC)


P = ParamSpec("P")
R = TypeVar("R")


def _repairing(method: Callable[Concatenate[Schedule, P], R]) -> Callable[Concatenate[Schedule, P], R]:
    """Schedule methods: when the schedule or lease key holds another type (garbage), replace
    it and try once more. Nothing of ours is lost: a key of another type holds no schedule."""

    def run(self: Schedule, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e) or not self.repair():
                raise
        return method(self, *args, **kwargs)

    return run


class Schedule:
    def __init__(self, connection: redis.Redis, scheduler_id: str) -> None:
        self.redis = connection
        self.id = scheduler_id
        self._claim = connection.register_script(_CLAIM)
        self._complete = connection.register_script(_COMPLETE)
        self._add_missing = connection.register_script(_ADD_MISSING)
        self._extend = connection.register_script(_EXTEND)

    def repair(self) -> bool:
        """Replace the schedule or the lease hash if either holds another type (garbage): feeds
        are put back due at once by `add_missing` (the next heartbeat), and polls in flight
        find their leases gone and write nothing. True if anything was replaced."""
        replaced = garbage.replace_wrong_type(
            self.redis, "schedule", keys.SCHEDULE, "zset", "every feed is put back on it, due at once"
        )
        return (
            garbage.replace_wrong_type(
                self.redis, "lease", keys.LEASES, "hash", "polls in flight lose their leases"
            )
            or replaced
        )

    @_repairing
    def sync(self, first_due: dict[str, datetime], revision: str | None = None) -> list[str]:
        """Make the schedule hold exactly these feeds: new ones at their first time, known ones
        keep theirs, others leave it (and their leases). With `revision`, the config revision
        they come from is recorded in the same transaction (see `add_missing`). Returns the
        feeds that left."""
        members: list[bytes] = self.redis.zrange(keys.SCHEDULE, 0, -1)  # type: ignore[assignment]
        # Removed by their bytes: a member that is not UTF-8 (garbage) goes too.
        gone_members = [m for m in members if m.decode("utf-8", "replace") not in first_due]
        gone = sorted(m.decode("utf-8", "replace") for m in gone_members)
        with self.redis.pipeline() as pipe:
            if first_due:
                pipe.zadd(keys.SCHEDULE, {f: _epoch(t) for f, t in first_due.items()}, nx=True)
            if gone_members:
                pipe.zrem(keys.SCHEDULE, *gone_members)
                pipe.hdel(keys.LEASES, *gone_members)
            if revision is not None:
                pipe.set(keys.SCHEDULE_REVISION, revision)  # a SET replaces garbage of any type
            pipe.execute()
        return gone

    @_repairing
    def size(self) -> int:
        return int(self.redis.zcard(keys.SCHEDULE))

    @_repairing
    def add_missing(self, first_due: dict[str, datetime], revision: str | None = None) -> int:
        """Put back feeds the schedule lost (a flushed or restored Redis), keeping the rest.
        With `revision`: only if the schedule was last synced from that revision, or no
        revision is known; a scheduler left on an older config must not put back the feeds a
        newer one took off. Returns how many were put back."""
        if not first_due:
            return 0
        if revision is None:
            added: Any = self.redis.zadd(keys.SCHEDULE, {f: _epoch(t) for f, t in first_due.items()}, nx=True)
            return int(added)
        pairs = [value for feed, due in first_due.items() for value in (_epoch(due), feed)]
        added = self._add_missing(keys=[keys.SCHEDULE, keys.SCHEDULE_REVISION], args=[revision, *pairs])
        return max(int(added), 0)

    @_repairing
    def due(self, now: datetime, limit: int) -> list[Due]:
        """The first `limit` feeds due by now, earliest first (a peek: nothing is claimed)."""
        entries: list[Any] = self.redis.zrangebyscore(
            keys.SCHEDULE, "-inf", _epoch(now), start=0, num=limit, withscores=True
        )
        return [Due(member.decode("utf-8", "replace"), _moment(score)) for member, score in entries]

    @_repairing
    def put_back_unreachable(self, farthest: dict[str, datetime], now: datetime) -> list[str]:
        """Feeds due later than they could ever be (`farthest`: per feed, a time no backoff,
        Retry-After or cache lifetime reaches; a garbage score such as inf): due now instead.
        Returns them. Feeds of other configs are not touched."""
        if not farthest:
            return []
        nearest = _epoch(min(farthest.values()))
        entries: list[Any] = self.redis.zrangebyscore(
            keys.SCHEDULE, f"({nearest}", "+inf", start=0, num=1000, withscores=True
        )
        late = [name for name, score in ((m.decode("utf-8", "replace"), s) for m, s in entries)
                if name in farthest and score > _epoch(farthest[name])]  # fmt: skip
        if late:
            self.redis.zadd(keys.SCHEDULE, {name: _epoch(now) for name in late}, xx=True)
            for name in late:
                garbage.found("schedule", keys.SCHEDULE, f"had feed {name} due beyond any backoff", "due now")
        return late

    @_repairing
    def claim(self, feeds: Sequence[str], now: datetime, lease: timedelta) -> list[Lease]:
        """Lease those of `feeds` that are still due (another scheduler may have taken some)."""
        if not feeds:
            return []
        token = f"{self.id}@{_epoch(now)}"
        args: list[str | float] = [_epoch(now), _epoch(now + lease), token, keys.feed_state(""), *feeds]
        taken = self._claim(keys=[keys.SCHEDULE, keys.LEASES], args=args)
        return [
            Lease(taken[i].decode(), token, _moment(taken[i + 1]), taken[i + 2].decode())
            for i in range(0, len(taken), 3)
        ]

    @_repairing
    def complete(self, lease: Lease, next_due: datetime) -> bool:
        """The poll is done: the feed is next due at `next_due`. False if the lease was lost."""
        args: list[str | float] = [lease.feed, lease.token, _epoch(next_due)]
        return bool(self._complete(keys=[keys.SCHEDULE, keys.LEASES], args=args))

    def extend(self, leases: Iterable[Lease], until: datetime) -> int:
        """Keep held leases from lapsing while their polls run. Returns how many were held."""
        return self._extend_or_release(leases, until, release=False)

    def release(self, leases: Iterable[Lease], due: datetime) -> int:
        """Hand held leases back, the feeds due at `due` (a stopping scheduler: at once)."""
        return self._extend_or_release(leases, due, release=True)

    @_repairing
    def _extend_or_release(self, leases: Iterable[Lease], moment: datetime, release: bool) -> int:
        pairs = [part for lease in leases for part in (lease.feed, lease.token)]
        if not pairs:
            return 0
        args: list[str | float] = [_epoch(moment), "1" if release else "0", *pairs]
        return int(self._extend(keys=[keys.SCHEDULE, keys.LEASES], args=args))

    def next_polls(self, feeds: Sequence[str]) -> dict[str, datetime | None]:
        """When each feed is due next (for `status`, which only looks: a schedule of another
        type reads as empty, the schedulers replace it)."""
        try:
            scores = self.redis.zmscore(keys.SCHEDULE, list(feeds)) if feeds else []
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e):
                raise
            scores = [None] * len(feeds)
        return {f: _moment(s) if s is not None else None for f, s in zip(feeds, scores, strict=True)}

    def holders(self) -> dict[str, str]:
        """feed -> the scheduler id polling it right now."""
        raw: dict[bytes, bytes] = self.redis.hgetall(keys.LEASES)  # type: ignore[assignment]
        return {
            k.decode("utf-8", "replace"): v.decode("utf-8", "replace").split("@")[0] for k, v in raw.items()
        }


@dataclass(frozen=True)
class SchedulerInfo:
    id: str
    host: str
    last_beat: datetime
    in_flight: int = 0
    concurrency: int = 0


def new_scheduler_id() -> str:
    import os
    import secrets

    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class SchedulerRegistry:
    """Which scheduler processes are alive: each beats every few seconds; `live` prunes the
    silent ones (dead for longer than `stale`)."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def beat(self, info: SchedulerInfo) -> None:
        data = {"host": info.host, "in_flight": info.in_flight, "concurrency": info.concurrency}
        try:
            self._beat(info.id, json.dumps(data), info.last_beat)
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e) or not self._repair():
                raise
            self._beat(info.id, json.dumps(data), info.last_beat)

    def _beat(self, scheduler_id: str, data: str, moment: datetime) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.SCHEDULERS, scheduler_id, data)
            pipe.zadd(keys.SCHEDULER_BEATS, {scheduler_id: _epoch(moment)})
            pipe.execute()

    def _repair(self) -> bool:
        """The registry is rebuilt by every scheduler's beat: keys of another type are replaced."""
        effect = "the schedulers fill it again as they beat"
        replaced = garbage.replace_wrong_type(
            self.redis, "scheduler_registry", keys.SCHEDULERS, "hash", effect
        )
        return (
            garbage.replace_wrong_type(self.redis, "scheduler_registry", keys.SCHEDULER_BEATS, "zset", effect)
            or replaced
        )

    def leave(self, scheduler_id: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.SCHEDULERS, scheduler_id)
            pipe.zrem(keys.SCHEDULER_BEATS, scheduler_id)
            pipe.execute()

    def live(self, now: datetime, stale: timedelta) -> list[SchedulerInfo]:
        """The schedulers alive now (pruning the dead). Registry keys of another type read as
        empty: `status` only looks, the schedulers' beats replace them."""
        try:
            return self._live(now, stale)
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e):
                raise
            return []

    def _live(self, now: datetime, stale: timedelta) -> list[SchedulerInfo]:
        cutoff = _epoch(now - stale)
        dead: list[Any] = self.redis.zrangebyscore(keys.SCHEDULER_BEATS, "-inf", f"({cutoff}")
        if dead:
            self.redis.zrem(keys.SCHEDULER_BEATS, *dead)
            self.redis.hdel(keys.SCHEDULERS, *dead)
        beats: list[Any] = self.redis.zrange(keys.SCHEDULER_BEATS, 0, -1, withscores=True)
        members = [member for member, _ in beats]
        details: list[Any] = self.redis.hmget(keys.SCHEDULERS, members) if members else []
        return [
            _info(member.decode("utf-8", "replace"), _moment(score), _json(raw))
            for (member, score), raw in zip(beats, details, strict=True)
        ]


def _info(scheduler_id: str, last_beat: datetime, data: dict[str, Any]) -> SchedulerInfo:
    def number(name: str) -> int:
        value = data.get(name, 0)
        return value if isinstance(value, int) else 0

    host = data.get("host")
    return SchedulerInfo(
        scheduler_id, host if isinstance(host, str) else "", last_beat,
        number("in_flight"), number("concurrency"),
    )  # fmt: skip


def _json(raw: bytes | None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}

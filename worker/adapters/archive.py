"""The archive in Redis: the last archive.keep of items (at most archive.max_items), compressed.

Records are written inside the seen-store's transaction (store.SeenStore.commit_new), so an
archived item is exactly a committed one, with what was decided for it. The same transaction
trims the archive with a script, by age and by count, at most TRIM_STEP records a commit: the
archive is trimmed continuously and never grows past its bounds for long, and no commit waits
on a big trim. Its keys are not WATCHed: writers never conflict over it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import redis
from redis.client import Pipeline

from worker.adapters import keys
from worker.core.archive import ArchivedItem

TRIM_STEP = 1000  # records a commit may remove; a batch adds at most polling.batch_size
_READ_CHUNK = 500
_TRIM = """
local step = tonumber(ARGV[3])
local removed = 0
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, step)
if #old > 0 then
  redis.call('HDEL', KEYS[2], unpack(old))
  redis.call('ZREM', KEYS[1], unpack(old))
  removed = #old
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local ids = redis.call('ZRANGE', KEYS[1], 0, math.min(excess, step) - 1)
  redis.call('HDEL', KEYS[2], unpack(ids))
  redis.call('ZREM', KEYS[1], unpack(ids))
  removed = removed + #ids
end
return removed
"""


class Archive:
    def __init__(self, connection: redis.Redis, keep: timedelta, max_items: int) -> None:
        self.redis = connection
        self.keep = keep
        self.max_items = max_items
        self._trim = connection.register_script(_TRIM)

    def write(self, pipe: Pipeline, records: Sequence[ArchivedItem], now: datetime) -> None:
        """Queue the records and a trim (after MULTI)."""
        if records:
            pipe.hset(keys.ARCHIVE_ITEMS, mapping={r.item.id: r.pack() for r in records})
            pipe.zadd(keys.ARCHIVE_INDEX, {r.item.id: r.seen.timestamp() for r in records})
        self._trim(keys=self._keys, args=self._arguments(now), client=pipe)

    def trim(self, now: datetime) -> int:
        """Trim now (outside a commit); returns how many records went."""
        return int(self._trim(keys=self._keys, args=self._arguments(now)))

    _keys = (keys.ARCHIVE_INDEX, keys.ARCHIVE_ITEMS)

    def _arguments(self, now: datetime) -> list[str | int]:
        return [repr((now - self.keep).timestamp()), self.max_items, TRIM_STEP]

    def get(self, item_id: str) -> ArchivedItem | None:
        blob: bytes | None = self.redis.hget(keys.ARCHIVE_ITEMS, item_id)  # type: ignore[assignment]
        return ArchivedItem.unpack(blob) if blob else None

    def get_many(self, item_ids: Sequence[str]) -> list[ArchivedItem]:
        """The records of these ids that are still archived, in the order given."""
        found = []
        for start in range(0, len(item_ids), _READ_CHUNK):
            chunk = list(item_ids[start : start + _READ_CHUNK])
            blobs: list[bytes | None] = self.redis.hmget(keys.ARCHIVE_ITEMS, chunk) if chunk else []  # type: ignore[assignment]
            found += [ArchivedItem.unpack(b) for b in blobs if b]
        return found

    def newest_first(self, since: datetime) -> Iterator[ArchivedItem]:
        """Records archived since `since`, the newest first, read in chunks."""
        ids = [i.decode() for i in self.redis.zrevrangebyscore(keys.ARCHIVE_INDEX, "+inf", since.timestamp())]  # type: ignore[union-attr]
        for start in range(0, len(ids), _READ_CHUNK):
            yield from self.get_many(ids[start : start + _READ_CHUNK])

    def count(self) -> int:
        return int(self.redis.zcard(keys.ARCHIVE_INDEX))

"""The archive in Redis: the last archive.keep of items (at most archive.max_items), compressed.

Records are written inside the seen-store's transaction (store.SeenStore.commit_new), so an
archived item is exactly a committed one, with what was decided for it. The same transaction
trims the archive with a script, by age and by count, at most TRIM_STEP records a commit: the
archive is trimmed continuously and never grows past its bounds for long, and no commit waits
on a big trim. Its keys are not WATCHed: writers never conflict over it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.client import Pipeline

from worker.adapters import garbage, keys
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


# KEYS: the index, the records; ARGV[1]: garbage.MARK. Either key holding another type (garbage,
# no record of ours) is replaced, both together, so that the commit's HSET and ZADD work; the
# reply then says so (garbage.report).
_REPLACE_WRONG_TYPES = """
for i, want in ipairs({'zset', 'hash'}) do
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found ~= 'none' and found ~= want then
    redis.call('DEL', KEYS[1], KEYS[2])
    return ARGV[1] .. '\\0archive\\0' .. KEYS[i] .. '\\0replaced, the archive starts afresh\\0type\\0'
      .. want .. '\\0' .. found
  end
end
return ''
"""


class Archive:
    def __init__(self, connection: redis.Redis, keep: timedelta, max_items: int) -> None:
        self.redis = connection
        self.keep = keep
        self.max_items = max_items
        self._trim = connection.register_script(_TRIM)

    def write(self, pipe: Pipeline, records: Sequence[ArchivedItem], now: datetime) -> None:
        """Queue the records and a trim (after MULTI)."""
        pipe.eval(_REPLACE_WRONG_TYPES, 2, *self._keys, garbage.MARK)
        if records:
            pipe.hset(keys.ARCHIVE_ITEMS, mapping={r.item.id: r.pack() for r in records})
            pipe.zadd(keys.ARCHIVE_INDEX, {r.item.id: r.seen.timestamp() for r in records})
        self._trim(keys=self._keys, args=self._arguments(now), client=pipe)

    def trim(self, now: datetime) -> int:
        """Trim now (outside a commit); returns how many records went."""
        garbage.report([self.redis.eval(_REPLACE_WRONG_TYPES, 2, *self._keys, garbage.MARK)])
        return int(self._trim(keys=self._keys, args=self._arguments(now)))

    _keys = (keys.ARCHIVE_INDEX, keys.ARCHIVE_ITEMS)

    def _arguments(self, now: datetime) -> list[str | int]:
        return [repr((now - self.keep).timestamp()), self.max_items, TRIM_STEP]

    # Reading (`try`, `explain`): garbage reads as absent. A record that does not unpack is
    # skipped, a key of another type holds no records (the next commit replaces it).

    def get(self, item_id: str) -> ArchivedItem | None:
        found = self.get_many([item_id])
        return found[0] if found else None

    def get_many(self, item_ids: Sequence[str]) -> list[ArchivedItem]:
        """The records of these ids that are still archived, in the order given."""
        found = []
        for start in range(0, len(item_ids), _READ_CHUNK):
            chunk = list(item_ids[start : start + _READ_CHUNK])
            blobs = _or_empty(self.redis.hmget, keys.ARCHIVE_ITEMS, chunk) if chunk else []
            records = (_unpack(item_id, blob) for item_id, blob in zip(chunk, blobs, strict=False) if blob)
            found += [record for record in records if record]
        return found

    def newest_first(self, since: datetime) -> Iterator[ArchivedItem]:
        """Records archived since `since`, the newest first, read in chunks."""
        raw = _or_empty(self.redis.zrevrangebyscore, keys.ARCHIVE_INDEX, "+inf", since.timestamp())
        ids = [i.decode("utf-8", "replace") for i in raw]
        for start in range(0, len(ids), _READ_CHUNK):
            yield from self.get_many(ids[start : start + _READ_CHUNK])

    def count(self) -> int:
        return int(_or_empty(self.redis.zcard, keys.ARCHIVE_INDEX) or 0)


def _unpack(item_id: str, blob: bytes) -> ArchivedItem | None:
    try:
        return ArchivedItem.unpack(blob)
    except (ValueError, TypeError, KeyError, AttributeError, zlib.error):
        garbage.found(
            "archive", keys.ARCHIVE_ITEMS, f"holds a record of {item_id} that does not read", "skipped"
        )
        return None


def _or_empty(read: Callable[..., Any], *args: Any) -> Any:
    """read(*args), or [] when its key holds another type."""
    try:
        return read(*args)
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        return []

"""Where each new item's article page stands, in Redis (key template: keys.article): on the
queue already (so a poll before the worker marks the item seen does not fetch the page again),
or how many times its page failed to answer. One round trip to read, one to write."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

import redis

from worker.adapters import keys

QUEUED = "queued"
QUEUED_TTL = timedelta(hours=1)
TRIES_TTL = timedelta(days=1)


class ArticleMarks:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def read(self, item_ids: Sequence[str]) -> dict[str, str]:
        """The mark of each item that has one: QUEUED, or its failed tries as digits."""
        if not item_ids:
            return {}
        values = self.redis.mget([keys.article(i) for i in item_ids])
        return {i: v.decode() for i, v in zip(item_ids, values, strict=True) if isinstance(v, bytes)}

    def queued(self, item_ids: Iterable[str]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.set(keys.article(item_id), QUEUED, ex=int(QUEUED_TTL.total_seconds()))
            pipe.execute()

    def failed(self, tries: dict[str, int]) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            for item_id, count in tries.items():
                pipe.set(keys.article(item_id), str(count), ex=int(TRIES_TTL.total_seconds()))
            pipe.execute()

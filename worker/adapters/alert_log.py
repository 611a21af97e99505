"""The recent-alerts record in Redis (keys.ALERT_LOG): what fired, for `newswatch alerts`.

Workers write one entry per (alert, item) right after the commit that created its deliveries;
`newswatch alerts` reads the entries of a time window and asks each delivery's claim mark and
RQ job where it stands. The record is for people: a worker killed between the commit and this
write leaves that alert out of the list, never out of delivery.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from worker.adapters import keys
from worker.core.models import Delivery, utc_iso

TITLE_CHARACTERS = 300  # the record shows a title; the payload carries the whole one


@dataclass(frozen=True)
class AlertRecord:
    """One alert that fired for one item, and its deliveries: (channel, delivery id, held),
    held meaning it waits for a digest rather than going out at once."""

    at: datetime
    alert: str
    feed: str
    item: str
    title: str
    link: str | None
    deliveries: tuple[tuple[str, str, bool], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": utc_iso(self.at), "alert": self.alert, "feed": self.feed, "item": self.item,
            "title": self.title, "link": self.link, "deliveries": [list(d) for d in self.deliveries],
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlertRecord:
        return cls(
            datetime.fromisoformat(data["at"].replace("Z", "+00:00")),
            data["alert"], data["feed"], data["item"], data["title"], data.get("link"),
            tuple((str(c), str(i), bool(h)) for c, i, h in data["deliveries"]),
        )  # fmt: skip


def records_of(
    deliveries: Sequence[Delivery], immediate: Collection[str], now: datetime
) -> list[AlertRecord]:
    """The deliveries of one commit, grouped by (alert, item)."""
    grouped: dict[tuple[str, str], list[Delivery]] = {}
    for delivery in deliveries:
        item = delivery.payload["data"]["item"]
        grouped.setdefault((delivery.alert, item["id"]), []).append(delivery)
    records = []
    for (alert, _), group in grouped.items():
        item = group[0].payload["data"]["item"]
        held = tuple((d.channel, d.delivery_id, d.delivery_id not in immediate) for d in group)
        title = (item["title"] or "")[:TITLE_CHARACTERS]
        records.append(AlertRecord(now, alert, item["feed"], item["id"], title, item["link"], held))
    return records


class AlertLog:
    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def record(self, records: Sequence[AlertRecord]) -> None:
        if not records:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for entry in records:
                payload = json.dumps(entry.to_dict(), ensure_ascii=False)
                pipe.xadd(keys.ALERT_LOG, {"e": payload}, maxlen=keys.ALERT_LOG_MAX, approximate=True)
            pipe.expire(keys.ALERT_LOG, keys.ALERT_LOG_TTL)
            pipe.execute()

    def since(self, moment: datetime) -> list[AlertRecord]:
        """The entries written since `moment` (by Redis's clock, which names the entries), newest
        first. An entry that does not read (another version's) is skipped."""
        start = int(moment.astimezone(UTC).timestamp() * 1000)
        raw: Any = self.redis.xrevrange(keys.ALERT_LOG, max="+", min=str(start), count=keys.ALERT_LOG_MAX)
        records = []
        for _, fields in raw:
            try:
                records.append(AlertRecord.from_dict(json.loads(fields[b"e"])))
            except (KeyError, ValueError, TypeError):
                continue
        return records

    def marks(self, delivery_ids: Sequence[str]) -> dict[str, str]:
        """Each delivery's claim mark, where it has one: 'sent', or 'sending:<token>'."""
        if not delivery_ids:
            return {}
        values: list[bytes | None] = self.redis.mget([keys.delivery_state(i) for i in delivery_ids])  # type: ignore[assignment]
        return {i: v.decode() for i, v in zip(delivery_ids, values, strict=True) if v is not None}

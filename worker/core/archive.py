"""What the archive keeps of an item: the item as the pipeline saw it and what was decided for
it (its story, and per alert that matched: sent, digested, capped, held for quiet hours, held
by its story, or quiet: not alerted at all).
Pure; worker.adapters.archive keeps the records in Redis.

A record is compact JSON compressed with zlib: feed text compresses about 2:1, and the archive
holds up to archive.max_items of them (bytes per item in docs/performance.md).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.core.models import Item, parse_utc, utc_iso
from worker.core.outbox import Digested
from worker.core.quiet import local_time
from worker.core.stories import Placed

RECORD_VERSION = 1


@dataclass(frozen=True)
class Outcome:
    """What happened to one matching alert for this item."""

    # sent | digest | capped | quiet_hours (held for the alert's quiet hours, then in a digest) |
    # story | quiet (never alerted: a baseline, or published before polling.max_age)
    outcome: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"outcome": self.outcome, "detail": self.detail}


@dataclass(frozen=True)
class ArchivedItem:
    item: Item
    topics: tuple[str, ...]
    seen: datetime  # when the pipeline committed it
    story: str
    report: int
    alerts: dict[str, Outcome] = field(default_factory=dict)

    def pack(self) -> bytes:
        data = {
            "v": RECORD_VERSION,
            "item": self.item.to_dict(),
            "topics": list(self.topics),
            "seen": utc_iso(self.seen),
            "story": self.story,
            "report": self.report,
            "alerts": {name: o.to_dict() for name, o in self.alerts.items()},
        }
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return zlib.compress(text.encode("utf-8"), 6)

    @classmethod
    def unpack(cls, blob: bytes) -> ArchivedItem:
        data: dict[str, Any] = json.loads(zlib.decompress(blob))
        seen = parse_utc(data["seen"])
        assert seen is not None
        return cls(
            item=Item.from_dict(data["item"]),
            topics=tuple(data["topics"]),
            seen=seen,
            story=data["story"],
            report=int(data["report"]),
            alerts={name: Outcome(o["outcome"], o.get("detail", "")) for name, o in data["alerts"].items()},
        )


def outcomes(
    matched: Sequence[str],
    quiet: str | None,
    placed: Placed,
    immediate: set[str],
    digested: Mapping[str, Digested],
) -> dict[str, Outcome]:
    """Per alert that matched: what became of it. `immediate`: alerts sent now; `digested`:
    alert -> how this item's delivery waits for a digest. `quiet`: why none is alerted."""
    result = {}
    for alert in matched:
        if quiet:
            result[alert] = Outcome("quiet", quiet)
        elif alert in placed.held:
            result[alert] = Outcome(
                "story", f"fired with {placed.held[alert]}, an earlier report of the story"
            )
        elif alert in immediate:
            result[alert] = Outcome("sent")
        elif alert in digested:
            result[alert] = _held(digested[alert])
    return result


def _held(held: Digested) -> Outcome:
    end = utc_iso(held.window_end)
    if held.held_by == "quiet_hours" and held.quiet is not None:
        return Outcome(
            "quiet_hours", f"until {local_time(held.window_end, held.quiet)}; in the digest at {end}"
        )
    after = f", after quiet hours {held.quiet}" if held.quiet is not None else ""
    if held.held_by == "digest":
        return Outcome("digest", f"digest at {end}{after}")
    return Outcome("capped", f"max_per_hour reached; in the digest at {end}{after}")

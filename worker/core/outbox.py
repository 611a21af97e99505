"""Which alerts go out now and which wait for a digest (alert rules' `digest`, `max_per_hour`
and `quiet` hours).

Pure: the caller reads the hour's counters from Redis, this decides, the caller writes the
result in the same transaction that marks the items seen.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.core.identity import delivery_id
from worker.core.models import Delivery, utc_iso
from worker.core.quiet import QuietHours, quiet_until, release_time

CAP_WINDOW = timedelta(hours=1)  # max_per_hour counts per clock hour; the excess waits for its end


@dataclass(frozen=True)
class AlertPolicy:
    digest: timedelta | None = None
    max_per_hour: int | None = None
    quiet: QuietHours | None = None


@dataclass(frozen=True)
class Digested:
    """A delivery held back for the digest of (alert, channel) that closes at `window_end`."""

    delivery: Delivery
    window_end: datetime
    held_by: str = "digest"  # digest | capped | quiet_hours (the alert is in its quiet hours now)
    quiet: QuietHours | None = None  # the quiet hours that hold it, or that moved window_end


@dataclass(frozen=True)
class Routing:
    immediate: tuple[Delivery, ...]
    digested: tuple[Digested, ...]
    sent_this_hour: dict[str, int]  # alert -> immediate alerts counted this hour, after this batch


def window_end(now: datetime, window: timedelta) -> datetime:
    """End of the fixed window (aligned to the epoch) that contains `now`."""
    seconds = window.total_seconds()
    index = math.floor(now.timestamp() / seconds)
    return datetime.fromtimestamp((index + 1) * seconds, UTC)


def hour_index(now: datetime) -> int:
    return math.floor(now.timestamp() / CAP_WINDOW.total_seconds())


def route(
    deliveries: list[Delivery],
    policies: dict[str, AlertPolicy],
    sent_this_hour: dict[str, int],
    now: datetime,
) -> Routing:
    """Alerts in their quiet hours wait for the end of them; digest alerts wait for their
    window; capped alerts go out until the hour's cap is reached, the rest waits for the next
    digest (the alert's own window, else the end of the hour). A window that would close inside
    the alert's quiet hours closes at their end. The cap counts items sent at once: one item to
    three channels is one alert; items held for quiet hours do not count."""
    counts = dict(sent_this_hour)
    decided: dict[tuple[str, str], bool] = {}  # (alert, item id) -> goes out now
    immediate: list[Delivery] = []
    digested: list[Digested] = []
    for delivery in deliveries:
        policy = policies.get(delivery.alert, AlertPolicy())
        quiet_end = quiet_until(now, policy.quiet) if policy.quiet is not None else None
        key = (delivery.alert, delivery.payload["data"]["item"]["id"])
        if key not in decided:
            now_allowed = policy.digest is None and quiet_end is None
            if now_allowed and policy.max_per_hour is not None:
                now_allowed = counts.get(delivery.alert, 0) < policy.max_per_hour
                if now_allowed:
                    counts[delivery.alert] = counts.get(delivery.alert, 0) + 1
            decided[key] = now_allowed
        if decided[key]:
            immediate.append(delivery)
        elif quiet_end is not None:
            digested.append(Digested(delivery, quiet_end, "quiet_hours", policy.quiet))
        else:
            end = window_end(now, policy.digest or CAP_WINDOW)
            released = release_time(end, policy.quiet)
            held_by = "digest" if policy.digest is not None else "capped"
            moved_by = policy.quiet if released != end else None
            digested.append(Digested(delivery, released, held_by, moved_by))
    return Routing(tuple(immediate), tuple(digested), counts)


def postponed_flush(end: datetime, now: datetime, policy: AlertPolicy) -> datetime | None:
    """A digest due at `end` that finds its alert in quiet hours now (they were added to the
    config after it was scheduled, or its worker was down until the next night) waits for their
    end: that time, or None to send now. Quiet hours that end at `end` itself (the digest they
    held, run a moment early by a clock apart) do not hold it again."""
    if policy.quiet is None:
        return None
    until = quiet_until(now, policy.quiet)
    return until if until is not None and until > end else None


_ITEM_FIELDS = ("id", "feed", "title", "link", "published", "topics")


def digest_entry(entry: Any) -> bool:
    """Whether a held entry (as a digest buffer gives it back) is one a digest can render: the
    buffer may hold garbage written by someone else."""
    item = entry.get("item") if isinstance(entry, dict) else None
    return (
        isinstance(item, dict)
        and isinstance(entry.get("matched"), list)
        and all(f in item for f in _ITEM_FIELDS)
    )


def digest_delivery(
    alert: str, channel: str, end: datetime, entries: list[dict[str, Any]], now: datetime
) -> Delivery:
    """One message for every alert collected in a window; its id is the same on every try.

    The id names the items too, not only the window: a batch that began before the window's end
    and commits after its flush puts its items into the emptied buffer and has the flush run
    again; that second digest of the same window must not be taken for the first, already
    sent, or its items would be lost."""
    payload = {
        "type": "newswatch.digest",
        "timestamp": utc_iso(now),
        "data": {"alert": alert, "window_end": utc_iso(end), "count": len(entries), "items": entries},
    }
    items = "\n".join(sorted(str(entry["item"]["id"]) for entry in entries))
    held = hashlib.sha256(items.encode("utf-8")).hexdigest()[:16]
    return Delivery(delivery_id(alert, f"digest:{utc_iso(end)}:{held}", channel), alert, channel, payload)

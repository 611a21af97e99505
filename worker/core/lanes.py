"""Which waiting delivery starts next (SPEC §9): fair across channels and alerts, oldest first
within an alert, inside `delivery.concurrency` and each channel's own cap.

Pure: the sender (worker/sender.py) counts what is in flight and asks `Lanes.take` whenever a
slot is free.

- Channels: the one with the fewest sends in flight goes first (ties: the one whose last start
  is longest ago), so as slots free up they go to the channel that has the fewest.
- A channel that already has a send in flight takes another slot only while one stays free for
  each other channel with nothing in flight (at most a quarter of all slots are kept so). A
  send cannot be interrupted: without this, a dead receiver could hold every slot until its
  timeouts end, and another channel's alert would wait for them.
- Alerts: within a channel, one lane per alert, taking turns; an alert with 1,000 waiting items
  delays another alert's first item by one turn, not by 1,000 sends.
- Order: within a lane, the oldest item first (publication date, then arrival).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    total: int  # delivery.concurrency
    channels: Mapping[str, int] = field(default_factory=dict)  # channels.<name>.concurrency, where set

    def cap(self, channel: str) -> int:
        return min(self.total, self.channels.get(channel, self.total))

    @property
    def reserve(self) -> int:
        """At most this many slots stay free for channels that have nothing in flight."""
        return max(1, self.total // 4) if self.total > 1 else 0


class Lanes(Generic[T]):
    """Deliveries waiting to start, one lane per (channel, alert)."""

    def __init__(self, limits: Limits, channels: Iterable[str] = ()) -> None:
        self.limits = limits
        self._channels = set(channels)  # every channel that may need a slot
        self._waiting: dict[str, OrderedDict[str, list[tuple[str, int, T]]]] = {}
        self._arrivals = itertools.count()
        self._starts = itertools.count()
        self._last_start: dict[str, int] = {}
        self._size = 0
        self._per_channel: dict[str, int] = {}

    def __len__(self) -> int:
        return self._size

    def reconfigure(self, limits: Limits, channels: Iterable[str]) -> None:
        """New limits and channels (a live reload); what waits stays, in its lanes."""
        self.limits = limits
        self._channels = set(channels) | set(self._waiting)

    def push(self, channel: str, alert: str, order: str, entry: T) -> None:
        """`order` sorts the entries of one lane (an ISO date: oldest first)."""
        lanes = self._waiting.setdefault(channel, OrderedDict())
        heapq.heappush(lanes.setdefault(alert, []), (order, next(self._arrivals), entry))
        self._channels.add(channel)
        self._size += 1
        self._per_channel[channel] = self._per_channel.get(channel, 0) + 1

    def waiting_by_channel(self) -> dict[str, int]:
        return {channel: count for channel, count in self._per_channel.items() if count}

    def take(self, in_flight: Mapping[str, int]) -> tuple[str, T] | None:
        """The next entry to send and its channel, or None while nothing may start."""
        busy = sum(in_flight.values())
        if busy >= self.limits.total:
            return None
        ready = [channel for channel in self._waiting if self._may_start(channel, in_flight, busy)]
        if not ready:
            return None
        channel = min(ready, key=lambda c: (in_flight.get(c, 0), self._last_start.get(c, -1)))
        self._last_start[channel] = next(self._starts)
        return channel, self._pop(channel)

    def entries(self) -> list[T]:
        """Everything waiting, in no particular order."""
        return [entry for lanes in self._waiting.values() for heap in lanes.values() for *_, entry in heap]

    def pop_all(self) -> list[T]:
        """Everything waiting, removed."""
        waiting = self.entries()
        self._waiting.clear()
        self._per_channel.clear()
        self._size = 0
        return waiting

    def _may_start(self, channel: str, in_flight: Mapping[str, int], busy: int) -> bool:
        mine = in_flight.get(channel, 0)
        if mine >= self.limits.cap(channel):
            return False
        if mine == 0:
            return True  # the slots kept free are for exactly this
        idle_others = sum(1 for c in self._channels if c != channel and not in_flight.get(c))
        return self.limits.total - busy - 1 >= min(idle_others, self.limits.reserve)

    def _pop(self, channel: str) -> T:
        lanes = self._waiting[channel]
        alert, heap = next(iter(lanes.items()))
        _, _, entry = heapq.heappop(heap)
        if heap:
            lanes.move_to_end(alert)  # the next alert's turn
        else:
            del lanes[alert]
        if not lanes:
            del self._waiting[channel]
        self._size -= 1
        self._per_channel[channel] -= 1
        return entry

"""When each feed is due, which due feeds a scheduler takes now, and whether it keeps up. Pure:
the scheduler (worker.scheduling) passes the clock's time and random numbers in.

Feeds are due on one schedule shared by every scheduler process (a sorted set in Redis, see
adapters.schedule). A scheduler takes due feeds while it has free poll slots, leaving those
whose host is at its limit for later, so a slow host holds its own slots and no one else's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# A fresh schedule spreads first polls over up to `polling.jitter` of the interval, at most this
# long, so a start does not fire every feed in the same instant; longer when the feeds would
# not fit into it at the expected latency, never longer than a feed's own interval.
MAX_START_SPREAD = timedelta(seconds=10)
EXPECTED_LATENCY = timedelta(milliseconds=500)
# A poll that starts this much after its time counts as late (status, warnings).
LATE = timedelta(seconds=5)


def first_due(
    now: datetime, interval: timedelta, jitter: float, feeds: int, concurrency: int, unit_random: float
) -> datetime:
    """When a feed new to the schedule is first polled: within `jitter` of its interval (at
    most MAX_START_SPREAD; at once with no jitter), or over a window long enough that the start
    asks for at most half of what `concurrency` slots can poll."""
    needed = EXPECTED_LATENCY * (2 * feeds / max(1, concurrency))
    window = min(interval, max(min(interval * jitter, MAX_START_SPREAD), needed))
    return now + window * unit_random


def next_due(
    started: datetime,
    interval: timedelta,
    jitter: float,
    unit_random: float,
    not_before: datetime | None = None,
) -> datetime:
    """The next poll: one interval after this one started, give or take `jitter` of it (so
    feeds that started together drift apart), and not before a backoff, Retry-After or cache
    lifetime says."""
    due = started + interval * (1 + jitter * (2 * unit_random - 1))
    return max(due, not_before) if not_before is not None else due


@dataclass(frozen=True)
class Due:
    feed: str
    due: datetime


def choose(
    due: Sequence[Due],
    free_slots: int,
    host_of: Mapping[str, str],
    host_free: Mapping[str, int],
    per_host: int,
) -> list[Due]:
    """The due feeds to take now, in order of their time: at most `free_slots`, and per host no
    more than it has free slots (`host_free`, default `per_host`). Feeds this scheduler does not
    know (not in `host_of`: another config) are left to the others."""
    room = dict(host_free)
    chosen: list[Due] = []
    for entry in due:
        if len(chosen) >= free_slots:
            break
        host = host_of.get(entry.feed)
        if host is None:
            continue
        left = room.get(host, per_host)
        if left > 0:
            room[host] = left - 1
            chosen.append(entry)
    return chosen


@dataclass
class KeepingUp:
    """What a scheduler saw since its last report: enough to say whether, and why not, it keeps
    up. Filled by the scheduler, judged by `diagnosis`."""

    polls: int = 0
    late: int = 0
    worst: timedelta = timedelta(0)
    slots_full: int = 0  # dispatch rounds that found every slot busy while feeds were due
    host_limited: dict[str, int] = field(default_factory=dict)  # host -> rounds it held feeds back
    cpu_share: float = 0.0  # process CPU time / wall time over the period (1.0 = one core)

    def record(self, lateness: timedelta) -> None:
        self.polls += 1
        if lateness > LATE:
            self.late += 1
        self.worst = max(self.worst, lateness)


def diagnosis(seen: KeepingUp, concurrency: int, per_host: int) -> str | None:
    """None when the polls started on time; else what held them back, in words for the log."""
    if not seen.late:
        return None
    head = (
        f"{seen.late} of {seen.polls} polls started more than {int(LATE.total_seconds())} s late "
        f"(worst {seen.worst.total_seconds():.0f} s)"
    )
    if seen.cpu_share >= 0.9:  # one process runs Python on about one core at most
        return f"{head}: the scheduler is CPU-bound ({seen.cpu_share:.0%} of a core)"
    if seen.slots_full:
        return f"{head}: all {concurrency} poll slots were busy; raise polling.concurrency or add a scheduler"
    if seen.host_limited:
        host = max(seen.host_limited, key=lambda name: seen.host_limited[name])
        return f"{head}: feeds waited for their host ({host}: {per_host} polls at a time)"
    return head

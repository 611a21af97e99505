"""The one concurrent step of delivery: up to `delivery.concurrency` sends in flight per worker
process, on threads, taken from `core.lanes` (fair across channels and alerts, oldest first).

The sender knows nothing of Redis or receivers: it is given `work` (send and settle one entry),
`hand_back` (give entries that will not be sent by this process back to their RQ jobs) and
`refresh` (keep the claims and held jobs of waiting entries alive). Threads, not processes or
asyncio: a send is one blocking HTTP or SMTP exchange, httpcore's pool and redis-py are
thread-safe, and the URL guard and deadlines in adapters/net.py are per thread.

Entries come in two ways. `submit` takes them at once (the first tries of a batch job);
`hand_off` keeps them until `admit_handed_off` runs, which the worker calls after RQ has
finished the job that handed them off, so nothing settles a job RQ is still writing.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from worker.core.lanes import Lanes, Limits

log = logging.getLogger(__name__)
T = TypeVar("T")


class Sender(Generic[T]):
    def __init__(
        self,
        limits: Limits,
        channels: Iterable[str],
        lane_of: Callable[[T], tuple[str, str, str]],  # channel, alert, order within the lane
        work: Callable[[T], None],
        hand_back: Callable[[Sequence[T]], None],
        clock: Callable[[], datetime],
        refresh: Callable[[Sequence[T]], None] | None = None,
        refresh_every: float = 10.0,
    ) -> None:
        self._lanes: Lanes[T] = Lanes(limits, channels)
        self._limits = limits
        self._lane_of, self._work, self._hand_back, self._clock = lane_of, work, hand_back, clock
        self._refresh, self._refresh_every = refresh, refresh_every
        # One lock, two conditions: `_idle` wakes sender threads that wait for work, `_cond`
        # whoever waits for the state to change (room, drain, stop). A send that ended used to
        # wake every idle thread to find nothing to do: 17 looks into the lanes per send with 16
        # slots, and Condition.notify alone took ~3 % of a worker's CPU in a cold ingest.
        lock = threading.RLock()
        self._cond = threading.Condition(lock)
        self._idle = threading.Condition(lock)
        self._in_flight: Counter[str] = Counter()
        self._sending: dict[str, tuple[str, datetime]] = {}  # thread -> channel, start of its send
        self._handed: list[T] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None

    # --- taking work ---------------------------------------------------------------------------

    def submit(self, entries: Iterable[T]) -> None:
        with self._cond:
            for entry in entries:
                self._lanes.push(*self._lane_of(entry), entry)
            self._start_threads()
            self._idle.notify(len(self._lanes))
            self._cond.notify_all()

    def hand_off(self, entry: T) -> None:
        """Keep `entry` until `admit_handed_off` (its RQ job is still being written)."""
        with self._cond:
            self._handed.append(entry)

    def admit_handed_off(self) -> None:
        with self._cond:
            handed, self._handed = self._handed, []
        if handed:
            self.submit(handed)

    def reconfigure(self, limits: Limits, channels: Iterable[str]) -> None:
        """New limits and channels (a live reload): sends in flight end as they are; what waits
        starts under the new limits. More slots than before start threads as work comes."""
        with self._cond:
            self._limits = limits
            self._lanes.reconfigure(limits, channels)
            self._idle.notify_all()
            self._cond.notify_all()

    def wait_for_room(self, limit: int, at_most: timedelta, stalled_after: timedelta) -> None:
        """Block while more than `limit` entries wait for channels that are moving, for at most
        `at_most`: the worker takes its next job only then, so another worker with free slots
        takes it instead. A channel whose oldest send in flight has lasted `stalled_after` is
        not moving (a dead or very slow receiver): what waits for it never holds the worker."""
        deadline = self._clock() + at_most
        with self._cond:
            while self._moving_backlog(stalled_after) > limit:
                left = (deadline - self._clock()).total_seconds()
                if left <= 0:
                    return
                self._cond.wait(timeout=min(left, 0.1))  # a send ending wakes it; a stall does not

    def in_flight(self) -> int:
        with self._cond:
            return sum(self._in_flight.values())

    def waiting(self) -> int:
        with self._cond:
            return len(self._lanes) + len(self._handed)

    def _moving_backlog(self, stalled_after: timedelta) -> int:
        """Called with the lock held."""
        since = self._clock() - stalled_after
        stalled = {channel for channel, started in self._sending.values() if started < since}
        return sum(n for channel, n in self._lanes.waiting_by_channel().items() if channel not in stalled)

    # --- stopping ------------------------------------------------------------------------------

    def close(self, deadline: datetime | None, grace: float) -> int:
        """Send what waits until `deadline` (None: until nothing waits), hand the rest back, let
        the sends in flight end (at most `grace` seconds: each has its own timeout), stop.
        Returns how many entries were handed back."""
        handed_back: list[T] = []
        try:
            self._drain(deadline)
        finally:
            with self._cond:
                handed_back = self._lanes.pop_all() + self._handed
                self._handed = []
            if handed_back:
                self._hand_back(handed_back)
            self._stop(grace)
        return len(handed_back)

    def _drain(self, deadline: datetime | None) -> None:
        with self._cond:
            while len(self._lanes) or self._handed or sum(self._in_flight.values()):
                if self._handed:  # a hook that did not run: they go back, not out
                    break
                left = None if deadline is None else (deadline - self._clock()).total_seconds()
                if left is not None and left <= 0:
                    break
                self._cond.wait(timeout=min(left, 1.0) if left is not None else 1.0)

    def _stop(self, grace: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not sum(self._in_flight.values()), timeout=grace)
            if sum(self._in_flight.values()):
                log.error("%d sends still in flight after %.0fs; leaving them", self.in_flight(), grace)
            self._stopping = True
            self._idle.notify_all()
            self._cond.notify_all()
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=1.0)

    # --- the threads ---------------------------------------------------------------------------

    def _start_threads(self) -> None:
        """Called with the lock held: one thread per slot that may be busy, up to the limit."""
        wanted = min(self._limits.total, len(self._lanes) + sum(self._in_flight.values()))
        while len(self._threads) < wanted:
            thread = threading.Thread(target=self._run, name=f"sender-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()
        if self._refresh is not None and self._keeper is None:
            self._keeper = threading.Thread(target=self._keep_alive, name="sender-keeper", daemon=True)
            self._keeper.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while (taken := None if self._stopping else self._lanes.take(self._in_flight)) is None:
                    if self._stopping:
                        return
                    self._idle.wait()
                channel, entry = taken
                if len(self._lanes):
                    # One event can let more than one entry start (a send ending under the
                    # channels' reserve, say): each thread that starts one wakes the next.
                    self._idle.notify()
                self._in_flight[channel] += 1
                self._sending[threading.current_thread().name] = (channel, self._clock())
            try:
                self._work(entry)
            except Exception:  # `work` settles its own failures; this is a bug, and must not kill the slot
                log.exception("channel=%s send failed unexpectedly", channel)
            finally:
                with self._cond:
                    self._in_flight[channel] -= 1
                    del self._sending[threading.current_thread().name]
                    self._cond.notify_all()

    def _keep_alive(self) -> None:
        """While entries wait, their claims and held jobs must not lapse. The lock is held across
        the refresh so that no entry starts (and settles) in the middle of it."""
        assert self._refresh is not None
        while not self._stopped.wait(self._refresh_every):
            with self._cond:
                waiting = self._lanes.entries()
                if not waiting:
                    continue
                try:
                    self._refresh(waiting)
                except Exception as e:  # Redis away: the claims run on; the next tick tries again
                    log.warning("could not keep %d waiting deliveries claimed: %s", len(waiting), e)

"""Per-host politeness: at most `polling.per_host` fetches start against one host at a time.

A fetch that has run for SLOW_AFTER no longer counts: a feed that drips a byte a second until
`polling.timeout` puts no load on its host, and must not hold back the host's other feeds.
The limit is on what a host is asked to serve at once, not on how long a slow answer may take.
The scheduler's dispatcher asks `free` before it takes feeds, and the slot it takes is held by
the poll's thread (`hold`): that poll's own fetches against the host (robots.txt, the feed,
its article pages, one after another) run in it instead of waiting for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

SLOW_AFTER = 5.0  # seconds


class HostLimiter:
    def __init__(self, slow_after: float = SLOW_AFTER) -> None:
        self.slow_after = slow_after
        self._changed = threading.Condition()
        self._started: dict[str, list[float]] = {}
        self._held = threading.local()  # the host whose slot this thread holds (`hold`)

    def _young(self, host: str, now: float) -> list[float]:
        return [t for t in self._started.get(host, ()) if now - t < self.slow_after]

    def free(self, host: str, per_host: int) -> int:
        """How many more fetches may start against `host` now."""
        with self._changed:
            return per_host - len(self._young(host, time.monotonic()))

    def take(self, host: str) -> float:
        """Count a fetch against `host` from now, without waiting (the caller checked `free`).
        Returns the token to give back."""
        with self._changed:
            now = time.monotonic()
            self._started.setdefault(host, []).append(now)
            return now

    def hold(self, host: str) -> None:
        """This thread holds a slot on `host` (taken for it with `take`) until `release`."""
        self._held.host = host

    def release(self, host: str, token: float) -> None:
        self._held.host = None
        self.give_back(host, token)

    def give_back(self, host: str, token: float) -> None:
        with self._changed:
            started = self._started.get(host, [])
            started.remove(token)
            if not started:
                self._started.pop(host, None)
            self._changed.notify_all()

    @contextmanager
    def slot(self, host: str, per_host: int) -> Iterator[None]:
        """Wait for a slot on `host`, hold it for the block (or until the fetch turns slow). A
        thread that holds one on `host` already fetches in it: it would wait for itself."""
        if getattr(self._held, "host", None) == host:
            yield
            return
        with self._changed:
            while True:
                now = time.monotonic()
                young = self._young(host, now)
                if len(young) < per_host:
                    break
                self._changed.wait(timeout=self.slow_after - (now - min(young)))
        token = self.take(host)
        try:
            yield
        finally:
            self.give_back(host, token)


# One per process: polls, article pages and `newswatch poll` share the hosts' limits.
HOSTS = HostLimiter()

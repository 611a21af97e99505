"""Per-host politeness (worker.adapters.hosts): a slow fetch stops counting against its host."""

from __future__ import annotations

import threading

from tests.conftest import wait_for
from worker.adapters.hosts import HostLimiter


def test_a_host_takes_per_host_fetches_at_once_and_a_slow_one_stops_counting() -> None:
    hosts = HostLimiter(slow_after=0.3)
    first, second = hosts.take("a:443"), hosts.take("a:443")
    assert hosts.free("a:443", 2) == 0 and hosts.free("b:443", 2) == 2  # other hosts unaffected
    started = threading.Event()

    def third() -> None:
        with hosts.slot("a:443", 2):
            started.set()

    waiting = threading.Thread(target=third, daemon=True)
    waiting.start()
    assert not started.wait(0.1)  # both slots are held by young fetches
    wait_for(lambda: started.is_set(), timeout=5)  # the two turned slow: the third may start
    assert hosts.free("a:443", 2) == 2
    hosts.give_back("a:443", first)
    hosts.give_back("a:443", second)
    waiting.join()
    assert hosts.free("a:443", 2) == 2

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


def test_a_poll_fetches_again_from_its_host_in_the_slot_it_holds() -> None:
    """With per_host 1, a poll's robots.txt and article pages go to the host its own slot is
    on: they run in that slot (else each waited for it to turn slow); another poll waits."""
    hosts = HostLimiter(slow_after=60.0)
    token = hosts.take("a:443")  # the dispatcher's, for the poll below
    inside, other = threading.Event(), threading.Event()
    other_waited: list[bool] = []

    def poll() -> None:
        hosts.hold("a:443")
        with hosts.slot("a:443", 1), hosts.slot("a:443", 1):  # robots.txt, then an article
            inside.set()
        with hosts.slot("b:443", 1):  # a feed moved elsewhere: that host's own slot
            pass
        other_poll.start()
        other_waited.append(not other.wait(0.2))  # the slot is still this poll's
        hosts.release("a:443", token)

    def second_poll() -> None:
        with hosts.slot("a:443", 1):
            other.set()

    other_poll = threading.Thread(target=second_poll, daemon=True)
    first = threading.Thread(target=poll, daemon=True)
    first.start()
    wait_for(inside.is_set, timeout=5)  # long before the held slot could turn slow (60 s)
    first.join(timeout=5)
    wait_for(other.is_set, timeout=5)
    assert other_waited == [True] and hosts.free("a:443", 1) == 1

"""The sender's threads: how many run at once, what waits, what is kept alive, what goes back."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import wait_for
from worker.core.lanes import Limits
from worker.sender import Sender


class Recorder:
    """Work that blocks until released, and records what the sender asks of it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.done: list[str] = []
        self.refreshed: list[list[str]] = []
        self.handed_back: list[str] = []
        self.gate = threading.Event()

    def work(self, entry: str) -> None:
        with self.lock:
            self.started.append(entry)
        self.gate.wait(10)
        with self.lock:
            self.done.append(entry)

    def refresh(self, waiting: Sequence[str]) -> None:
        with self.lock:
            self.refreshed.append(sorted(waiting))

    def hand_back(self, entries: Sequence[str]) -> None:
        self.handed_back.extend(entries)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.gate.set()


def sender(recorder: Recorder, total: int, refresh_every: float = 60.0) -> Sender[str]:
    return Sender(
        Limits(total),
        ["hook"],
        lane_of=lambda entry: ("hook", "alert", entry),
        work=recorder.work,
        hand_back=recorder.hand_back,
        clock=lambda: datetime.now(UTC),
        refresh=recorder.refresh,
        refresh_every=refresh_every,
    )


def test_sends_run_side_by_side_up_to_the_limit(recorder: Recorder) -> None:
    s = sender(recorder, total=3)
    s.submit(["a", "b", "c", "d", "e"])
    # in_flight counts a send before its work starts: wait for the work itself.
    wait_for(lambda: len(recorder.started) == 3, timeout=5, interval=0.01)
    assert sorted(recorder.started) == ["a", "b", "c"] and s.in_flight() == 3 and s.waiting() == 2
    recorder.gate.set()
    assert s.close(None, grace=5) == 0  # nothing handed back: everything was sent
    assert sorted(recorder.done) == ["a", "b", "c", "d", "e"]


def test_waiting_entries_are_kept_alive_and_only_they(recorder: Recorder) -> None:
    s = sender(recorder, total=1, refresh_every=0.05)
    s.submit(["a", "b", "c"])
    wait_for(lambda: recorder.refreshed, timeout=5, interval=0.01)
    assert recorder.refreshed[0] == ["b", "c"]  # "a" is in flight: its claim covers its send
    recorder.gate.set()
    s.close(None, grace=5)


def test_handed_off_entries_wait_for_their_job_to_be_written(recorder: Recorder) -> None:
    recorder.gate.set()
    s = sender(recorder, total=2)
    s.hand_off("retry")
    assert recorder.started == [] and s.waiting() == 1
    s.admit_handed_off()  # RQ has written the job that handed it off
    wait_for(lambda: recorder.done == ["retry"], timeout=5, interval=0.01)
    s.close(None, grace=5)


def test_a_stopping_sender_hands_back_what_has_not_started_and_ends_what_has(recorder: Recorder) -> None:
    s = sender(recorder, total=2)
    s.submit(["a", "b", "c", "d"])
    wait_for(lambda: s.in_flight() == 2, timeout=5, interval=0.01)
    s.hand_off("e")  # its job's hook never ran: it goes back too
    threading.Timer(0.2, recorder.gate.set).start()  # the sends in flight end a little later
    assert s.close(datetime.now(UTC) - timedelta(seconds=1), grace=5) == 3
    assert sorted(recorder.handed_back) == ["c", "d", "e"]
    assert sorted(recorder.done) == ["a", "b"]  # waited for, not abandoned


def test_a_worker_waits_for_room_but_not_for_a_stalled_channel(recorder: Recorder) -> None:
    """After a job, the worker takes its next one only once at most a round of sends waits:
    another worker with free slots takes it meanwhile. What waits for a channel whose sends
    hang does not hold the worker."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    s = Sender(
        Limits(2),
        ["hook"],
        lane_of=lambda entry: ("hook", "alert", entry),
        work=recorder.work,
        hand_back=recorder.hand_back,
        clock=lambda: now[0],
    )
    s.submit(["a", "b", "c", "d", "e"])
    wait_for(lambda: s.in_flight() == 2, timeout=5, interval=0.01)
    waited = threading.Event()
    waiter = threading.Thread(
        target=lambda: (s.wait_for_room(2, timedelta(hours=1), timedelta(seconds=1)), waited.set())
    )
    waiter.start()
    assert not waited.wait(0.2)  # three wait for a channel that is moving: no new job yet
    now[0] += timedelta(seconds=2)  # the sends in flight have hung for 2 s: the channel stalled
    assert waited.wait(5)
    recorder.gate.set()
    s.close(None, grace=5)


def test_a_send_that_ends_does_not_wake_every_idle_slot(recorder: Recorder) -> None:
    """Sixteen slots, one entry at a time: each send wakes about one thread, not all sixteen
    (they woke to find nothing to do, in every send of a cold ingest)."""
    recorder.gate.set()  # every send ends at once
    s = sender(recorder, total=16)
    s.submit([f"warm-{n}" for n in range(16)])  # sixteen threads, then idle
    wait_for(lambda: len(recorder.done) == 16 and s.in_flight() == 0, timeout=5, interval=0.01)
    takes = 0
    take = s._lanes.take

    def counted(in_flight: Mapping[str, int]) -> tuple[str, str] | None:
        nonlocal takes
        takes += 1
        return take(in_flight)

    s._lanes.take = counted  # type: ignore[method-assign]
    for n in range(20):
        s.submit([f"e{n}"])
        done = 17 + n
        wait_for(
            lambda done=done: len(recorder.done) == done and s.in_flight() == 0, timeout=5, interval=0.005
        )
    s.close(None, grace=5)
    assert takes <= 20 * 4, f"{takes} looks into the lanes for 20 sends"

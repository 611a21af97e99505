"""Schedulers at scale (SPEC §9, issue 12), with real scheduler processes and a real Redis:
polls side by side, a dripping feed holding one slot only, several schedulers sharing the feeds
through leases and taking over a dead one's, and SIGTERM stopping at once."""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, LocalServer, Response, rss, stop_processes, wait_for
from tests.integration.helpers import make_runtime
from tests.integration.hostile import HostileServer
from worker.adapters import keys
from worker.adapters.schedule import Schedule
from worker.adapters.store import LeaseLostError
from worker.core.poll import StateUpdate


class HoldingServer:
    """Accepts every connection and never answers: each poll against it stays in flight."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.held: list[socket.socket] = []
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            with contextlib.suppress(OSError):
                connection, _ = self.listener.accept()
                self.held.append(connection)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}{path}"

    def close(self) -> None:
        self.stopped = True
        self.listener.close()
        for connection in self.held:
            connection.close()


class CountingServer(LocalServer):
    """A feed server that records, per path, when each request came and how many overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self.overlap: dict[str, int] = collections.Counter()
        self.max_overlap: dict[str, int] = collections.Counter()

    def feed(self, path: str, body: bytes) -> None:
        def answer(request: object) -> Response:
            with self.lock:
                self.times[path].append(time.monotonic())
                self.overlap[path] += 1
                self.max_overlap[path] = max(self.max_overlap[path], self.overlap[path])
            time.sleep(0.05)  # a little latency, so overlapping polls of one feed would show
            with self.lock:
                self.overlap[path] -= 1
            return Response(body, headers={"Content-Type": "application/rss+xml"})

        self.routes[path] = answer


@pytest.fixture
def feeds_server() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


def write_config(tmp_path: Path, redis_url: str, feeds: dict[str, str], polling: str = "") -> Path:
    lines = "\n".join(f'  - {{name: "{name}", url: "{url}"}}' for name, url in feeds.items())
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1s, jitter: 0%, max_age: off, allow_private_addresses: true,
          lease: 15s, {polling or "timeout: 10s"}}}
feeds:
{lines}
""",
        encoding="utf-8",
    )
    return path


def start(config: Path, tmp_path: Path, name: str, *command: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
    log = (tmp_path / f"{name}.log").open("ab")
    argv = list(command) or [sys.executable, "-m", "worker.cli", "scheduler"]
    return subprocess.Popen(
        [*argv, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env
    )


def status(config: Path) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--json", "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)  # type: ignore[no-any-return]


ONE_ITEM = rss([{"title": "Markt", "guid": "1", "link": "https://n.example/1"}])


def test_a_claim_is_taken_once_and_only_its_holder_reschedules(redis_url: str) -> None:
    connection = redis.Redis.from_url(redis_url)
    a, b = Schedule(connection, "a"), Schedule(connection, "b")
    now = datetime.now(UTC).replace(microsecond=0)
    a.sync({"f1": now - timedelta(seconds=1), "f2": now + timedelta(hours=1)})
    assert [d.feed for d in b.due(now, 10)] == ["f1"]
    (lease,) = a.claim(["f1", "f2"], now, timedelta(seconds=30))  # f2 is not due
    assert b.claim(["f1"], now, timedelta(seconds=30)) == []  # held by a
    assert not b.complete(lease.__class__("f1", "b@0", lease.due), now)  # not b's to finish
    assert a.holders() == {"f1": "a"}
    # a's lease lapses (a died): f1 is due again at the lease's end, and b takes it.
    later = now + timedelta(seconds=31)
    (taken,) = b.claim(["f1"], later, timedelta(seconds=30))
    assert not a.complete(lease, later + timedelta(seconds=60))  # a woke up: its token is dead
    assert b.complete(taken, later + timedelta(seconds=5))
    assert b.next_polls(["f1"]) == {"f1": later + timedelta(seconds=5)}
    assert a.holders() == {}
    # A flush loses the schedule; add_missing puts the feeds back, sync drops feeds that left.
    connection.delete(keys.SCHEDULE)
    assert a.add_missing({"f1": now, "f2": now}) == 2
    assert a.sync({"f1": now}) == ["f2"]


def test_a_scheduler_on_an_older_config_puts_no_removed_feed_back(redis_url: str) -> None:
    """A reload took f2 off (revision "new"); b still runs revision "old", whose feeds include
    f2: b's heartbeat must not put f2 back, whenever it runs. A flushed Redis (no revision
    known) is put back by anyone."""
    connection = redis.Redis.from_url(redis_url)
    a, b = Schedule(connection, "a"), Schedule(connection, "b")
    now = datetime.now(UTC).replace(microsecond=0)
    a.sync({"f1": now, "f2": now}, "old")
    assert a.sync({"f1": now}, "new") == ["f2"]
    assert connection.get(keys.SCHEDULE_REVISION) == b"new"  # written with the removal
    assert b.add_missing({"f1": now, "f2": now}, "old") == 0
    assert [d.feed for d in a.due(now, 10)] == ["f1"]
    assert b.add_missing({"f1": now, "f2": now}, "new") == 1  # same revision: f2 is lost, put back
    connection.delete(keys.SCHEDULE, keys.SCHEDULE_REVISION)
    assert b.add_missing({"f1": now, "f2": now}, "old") == 2
    connection.delete(keys.SCHEDULE, keys.SCHEDULE_REVISION)
    connection.hset(keys.SCHEDULE_REVISION, "garbage", "1")  # of another type: unknown
    assert b.add_missing({"f1": now}, "old") == 1


def test_a_scheduler_whose_lease_lapsed_writes_no_state(tmp_path: Path, redis_url: str) -> None:
    rt = make_runtime(tmp_path, redis_url, 'feeds:\n  - {name: f1, url: "http://127.0.0.1:9/x"}')
    now = rt.clock()
    a, b = Schedule(rt.redis, "a"), Schedule(rt.redis, "b")
    a.sync({"f1": now})
    (stale,) = a.claim(["f1"], now, timedelta(seconds=30))
    (current,) = b.claim(["f1"], now + timedelta(seconds=31), timedelta(seconds=30))
    rt.feed_states.write("f1", StateUpdate(error="from b"), lease=current.token)
    with pytest.raises(LeaseLostError):
        rt.feed_states.write("f1", StateUpdate(error="from a, too late"), lease=stale.token)
    assert rt.feed_states.get("f1").error == "from b"


def test_a_dripping_feed_holds_one_slot_and_delays_no_other_feed(
    tmp_path: Path, redis_url: str, feeds_server: CountingServer
) -> None:
    hostile = HostileServer()
    for n in range(6):
        feeds_server.feed(f"/f{n}", ONE_ITEM)
    feeds = {f"f{n}": feeds_server.url(f"/f{n}") for n in range(6)}
    feeds |= {"drip1": hostile.url("/drip-body"), "drip2": hostile.url("/drip-headers")}
    config = write_config(tmp_path, redis_url, feeds, "timeout: 60s, concurrency: 8, per_host: 2")
    scheduler = start(config, tmp_path, "scheduler")
    try:
        # Both drips are fetched for up to a minute; meanwhile every other feed keeps its 1 s rhythm.
        wait_for(lambda: hostile.dripped["/drip-body"] >= 1 and hostile.dripped["/drip-headers"] >= 1, 30)
        mark = time.monotonic()
        wait_for(
            lambda: all(sum(t > mark for t in feeds_server.times[f"/f{n}"]) >= 4 for n in range(6)),
            timeout=40,
        )
        drips = dict(hostile.dripped)
        assert scheduler.poll() is None
        wait_for(lambda: hostile.dripped["/drip-body"] > drips["/drip-body"], 10)  # still dripping
        late = {f["name"]: f["late"] for f in status(config)["feeds"] if f["name"].startswith("f")}
        assert all(seconds is not None and seconds < 5 for seconds in late.values()), late
    finally:
        stop_processes(scheduler)
        hostile.close()


def test_two_schedulers_share_the_feeds_and_one_takes_over_when_the_other_is_killed(
    tmp_path: Path, redis_url: str, feeds_server: CountingServer
) -> None:
    names = [f"f{n}" for n in range(20)]
    for name in names:
        feeds_server.feed(f"/{name}", ONE_ITEM)
    config = write_config(tmp_path, redis_url, {n: feeds_server.url(f"/{n}") for n in names})
    first, second = start(config, tmp_path, "s1"), start(config, tmp_path, "s2")
    try:

        def both_poll() -> bool:
            data = status(config)
            return len(data["schedulers"]) == 2 and all(s["feeds"] > 0 for s in data["schedulers"])

        wait_for(both_poll, timeout=60, interval=0.5)
        wait_for(lambda: all(len(feeds_server.times[f"/{n}"]) >= 4 for n in names), timeout=30)
        # One scheduler at a time per feed, and never a second poll within the interval.
        assert max(feeds_server.max_overlap.values()) == 1
        gaps = [b - a for times in feeds_server.times.values() for a, b in itertools.pairwise(times)]
        assert min(gaps) > 0.5, min(gaps)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed = time.monotonic()
        # Within the lease (15 s) and an interval, every feed is polled again by the survivor.
        wait_for(lambda: all(any(t > killed + 1 for t in feeds_server.times[f"/{n}"]) for n in names), 30)
        assert max(feeds_server.max_overlap.values()) == 1
        survivor = {f["polled_by"] for f in status(config)["feeds"]}
        assert len(survivor) == 1 and second.poll() is None
    finally:
        stop_processes(first, second)


def test_sigterm_stops_a_scheduler_with_a_thousand_polls_in_flight_and_hands_them_back(
    tmp_path: Path, redis_url: str
) -> None:
    holder = HoldingServer()
    names = [f"f{n}" for n in range(1000)]
    config = write_config(
        tmp_path, redis_url, {n: holder.url(f"/{n}") for n in names},
        "timeout: 60s, concurrency: 1000, per_host: 1000",
    )  # fmt: skip
    scheduler = start(config, tmp_path, "scheduler")
    try:
        wait_for(lambda: len(holder.held) >= 1000, timeout=60, interval=0.5)
        scheduler.send_signal(signal.SIGTERM)
        try:
            code = scheduler.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the scheduler did not stop within 10 s of SIGTERM")
        assert code == 0
        connection = redis.Redis.from_url(redis_url)
        # Nothing lost: no lease left behind, every feed due again at once for another scheduler.
        assert connection.hlen(keys.LEASES) == 0
        due = connection.zrangebyscore(keys.SCHEDULE, "-inf", time.time())
        assert len(due) == 1000
        assert "scheduler stopped" in (tmp_path / "scheduler.log").read_text()
    finally:
        stop_processes(scheduler)
        holder.close()


def test_python_scheduler_py_is_the_scheduler(
    tmp_path: Path, redis_url: str, feeds_server: CountingServer
) -> None:
    feeds_server.feed("/f", ONE_ITEM)
    config = write_config(tmp_path, redis_url, {"f": feeds_server.url("/f")})
    scheduler = start(config, tmp_path, "scheduler", sys.executable, "scheduler.py")
    try:
        wait_for(lambda: len(feeds_server.times["/f"]) >= 2, timeout=30)
    finally:
        stop_processes(scheduler)


def test_a_scheduler_that_cannot_keep_up_says_so_and_why(
    tmp_path: Path, redis_url: str, feeds_server: CountingServer
) -> None:
    def slow(request: object) -> Response:
        time.sleep(0.6)
        return Response(ONE_ITEM)

    for n in range(12):  # 12 polls of 0.6 s a second, one at a time: each starts about 6 s late
        feeds_server.routes[f"/f{n}"] = slow
    config = write_config(
        tmp_path, redis_url, {f"f{n}": feeds_server.url(f"/f{n}") for n in range(12)}, "concurrency: 1"
    )
    scheduler = start(config, tmp_path, "scheduler")
    try:
        log = tmp_path / "scheduler.log"
        wait_for(lambda: "not keeping up" in log.read_text(), timeout=40, interval=0.5)
        assert "all 1 poll slots were busy; raise polling.concurrency" in log.read_text()
        late = [f["late"] for f in status(config)["feeds"]]
        assert max(late) > 5, late  # and status shows by how much
    finally:
        stop_processes(scheduler)

"""Crashes and restarts under load, with the daemon's real processes: workers SIGKILLed at random
points, redis-server stopped and started again (AOF on), the seen-store wiped. Each test checks
the exact alerts received and that the daemon processes are still alive."""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, LocalServer, RedisServer, Response, rss, stop_processes, wait_for
from tests.integration.receivers import Answer, SlowReceiver


def stories(start: int, count: int) -> list[dict[str, str]]:
    """Every third story mentions DeepSeek."""
    return [
        {
            "title": f"{'DeepSeek' if n % 3 == 0 else 'Markt'} Meldung {n}",
            "guid": f"g{n}",
            "link": f"https://n.example/{n}",
        }
        for n in range(start, start + count)
    ]


def expected_titles(items: list[dict[str, str]]) -> set[str]:
    return {i["title"] for i in items if i["title"].startswith("DeepSeek")}


class Daemon:
    """`newswatch scheduler` and N `newswatch worker` processes, each restartable."""

    def __init__(
        self, tmp_path: Path, redis_url: str, server: LocalServer, workers: int = 2, hook: str | None = None
    ) -> None:
        self.config = tmp_path / "newswatch.yaml"
        self.config.write_text(
            f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 1s, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true, batch_size: 10}}
delivery: {{retries: [1s, 1s, 2s, 2s, 5s], timeout: 3s}}
feeds:
  - {{name: news, url: "{server.url("/feed")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{hook or server.url("/hook")}"}}
""",
            encoding="utf-8",
        )
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
        self.scheduler = self.start("scheduler")
        self.workers = [self.start("worker") for _ in range(workers)]

    def start(self, role: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{role}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", role, "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
        )  # fmt: skip

    def kill_worker(self, index: int) -> None:
        """SIGKILL a worker and its work horse, as an OOM kill of the container would."""
        process = self.workers[index]
        horses = subprocess.run(
            ["pgrep", "-P", str(process.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in [process.pid, *map(int, horses)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()
        self.workers[index] = self.start("worker")

    def alive(self) -> bool:
        return all(p.poll() is None for p in [self.scheduler, *self.workers])

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.tmp_path.glob("*.log"))

    def stop(self) -> str:
        stop_processes(self.scheduler, *self.workers)
        return self.logs()


def idle(redis_url: str) -> bool:
    """Nothing queued, running or waiting for its time: every job the alerts caused has run, so
    a repeat, if there is one, has already reached the receiver."""
    from worker.adapters import queues, rqcompat

    connection = redis.Redis.from_url(redis_url)
    counts = queues.queue_counts(connection)
    held = sum(rqcompat.scheduled_count(queues.queue(connection, c.name)) for c in counts)
    return held == 0 and all(c.queued == 0 and c.started == 0 for c in counts)


def daemon_after_first_alerts(
    tmp_path: Path, redis_url: str, server: LocalServer, items: list[dict[str, str]]
) -> Daemon:
    """The daemon on a feed of `items`, once it has alerted every DeepSeek story among them."""
    server.routes["/feed"] = Response(rss(items))
    server.routes["/hook"] = Response(b"ok")
    daemon = Daemon(tmp_path, redis_url, server)
    try:
        wait_for(lambda: set(received(server)) == expected_titles(items), timeout=60)
        # And the batches that sent them have finished: a Redis flushed while a job is finishing
        # deletes the job under RQ, which runs it again (on a wiped seen-store: its alerts again).
        wait_for(lambda: idle(redis_url), timeout=60)
    except BaseException:
        daemon.stop()
        raise
    return daemon


def diagnose(redis_url: str, missing: set[str]) -> str:
    """What the queues hold when alerts are missing: the failure message says where they are."""
    from rq import Queue
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
    from rq.serializers import JSONSerializer

    connection = redis.Redis.from_url(redis_url)
    lines = [f"missing {len(missing)}: {sorted(missing)[:5]}"]
    for name in ("newswatch-items", "newswatch-deliveries"):
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        lines.append(
            f"{name}: queued={queue.count} started={StartedJobRegistry(queue=queue).get_job_ids()} "
            f"scheduled={ScheduledJobRegistry(queue=queue).count} failed={FailedJobRegistry(queue=queue).count}"
        )
        for job_id in FailedJobRegistry(queue=queue).get_job_ids()[:3]:
            job = queue.fetch_job(job_id)
            result = job.latest_result() if job else None
            lines.append(f"  failed {job_id}: {(result.exc_string or '')[-300:] if result else '?'}")
    return "\n".join(lines)


def received(server: LocalServer) -> collections.Counter[str]:
    return collections.Counter(r.json()["data"]["item"]["title"] for r in server.received("/hook"))


def assert_once_each(server: LocalServer, expected: set[str], allow_same_id_repeat: bool = False) -> None:
    counts = received(server)
    assert set(counts) == expected, (sorted(set(counts) - expected), sorted(expected - set(counts)))
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for request in server.received("/hook"):
        ids[request.json()["data"]["item"]["title"]].add(request.headers["webhook-id"])
    assert all(len(v) == 1 for v in ids.values()), "an alert was sent under two different ids"
    if not allow_same_id_repeat:
        assert all(c == 1 for c in counts.values()), {t: c for t, c in counts.items() if c > 1}


@pytest.mark.timeout(300)
def test_workers_sigkilled_at_random_points_lose_and_double_nothing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    items = stories(0, 300)
    http_server.routes["/feed"] = Response(rss(items))
    http_server.routes["/hook"] = lambda request: (time.sleep(0.02), Response(b"ok"))[1]
    daemon = Daemon(tmp_path, redis_url, http_server)
    rng = random.Random(7)
    try:
        for _ in range(12):  # kill while batches and deliveries are under way
            time.sleep(rng.uniform(0.2, 0.8))
            daemon.kill_worker(rng.randrange(2))
        more = stories(300, 60)
        http_server.routes["/feed"] = Response(rss(items + more))
        for _ in range(4):
            time.sleep(rng.uniform(0.2, 0.6))
            daemon.kill_worker(rng.randrange(2))
        expected = expected_titles(items + more)
        # RQ notices abandoned jobs within about a minute (see queues.NewswatchWorker) and re-runs them.
        try:
            wait_for(lambda: set(received(http_server)) >= expected, timeout=120, interval=0.5)
        except AssertionError:
            raise AssertionError(diagnose(redis_url, expected - set(received(http_server)))) from None
        wait_for(lambda: idle(redis_url), timeout=150, interval=0.5)  # abandoned jobs re-run too
        assert daemon.alive()
        assert_once_each(http_server, expected, allow_same_id_repeat=True)
        repeats = sum(c - 1 for c in received(http_server).values())
        assert repeats <= 16, f"{repeats} repeats: more than one per kill"  # only the kill window may repeat
    finally:
        daemon.stop()


@pytest.mark.timeout(420)  # its waits (60 + 150 + 150 s) end first, with their message
def test_a_worker_sigkilled_mid_burst_loses_and_doubles_nothing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """300 alerts at once to a receiver that answers after 100 ms: each worker has up to 16
    sends in flight and about a hundred more waiting when one is killed. The waiting ones go
    out when their held jobs come due (their claims lapsed by then); of those in flight, a
    receiver may see at most each once more, with the same id."""
    items = stories(0, 900)
    receiver = SlowReceiver(lambda path, payload, tries: Answer(delay=0.1))
    http_server.routes["/feed"] = Response(rss(items))
    daemon = Daemon(tmp_path, redis_url, http_server, hook=receiver.url("/hook"))
    expected = expected_titles(items)
    try:
        wait_for(lambda: len(receiver.delivered("/hook")) >= 50, timeout=60, interval=0.02)
        daemon.kill_worker(0)
        assert len(receiver.delivered("/hook")) < len(expected) // 2  # mid-burst
        try:
            wait_for(lambda: set(receiver.titles("/hook")) >= expected, timeout=150, interval=0.5)
        except AssertionError:
            raise AssertionError(diagnose(redis_url, expected - set(receiver.titles("/hook")))) from None
        # The killed worker's batch is re-run once found abandoned: up to ~75 s after it started
        # (queues.JOB_MONITORING_INTERVAL's note), as in the test above.
        try:
            wait_for(lambda: idle(redis_url), timeout=150, interval=0.5)
        except AssertionError:
            raise AssertionError("not idle: " + diagnose(redis_url, set())) from None
        assert daemon.alive()
    finally:
        daemon.stop()
        receiver.close()
    counts = collections.Counter(receiver.titles("/hook"))
    assert set(counts) == expected
    ids: dict[str, set[str]] = collections.defaultdict(set)
    for arrival in receiver.delivered("/hook"):
        ids[arrival.payload["data"]["item"]["title"]].add(arrival.headers["webhook-id"])
    assert all(len(v) == 1 for v in ids.values()), "an alert was sent under two different ids"
    assert sum(c - 1 for c in counts.values()) <= 16, "more repeats than sends in flight at the kill"


def test_redis_restart_under_load(
    tmp_path: Path, redis_server: RedisServer, redis_url: str, http_server: LocalServer
) -> None:
    first = stories(0, 60)
    daemon = daemon_after_first_alerts(tmp_path, redis_url, http_server, first)
    try:
        connection = redis.Redis.from_url(redis_url)
        connection.bgrewriteaof()
        wait_for(lambda: not connection.info("persistence")["aof_rewrite_in_progress"], timeout=30)
        redis_server.stop()
        # While Redis is away the feed gets new stories: they must not be dropped.
        second = stories(60, 30)
        http_server.routes["/feed"] = Response(rss(first + second))
        wait_for(lambda: "Redis unavailable" in daemon.logs(), timeout=30)  # the scheduler met the outage
        redis_server.start()
        wait_for(
            lambda: set(received(http_server)) == expected_titles(first + second), timeout=90, interval=0.5
        )
        wait_for(lambda: idle(redis_url), timeout=90, interval=0.5)
        assert daemon.alive()
        assert_once_each(http_server, expected_titles(first + second))
    finally:
        daemon.stop()


def test_wiped_seen_store_rebaselines_without_an_alert_flood(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    first = stories(0, 30)
    daemon = daemon_after_first_alerts(tmp_path, redis_url, http_server, first)
    try:
        redis.Redis.from_url(redis_url).flushall()  # a new volume, a FLUSHALL: the memory is gone
        wait_for(lambda: "re-baselining" in daemon.logs(), timeout=30)
        wait_for(lambda: idle(redis_url), timeout=30)  # the baseline batch is recorded
        later = stories(30, 6)
        http_server.routes["/feed"] = Response(rss(first + later))
        wait_for(lambda: set(received(http_server)) == expected_titles(first + later), timeout=60)
        wait_for(lambda: idle(redis_url), timeout=60, interval=0.5)
        assert daemon.alive()
        assert_once_each(http_server, expected_titles(first + later))
    finally:
        logs = daemon.stop()
    assert logs.count("re-baselining") == 1

"""`make bench`, scale part (issue 12): many feeds at real network latency, on many hosts.

Feeds are served from many loopback addresses (127.0.x.y: every address in 127.0.0.0/8 is this
machine, so each is a host of its own to newswatch's per-host limits), every answer 300 ms
late, 2 % of the feeds dripping a byte a second until the poll's timeout. The scheduler runs as
its own process (`newswatch scheduler`, one worker draining the new items), exactly as users run
it. What is measured comes from the feed server's side (when each feed was asked for), not from
newswatch's own bookkeeping, and from /proc (CPU and memory of the scheduler process).

    python bench/scale.py [--quick] [--out bench/scale-results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import free_port  # noqa: E402

ETAG = '"v1"'
BODY = (
    '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {n}</title>'
    + "".join(
        f"<item><title>Meldung {{n}}-{i}</title><link>https://n{{n}}.example/{i}</link><guid>{{n}}-{i}</guid></item>"
        for i in range(3)
    )
    + "</channel></rss>"
)


def address(host: int) -> str:
    """The loopback address of host number `host` (0-based): 127.0.10.1, 127.0.10.2, ..."""
    return f"127.0.{10 + host // 250}.{host % 250 + 1}"


@dataclass
class FeedFarm:
    """An asyncio HTTP/1.1 server (keep-alive, ETag) on `hosts` loopback addresses."""

    hosts: int
    latency: float
    dripping: frozenset[int]
    port: int = 0
    arrivals: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def start(self) -> None:
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("feed farm did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        # Connections still open when the bench stops the loop are dropped without a word.
        self.loop.set_exception_handler(lambda loop, context: None)
        self.loop.run_until_complete(self._listen())
        ready.set()
        self.loop.run_forever()

    async def _listen(self) -> None:
        for attempt in range(50):
            port = self.port or 20000 + (os.getpid() * 7 + attempt * 131) % 20000
            servers = []
            try:
                for host in range(self.hosts):
                    servers.append(await asyncio.start_server(self._serve, address(host), port, backlog=1024))
            except OSError:
                for server in servers:
                    server.close()
                continue
            self.port = port
            return
        raise RuntimeError("no port free on every loopback address")

    def url(self, feed: int, hosts: int) -> str:
        return f"http://{address(feed % hosts)}:{self.port}/f/{feed}.xml"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                feed = int(path.rsplit("/", 1)[1].split(".")[0])
                self.arrivals[feed].append(time.monotonic())
                await asyncio.sleep(self.latency)
                if feed in self.dripping:
                    await self._drip(writer)
                    return
                if b"if-none-match: " + ETAG.encode() in head.lower():
                    writer.write(b"HTTP/1.1 304 Not Modified\r\nETag: " + ETAG.encode() + b"\r\n\r\n")
                else:
                    body = BODY.format(n=feed).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nETag: "
                        + ETAG.encode() + f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                    )  # fmt: skip
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            if not self.loop.is_closed():
                writer.close()

    async def _drip(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n"
        )
        for _ in range(120):
            writer.write(b"<")
            await writer.drain()
            await asyncio.sleep(1)


@dataclass
class Scenario:
    name: str
    feeds: int
    hosts: int
    interval: float  # seconds
    rounds: float = 3  # intervals measured, after the first round (every feed new) and one more
    schedulers: int = 1
    concurrency: int = 100
    kill_after: float | None = None  # seconds into the measurement: SIGKILL the first scheduler


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def redis_breakdown(connection: redis.Redis, feeds: int) -> dict[str, float]:
    """Bytes Redis holds per feed (its state hash, its place on the schedule) and per remembered
    item (a seen-key), from MEMORY USAGE of samples."""

    def average(pattern: str) -> float:
        sample = [
            k for _, k in zip(range(200), connection.scan_iter(match=pattern, count=1000), strict=False)
        ]
        return statistics.mean(connection.memory_usage(k) or 0 for k in sample) if sample else 0.0

    schedule = (connection.memory_usage("nw:schedule") or 0) / max(1, feeds)
    return {
        "redis_feed_state_bytes": round(average("nw:feed:*")),
        "redis_schedule_bytes_per_feed": round(schedule),
        "redis_seen_key_bytes": round(average("nw:s:*")),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(scenario: Scenario, workdir: Path, redis_url: str, latency: float) -> dict[str, Any]:
    # 2 % of the feeds drip, spread over the hosts at random (the same ones on every run).
    dripping = frozenset(random.Random(7).sample(range(scenario.feeds), scenario.feeds // 50))
    farm = FeedFarm(scenario.hosts, latency, dripping)
    farm.start()
    connection = redis.Redis.from_url(redis_url)
    connection.flushall()
    config = workdir / f"{scenario.name}.yaml"
    lines = "\n".join(
        f'  - {{name: f{n}, url: "{farm.url(n, scenario.hosts)}"}}' for n in range(scenario.feeds)
    )
    config.write_text(
        f"""redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: {scenario.interval}s, jitter: 10%, timeout: 20s, max_age: off,
          allow_private_addresses: true, concurrency: {scenario.concurrency}, lease: 30s}}
feeds:
{lines}
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")}
    base = [sys.executable, "-m", "worker.cli"]
    logs = (workdir / f"{scenario.name}.log").open("ab")

    def process(role: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*base, role, "--config", str(config), "--log-level", "WARNING"],
            stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
        )  # fmt: skip

    worker = process("worker")
    schedulers = [process("scheduler") for _ in range(scenario.schedulers)]
    killed_at: float | None = None
    memory_before = connection.info("memory")["used_memory"]
    try:
        # Warm-up: the first round (every feed new: parsed, its items queued) and one more
        # interval (the first conditional GETs); then the steady state is measured.
        deadline = time.monotonic() + max(300, 3 * scenario.interval)
        while len(farm.arrivals) < scenario.feeds and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(scenario.interval)
        cpu_mark = {p.pid: cpu_seconds(p.pid) for p in schedulers}
        window_start = time.monotonic()
        window_end = window_start + scenario.rounds * scenario.interval
        while time.monotonic() < window_end:
            since = time.monotonic() - window_start
            if scenario.kill_after is not None and killed_at is None and since >= scenario.kill_after:
                schedulers[0].send_signal(signal.SIGKILL)
                schedulers[0].wait()
                killed_at = time.monotonic()
            time.sleep(0.2)
        cpu = sum(cpu_seconds(pid) - mark for pid, mark in cpu_mark.items() if Path(f"/proc/{pid}").exists())
        memory = max(rss_mb(p.pid) for p in schedulers if p.poll() is None)
        status = json.loads(
            subprocess.run([*base, "status", "--json", "--config", str(config)], capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=120).stdout or "{}"
        )  # fmt: skip
        redis_memory = connection.info("memory")["used_memory"] - memory_before
        breakdown = redis_breakdown(connection, scenario.feeds)
    finally:
        for p in [*schedulers, worker]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*schedulers, worker]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        farm.loop.call_soon_threadsafe(farm.loop.stop)
    result = measure(
        scenario, farm, dripping, window_start, window_end, killed_at, cpu, memory, redis_memory, status
    )
    return result | breakdown


def measure(
    scenario: Scenario,
    farm: FeedFarm,
    dripping: frozenset[int],
    start: float,
    end: float,
    killed_at: float | None,
    cpu: float,
    memory: float,
    redis_memory: float,
    status: dict[str, Any],
) -> dict[str, Any]:
    """From the arrivals the feed server saw: polls/s, how long past its interval (plus jitter)
    each healthy feed waited, feeds never polled in the window, feeds polled twice within an
    interval, and the gap the killed scheduler's feeds saw."""
    healthy = [n for n in range(scenario.feeds) if n not in dripping]
    allowed = scenario.interval * 1.1  # the interval plus the most jitter may add
    polls = sum(1 for times in farm.arrivals.values() for t in times if start <= t <= end)
    waits: list[float] = []
    doubles = 0
    never = 0
    for n in healthy:
        times = farm.arrivals.get(n, [])
        inside = [t for t in times if start - allowed <= t <= end]
        if not any(start <= t <= end for t in times):
            never += 1
        gaps = [b - a for a, b in itertools.pairwise(inside)]
        doubles += sum(1 for g in gaps if g < scenario.interval * 0.5)
        waits += [max(0.0, g - allowed) for g in gaps]
        # A feed whose last poll was long ago waited at least until the window's end.
        if inside and end - inside[-1] > allowed:
            waits.append(end - inside[-1] - allowed)
    names = {f"f{n}" for n in healthy}
    late = [f["late"] for f in status.get("feeds", []) if f.get("late") is not None and f["name"] in names]
    result: dict[str, Any] = {
        "feeds": scenario.feeds,
        "hosts": scenario.hosts,
        "interval_s": scenario.interval,
        "schedulers": scenario.schedulers,
        "concurrency": scenario.concurrency,
        "needed_polls_per_s": round(scenario.feeds / scenario.interval, 1),
        "polls_per_s": round(polls / (end - start), 1),
        "past_interval_p50_s": round(percentile(waits, 0.5), 2),
        "past_interval_p99_s": round(percentile(waits, 0.99), 2),
        "past_interval_max_s": round(max(waits, default=0.0), 2),
        "healthy_feeds_never_polled": never,
        "polled_twice_within_an_interval": doubles,
        "scheduler_reported_late_p99_s": round(percentile(late, 0.99), 2),  # healthy feeds' last polls
        "cpu_ms_per_poll": round(cpu / max(1, polls) * 1000, 3),
        "scheduler_rss_mb": round(memory, 1),
        "redis_bytes_per_feed": round(redis_memory / scenario.feeds),
    }
    if killed_at is not None:
        takeover = []
        for n in healthy:
            before = [t for t in farm.arrivals.get(n, []) if t <= killed_at]
            after = [t for t in farm.arrivals.get(n, []) if t > killed_at]
            if before and after:
                takeover.append(after[0] - before[-1])
        result["after_kill_max_gap_s"] = round(max(takeover, default=0.0), 1)
        result["lease_plus_interval_s"] = 30 + allowed
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller and shorter, for a smoke test")
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "scale-results.json"))
    parser.add_argument("--only", help="run only the scenario of this name")
    args = parser.parse_args()
    if args.quick:
        scenarios = [Scenario("quick", 300, 20, 15, rounds=2)]
    else:
        scenarios = [
            # 1,000 feeds at 30 s: the poll rate of 10,000 feeds at 5 minutes.
            Scenario("10k-rate", 1000, 50, 30),
            # 10,000 feeds at 30 s: the rate of 100,000 feeds at 5 minutes (333 polls/s).
            Scenario("100k-rate", 10_000, 100, 30, concurrency=300),
            # Two schedulers share 1,000 feeds; the first is SIGKILLed 20 s into the measurement.
            Scenario("two-one-killed", 1000, 50, 30, schedulers=2, kill_after=20),
        ]
    if args.only:
        scenarios = [s for s in scenarios if s.name == args.only]
    binary = shutil.which("redis-server")
    if binary is None:
        print("bench: redis-server is missing (make test installs it)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="newswatch-scale-"))
    port = free_port()  # a port in use would be another Redis, which the bench flushes
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        connection = redis.Redis.from_url(redis_url)
        for _ in range(100):
            try:
                connection.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        assert server.poll() is None, f"redis-server did not start on port {port}"
        results = {}
        for scenario in scenarios:
            print(f"bench scale: {scenario.name}: {scenario.feeds} feeds on {scenario.hosts} hosts, "
                  f"every {scenario.interval:g} s, {args.latency * 1000:.0f} ms per answer, 2 % dripping, "
                  f"{scenario.schedulers} scheduler(s) ...", flush=True)  # fmt: skip
            results[scenario.name] = run(scenario, workdir, redis_url, args.latency)
            print(json.dumps(results[scenario.name], indent=2), flush=True)
        out = Path(args.out)
        if args.only and out.exists():  # one scenario run again: the others' results stay
            results = {**json.loads(out.read_text(encoding="utf-8")), **results}
        out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

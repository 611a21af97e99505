"""`make bench`, the delivery part: webhook receivers that answer slowly, the way real ones do,
and alerts/s for a burst of 1,000 alerts at each receiver latency with 1 and 2 workers.

A real receiver (a chat or ticket system) takes tens to hundreds of milliseconds per POST and
serves many POSTs at once. `SlowReceiver` is that: a threaded HTTP server that sleeps for its
latency in each request's own thread, so requests in flight overlap, and that records the most
it held at once. An instant receiver hides whether a sender waits on one POST at a time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
BURST = 1000
LATENCIES = (0.05, 0.1, 0.2)  # seconds per POST at the receiver


class SlowReceiver:
    """A webhook receiver that answers each POST after `latency` seconds, in its own thread."""

    def __init__(self, latency: float, host: str = "127.0.0.1") -> None:
        self.latency = latency
        # (arrival, body): bodies are decoded only when read (`payloads`), so that the receiver,
        # which shares the machine's two cores with newswatch, costs the run as little as it can.
        self.arrivals: list[tuple[float, bytes]] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: 40 ms a request

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.in_flight += 1
                    receiver.peak_in_flight = max(receiver.peak_in_flight, receiver.in_flight)
                time.sleep(receiver.latency)  # the receiver's own work: other requests go on meanwhile
                with receiver.lock:
                    receiver.in_flight -= 1
                    receiver.arrivals.append((time.monotonic(), body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # a burst opens dozens of connections at once

        self.httpd = Server((host, 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/hook"

    def payloads(self) -> list[tuple[float, dict[str, Any]]]:
        """What arrived so far, decoded: (arrival, webhook payload)."""
        with self.lock:
            arrived = list(self.arrivals)
        return [(t, json.loads(body)) for t, body in arrived]

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)

    def reset(self) -> None:
        with self.lock:
            self.arrivals.clear()
            self.peak_in_flight = 0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def _burst_items(count: int) -> list[Any]:
    """`count` items that all match the burst's alert, as a poll would have made them."""
    from bench.corpus import rss
    from worker.config import FeedConfig
    from worker.sources import Page, read_items

    now = datetime.now(UTC)
    entries = [
        {
            "title": f"Eilmeldung {n}: DeepSeek verschiebt Modellstart",
            "link": f"https://news.example.org/eil/{n}",
            "guid": f"eil-{n}",
            "description": "<p>Eilmeldung aus Frankfurt.</p>",
            "category": "Finanzen",
            "pubDate": (now - timedelta(seconds=n)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }
        for n in range(count)
    ]
    url = "http://127.0.0.1:9/burst.xml"  # never fetched: the items are queued directly
    return read_items(FeedConfig(name="burst", url=url), Page(url, rss(entries, "Burst")), now).items


def _start_workers(config: Path, workers: int, workdir: Path) -> list[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")}
    processes = []
    for index in range(workers):
        log = (workdir / f"burst-worker-{index}.log").open("ab")
        argv = [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
        ]
        processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env))
    return processes


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _burst_config(redis_url: str, workdir: Path, receiver: SlowReceiver) -> Path:
    config = workdir / "burst.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{max_age: off, allow_private_addresses: true}}
stories: off  # the burst's items differ only by their number: grouped, they would be one story
alerts:
  - {{name: eilmeldung, query: "title:Eilmeldung", channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{receiver.url}"}}
""",
        encoding="utf-8",
    )
    return config


def _item_burst(connection: redis.Redis, config: Path) -> Callable[[], None]:
    """The burst as a poll would queue it: 1,000 items in batches of 50. The items are made
    now; what is returned only queues them, so that making them is not timed."""
    from worker.adapters import keys, queues

    items = _burst_items(BURST)
    return lambda: queues.enqueue_item_batches(queues.queue(connection, keys.ITEMS_QUEUE), "burst", items, 50)


def _retry_burst(connection: redis.Redis, config: Path) -> Callable[[], None]:
    """The burst as the end of a receiver outage leaves it: 1,000 delivery jobs due at once."""
    from worker.config import load_config
    from worker.core.render import deliveries_for
    from worker.core.rules import classify
    from worker.runtime import connect

    rt = connect(load_config(str(config), {}))
    now = rt.clock()
    deliveries = [d for i in _burst_items(BURST) for d in deliveries_for(classify(i, rt.config.rules), now)]

    def queue() -> None:
        with connection.pipeline() as pipe:
            rt.outbox.enqueue(pipe, deliveries)
            pipe.execute()

    return queue


def burst(
    connection: redis.Redis,
    redis_url: str,
    workdir: Path,
    receiver: SlowReceiver,
    workers: int,
    as_retries: bool = False,
) -> dict[str, float]:
    """1,000 matching items put on the item queue at once (`as_retries`: 1,000 delivery jobs
    due at once), workers already running: alerts/s from that moment to the last alert's
    arrival (dedupe, match, commit and delivery; or RQ's job runs and delivery)."""
    from worker.adapters import rqcompat

    connection.flushall()
    receiver.reset()
    config = _burst_config(redis_url, workdir, receiver)
    queue_burst = (_retry_burst if as_retries else _item_burst)(connection, config)
    processes = _start_workers(config, workers, workdir)
    try:
        if not _wait_until(lambda: rqcompat.live_workers(connection) >= workers, timeout=60):
            raise RuntimeError("burst: workers did not start")
        started = time.monotonic()
        queue_burst()
        if not _wait_until(lambda: receiver.count() >= BURST, timeout=600):
            raise RuntimeError(f"burst: {receiver.count()} of {BURST} alerts arrived")
        last = max(t for t, _ in receiver.arrivals)
    finally:
        _stop(processes)
    return {
        "alerts_per_s": BURST / (last - started),
        "seconds": last - started,
        "peak_in_flight": receiver.peak_in_flight,
    }


def bursts(
    connection: redis.Redis, redis_url: str, workdir: Path, runs: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Medians of `runs` bursts per receiver latency (ms) and number of workers."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for latency in LATENCIES:
        receiver = SlowReceiver(latency)
        try:
            for workers in (1, 2):
                measured = [burst(connection, redis_url, workdir, receiver, workers) for _ in range(runs)]
                results.setdefault(f"{latency * 1000:.0f}", {})[str(workers)] = {
                    key: statistics.median(m[key] for m in measured) for key in measured[0]
                }
                print(f"bench: burst at {latency * 1000:.0f} ms, {workers} worker(s) done", flush=True)
            if latency == 0.1:
                measured = [
                    burst(connection, redis_url, workdir, receiver, 2, as_retries=True) for _ in range(runs)
                ]
                results["100"]["retries_2"] = {
                    key: statistics.median(m[key] for m in measured) for key in measured[0]
                }
        finally:
            receiver.close()
    return results


# The cold ingests at a slow receiver: (label, receiver latency, config added). With the default
# `delivery.concurrency` (16), 2 workers have 32 posts in flight: at 50 ms that is at most 640
# alerts/s, whatever the CPU; "50@32" shows what 32 per worker makes of the same run.
SLOW_COLD_INGESTS = (
    ("50", 0.05, ""),
    ("200", 0.2, ""),
    ("50@32", 0.05, "delivery: {concurrency: 32}\n"),
)


# The one the target names (cold ingest >= 5x rss2email at 50 ms): each of its runs is paired
# with a cold run of rss2email right after it, and the ratio taken per pair.
PAIRED = "50"


def slow_cold_ingest(
    ingest: Callable[[SlowReceiver, str], dict[str, float]],
    runs: int,
    alongside: Callable[[], float] | None = None,
) -> dict[str, dict[str, Any]]:
    """The cold ingest of run.py, its webhook receiver answering after 50 and after 200 ms, and
    at 50 ms with 32 deliveries in flight per worker. `alongside`: rss2email's cold ingest
    (items/s), run after each run of the PAIRED one."""
    results: dict[str, dict[str, Any]] = {}
    for label, latency, extra in SLOW_COLD_INGESTS:
        receiver = SlowReceiver(latency)
        measured, theirs = [], []
        try:
            for _ in range(runs):
                measured.append(ingest(receiver, extra))
                if alongside is not None and label == PAIRED:
                    theirs.append(alongside())
        finally:
            receiver.close()
        results[label] = {
            "items_per_s": statistics.median(m["items_per_s"] for m in measured),
            "seconds": statistics.median(m["seconds"] for m in measured),
            "peak_in_flight": receiver.peak_in_flight,
        }
        if theirs:
            results[label]["rss2email"] = theirs
            results[label]["paired_ratio"] = statistics.median(
                m["items_per_s"] / max(r, 1e-9) for m, r in zip(measured, theirs, strict=True)
            )
        print(f"bench: cold ingest at {label} done", flush=True)
    return results


def smtp_sessions(messages: int = 300, threads: int = 4) -> dict[str, float]:
    """Alert emails per second to a local STARTTLS server with login (aiosmtpd, trustme CA),
    a new session per message (as before) against sessions kept and reused."""
    import ssl
    from concurrent.futures import ThreadPoolExecutor
    from email.message import EmailMessage

    import trustme
    from aiosmtpd.controller import Controller

    # aiosmtpd's own LOGIN handling logs a warning about its own deprecated attribute per login.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    from aiosmtpd.smtp import AuthResult

    from worker.adapters.smtp import SmtpSessions, SmtpTarget

    class Sink:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = Path(tempfile.mkdtemp(prefix="newswatch-smtp-")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with socket.socket() as probe:  # aiosmtpd needs the port up front
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=lambda *args: AuthResult(success=True), auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    target = SmtpTarget("127.0.0.1", port, True, False, True, str(ca_file), "alerts", "s3cret", 10.0, True)
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = (
        "[newswatch] deepseek: x",
        "a@example.org",
        "b@example.org",
    )
    message.set_content("DeepSeek verschiebt Modellstart")
    results = {}
    try:
        for label, reuse, workers in (
            ("new_1", False, 1),
            ("reused_1", True, 1),
            (f"new_{threads}", False, threads),
            (f"reused_{threads}", True, threads),
        ):
            shared = SmtpSessions()

            def send(_: int, reuse: bool = reuse, shared: SmtpSessions = shared) -> None:
                (shared if reuse else SmtpSessions()).send(
                    target, message, "a@example.org", ["b@example.org"]
                )

            started = time.perf_counter()
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(send, range(messages)))
            results[label] = messages / (time.perf_counter() - started)
    finally:
        controller.stop()
    return results


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The delivery lines of the bench table."""
    r2e = max(r["rss2email_cold_ingest_items_per_s"], 1e-9)
    d = r["delivery"]
    lines = [
        (f"cold ingest, receiver at {_label(ms)}, items/s", f"{c['items_per_s']:,.0f}", *_versus(c, r2e))
        for ms, c in d["cold_ingest"].items()
    ]
    for ms, by_workers in d["burst"].items():
        one, two = by_workers["1"], by_workers["2"]
        ceiling = " / ".join(f"{_ceiling(int(ms), w):,.0f}" for w in (1, 2))
        lines.append(
            (f"1,000-alert burst at {ms} ms, alerts/s, 1 / 2 workers", f"{one['alerts_per_s']:,.0f} / {two['alerts_per_s']:,.0f} (ceiling {ceiling})", "", "")
        )  # fmt: skip
    retries = d["burst"]["100"]["retries_2"]["alerts_per_s"]
    lines.append(
        (
            "1,000 delivery jobs due at once at 100 ms, alerts/s, 2 workers",
            f"{retries:,.0f} (ceiling {_ceiling(100, 2):,.0f})",
            "",
            "",
        )
    )
    s = d["smtp"]
    lines.append(
        (
            "alert emails/s, STARTTLS + login, new / reused session",
            f"{s['new_1']:,.0f} / {s['reused_1']:,.0f}",
            "",
            "",
        )
    )
    return lines


def _versus(measured: dict[str, Any], r2e: float) -> tuple[str, str]:
    """rss2email's figure and the ratio: of the runs paired with these where there are some,
    else of the bench's median."""
    if "paired_ratio" in measured:
        return f"{statistics.median(measured['rss2email']):,.0f}", f"{measured['paired_ratio']:.1f}x"
    return f"{r2e:,.0f}", f"{measured['items_per_s'] / r2e:.1f}x"


def _ceiling(ms: int, workers: int, concurrency: int = 16) -> float:
    """The most alerts/s a burst can reach: rounds of `concurrency` sends per worker, each
    taking the receiver's latency, with nothing else costing any time."""
    return BURST / (math.ceil(BURST / (concurrency * workers)) * ms / 1000)


def _label(key: str) -> str:
    ms, _, in_flight = key.partition("@")
    return f"{ms} ms, {in_flight} in flight per worker" if in_flight else f"{ms} ms"


def targets(r: dict[str, Any]) -> dict[str, bool]:
    r2e = max(r["rss2email_cold_ingest_items_per_s"], 1e-9)
    d = r["delivery"]
    return {
        "1,000-alert burst at 100 ms, 2 workers: >= 300 alerts/s": d["burst"]["100"]["2"]["alerts_per_s"]
        >= 300,
        "cold ingest >= 5x rss2email with the receiver at 50 ms": d["cold_ingest"][PAIRED].get(
            "paired_ratio", d["cold_ingest"][PAIRED]["items_per_s"] / r2e
        )
        >= 5,
    }

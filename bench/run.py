"""`make bench`: newswatch against rss2email on the same local feeds, with real processes and a
real Redis. Prints a table with ratios and writes bench/results.json. Medians of several runs.
The cold-ingest ratios are medians of pairs: each cold ingest of newswatch is followed by one of
rss2email, so that the machine's drift during the bench does not enter the ratio.

    python bench/run.py [--feeds 200] [--items 50] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import delivery as delivery_bench  # noqa: E402
from bench.corpus import ALERTS, alert_terms, feed_items, rss  # noqa: E402
from bench.delivery import SlowReceiver  # noqa: E402

R2E_VENV = ROOT / "bench" / ".venv-rss2email"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- local servers -------------------------------------------------------------------------------


class FeedServer:
    """Serves /feed/N.xml; with `validators` on, answers If-None-Match with 304."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        # Body and ETag, swapped in together; the ETag is made once, as a web server does.
        self.served: dict[str, tuple[bytes, str]] = {}
        self.validators = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: 40 ms a request

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                served = server.served.get(self.path)
                if served is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, etag = served
                if server.validators and self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                if server.validators:
                    self.send_header("ETag", etag)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/feed/{n}.xml"

    def publish(self, n: int, items: list[dict[str, str]]) -> None:
        body = rss(items, f"Feed {n}")
        self.bodies[f"/feed/{n}.xml"] = body
        self.served[f"/feed/{n}.xml"] = (body, '"' + hashlib.md5(body).hexdigest() + '"')


class SmtpSink:
    """Counts the mails rss2email sends."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self
        self.count = 0

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                sink.count += 1
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


# --- newswatch -----------------------------------------------------------------------------------


# Every newswatch process the bench started: whatever a measurement that failed midway left
# running is killed when the bench ends.
_STARTED: list[subprocess.Popen[bytes]] = []


def _kill_leftovers() -> None:
    for process in _STARTED:
        if process.poll() is None:
            process.kill()
            process.wait()


class Newswatch:
    def __init__(
        self, workdir: Path, redis_url: str, feeds: FeedServer, receiver: SlowReceiver, n_feeds: int
    ) -> None:
        self.workdir = workdir
        self.config = workdir / "newswatch.yaml"
        self.redis_url = redis_url
        self.feeds, self.receiver, self.n_feeds = feeds, receiver, n_feeds
        self.processes: list[subprocess.Popen[bytes]] = []

    def write_config(self, interval: str, alerts: list[tuple[str, str]] = ALERTS, extra: str = "") -> None:
        lines = "\n".join(f'  - {{name: f{n}, url: "{self.feeds.url(n)}"}}' for n in range(self.n_feeds))
        rules = "\n".join(
            f"  - {{name: {name}, query: {json.dumps(query)}, channels: [hook]}}" for name, query in alerts
        )
        self.config.write_text(
            f"""
redis: {{url: "{self.redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: {interval}, jitter: 0%, timeout: 20s, max_age: off, allow_private_addresses: true}}
stories: off  # the corpus is made of a few dozen phrases: grouped, its 4,438 alerts are ~400 stories
feeds:
{lines}
topics:
  KI: [KI, "künstliche Intelligenz", DeepSeek]
  Halbleiter: [Nvidia, Huawei, Infineon, SMIC, TSMC, "Chip*", "Halbleiter*"]
alerts:
{rules}
channels:
  hook: {{type: webhook, url: "{self.receiver.url}"}}
{extra}""",
            encoding="utf-8",
        )

    def start(self, roles: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")}
        for index, role in enumerate(roles):
            log = (self.workdir / f"{role}-{index}.log").open("ab")
            process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", role, "--config", str(self.config), "--log-level", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            )  # fmt: skip
            self.processes.append(process)
            _STARTED.append(process)

    def stop(self) -> None:
        for p in self.processes:
            p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        self.processes = []

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")}
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", *args, "--config", str(self.config), "--log-level", "ERROR"],
            capture_output=True, text=True, cwd=ROOT, env=env, check=False,
        ).stdout  # fmt: skip


def parsed_items(feed: str, body: bytes, url: str) -> list[Any]:
    """A feed body's items, read the way a poll reads them."""
    from worker.config import FeedConfig
    from worker.sources import Page, read_items

    return read_items(FeedConfig(name=feed, url=url), Page(url, body), datetime.now(UTC)).items


def expected_alerts(feeds: FeedServer, n_feeds: int, alerts: list[tuple[str, str]]) -> int:
    """Ground truth from the same core the daemon uses, run here on the same bytes."""
    from worker.core.query import parse_query
    from worker.core.rules import AlertRule, RuleSet, classify

    rules = RuleSet((), tuple(AlertRule(n, parse_query(q), ("hook",)) for n, q in alerts), {})
    seen: set[str] = set()
    total = 0
    for n in range(n_feeds):
        for item in parsed_items(f"f{n}", feeds.bodies[f"/feed/{n}.xml"], feeds.url(n)):
            if item.id not in seen:
                seen.add(item.id)
                total += len(classify(item, rules).matches)
    return total


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def newswatch_cold_ingest(
    nw: Newswatch, connection: redis.Redis, expected: int, items: int, workers: int, extra: str = ""
) -> dict[str, float]:
    connection.flushall()
    nw.receiver.reset()
    nw.write_config("1h", extra=extra)
    started = time.monotonic()
    nw.start(["scheduler"] + ["worker"] * workers)
    done = wait_until(lambda: nw.receiver.count() >= expected, timeout=600)
    last = max(t for t, _ in nw.receiver.arrivals) if nw.receiver.arrivals else time.monotonic()
    nw.stop()
    if not done:
        raise RuntimeError(f"newswatch delivered {nw.receiver.count()} of {expected} alerts")
    elapsed = last - started
    return {"seconds": elapsed, "items_per_s": items / elapsed, "alerts": nw.receiver.count()}


def newswatch_unchanged_polls(nw: Newswatch, validators: bool, rounds: int = 5) -> dict[str, float]:
    """Rounds of `newswatch poll` over every feed in one process (bench/poll_rounds.py): the
    first round is a fresh process's, the median of the others the steady state."""
    nw.feeds.validators = validators
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")}
    out = subprocess.run(
        [sys.executable, "-m", "bench.poll_rounds", str(nw.config), str(rounds)],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    ).stdout  # fmt: skip
    nw.feeds.validators = True
    # "polled 200 feeds in 0.150 s (1333 polls/s, 0.61 ms CPU per poll)"
    measured = []
    for line in out.splitlines():
        parts = line.replace("(", " ").replace(",", " ").split()
        measured.append((float(parts[parts.index("polls/s") - 1]), float(parts[parts.index("ms") - 1])))
    steady = measured[1:] or measured
    return {
        "polls_per_s": statistics.median(p for p, _ in steady),
        "cpu_ms_per_poll": statistics.median(c for _, c in steady),
        "first_round_polls_per_s": measured[0][0],
    }


def newswatch_latency(
    nw: Newswatch, connection: redis.Redis, n_feeds: int, interval: float, samples: int
) -> dict[str, float]:
    """Feed change -> webhook, with the scheduler polling every `interval` seconds."""
    connection.flushall()
    nw.receiver.reset()
    nw.write_config(f"{interval:g}s", alerts=[("eilmeldung", "title:Eilmeldung")])
    nw.start(["scheduler", "worker", "worker"])
    # Steady state first: every feed polled once and the first ingest of its items (a cold
    # ingest of every item, which takes seconds here) worked off by the workers.
    if not wait_until(lambda: _ingested(connection, n_feeds), timeout=300, interval=0.2):
        raise RuntimeError("latency: the first ingest did not finish")
    time.sleep(interval)
    changed: dict[str, float] = {}
    for k in range(samples):
        n = k % n_feeds
        title = f"Eilmeldung {k}: DeepSeek verschiebt Modellstart"
        items = [{"title": title, "link": f"https://news.example.org/eil/{k}", "guid": f"eil-{k}",
                  "description": "<p>Eilmeldung</p>", "category": "Finanzen", "pubDate": "Fri, 15 Aug 2025 13:51:00 +0000"}]  # fmt: skip
        nw.feeds.publish(n, items + feed_items(n, 5))
        changed[title] = time.monotonic()
        time.sleep(interval / 4)
    wait_until(lambda: nw.receiver.count() >= samples, timeout=interval * 10 + 30)
    nw.stop()
    latencies = sorted(
        t - changed[p["data"]["item"]["title"]]
        for t, p in nw.receiver.payloads()
        if p["data"]["item"]["title"] in changed
    )
    if len(latencies) < samples:
        raise RuntimeError(f"latency: {len(latencies)} of {samples} alerts arrived")
    return {
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_s": latencies[-1],
        "interval_s": interval,
    }


def _ingested(connection: redis.Redis, n_feeds: int) -> bool:
    """Every feed polled successfully, and no item batch waiting or running."""
    from worker.adapters import keys
    from worker.adapters.queues import queue_counts
    from worker.adapters.store import FeedStateStore

    states = FeedStateStore(connection)
    if not all(states.get(f"f{n}").last_success for n in range(n_feeds)):
        return False
    items = next(c for c in queue_counts(connection) if c.name == keys.ITEMS_QUEUE)
    return items.queued == 0 and items.started == 0


def redis_bytes_per_item(connection: redis.Redis) -> dict[str, float]:
    """What the seen-store costs: used_memory before and after dropping every seen-key."""
    seen = [key for key in connection.scan_iter(match="nw:s:*", count=1000)]
    before = connection.info("memory")["used_memory"]
    for start in range(0, len(seen), 1000):
        connection.unlink(*seen[start : start + 1000])
    time.sleep(0.5)
    after = connection.info("memory")["used_memory"]
    return {"items": len(seen), "bytes_per_item": (before - after) / max(1, len(seen))}


def match_stage(terms: int, items: list[Any], rounds: int = 3) -> float:
    from worker.config import PollingSettings
    from worker.core.query import parse_query, parse_term_list
    from worker.core.rules import AlertRule, RuleSet, TopicRule, classify_many

    alerts = tuple(AlertRule(f"a{i}", parse_query(q), ("hook",)) for i, q in enumerate(alert_terms(terms)))
    topics = (TopicRule("KI", parse_term_list(["KI", "künstliche Intelligenz"])),)
    rules = RuleSet(topics, alerts, {})
    # As a worker job sees them: the batches the scheduler enqueues.
    size = PollingSettings().batch_size
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for batch in batches:
            classify_many(batch, rules)
        rates.append(len(items) / (time.perf_counter() - started))
    return statistics.median(rates)


# --- rss2email -------------------------------------------------------------------------------------


def ensure_rss2email() -> Path:
    r2e = R2E_VENV / "bin" / "r2e"
    if not r2e.exists():
        subprocess.run([sys.executable, "-m", "venv", str(R2E_VENV)], check=True)
        subprocess.run([str(R2E_VENV / "bin" / "pip"), "install", "-q", "rss2email==3.14"], check=True)
    return r2e


def rss2email_run(
    r2e: Path, workdir: Path, feeds: FeedServer, n_feeds: int, sink: SmtpSink, fresh: bool
) -> tuple[float, int]:
    config, data = workdir / "r2e.cfg", workdir / "r2e.json"
    if fresh:
        data.unlink(missing_ok=True)
        sections = "\n".join(f"[feed.f{n}]\nurl = {feeds.url(n)}\n" for n in range(n_feeds))
        config.write_text(
            "[DEFAULT]\nto = bench@example.org\nfrom = r2e@example.org\nemail-protocol = smtp\n"
            f"smtp-server = 127.0.0.1:{sink.port}\nsmtp-auth = False\nsmtp-ssl = False\n"
            "date-header = True\n\n" + sections,
            encoding="utf-8",
        )
    sent_before = sink.count
    started = time.monotonic()
    subprocess.run([str(r2e), "-c", str(config), "-d", str(data), "run"], check=False, capture_output=True)
    return time.monotonic() - started, sink.count - sent_before


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer feeds and runs, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.feeds, args.items, args.runs = 20, 20, 1
    n_feeds, per_feed, total_items = args.feeds, args.items, args.feeds * args.items
    workdir = Path(tempfile.mkdtemp(prefix="newswatch-bench-"))
    redis_binary = shutil.which("redis-server")
    if not redis_binary:
        print("bench: redis-server is missing (make test installs it)", file=sys.stderr)
        return 1
    port = free_port()
    redis_proc = subprocess.Popen(
        [redis_binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    redis_url = f"redis://127.0.0.1:{port}/0"
    connection = redis.Redis.from_url(redis_url)
    wait_until(lambda: _pings(connection), timeout=10)
    feeds, receiver, sink = FeedServer(), SlowReceiver(0.0), SmtpSink()  # answers at once
    for n in range(n_feeds):
        feeds.publish(n, feed_items(n, per_feed))
    results: dict[str, Any] = {
        "feeds": n_feeds,
        "items_per_feed": per_feed,
        "runs": args.runs,
        "workers": args.workers,
    }
    try:
        nw = Newswatch(workdir, redis_url, feeds, receiver, n_feeds)
        expected = expected_alerts(feeds, n_feeds, ALERTS)
        print(
            f"bench: {n_feeds} feeds x {per_feed} items = {total_items} items, {expected} expected alerts",
            flush=True,
        )

        # Each cold ingest is followed by one of rss2email's on the same feeds, and the ratio is
        # taken per pair: the machine's speed drifts within a run (docs/performance.md), and a
        # ratio of two medians measured ten minutes apart carries that drift.
        r2e = ensure_rss2email()

        def r2e_cold() -> float:
            seconds, mails = rss2email_run(r2e, workdir, feeds, n_feeds, sink, fresh=True)
            return mails / seconds if seconds else 0.0

        cold, cold_r2e = [], []
        for _ in range(args.runs):
            cold.append(newswatch_cold_ingest(nw, connection, expected, total_items, args.workers))
            cold_r2e.append(r2e_cold())
        results["newswatch_cold_ingest_items_per_s"] = statistics.median(c["items_per_s"] for c in cold)
        results["newswatch_cold_ingest_seconds"] = statistics.median(c["seconds"] for c in cold)
        results["rss2email_paired_cold_ingest_items_per_s"] = list(cold_r2e)
        results["cold_ingest_paired_ratio"] = statistics.median(
            c["items_per_s"] / max(r, 1e-9) for c, r in zip(cold, cold_r2e, strict=True)
        )
        results["redis"] = redis_bytes_per_item(connection)
        # Steady state: the seen-store is full again after one more cold ingest, then unchanged polls.
        newswatch_cold_ingest(nw, connection, expected, total_items, args.workers)
        nw.write_config("1h")
        nw.cli("poll")  # prime ETags after the ingest's own poll
        steady_304 = [newswatch_unchanged_polls(nw, validators=True) for _ in range(args.runs)]
        steady_body = [newswatch_unchanged_polls(nw, validators=False) for _ in range(args.runs)]
        results["newswatch_unchanged_304_polls_per_s"] = statistics.median(
            s["polls_per_s"] for s in steady_304
        )
        results["newswatch_unchanged_304_cpu_ms_per_poll"] = statistics.median(
            s["cpu_ms_per_poll"] for s in steady_304
        )
        results["newswatch_unchanged_304_first_round_polls_per_s"] = statistics.median(
            s["first_round_polls_per_s"] for s in steady_304
        )
        results["newswatch_unchanged_body_polls_per_s"] = statistics.median(
            s["polls_per_s"] for s in steady_body
        )
        results["newswatch_unchanged_body_cpu_ms_per_poll"] = statistics.median(
            s["cpu_ms_per_poll"] for s in steady_body
        )
        print("bench: newswatch done; measuring latency", flush=True)
        results["latency"] = newswatch_latency(
            nw, connection, n_feeds, interval=2.0, samples=min(40, n_feeds)
        )

        print("bench: deliveries to receivers that answer slowly", flush=True)
        for n in range(n_feeds):  # the latency run changed the feeds
            feeds.publish(n, feed_items(n, per_feed))
        results["delivery"] = {
            "cold_ingest": delivery_bench.slow_cold_ingest(
                lambda slow, extra: newswatch_cold_ingest(
                    Newswatch(workdir, redis_url, feeds, slow, n_feeds),
                    connection,
                    expected,
                    total_items,
                    args.workers,
                    extra,
                ),
                args.runs,
                alongside=r2e_cold,
            ),
            "burst": delivery_bench.bursts(connection, redis_url, workdir, args.runs),
            "smtp": delivery_bench.smtp_sessions(),
        }

        sample = [
            i
            for n in range(min(n_feeds, 40))
            for i in parsed_items(f"f{n}", feeds.bodies[f"/feed/{n}.xml"], feeds.url(n))
        ]
        results["match_items_per_s"] = {str(t): match_stage(t, sample) for t in (10, 1000, 10000)}

        print("bench: rss2email", flush=True)
        for n in range(n_feeds):
            feeds.publish(n, feed_items(n, per_feed))
        steady_r2e = []
        for _ in range(args.runs):
            seconds, mails = rss2email_run(r2e, workdir, feeds, n_feeds, sink, fresh=True)
            cold_r2e.append(mails / seconds if seconds else 0.0)
            seconds_again, _ = rss2email_run(r2e, workdir, feeds, n_feeds, sink, fresh=False)
            steady_r2e.append(n_feeds / seconds_again)
        # Every cold run of rss2email in this bench: those paired with newswatch's and these.
        cold_r2e += [r for c in results["delivery"]["cold_ingest"].values() for r in c.get("rss2email", [])]
        results["rss2email_cold_ingest_items_per_s"] = statistics.median(cold_r2e)
        results["rss2email_unchanged_polls_per_s"] = statistics.median(steady_r2e)
        results["rss2email_mails_per_run"] = mails
    finally:
        _kill_leftovers()
        sink.stop()
        redis_proc.terminate()
        redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results)
    return 0


def _pings(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except redis.RedisError:
        return False


def report(r: dict[str, Any]) -> None:
    cold_ratio = r["cold_ingest_paired_ratio"]  # the median of per-pair ratios (see main)
    poll_ratio = r["newswatch_unchanged_304_polls_per_s"] / max(r["rss2email_unchanged_polls_per_s"], 1e-9)
    match = r["match_items_per_s"]
    targets = {
        "cold ingest >= 5x rss2email": cold_ratio >= 5,
        ">= 1,000 unchanged-feed polls/s (304)": r["newswatch_unchanged_304_polls_per_s"] >= 1000,
        "match at 10,000 terms within 2x of 10 terms": match["10"] / match["10000"] <= 2,
        "<= 150 bytes of Redis per remembered item": r["redis"]["bytes_per_item"] <= 150,
        "latency p99 <= poll interval + 1 s": r["latency"]["p99_s"] <= r["latency"]["interval_s"] + 1,
    }
    targets |= delivery_bench.targets(r)
    r["ratios"] = {"cold_ingest_vs_rss2email": cold_ratio, "unchanged_polls_vs_rss2email": poll_ratio}
    r["targets_met"] = targets
    rows = [
        ("cold ingest, items/s", f"{r['newswatch_cold_ingest_items_per_s']:,.0f}", f"{statistics.median(r['rss2email_paired_cold_ingest_items_per_s']):,.0f}", f"{cold_ratio:.1f}x"),
        ("unchanged feeds (304), polls/s, steady state", f"{r['newswatch_unchanged_304_polls_per_s']:,.0f}", f"{r['rss2email_unchanged_polls_per_s']:,.0f}", f"{poll_ratio:.1f}x"),
        ("  the same, a fresh process's first round", f"{r['newswatch_unchanged_304_first_round_polls_per_s']:,.0f}", "", ""),
        ("unchanged feeds (same body), polls/s", f"{r['newswatch_unchanged_body_polls_per_s']:,.0f}", "", ""),
        ("CPU per unchanged poll (304 / body)", f"{r['newswatch_unchanged_304_cpu_ms_per_poll']:.2f} / {r['newswatch_unchanged_body_cpu_ms_per_poll']:.2f} ms", "", ""),
        ("feed change -> webhook p50 / p99", f"{r['latency']['p50_s']:.2f} / {r['latency']['p99_s']:.2f} s (interval {r['latency']['interval_s']:g} s)", "", ""),
        ("Redis bytes per remembered item", f"{r['redis']['bytes_per_item']:.0f}", "", ""),
        ("match stage, items/s, 10 / 1,000 / 10,000 terms", f"{match['10']:,.0f} / {match['1000']:,.0f} / {match['10000']:,.0f}", "", ""),
    ]  # fmt: skip
    rows += delivery_bench.rows(r)
    print(
        f"\nnewswatch bench: {r['feeds']} feeds x {r['items_per_feed']} items, median of {r['runs']} runs\n"
    )
    print(f"{'measure':<48} {'newswatch':>36} {'rss2email':>10} {'ratio':>7}")
    for name, ours, theirs, ratio in rows:
        print(f"{name:<48} {ours:>36} {theirs:>10} {ratio:>7}")
    print()
    for target, met in targets.items():
        print(f"  [{'met' if met else 'MISSED'}] {target}")
    (ROOT / "bench" / "results.json").write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten to {ROOT / 'bench' / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())

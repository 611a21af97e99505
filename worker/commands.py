"""What each `newswatch` sub-command does; `cli` parses arguments and handles exit codes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis

from worker import channels, delivery, jobs, metrics, monitoring
from worker.adapters import keys, liveness, queues, rqcompat
from worker.config import Config, FeedConfig
from worker.core.errors import DeliveryError
from worker.core.models import AlertMatch, Item, utc_iso
from worker.core.render import deliveries_for
from worker.core.rules import Classified
from worker.polling import poll_feed, poll_threads
from worker.runtime import Runtime, connect

log = logging.getLogger("newswatch")
T = TypeVar("T")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def scheduler(config: Config) -> int:
    from worker import scheduling

    scheduling.run(connect(config))
    return EXIT_OK


def worker(
    config: Config,
    burst: bool,
    queue_names: list[str] | None,
    name: str | None,
    metrics_port: int | None = None,
    fork: bool = False,
) -> int:
    rt = connect(config).warm()
    jobs.install(rt)
    if metrics_port:
        metrics.serve(metrics_port, config.settings.metrics.bind, rt.redis)
    names = queue_names or list(keys.QUEUES)
    unknown = sorted(set(names) - set(keys.QUEUES))
    if unknown:
        print(
            f"newswatch: unknown queue(s) {', '.join(unknown)}; ours: {', '.join(keys.QUEUES)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    level = logging.getLevelName(logging.getLogger().level)
    # Deliveries go out side by side on the process's sender; a forked work horse keeps none.
    after_job = None if fork else delivery.start_sender(rt)
    finish = False
    wait = 1.0
    try:
        while True:
            try:
                # with_scheduler: RQ's scheduler moves retries back onto the queue when their time comes.
                rq_worker = queues.worker(
                    rt.redis, names, name, monitoring.work_horse_killed, fork, after_job=after_job
                )
                rq_worker.work(burst=burst, with_scheduler=True, logging_level=level)
                finish = burst and not rqcompat.stop_requested(rq_worker)
                return EXIT_OK
            except redis.ConnectionError as e:
                # RQ rides out a lost connection while waiting for jobs, not everywhere else: start over.
                log.warning("worker lost Redis (%s); reconnecting in %.0fs", e.__class__.__name__, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)
    finally:
        delivery.stop_sender(rt, finish)  # a burst sends what waits; a stop hands it back to RQ


def poll(config: Config, feed_names: list[str] | None) -> int:
    feeds = config.settings.feeds
    if feed_names:
        unknown = sorted(set(feed_names) - {f.name for f in feeds})
        if unknown:
            print(f"newswatch: unknown feed(s): {', '.join(unknown)}", file=sys.stderr)
            return EXIT_USAGE
        feeds = [f for f in feeds if f.name in feed_names]
    return poll_feeds(connect(config).warm(), feeds)  # TLS context and stores built before the clock


def poll_feeds(rt: Runtime, feeds: Sequence[FeedConfig]) -> int:
    """Poll these feeds once, with the scheduler's threads; one line per feed, then the timing."""
    failed = 0
    # Feeds are fetched in parallel like the scheduler does; the lines come out in config order.
    with ThreadPoolExecutor(max_workers=poll_threads(feeds)) as pool:
        started, cpu_started = time.perf_counter(), time.process_time()
        outcomes = pool.map(lambda feed: poll_feed(rt, feed, force=True), feeds)
        for outcome in with_progress(
            list(outcomes) if sys.stderr.isatty() else outcomes, "polling", len(feeds)
        ):
            if outcome.status == "error":
                failed += 1
                print(f"{outcome.feed}: error: {outcome.error}")
            elif outcome.status == "disabled":
                print(f"{outcome.feed}: disabled ({outcome.error})")
            else:
                print(f"{outcome.feed}: {outcome.status}, {outcome.items} items, {outcome.enqueued} new")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if len(feeds) > 1:
        print(
            f"polled {len(feeds)} feeds in {elapsed:.3f} s ({len(feeds) / elapsed:.0f} polls/s, "
            f"{cpu / len(feeds) * 1000:.2f} ms CPU per poll)"
        )
    return EXIT_FAILURE if failed else EXIT_OK


def with_progress(items: Iterable[T], what: str, total: int) -> Iterator[T]:
    """Iterate, showing a progress bar on a terminal when there is enough to wait for."""
    if total < 5 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=what, total=total, console=Console(stderr=True), transient=True)


def status_data(rt: Runtime) -> dict[str, Any]:
    feeds = []
    for feed in rt.settings.feeds:
        state = rt.feed_states.get(feed.name)
        moved = state.url if state.url and state.moved_from == feed.url else None
        next_poll = max((t for t in (state.next_poll, state.not_before) if t), default=None)
        feeds.append(
            {
                "name": feed.name,
                "url": rt.config.redact(moved or feed.url),
                "disabled": state.disabled,
                "last_poll": _iso(state.last_poll),
                "last_success": _iso(state.last_success),
                "next_poll": None if state.disabled else _iso(next_poll),
                "error": state.error,
                "error_count": state.error_count,
                "items_seen": state.items_seen,
                "warning": state.warning,
            }
        )
    counts = queues.queue_counts(rt.redis)
    return {
        "feeds": feeds,
        "queues": [
            {"name": c.name, "queued": c.queued, "started": c.started, "failed": c.failed} for c in counts
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment else None


def status(config: Config, as_json: bool) -> int:
    data = status_data(connect(config))
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    feeds = Table(title="Feeds")
    for column in ("feed", "last success", "next poll", "errors", "items seen", "problem"):
        feeds.add_column(column)
    for f in data["feeds"]:
        problem = ("[red]disabled: [/red]" if f["disabled"] else "") + (f["error"] or f["warning"] or "")
        feeds.add_row(
            f["name"], f["last_success"] or "never", f["next_poll"] or "-", str(f["error_count"]),
            str(f["items_seen"]), problem or "[green]ok[/green]",
        )  # fmt: skip
    queue_table = Table(title="Queues")
    for column in ("queue", "queued", "started", "failed"):
        queue_table.add_column(column)
    for q in data["queues"]:
        queue_table.add_row(q["name"], str(q["queued"]), str(q["started"]), str(q["failed"]))
    console = Console()
    console.print(feeds)
    console.print(queue_table)
    return EXIT_OK


def sample_item() -> Item:
    """The Eulerpool DeepSeek story, as a sample for test-alert."""
    return Item(
        feed="newswatch-test",
        guid=None,
        link="https://eulerpool.com/news/deepseek-verschiebt-modellstart-nach-problemen-mit-huaweis-ki-chips",
        canonical_link=None,
        title="DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
        summary="DeepSeek hat die Einführung des KI-Modells R2 verschoben, da Trainingsläufe mit "
        "Huawei-Chips fehlschlugen. Das Unternehmen kehrt zu Nvidia zurück.",
        content="",
        categories=("Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"),
        published=datetime(2025, 8, 15, 13, 51, tzinfo=UTC),
        id="test-" + uuid.uuid4().hex[:12],
    )


def test_alert(config: Config, channel: str) -> int:
    if channel not in config.settings.channels and channel != "console":
        known = ", ".join(sorted(config.settings.channels)) or "none"
        print(f"newswatch: unknown channel {channel!r} (configured: {known})", file=sys.stderr)
        return EXIT_USAGE
    rt = Runtime(config, redis=None)  # type: ignore[arg-type]  # sending needs no Redis
    item = sample_item()
    match = AlertMatch("newswatch-test", ("DeepSeek",), (channel,))
    (delivery,) = deliveries_for(Classified(item, ("KI", "Halbleiter"), (match,)), rt.clock())
    started = time.monotonic()
    try:
        outcome = channels.send(rt, delivery)
    except DeliveryError as e:
        print(f"test-alert {channel}: FAILED after {time.monotonic() - started:.2f}s: {e}")
        return EXIT_FAILURE
    took = f"{outcome.seconds * 1000:.0f} ms"
    print(f"test-alert {channel}: delivered ({outcome.detail}) in {took}, id {delivery.delivery_id}")
    return EXIT_OK


def replay_failed(config: Config, channel: str | None) -> int:
    rt = connect(config)
    queue = rt.deliveries_queue
    # A replay gets the configured tries again. Same job id = same delivery id = same
    # webhook-id / Message-ID, and the outbox still refuses to send what was once accepted.
    retries = [max(1, int(r.total_seconds())) for r in config.settings.delivery.retries]
    failed = [
        job
        for job in rqcompat.failed_jobs(queue)
        if not channel or (job.args and job.args[0].get("channel") == channel)
    ]
    for job in with_progress(failed, "replaying", len(failed)):
        rqcompat.requeue_failed(queue, job, retries)
    print(f"replayed {len(failed)} failed deliveries" + (f" to channel {channel}" if channel else ""))
    return EXIT_OK


def health(config: Config) -> int:
    rt = connect(config)
    problems = []
    try:
        liveness.reachable(rt.redis)
    except Exception as e:  # any failure to reach Redis means unhealthy
        print(f"unhealthy: Redis unreachable ({e.__class__.__name__})")
        return EXIT_FAILURE
    if not liveness.alive(rt.redis, "scheduler"):
        problems.append("no scheduler heartbeat")
    if not liveness.live_workers(rt.redis):
        problems.append("no live worker")
    if problems:
        print("unhealthy: " + "; ".join(problems))
        return EXIT_FAILURE
    print("healthy")
    return EXIT_OK


def dashboard(config: Config, bind: str, port: int) -> int:
    env = {**os.environ, "RQ_DASHBOARD_REDIS_URL": config.settings.redis.url}
    user, password = (
        os.environ.get("NEWSWATCH_DASHBOARD_USER"),
        os.environ.get("NEWSWATCH_DASHBOARD_PASSWORD"),
    )
    if user and password:
        env |= {"RQ_DASHBOARD_USERNAME": user, "RQ_DASHBOARD_PASSWORD": password}
    argv = [sys.executable, "-m", "rq_dashboard", "--bind", bind, "--port", str(port), "--json"]
    # The Redis URL travels in the environment, not argv, so `ps` does not show its password.
    return subprocess.call(argv, env=env)


def run(config: Config, workers: int, log_level: str, log_format: str) -> int:
    from worker.supervisor import Supervisor

    base = [sys.executable, "-m", "worker.cli"]
    flags = ["--config", config.path, "--log-level", log_level, "--log-format", log_format]
    programs = {"scheduler": [*base, "scheduler", *flags]}
    for index in range(max(1, workers)):
        programs[f"worker-{index + 1}"] = [*base, "worker", *flags]
    return Supervisor(programs).run()

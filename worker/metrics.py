"""Prometheus metrics (SPEC: `metrics.port`, 0 turns it off).

Fetch metrics live in the scheduler process that fetches. What workers count (items new or
duplicate, alerts delivered, failed, retried) is kept in Redis and read at scrape time: workers
run on many hosts (and with --fork, a process per job), so in-process counters would be split
or lost; Redis gives one set of totals for the whole deployment, served from any endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.adapters import queues
from worker.adapters.counters import count_delivery, read_counts
from worker.adapters.store import FeedStateStore

__all__ = ["count_delivery", "error_kind", "serve"]

log = logging.getLogger(__name__)

POLLS = Counter("newswatch_polls_total", "Feed polls by outcome", ["feed", "outcome"])
NOT_MODIFIED = Counter("newswatch_not_modified_total", "Polls answered 304 Not Modified", ["feed"])
BYTES = Counter("newswatch_fetched_bytes_total", "Feed bytes fetched (after decompression)", ["feed"])
FETCH_SECONDS = Histogram(
    "newswatch_fetch_seconds",
    "Time to fetch a feed",
    ["feed"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
POLL_LATENESS = Histogram(
    "newswatch_poll_lateness_seconds",
    "How long after its time a poll started (scheduler polls)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
FEED_LATENESS = Gauge(
    "newswatch_feed_lateness_seconds", "How long after its time the feed's last poll started", ["feed"]
)
POLLS_IN_FLIGHT = Gauge("newswatch_polls_in_flight", "Polls running in this scheduler process")
POLL_WORST_LATENESS = Gauge(
    "newswatch_poll_worst_lateness_seconds", "The latest start of a poll in the last report period"
)
FETCH_ERRORS = Counter("newswatch_fetch_errors_total", "Failed polls by kind of error", ["feed", "kind"])


def error_kind(message: str) -> str:
    """A small fixed set of label values for error messages (labels must not be unbounded)."""
    lowered = message.lower()
    for needle, kind in (
        ("timed out", "timeout"), ("dns", "dns"), ("refused:", "blocked"), ("refused", "refused"),
        ("410", "gone"), ("http 4", "http_4xx"), ("http 5", "http_5xx"), ("larger than", "too_large"),
        ("redirect", "redirects"), ("not a feed", "not_a_feed"), ("malformed", "malformed"),
    ):  # fmt: skip
        if needle in lowered:
            return kind
    return "other"


class RedisCollector(Collector):
    """Worker counters, queue depths and the feeds' health (failing, silent: worker.core.ops),
    read from Redis at scrape time. `feeds` gives the configured feeds' names."""

    def __init__(self, connection: redis.Redis, feeds: Callable[[], Sequence[str]] | None = None) -> None:
        self.redis = connection
        self.feeds = feeds

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            counts = read_counts(self.redis)
            depths = queues.queue_counts(self.redis)
            told = FeedStateStore(self.redis).episodes_told(self.feeds()) if self.feeds else {}
        except redis.RedisError:
            return
        family = CounterMetricFamily(
            "newswatch_items", "Items processed, new or duplicate", labels=["feed", "kind"]
        )
        for labels, value in counts.items.items():
            family.add_metric(list(labels), value)
        yield family
        alerts = CounterMetricFamily(
            "newswatch_deliveries",
            "Alert deliveries by rule, channel and outcome",
            labels=["alert", "channel", "outcome"],
        )
        for labels, value in counts.deliveries.items():
            alerts.add_metric(list(labels), value)
        yield alerts
        depth = GaugeMetricFamily(
            "newswatch_queue_jobs", "Jobs per queue and state", labels=["queue", "state"]
        )
        for c in depths:
            for state, number in (("queued", c.queued), ("started", c.started), ("failed", c.failed)):
                depth.add_metric([c.name, state], number)
        yield depth
        yield from _health(told)


def _health(told: dict[str, tuple[bool, bool]]) -> Iterator[GaugeMetricFamily]:
    """1 from a feed's failing (silent) event until its recovery event, else 0."""
    failing = GaugeMetricFamily(
        "newswatch_feed_failing", "1 while the feed is failing (told on ops.channels)", labels=["feed"]
    )
    silent = GaugeMetricFamily(
        "newswatch_feed_silent", "1 while the feed is silent (told on ops.channels)", labels=["feed"]
    )
    for feed, (is_failing, is_silent) in told.items():
        failing.add_metric([feed], int(is_failing))
        silent.add_metric([feed], int(is_silent))
    yield failing
    yield silent


def serve(
    port: int, bind: str, connection: redis.Redis, feeds: Callable[[], Sequence[str]] | None = None
) -> bool:
    if not port:
        return False
    REGISTRY.register(RedisCollector(connection, feeds))
    start_http_server(port, addr=bind)
    log.info("metrics on http://%s:%d/metrics", bind, port)
    return True

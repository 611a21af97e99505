"""The per-process runtime: config, Redis connection, queues, stores, HTTP client and clock,
built once by the entry point and passed down (jobs reach it through `worker.jobs`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

import redis
from rq import Queue

from worker.adapters import http_fetch, keys, queues, webhook
from worker.adapters.archive import Archive
from worker.adapters.outbox import Outbox
from worker.adapters.smtp import SmtpSessions
from worker.adapters.store import FeedStateStore, SeenStore
from worker.adapters.stories import StoryIndex
from worker.config import Config, Settings
from worker.core.outbox import AlertPolicy

if TYPE_CHECKING:
    from worker.delivery import Pending
    from worker.sender import Sender


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    config: Config
    redis: redis.Redis
    clock: Callable[[], datetime] = field(default=utc_now)
    # Uniform in [0, 1): jitter of backoffs and retries. Tests pass their own.
    random: Callable[[], float] = field(default=random.random)
    # Feeds this process has polled successfully: if one of them later has no state in Redis, the
    # seen-store was wiped under us and the next poll re-baselines instead of flooding alerts.
    polled_feeds: set[str] = field(default_factory=set)
    # Feeds re-baselined by this process, with their baseline batches: until those are processed
    # the feed is not polled again, or its next poll would find the baseline's items unseen yet and
    # queue them once more, to be alerted (a normal batch may be processed before the baseline).
    baselines: dict[str, list[str]] = field(default_factory=dict)
    # A worker process's sender (worker.delivery.start_sender): every delivery it makes goes
    # through it. None elsewhere: deliveries then send themselves (see worker.delivery).
    sender: Sender[Pending] | None = None

    @property
    def settings(self) -> Settings:
        return self.config.settings

    @cached_property
    def items_queue(self) -> Queue:
        return queues.queue(self.redis, keys.ITEMS_QUEUE)

    @cached_property
    def deliveries_queue(self) -> Queue:
        return queues.queue(self.redis, keys.DELIVERIES_QUEUE)

    @cached_property
    def seen_store(self) -> SeenStore:
        return SeenStore(self.redis, self.settings.dedupe.ttl, self.story_index, self.archive)

    @cached_property
    def story_index(self) -> StoryIndex | None:
        """None with `stories: off`: every item is a story of its own."""
        stories = self.settings.stories
        if not stories.enabled:
            return None
        return StoryIndex(self.redis, stories.window, stories.threshold, self.settings.archive.keep)

    @cached_property
    def archive(self) -> Archive:
        return Archive(self.redis, self.settings.archive.keep, self.settings.archive.max_items)

    @cached_property
    def feed_states(self) -> FeedStateStore:
        return FeedStateStore(self.redis)

    @cached_property
    def outbox(self) -> Outbox:
        policies = {a.name: AlertPolicy(a.digest, a.max_per_hour, a.quiet) for a in self.settings.alerts}
        return Outbox(
            self.redis,
            self.deliveries_queue,
            tuple(self.settings.delivery.retries),
            policies,
            self.settings.dedupe.ttl,
            self.settings.delivery.timeout,
        )

    @cached_property
    def http(self) -> http_fetch.HostPools:
        polling = self.settings.polling
        # A server's connections are capped by the polls that may be in flight, not lower: the
        # per-host limit (adapters.hosts) decides how many start at once.
        return http_fetch.client(polling.allow_private_addresses, polling.concurrency + 16)

    @cached_property
    def delivery_http(self) -> webhook.PoolPerThread:
        """Webhook posts: connections of their own, one kept alive per sender thread and
        receiver (the polls' pools keep 8 per server: a burst would reconnect)."""
        return webhook.PoolPerThread(self.settings.polling.allow_private_addresses)

    @cached_property
    def smtp_sessions(self) -> SmtpSessions:
        """Open SMTP sessions, reused from one alert to the next (adapters/smtp.py)."""
        return SmtpSessions()

    def reconfigure(self, config: Config) -> None:
        """Run on `config` from now on (a live reload, worker.reload): what was built from
        settings that changed is built again when next used; the rest is kept. Whoever holds
        an old store or pool (a send in flight) finishes with it."""
        old, self.config = self.settings, config
        for name, inputs in _BUILT_FROM.items():
            if name in self.__dict__ and inputs(old) != inputs(config.settings):
                del self.__dict__[name]

    def warm(self) -> Runtime:
        """Build what jobs use (HTTP clients and TLS contexts, stores) before the first job, once."""
        _ = (self.http, self.delivery_http, self.outbox, self.seen_store, self.feed_states, self.items_queue)
        return self


# What each cached part of a Runtime is built from (see Runtime.reconfigure).
_BUILT_FROM: dict[str, Callable[[Settings], object]] = {
    "outbox": lambda s: (s.alerts, s.delivery, s.dedupe),
    "seen_store": lambda s: (s.dedupe, s.stories, s.archive),
    "story_index": lambda s: (s.stories, s.archive),
    "archive": lambda s: s.archive,
    "http": lambda s: (s.polling.allow_private_addresses, s.polling.concurrency),
    "delivery_http": lambda s: s.polling.allow_private_addresses,
}

_CONNECTION = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 30,
               "retry_on_timeout": True}  # fmt: skip


def redis_client(url: str) -> redis.Redis:
    """A client on `url`; it retries transient errors on its own. `redis+sentinel://host:port[,
    host:port...]/service[/db]` asks the Sentinels for the service's master, and again after a
    failover (the same URL form rq-dashboard reads)."""
    if url.startswith("redis+sentinel://"):
        from redis_sentinel_url import connect as sentinel_connect

        _, client = sentinel_connect(url, client_options=dict(_CONNECTION))
        return client  # type: ignore[no-any-return]
    return redis.Redis.from_url(url, **_CONNECTION)


def connect(config: Config) -> Runtime:
    """A runtime on the configured Redis."""
    return Runtime(config, redis_client(config.settings.redis.url))

"""The polling scheduler: one APScheduler job per feed; each poll enqueues new items for workers.

Started by `newswatch scheduler` (and `python scheduler.py`, the same).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta

import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from worker import metrics
from worker.adapters import liveness
from worker.core.poll import StateUpdate
from worker.polling import poll_feed, poll_threads
from worker.runtime import Runtime

log = logging.getLogger("newswatch.scheduler")
HEARTBEAT_EVERY = timedelta(seconds=10)
HEARTBEAT_TTL = timedelta(seconds=60)


def poll_job_id(feed: str) -> str:
    return f"poll:{feed}"


def build_scheduler(rt: Runtime, spread: Callable[[float], float] | None = None) -> BlockingScheduler:
    """Schedule every feed. `spread(interval_seconds)` gives each feed's first-poll delay: up to
    `polling.jitter` of the interval (at most 10 s), so a restart does not fire every feed in
    the same instant; with jitter 0 % every feed is polled at once."""
    jitter = rt.settings.polling.jitter
    spread = spread or (lambda seconds: rt.random() * min(seconds * jitter, 10.0))
    feeds = rt.settings.feeds
    scheduler = BlockingScheduler(
        # One thread more than the polls can use: the heartbeat never waits behind slow fetches.
        executors={"default": ThreadPoolExecutor(max_workers=poll_threads(feeds) + 1)},
        timezone="UTC",
    )
    now = rt.clock()
    for feed in feeds:
        interval = rt.settings.feed_interval(feed).total_seconds()
        scheduler.add_job(
            _poll_safely,
            trigger=IntervalTrigger(seconds=interval, jitter=interval * jitter or None),
            args=[rt, scheduler, feed.name],
            id=poll_job_id(feed.name),
            name=f"poll {feed.name}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=max(1, int(interval)),
            next_run_time=now + timedelta(seconds=spread(interval)),
        )
    scheduler.add_job(
        _heartbeat,
        trigger=IntervalTrigger(seconds=HEARTBEAT_EVERY.total_seconds()),
        args=[rt],
        id="heartbeat",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=int(HEARTBEAT_EVERY.total_seconds()),
        next_run_time=now,
    )
    return scheduler


def _poll_safely(rt: Runtime, scheduler: BlockingScheduler, feed_name: str) -> None:
    """A poll must never take the scheduler down: Redis outages are logged and retried next time.
    APScheduler has computed the job's next run before running it; it is stored with the poll."""
    job = scheduler.get_job(poll_job_id(feed_name))
    try:
        poll_feed(rt, rt.settings.feed(feed_name), next_poll=job.next_run_time if job else None)
    except redis.RedisError as e:
        log.warning("feed=%s poll skipped, Redis unavailable: %s", feed_name, e.__class__.__name__)


def _heartbeat(rt: Runtime) -> None:
    try:
        liveness.beat(rt.redis, "scheduler", HEARTBEAT_TTL)
    except redis.RedisError as e:
        log.warning("heartbeat failed, Redis unavailable: %s", e.__class__.__name__)


def _remember_first_polls(rt: Runtime, scheduler: BlockingScheduler) -> None:
    for feed in rt.settings.feeds:
        job = scheduler.get_job(poll_job_id(feed.name))
        if job is not None and job.next_run_time is not None:
            rt.feed_states.write(feed.name, StateUpdate(next_poll=job.next_run_time))


def run(rt: Runtime) -> None:
    scheduler = build_scheduler(rt)
    log.info("scheduler started: %d feeds", len(rt.settings.feeds))
    metrics_settings = rt.settings.metrics
    try:
        metrics.serve(metrics_settings.port, metrics_settings.bind, rt.redis)
    except OSError as e:  # a taken port must not stop polling
        log.error(
            "metrics endpoint not started on %s:%d: %s", metrics_settings.bind, metrics_settings.port, e
        )
    with contextlib.suppress(redis.RedisError):
        _remember_first_polls(rt, scheduler)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        log.info("scheduler stopped")

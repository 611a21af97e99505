"""The polling scheduler (SPEC §9): any number of them share the feeds through one schedule and
per-feed leases in Redis (adapters.schedule).

Each scheduler process runs a dispatcher thread that takes due feeds while it has free poll
slots (`polling.concurrency`) and their hosts have room (`polling.per_host`), and a pool of
threads that poll them side by side, so a slow or dripping feed holds one slot until
`polling.timeout` and nothing else. APScheduler runs the housekeeping: heartbeats (which also
keep the leases of long polls alive), and a report that says when polls start late, and why.

Started by `newswatch scheduler` (and `python scheduler.py`, the same).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import resource
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import redis
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from worker import metrics, reload
from worker.adapters import liveness
from worker.adapters.hosts import HOSTS
from worker.adapters.http_fetch import host_key
from worker.adapters.schedule import Lease, Schedule, SchedulerInfo, SchedulerRegistry, new_scheduler_id
from worker.config import Config, FeedConfig
from worker.core.schedule import KeepingUp, choose, diagnosis, farthest, first_due, next_due
from worker.polling import poll_feed
from worker.runtime import Runtime

log = logging.getLogger("newswatch.scheduler")
HEARTBEAT_EVERY = timedelta(seconds=5)
HEARTBEAT_TTL = timedelta(seconds=60)
# How often a scheduler says whether it keeps up: twice its shortest interval, within these.
REPORT_EVERY = (timedelta(seconds=10), timedelta(seconds=60))
# On SIGTERM, polls in flight get this long to finish; the rest are abandoned safely (their
# validators are written only after their items are queued) and their feeds handed back.
STOP_GRACE = timedelta(seconds=6)
# The dispatcher looks again at least this often, and as soon as a poll ends.
DISPATCH_EVERY = 0.25


class _Pool:
    """Daemon threads that run polls: started as needed up to `size`, never joined at exit
    (a stopping scheduler must not wait out a dripping feed's timeout)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.threads = 0
        self.idle = 0
        self.lock = threading.Lock()

    def submit(self, task: Callable[[], None]) -> None:
        with self.lock:
            if self.idle == 0 and self.threads < self.size:
                self.threads += 1
                threading.Thread(target=self._work, name=f"poll-{self.threads}", daemon=True).start()
            else:
                self.idle -= 1
        self.tasks.put(task)

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            task()
            with self.lock:
                self.idle += 1


class Scheduler:
    def __init__(self, rt: Runtime, scheduler_id: str | None = None) -> None:
        self.rt = rt
        self.id = scheduler_id or new_scheduler_id()
        polling = rt.settings.polling
        self.concurrency = polling.concurrency
        self.per_host = polling.per_host
        self.lease = polling.lease
        self.schedule = Schedule(rt.redis, self.id)
        self.registry = SchedulerRegistry(rt.redis)
        self.feeds: dict[str, FeedConfig] = {f.name: f for f in rt.settings.feeds}
        self.host_of = {f.name: host_key(f.url) for f in rt.settings.feeds}
        self.pool = _Pool(self.concurrency)
        self.lock = threading.Lock()
        self.in_flight: dict[str, Lease] = {}
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.seen = KeepingUp()
        self.dispatcher: threading.Thread | None = None  # set by `run`; the heartbeat checks it
        self.revision = reload.revision(rt.settings)
        self.sync_lock = threading.Lock()
        self.synced = False  # this config's feeds are on the schedule (else the heartbeat retries)
        self._cpu_mark = (time.process_time(), time.monotonic())

    # --- the schedule ---------------------------------------------------------------------

    def _first_times(self) -> dict[str, datetime]:
        now, feeds, settings = self.rt.clock(), list(self.feeds.values()), self.rt.settings
        return {
            f.name: first_due(
                now,
                settings.feed_interval(f),
                settings.polling.jitter,
                len(feeds),
                self.concurrency,
                self.rt.random(),
            )
            for f in feeds
        }

    def _farthest(self, now: datetime) -> dict[str, datetime]:
        """Per feed, a time its next poll can never be later than (see core.schedule.farthest)."""
        return {f.name: farthest(now, self.rt.settings.feed_interval(f)) for f in self.feeds.values()}

    def sync_schedule(self) -> None:
        """Put this config's feeds on the shared schedule (new ones spread over a start window,
        known ones keep their time) and take off the feeds that left the config; from now on
        schedulers on other revisions put no "lost" feeds back (see `heartbeat`)."""
        with self.sync_lock:  # the last sync is of the newest config, whichever thread runs it
            gone = self.schedule.sync(self._first_times(), self.revision)
            self.synced = True
        if gone:
            log.info("feeds no longer configured, taken off the schedule: %s", ", ".join(gone))

    def reconfigure(self, config: Config) -> None:
        """A live reload (worker.reload): polls in flight end on the config they started with;
        the next ones use the new one. Added feeds go on the schedule within their first
        interval, removed ones leave it (no scheduler polls them again), changed ones keep
        their time and state (their first poll on the new entry starts afresh, core.poll)."""
        settings = config.settings
        with self.lock:
            self.rt.reconfigure(config)
            self.per_host, self.lease = settings.polling.per_host, settings.polling.lease
            self.concurrency = self.pool.size = settings.polling.concurrency
            self.feeds = {f.name: f for f in settings.feeds}
            self.host_of = {f.name: host_key(f.url) for f in settings.feeds}
            self.revision = reload.revision(settings)
            self.synced = False
        try:
            self.sync_schedule()
        except redis.RedisError as e:
            log.warning("schedule not updated yet, Redis unavailable (%s): the heartbeat retries", e)
        self.wake.set()

    def dispatch_forever(self) -> None:
        """Take due feeds while there is room; wait for a free slot or the next due time."""
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                self.dispatch_once()
                backoff = 1.0
            except Exception as e:  # the dispatcher never dies of one error (a bug, garbage, Redis away)
                _log_dispatch_error(e, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.wake.wait(DISPATCH_EVERY)
            self.wake.clear()

    def dispatch_once(self) -> int:
        now = self.rt.clock()
        with self.lock:
            free = self.concurrency - len(self.in_flight)
        due = self.schedule.due(now, limit=max(4 * free, 500))
        if not due:
            return 0
        if free <= 0:
            self.seen.slots_full += 1
            return 0
        feeds, host_of = self.feeds, self.host_of  # one config for this round (a reload swaps them)
        hosts = {host_of[d.feed] for d in due if d.feed in host_of}
        host_free = {host: HOSTS.free(host, self.per_host) for host in hosts}
        chosen = choose(due, free, host_of, host_free, self.per_host)
        if len(chosen) < min(free, len(due)):
            for host in {host_of.get(d.feed) for d in due} - {host_of[c.feed] for c in chosen}:
                if host:
                    self.seen.host_limited[host] = self.seen.host_limited.get(host, 0) + 1
        leases = self.schedule.claim([c.feed for c in chosen], now, self.lease)
        for lease in leases:
            self._start(lease, feeds[lease.feed], host_of[lease.feed])
        return len(leases)

    def _start(self, lease: Lease, feed: FeedConfig, host: str) -> None:
        with self.lock:
            self.in_flight[lease.feed] = lease
        slot = HOSTS.take(host)  # `choose` saw it free; the poll holds it until it ends
        self.pool.submit(lambda: self._poll(feed, lease, host, slot))

    def _poll(self, feed: FeedConfig, lease: Lease, host: str, slot: float) -> None:
        HOSTS.hold(host)  # the poll's fetches against its host run in this slot
        started = self.rt.clock()
        lateness = max(timedelta(0), started - lease.due)
        try:
            if self.stopping.is_set():  # queued before the stop: due again at once, for others
                self.schedule.release([lease], started)
                return
            metrics.POLL_LATENESS.observe(lateness.total_seconds())
            metrics.FEED_LATENESS.labels(feed.name).set(lateness.total_seconds())
            outcome = poll_feed(self.rt, feed, lease=lease, lateness=lateness.total_seconds())
            interval = self.rt.settings.feed_interval(feed)
            jitter = self.rt.settings.polling.jitter
            self.schedule.complete(
                lease, next_due(started, interval, jitter, self.rt.random(), outcome.not_before)
            )
            with self.lock:
                self.seen.record(lateness)
        except redis.ResponseError as e:  # Redis answered, but refused (garbage in a key, say)
            log.warning("feed=%s poll failed, Redis refused a command: %s", feed.name, e)
        except redis.RedisError as e:
            # The lease lapses and the feed falls due again: nothing is lost, only delayed.
            log.warning("feed=%s poll skipped, Redis unavailable: %s", feed.name, e.__class__.__name__)
        except Exception:  # a bug: reported, and the scheduler goes on with the other feeds
            log.exception("feed=%s poll failed unexpectedly", feed.name)
        finally:
            HOSTS.release(host, slot)
            with self.lock:
                self.in_flight.pop(lease.feed, None)
            self.wake.set()

    # --- housekeeping (APScheduler jobs) -----------------------------------------------------

    def heartbeat(self) -> None:
        """Say this scheduler is alive, and keep the leases of polls still running from lapsing."""
        now = self.rt.clock()
        with self.lock:
            held = list(self.in_flight.values())
            info = SchedulerInfo(self.id, socket.gethostname(), now, len(held), self.concurrency)
        if self.dispatcher is not None and not self.dispatcher.is_alive():
            # It polls nothing any more: no heartbeat, so that `health` says so.
            log.error("scheduler %s: its dispatcher has stopped (see above); not beating", self.id)
            return
        try:
            self.schedule.extend(held, now + self.lease)
            if not self.synced:
                self.sync_schedule()
            elif (
                self.schedule.size() < len(self.feeds)
                and self.schedule.add_missing(self._first_times(), self.revision)  # not a config left behind
            ):
                log.warning("the poll schedule in Redis had lost feeds (flushed or restored?): put back")
            self.schedule.put_back_unreachable(self._farthest(now), now)
            self.registry.beat(info)
            liveness.beat(self.rt.redis, "scheduler", HEARTBEAT_TTL)
        except redis.RedisError as e:
            log.warning("heartbeat failed, Redis unavailable: %s", e.__class__.__name__)
        metrics.POLLS_IN_FLIGHT.set(len(held))

    def report(self) -> None:
        """Now and then (REPORT_EVERY): the worst lateness for the metrics, and a warning that
        says why when polls start late."""
        cpu, wall = time.process_time(), time.monotonic()
        with self.lock:
            seen, self.seen = self.seen, KeepingUp()
            seen.cpu_share = (cpu - self._cpu_mark[0]) / max(1e-6, wall - self._cpu_mark[1])
            self._cpu_mark = (cpu, wall)
        metrics.POLL_WORST_LATENESS.set(seen.worst.total_seconds())
        message = diagnosis(seen, self.concurrency, self.per_host)
        if message:
            log.warning("scheduler is not keeping up: %s", message)

    # --- start and stop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Start no more polls; give those in flight STOP_GRACE, then hand back the feeds of
        the ones still running, due at once for the other schedulers."""
        self.stopping.set()
        self.wake.set()
        deadline = time.monotonic() + STOP_GRACE.total_seconds()
        while time.monotonic() < deadline:
            with self.lock:
                if not self.in_flight:
                    break
            time.sleep(0.05)
        with self.lock:
            unfinished = list(self.in_flight.values())
        with contextlib.suppress(redis.RedisError):
            self.schedule.release(unfinished, self.rt.clock())
            self.registry.leave(self.id)
        if unfinished:
            log.info("stopped with %d polls unfinished; their feeds are due again at once", len(unfinished))


def build_scheduler(rt: Runtime, poller: Scheduler) -> BlockingScheduler:
    """APScheduler runs the housekeeping; polls are dispatched by the Scheduler's own thread."""
    scheduler = BlockingScheduler(timezone="UTC")
    shortest = min((rt.settings.feed_interval(f) for f in rt.settings.feeds), default=REPORT_EVERY[1])
    report_every = min(max(2 * shortest, REPORT_EVERY[0]), REPORT_EVERY[1])
    for job, every in ((poller.heartbeat, HEARTBEAT_EVERY), (poller.report, report_every)):
        scheduler.add_job(
            job,
            trigger=IntervalTrigger(seconds=every.total_seconds()),
            id=job.__name__,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=int(every.total_seconds()),
            # The heartbeat at once (health, and the other schedulers, see this one at its start);
            # the report after its first period.
            next_run_time=rt.clock() + (every if job == poller.report else timedelta(0)),
        )
    return scheduler


def _allow_sockets(concurrency: int) -> None:
    """Each poll in flight holds a socket: raise the open-file limit as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = (
        min(hard, max(soft, concurrency * 2 + 256))
        if hard != resource.RLIM_INFINITY
        else concurrency * 2 + 256
    )
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run(rt: Runtime, supervisor: int | None = None) -> None:
    """Until SIGTERM or Ctrl-C. `supervisor`: the pid of the `newswatch run` that started this
    process; it watches the config file and sends SIGHUP (see worker.reload)."""
    poller = Scheduler(rt)
    _allow_sockets(poller.concurrency)
    metrics_settings = rt.settings.metrics
    try:
        metrics.serve(metrics_settings.port, metrics_settings.bind, rt.redis, lambda: _feed_names(rt))
    except OSError as e:  # a taken port must not stop polling
        log.error(
            "metrics endpoint not started on %s:%d: %s", metrics_settings.bind, metrics_settings.port, e
        )
    housekeeping = build_scheduler(rt, poller)
    dispatcher = threading.Thread(target=_dispatch_after_sync, args=(poller,), name="dispatch", daemon=True)
    poller.dispatcher = dispatcher
    log.info(
        "scheduler %s started: %d feeds, %d polls at a time", poller.id, len(poller.feeds), poller.concurrency
    )
    dispatcher.start()
    record = reload.ProcessRecord(rt, "scheduler", poller.id, supervisor)
    reloader = reload.Reloader(
        rt.config,
        poller.reconfigure,
        watch_file=supervisor is None,
        record=record,
        who=f"scheduler {poller.id}",
    )
    reloader.start()
    try:
        housekeeping.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        reloader.stop()
        if housekeeping.running:
            housekeeping.shutdown(wait=False)
        poller.stop()
        log.info("scheduler stopped")


def _feed_names(rt: Runtime) -> list[str]:
    return [feed.name for feed in rt.settings.feeds]


def _log_dispatch_error(error: Exception, backoff: float) -> None:
    if isinstance(error, redis.ResponseError):  # Redis answered, but refused: say what it said
        log.error("scheduler: Redis refused a command (%s); retrying in %.0fs", error, backoff)
    elif isinstance(error, redis.RedisError):
        log.warning("scheduler: Redis unavailable (%s); retrying in %.0fs", error.__class__.__name__, backoff)
    else:  # a bug: reported in full, and the dispatcher goes on
        log.exception("scheduler: dispatching failed; retrying in %.0fs", backoff)


def _dispatch_after_sync(poller: Scheduler) -> None:
    wait = 1.0
    while not poller.stopping.is_set():
        try:
            poller.sync_schedule()
            break
        except redis.RedisError as e:
            log.warning("scheduler: Redis unavailable (%s); retrying in %.0fs", e.__class__.__name__, wait)
            poller.stopping.wait(wait)
            wait = min(wait * 2, 30.0)
    poller.dispatch_forever()

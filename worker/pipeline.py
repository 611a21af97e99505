"""The pipeline, phase by phase.

Scheduler side, `poll_feed`: fetch -> parse -> normalise -> pre-filter -> enqueue.
Worker side, `process_items`: dedupe -> classify -> match -> enqueue deliveries (atomically),
and `deliver`: send one alert through one channel, once.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from worker import channels, metrics
from worker.adapters.feed_parse import ParsedFeed, parse_feed
from worker.adapters.http_fetch import FetchLimits, FetchResult, RetryLaterError, fetch, request_url
from worker.adapters.queues import enqueue_item_batches
from worker.adapters.store import Candidate, FeedState
from worker.config import FeedConfig
from worker.core.errors import (
    DeliveryError,
    FeedGoneError,
    FeedParseError,
    FetchError,
    NewswatchError,
    PermanentDeliveryError,
)
from worker.core.models import Delivery, Item, parse_utc
from worker.core.render import deliveries_for
from worker.core.rules import classify_many, too_old_to_alert
from worker.core.timing import next_retry_delay, wait_after_error, wait_after_success
from worker.core.units import format_duration
from worker.monitoring import report_delivery_failure, report_feed_error
from worker.runtime import Runtime

log = logging.getLogger(__name__)
# A claim outlives one send attempt by this much, then lapses so a killed worker's delivery goes on.
CLAIM_MARGIN = timedelta(seconds=30)
# How long a batch job spends on first tries before leaving the rest to their delivery jobs.
INLINE_BUDGET = timedelta(seconds=10)


@dataclass(frozen=True)
class PollOutcome:
    feed: str
    status: str  # "new", "unchanged", "error", "disabled", "waiting"
    items: int = 0  # items in the feed
    enqueued: int = 0  # items not seen before, sent to workers
    error: str | None = None


GUID_CHURN_WARNING = "GUIDs change on every poll; items are matched by their links"
# At most this many fetches run against one host at a time (scheduler threads wait their turn).
PER_HOST_CONCURRENCY = 2
_host_slots: dict[bytes, threading.BoundedSemaphore] = defaultdict(
    lambda: threading.BoundedSemaphore(PER_HOST_CONCURRENCY)
)
# At most this many polls run at once in one process: fetches overlap while others wait on the
# network. The scheduler and `newswatch poll` size their thread pools with poll_threads().
POLL_THREADS = 8


def poll_threads(feeds: Sequence[FeedConfig]) -> int:
    """Threads worth having for these feeds. Each host takes PER_HOST_CONCURRENCY fetches at a
    time, so threads beyond that only wait, and contend for the GIL: for 200 feeds on one host,
    8 threads cost 1.7 ms of CPU per unchanged poll where 2 cost 1.3 (docs/performance.md)."""
    hosts = {request_url(feed.url).host for feed in feeds}
    return max(1, min(POLL_THREADS, PER_HOST_CONCURRENCY * len(hosts)))


def poll_feed(
    rt: Runtime, feed: FeedConfig, force: bool = False, next_poll: datetime | None = None
) -> PollOutcome:
    """Poll one feed once. Never raises for feed problems: they are recorded in the feed's state.
    `force` polls even while a backoff or cache lifetime says to wait (`newswatch poll`);
    `next_poll` (the scheduler's next run) is stored with the poll's own state write."""
    outcome = _poll(rt, feed, force, {"next_poll": next_poll} if next_poll else {})
    metrics.POLLS.labels(feed.name, outcome.status).inc()
    return outcome


# Polls of one feed made again because its state moved on under them, before giving up the
# conditional writes (another process writing the same feed's state at the very same time).
_STALE_STATE_RETRIES = 2


def _poll(rt: Runtime, feed: FeedConfig, force: bool, schedule: dict[str, datetime]) -> PollOutcome:
    """A poll starts from the feed's state as this process last wrote it, and makes its writes
    conditional on that state still being current. An unchanged poll is then one Redis round
    trip. If the state moved on (another process polled, Redis was flushed), the poll is made
    again from the state Redis has now; a flushed Redis is thus noticed on the next poll."""
    for attempt in range(_STALE_STATE_RETRIES + 1):
        states = rt.feed_states
        state = states.get_remembered(feed.name) if attempt == 0 else states.get(feed.name)
        outcome = _poll_from(rt, feed, force, schedule, state, attempt < _STALE_STATE_RETRIES)
        if outcome is not None:
            return outcome
        log.debug("feed=%s state changed under the poll; polling again from Redis's", feed.name)
    raise AssertionError("the last attempt writes unconditionally")  # pragma: no cover


def _poll_from(
    rt: Runtime,
    feed: FeedConfig,
    force: bool,
    schedule: dict[str, datetime],
    state: FeedState,
    conditional: bool,
) -> PollOutcome | None:
    """One poll from `state`; None when the state turned out to be out of date (nothing done
    that matters: at most a fetch whose result is thrown away)."""
    expect = state if conditional else None
    now = rt.clock()
    waiting = not force and state.not_before is not None and now < state.not_before
    # Polls that end here write nothing; they must not end on a memory Redis no longer shares.
    if (state.disabled or waiting) and not rt.feed_states.is_current(feed.name, state):
        return None
    if state.disabled:
        if state.gone_url in (None, feed.url):
            return PollOutcome(feed.name, "disabled", error=state.error)
        log.info("feed=%s has a new URL in the config: enabled again", feed.name)
        if not rt.feed_states.update(
            feed.name, expect, disabled=False, gone_url=None, url=None, moved_from=None
        ):
            return None
        # A new URL starts afresh (no validators, no errors); the state is this poll's own now.
        state, expect = FeedState(items_seen=state.items_seen, last_success=state.last_success), None
    if waiting:
        return PollOutcome(feed.name, "waiting")
    url = state.url if state.url and state.moved_from == feed.url else feed.url
    try:
        result, body_hash, parsed = _fetch_and_parse(rt, feed, url, state)
    except (FetchError, FeedParseError) as e:
        return _record_failure(rt, feed, now, e, state, expect, schedule)
    interval = rt.settings.feed_interval(feed)
    update: dict[str, Any] = {"last_poll": now, "last_success": now, "error": None, "error_count": 0}
    update |= schedule
    if result.permanent_redirect and result.permanent_redirect != url:
        update |= {"url": result.permanent_redirect, "moved_from": feed.url}
        log.warning(
            "feed=%s moved permanently; polling %s from now on",
            feed.name,
            rt.config.redact(result.permanent_redirect),
        )
    if parsed is None:  # 304 or the same body as last time
        wait = wait_after_success(interval, result.fresh_for)
        not_before = now + wait if wait > interval else None
        if not rt.feed_states.update(feed.name, expect, **update, not_before=not_before):
            return None
        return PollOutcome(feed.name, "unchanged")
    # New items are queued on the strength of this state (baseline or not, what is new): it
    # must be the state in Redis, not only this process's memory of it.
    if not rt.feed_states.is_current(feed.name, state):
        return None
    baseline = feed.name in rt.polled_feeds and state.last_success is None
    if baseline:
        log.warning(
            "feed=%s its state in Redis is gone (flushed, or a new volume): re-baselining — the %d items "
            "in the feed now are recorded, not alerted", feed.name, len(parsed.items),
        )  # fmt: skip
    found = rt.seen_store.lookup([Candidate(item) for item in parsed.items])
    fresh = [c.item for c in found.fresh]
    enqueue_item_batches(rt.items_queue, feed.name, fresh, rt.settings.polling.batch_size, baseline)
    # Validators are stored only after the items are safely queued: if Redis fails before this,
    # the next poll fetches and enqueues the same body again instead of skipping it.
    churn = found.guid_churn >= max(2, len(parsed.items) // 2)
    wait = wait_after_success(interval, result.fresh_for, parsed.ttl_minutes)
    rt.feed_states.update(
        feed.name, **update, etag=result.etag, last_modified=result.last_modified,
        body_hash=body_hash, warning=GUID_CHURN_WARNING if churn else None,
        not_before=now + wait if wait > interval else None,
    )  # fmt: skip
    rt.polled_feeds.add(feed.name)
    log.info("feed=%s polled: %d items, %d new to process", feed.name, len(parsed.items), len(fresh))
    return PollOutcome(feed.name, "new", len(parsed.items), len(fresh))


def _fetch_and_parse(
    rt: Runtime, feed: FeedConfig, url: str, state: FeedState
) -> tuple[FetchResult, str | None, ParsedFeed | None]:
    """Fetch (one slot per host) and parse: the result, the body's hash, and the parsed feed, or
    None when nothing changed (304, or the same body as last time)."""
    polling = rt.settings.polling
    limits = FetchLimits(polling.timeout.total_seconds(), polling.max_bytes, polling.max_redirects)
    with _host_slots[request_url(url).host], metrics.FETCH_SECONDS.labels(feed.name).time():
        result = fetch(rt.http, url, limits, state.etag, state.last_modified)
    metrics.BYTES.labels(feed.name).inc(len(result.body))
    if result.not_modified:
        metrics.NOT_MODIFIED.labels(feed.name).inc()
        return result, state.body_hash, None
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == state.body_hash:
        return result, body_hash, None
    return result, body_hash, parse_feed(feed.name, result.body, result.url, result.content_type, rt.clock())


def _record_failure(
    rt: Runtime,
    feed: FeedConfig,
    now: datetime,
    error: NewswatchError,
    state: FeedState,
    expect: FeedState | None,
    schedule: dict[str, datetime],
) -> PollOutcome | None:
    """The failure counts as one more in a row after `state`'s; None if that state is not
    current (see _poll_from)."""
    count = state.error_count + 1
    gone = isinstance(error, FeedGoneError)
    retry_after = error.retry_after if isinstance(error, RetryLaterError) else None
    wait = wait_after_error(rt.settings.feed_interval(feed), count, random.random(), retry_after)
    extra: dict[str, Any] = {"disabled": True, "gone_url": feed.url} if gone else {}
    if not rt.feed_states.update(
        feed.name,
        expect,
        error=str(error),
        error_count=count,
        last_poll=now,
        not_before=now + wait,
        **extra,
        **schedule,
    ):
        return None  # counted and reported by the poll made again
    metrics.FETCH_ERRORS.labels(feed.name, metrics.error_kind(str(error))).inc()
    report_feed_error(feed.name, error)
    log.warning(
        "feed=%s poll failed (%d in a row, next try in %s): %s", feed.name, count, _short(wait), error
    )
    return PollOutcome(feed.name, "error", error=str(error))


def _short(wait: timedelta) -> str:
    return format_duration(timedelta(seconds=round(wait.total_seconds())))


def process_items(
    rt: Runtime, feed: str, item_dicts: Sequence[dict[str, Any]], baseline: bool = False
) -> int:
    """Dedupe, classify and match a batch; commit marks and deliveries in one transaction.
    A baseline batch is recorded without alerting (the seen-store was wiped).

    Safe to run any number of times for the same batch (RQ retries, abandoned jobs)."""
    now = rt.clock()
    max_age = rt.settings.polling.max_age
    candidates = []
    for classified in classify_many([Item.from_dict(data) for data in item_dicts], rt.config.rules):
        item = classified.item
        quiet = baseline or too_old_to_alert(item, now, max_age)
        deliveries = () if quiet else tuple(deliveries_for(classified, now))
        candidates.append(Candidate(item, deliveries))
    committed = rt.seen_store.commit_new(feed, candidates, rt.outbox, now)
    new = committed.new
    alerts = sum(len(c.deliveries) for c in new)
    log.info("feed=%s batch: %d items, %d new, %d deliveries", feed, len(candidates), len(new), alerts)
    deliver_inline(rt, committed.immediate)
    return len(new)


def deliver_inline(rt: Runtime, deliveries: Sequence[Delivery]) -> None:
    """The first try of each new delivery, made here rather than by its own RQ job: a job costs
    RQ a few milliseconds and dozens of Redis round trips; a webhook to a healthy receiver
    costs about one. Each delivery's job already exists (held back by one retry interval), so
    whatever does not succeed here (failure, time budget spent, this worker killed) is taken
    over by that job with the usual retries. The batch is claimed in one round trip, for long
    enough to get through it; what the time budget leaves unsent is released at once (should
    this worker die mid-batch, the rest wait out that lease, under a minute, before their jobs
    may send them)."""
    if not deliveries:
        return
    deadline = time.monotonic() + INLINE_BUDGET.total_seconds()
    lease = INLINE_BUDGET + rt.settings.delivery.timeout + CLAIM_MARGIN
    tokens = rt.outbox.claim_many(deliveries, lease)
    sent: list[str] = []
    retries = rt.settings.delivery.retries
    for position, (delivery, token) in enumerate(zip(deliveries, tokens, strict=True)):
        if token is None:  # sent already: its held job has nothing left to do
            sent.append(delivery.delivery_id)
            continue
        if not token:
            continue  # someone else is on it; the held job will see
        if time.monotonic() > deadline:
            # A slow receiver must not hold the batch: the rest go back to their held jobs.
            rest = zip(deliveries[position:], tokens[position:], strict=True)
            rt.outbox.release_many([(later, later_token) for later, later_token in rest if later_token])
            break
        try:
            _send_claimed(rt, delivery, token)
            sent.append(delivery.delivery_id)
        except DeliveryError as e:
            if isinstance(e, PermanentDeliveryError) or not retries:
                _fail_for_good(rt, delivery, e)
                continue
            metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "retried")
            wait = next_retry_delay(int(retries[0].total_seconds()), e.retry_after, random.random())
            log.warning(
                "alert=%s channel=%s first try failed, retry in %ss: %s",
                delivery.alert,
                delivery.channel,
                wait,
                e,
            )
            rt.outbox.retry_later(delivery, rt.clock() + timedelta(seconds=wait))
    rt.outbox.cancel(sent)


def deliver(rt: Runtime, delivery: Delivery) -> str:
    """Claim, send, mark sent: a delivery that a receiver accepted is never sent again, however
    often its job runs. Only a worker killed between 'accepted' and 'marked' can cause a repeat,
    with the same id, after its claim lapses."""
    lease = rt.settings.delivery.timeout + CLAIM_MARGIN
    token = rt.outbox.claim(delivery, lease)
    if token is None:
        log.info(
            "alert=%s channel=%s id=%s already delivered",
            delivery.alert,
            delivery.channel,
            delivery.delivery_id,
        )
        return "already delivered"
    _send_claimed(rt, delivery, token)
    return "delivered"


def _send_claimed(rt: Runtime, delivery: Delivery, token: str) -> None:
    """Send a delivery this worker holds the claim of; mark it sent, or release the claim."""
    try:
        outcome = channels.send(rt, delivery)
    except BaseException:
        rt.outbox.release(delivery, token)
        raise
    rt.outbox.mark_sent(delivery)  # counts it as delivered too
    log.info(
        "alert=%s channel=%s id=%s delivered (%s, %.0f ms)",
        delivery.alert, delivery.channel, delivery.delivery_id, outcome.detail, outcome.seconds * 1000,
    )  # fmt: skip


def _fail_for_good(rt: Runtime, delivery: Delivery, error: DeliveryError) -> None:
    log.error("alert=%s channel=%s delivery failed for good: %s", delivery.alert, delivery.channel, error)
    rt.outbox.fail(delivery, f"{error.__class__.__name__}: {error}")
    metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "failed")
    report_delivery_failure(delivery.alert, delivery.channel, error)


def flush_digest(rt: Runtime, alert: str, channel: str, window_end: str) -> int:
    end = parse_utc(window_end)
    assert end is not None
    count = rt.outbox.flush_digest(alert, channel, end, rt.clock())
    log.info("alert=%s channel=%s digest of %d items queued", alert, channel, count)
    return count

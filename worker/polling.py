"""Polling, scheduler side: fetch -> read the source -> decide -> pre-filter -> enqueue.

What a poll means for a feed's state is decided in worker.core.poll; this module does the
I/O around it. A poll starts from the feed's state as this process last wrote it, and makes
its writes conditional on that state still being current: an unchanged poll is then one Redis
round trip. If the state moved on (another process polled, Redis was flushed), the store
raises StaleStateError and the poll is made again from the state Redis has now; a flushed
Redis is thus noticed on the next poll.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from worker import articles, metrics, ops
from worker.adapters import rqcompat
from worker.adapters.hosts import HOSTS
from worker.adapters.http_fetch import FetchLimits, FetchResult, RetryLaterError, fetch, host_key
from worker.adapters.queues import enqueue_item_batches
from worker.adapters.schedule import Lease
from worker.adapters.store import Candidate, LeaseLostError, StaleStateError
from worker.config import FeedConfig
from worker.core.errors import FeedGoneError, FeedParseError, FetchError
from worker.core.ops import Outcome, after_poll
from worker.core.poll import (
    Failure,
    FeedState,
    Fetched,
    PollPlan,
    StateUpdate,
    after_failure,
    after_success,
    garbage_repaired,
    guid_churn,
    plan_poll,
    rebaseline,
)
from worker.core.units import format_duration
from worker.monitoring import report_feed_error, report_layout_change
from worker.pages import source_request
from worker.runtime import Runtime
from worker.sources import Page, ParsedItems, read_items

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollOutcome:
    feed: str
    status: str  # "new", "unchanged", "error", "disabled", "waiting"
    items: int = 0  # items in the feed
    enqueued: int = 0  # items not seen before, sent to workers
    error: str | None = None
    not_before: datetime | None = None  # backoff, Retry-After or cache lifetime: no poll before


def host_slot(host: str, per_host: int) -> AbstractContextManager[None]:
    """At most `per_host` fetches start against one host at a time (adapters.hosts)."""
    return HOSTS.slot(host, per_host)


# Polls of one feed made again because its state moved on under them, before giving up the
# conditional writes (another process writing the same feed's state at the very same time).
_STALE_STATE_RETRIES = 2


def poll_threads(feeds: Sequence[FeedConfig], concurrency: int, per_host: int) -> int:
    """Threads worth having to poll these feeds once (`newswatch poll`): each host takes
    `per_host` fetches at a time, so threads beyond that would only wait."""
    hosts = {host_key(feed.url) for feed in feeds}
    return max(1, min(concurrency, per_host * len(hosts), len(feeds)))


def poll_feed(
    rt: Runtime,
    feed: FeedConfig,
    force: bool = False,
    lease: Lease | None = None,
    lateness: float | None = None,
) -> PollOutcome:
    """Poll one feed once. Never raises for feed problems: they are recorded in the feed's state.
    `force` polls even while a backoff or cache lifetime says to wait (`newswatch poll`). A
    scheduler passes its `lease` on the feed (every state write is fenced by it: a scheduler
    whose lease lapsed writes nothing) and how late the poll started."""
    context = PollContext(force, lease, _scheduler_fields(rt, lease, lateness))
    for attempt in range(_STALE_STATE_RETRIES + 1):
        states = rt.feed_states
        if attempt == 0:
            state = states.get_remembered(feed.name, lease.revision if lease else None)
        else:
            state = states.get(feed.name)
        try:
            outcome = _poll_from(rt, feed, state, context, attempt < _STALE_STATE_RETRIES)
        except StaleStateError:
            log.debug("feed=%s state changed under the poll; polling again from Redis's", feed.name)
            continue
        except LeaseLostError:
            log.info("feed=%s another scheduler took the feed over during this poll", feed.name)
            outcome = PollOutcome(feed.name, "lease lost")
        metrics.POLLS.labels(feed.name, outcome.status).inc()
        return outcome
    raise AssertionError("the last attempt writes unconditionally")  # pragma: no cover


@dataclass(frozen=True)
class PollContext:
    force: bool
    lease: Lease | None
    extra: StateUpdate  # written with the poll's result (who polled, how late)

    @property
    def token(self) -> str | None:
        return self.lease.token if self.lease else None


def _scheduler_fields(rt: Runtime, lease: Lease | None, lateness: float | None) -> StateUpdate:
    if lease is None:
        return StateUpdate()
    return StateUpdate(lateness=round(lateness or 0.0, 3), polled_by=lease.token.split("@")[0])


def _poll_from(
    rt: Runtime, feed: FeedConfig, state: FeedState, context: PollContext, conditional: bool
) -> PollOutcome:
    """One poll from `state`. Raises StaleStateError, having done nothing that matters (at most
    a fetch whose result is thrown away), when that state is no longer the one in Redis."""
    now = rt.clock()
    plan = plan_poll(state, feed.url, feed.fingerprint, now, context.force)
    # Garbage the read replaced (adapters.store) is noted beside the result, for `status`.
    plan = replace(plan, start=plan.start.then(context.extra).then(garbage_repaired(state, now)))
    expect = state if conditional else None
    if plan.action == "fetch" and _baseline_pending(rt, feed):
        return PollOutcome(feed.name, "waiting", error=state.error)
    if plan.action != "fetch":
        # Polls that end here write nothing; they must not end on a memory Redis no longer shares.
        rt.feed_states.ensure_current(feed.name, state)
        status = "disabled" if plan.action == "disabled" else "waiting"
        return PollOutcome(feed.name, status, error=state.error, not_before=state.not_before)
    interval = rt.settings.feed_interval(feed)
    try:
        result, body_hash, parsed = _fetch_and_read(rt, feed, plan)
    except (FetchError, FeedParseError) as e:
        retry_after = e.retry_after if isinstance(e, RetryLaterError) else None
        failure = Failure(str(e), isinstance(e, FeedGoneError), retry_after)
        update, wait = after_failure(plan, failure, now, interval, rt.random())
        update = _settle(rt, feed, plan, update, "failed", now, expect, context.token)
        _report_failure(feed, e, update.error_count, wait)
        return PollOutcome(feed.name, "error", error=str(e), not_before=update.not_before)
    fetched = Fetched(
        changed=parsed is not None,
        permanent_redirect=result.permanent_redirect,
        fresh_for=result.fresh_for,
        ttl_minutes=parsed.ttl_minutes if parsed else None,
        etag=result.etag,
        last_modified=result.last_modified,
        body_hash=body_hash,
    )
    if fetched.permanent_redirect and fetched.permanent_redirect != plan.url:
        log.warning(
            "feed=%s moved permanently; polling %s from now on",
            feed.name,
            rt.config.redact(fetched.permanent_redirect),
        )
    if parsed is None:  # 304 or the same body as last time
        update = after_success(plan, fetched, now, interval)
        update = _settle(rt, feed, plan, update, "unchanged", now, expect, context.token)
        return PollOutcome(feed.name, "unchanged", not_before=update.not_before)
    return _enqueue_new(rt, feed, plan, fetched, parsed, context)


def _enqueue_new(
    rt: Runtime,
    feed: FeedConfig,
    plan: PollPlan,
    fetched: Fetched,
    parsed: ParsedItems,
    context: PollContext,
) -> PollOutcome:
    """Queue the items not seen before, then store the validators: if Redis fails in between,
    the next poll fetches and queues the same body again instead of skipping it."""
    # New items are queued on the strength of this state (baseline or not, what is new): it
    # must be the state in Redis, not only this process's memory of it.
    rt.feed_states.ensure_unchanged(feed.name, plan.state, context.token)
    items = parsed.items
    baseline = rebaseline(plan.state, feed.name in rt.polled_feeds)
    if baseline:
        log.warning(
            "feed=%s its state in Redis is gone (flushed, or a new volume): re-baselining — the %d items "
            "in the feed now are recorded, not alerted", feed.name, len(items),
        )  # fmt: skip
    found = rt.seen_store.lookup([Candidate(item) for item in items])
    # articles: true — new items' own pages, read before queuing (worker/articles.py)
    batch = articles.complete(rt, feed, [c.item for c in found.fresh], baseline)
    fresh = batch.items
    jobs = enqueue_item_batches(rt.items_queue, feed.name, fresh, rt.settings.polling.batch_size, baseline)
    if baseline and jobs:
        rt.baselines[feed.name] = jobs
    articles.queued(rt, feed, batch)
    churn = guid_churn(found.guid_churn, len(items))
    now, interval = rt.clock(), rt.settings.feed_interval(feed)
    fetched = replace(
        fetched, complete=batch.complete, items_found=parsed.found, problem=batch.problem or parsed.warning
    )
    update = after_success(plan, fetched, now, interval, churn)
    update = _settle(rt, feed, plan, update, "new" if fresh else "unchanged", now, None, context.token)
    report_layout_change(feed.name, plan.state, update)
    rt.polled_feeds.add(feed.name)
    log.info("feed=%s polled: %d items, %d new to process", feed.name, len(items), len(fresh))
    return PollOutcome(feed.name, "new", len(items), len(fresh), not_before=update.not_before)


def _settle(
    rt: Runtime,
    feed: FeedConfig,
    plan: PollPlan,
    update: StateUpdate,
    outcome: Outcome,
    now: datetime,
    expect: FeedState | None,
    token: str | None,
) -> StateUpdate:
    """Write the poll's state with what it means for the feed's health (worker.core.ops). The
    events it raises are enqueued first (worker.ops: a repeat is sent once), and only while
    the poll's state and lease still hold: a scheduler whose lease lapsed during a long fetch
    tells nothing the new holder may decide otherwise."""
    health = after_poll(feed.name, plan.state, update, outcome, now, ops.policy(rt, feed))
    if health.events and expect is not None:
        rt.feed_states.ensure_unchanged(feed.name, expect, token)
    elif health.events and token is not None:
        rt.feed_states.ensure_lease(feed.name, token)
    ops.tell(rt, health.events)
    update = update.then(health.update)
    rt.feed_states.write(feed.name, update, expect, token)
    return update


def _baseline_pending(rt: Runtime, feed: FeedConfig) -> bool:
    """The feed's re-baseline batches are still queued or running: it waits for them."""
    jobs = rt.baselines.get(feed.name)
    if jobs and rqcompat.any_unfinished(rt.items_queue, jobs):
        return True
    rt.baselines.pop(feed.name, None)
    return False


def _fetch_and_read(
    rt: Runtime, feed: FeedConfig, plan: PollPlan
) -> tuple[FetchResult, str | None, ParsedItems | None]:
    """Fetch (one slot per host) and read: the result, the body's hash, and the items, or None
    when nothing changed (304, or the same body as last time)."""
    polling = rt.settings.polling
    limits = FetchLimits(polling.timeout.total_seconds(), polling.max_bytes, polling.max_redirects)
    state = plan.state
    articles.page_fetcher(rt, feed).obey_robots(plan.url)  # html sources (SPEC §8)
    # In a scheduler's poll, the slot its thread holds on the feed's host (adapters.hosts); the
    # host's own slot where a permanent redirect moved the feed elsewhere.
    with host_slot(host_key(plan.url), polling.per_host), metrics.FETCH_SECONDS.labels(feed.name).time():
        result = fetch(
            rt.http, plan.url, limits, rt.clock(), state.etag, state.last_modified, **source_request(feed)
        )
    metrics.BYTES.labels(feed.name).inc(len(result.body))
    if result.not_modified:
        metrics.NOT_MODIFIED.labels(feed.name).inc()
        return result, state.body_hash, None
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == state.body_hash:
        return result, body_hash, None
    page = Page(result.url, result.body, result.content_type)
    return result, body_hash, read_items(feed, page, rt.clock())


def _report_failure(
    feed: FeedConfig, error: FetchError | FeedParseError, count: int, wait: timedelta
) -> None:
    metrics.FETCH_ERRORS.labels(feed.name, metrics.error_kind(str(error))).inc()
    report_feed_error(feed.name, error)
    log.warning(
        "feed=%s poll failed (%d in a row, next try in %s): %s", feed.name, count, _short(wait), error
    )


def _short(wait: timedelta) -> str:
    return format_duration(timedelta(seconds=round(wait.total_seconds())))


__all__ = ["PollOutcome", "RetryLaterError", "poll_feed", "poll_threads"]

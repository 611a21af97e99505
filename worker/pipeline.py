"""The pipeline, phase by phase.

Scheduler side, `poll_feed`: fetch -> parse -> normalise -> pre-filter -> enqueue.
Worker side, `process_items`: dedupe -> classify -> match -> enqueue deliveries (atomically),
and `deliver`: send one alert through one channel, once.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from worker import channels
from worker.adapters.feed_parse import parse_feed
from worker.adapters.http_fetch import FetchLimits, fetch
from worker.adapters.queues import enqueue_item_batches
from worker.adapters.store import Candidate, identities_of
from worker.config import FeedConfig
from worker.core.errors import FeedGoneError, FeedParseError, FetchError
from worker.core.identity import link_identity
from worker.core.models import Delivery, Item, parse_utc
from worker.core.render import deliveries_for
from worker.core.rules import classify, too_old_to_alert
from worker.runtime import Runtime

log = logging.getLogger(__name__)
# A claim outlives one send attempt by this much, then lapses so a killed worker's delivery goes on.
CLAIM_MARGIN = timedelta(seconds=30)


@dataclass(frozen=True)
class PollOutcome:
    feed: str
    status: str  # "new", "unchanged", "error", "disabled"
    items: int = 0  # items in the feed
    enqueued: int = 0  # items not seen before, sent to workers
    error: str | None = None


def _candidate(item: Item) -> Candidate:
    return Candidate(item, identities_of(item, link_identity(item.canonical_link)))


def poll_feed(rt: Runtime, feed: FeedConfig) -> PollOutcome:
    """Poll one feed once. Never raises for feed problems: they are recorded in the feed's state."""
    state = rt.feed_states.get(feed.name)
    if state.disabled:
        return PollOutcome(feed.name, "disabled", error=state.error)
    now = rt.clock()
    polling = rt.settings.polling
    limits = FetchLimits(polling.timeout.total_seconds(), polling.max_bytes, polling.max_redirects)
    try:
        result = fetch(rt.http, feed.url, limits, state.etag, state.last_modified)
        body_hash = hashlib.sha256(result.body).hexdigest() if not result.not_modified else state.body_hash
        if result.not_modified or body_hash == state.body_hash:
            _record_success(rt, feed, now)
            return PollOutcome(feed.name, "unchanged")
        items = parse_feed(feed.name, result.body, result.url, result.content_type)
    except (FetchError, FeedParseError) as e:
        gone = isinstance(e, FeedGoneError)
        count = rt.feed_states.record_error(feed.name, str(e), now, disable=gone)
        log.warning("feed=%s poll failed (%d in a row): %s", feed.name, count, e)
        return PollOutcome(feed.name, "error", error=str(e))
    fresh = [c.item for c in rt.seen_store.unseen([_candidate(item) for item in items])]
    enqueue_item_batches(rt.items_queue, feed.name, fresh, polling.batch_size)
    # Validators are stored only after the items are safely queued: if Redis fails before this,
    # the next poll fetches and enqueues the same body again instead of skipping it.
    _record_success(rt, feed, now, etag=result.etag, last_modified=result.last_modified, body_hash=body_hash)
    log.info("feed=%s polled: %d items, %d new to process", feed.name, len(items), len(fresh))
    return PollOutcome(feed.name, "new", len(items), len(fresh))


def _record_success(rt: Runtime, feed: FeedConfig, now: Any, **validators: str | None) -> None:
    rt.feed_states.update(feed.name, last_poll=now, last_success=now, error=None, error_count=0, **validators)


def process_items(rt: Runtime, feed: str, item_dicts: Sequence[dict[str, Any]]) -> int:
    """Dedupe, classify and match a batch; commit marks and deliveries in one transaction.

    Safe to run any number of times for the same batch (RQ retries, abandoned jobs)."""
    now = rt.clock()
    max_age = rt.settings.polling.max_age
    candidates = []
    for data in item_dicts:
        item = Item.from_dict(data)
        classified = classify(item, rt.config.rules)
        deliveries = () if too_old_to_alert(item, now, max_age) else tuple(deliveries_for(classified, now))
        candidates.append(Candidate(item, _candidate(item).identities, deliveries))
    new = rt.seen_store.commit_new(feed, candidates, rt.outbox, now)
    alerts = sum(len(c.deliveries) for c in new)
    log.info("feed=%s batch: %d items, %d new, %d deliveries", feed, len(candidates), len(new), alerts)
    return len(new)


def deliver(rt: Runtime, delivery: Delivery) -> str:
    """Claim, send, mark sent: a delivery that a receiver accepted is never sent again, however
    often its job runs. Only a worker killed between 'accepted' and 'marked' can cause a repeat,
    with the same id, after its claim lapses."""
    lease = rt.settings.delivery.timeout + CLAIM_MARGIN
    token = rt.outbox.claim(delivery, lease)
    context = f"alert={delivery.alert} channel={delivery.channel} id={delivery.delivery_id}"
    if token is None:
        log.info("%s already delivered", context)
        return "already delivered"
    try:
        outcome = channels.send(rt, delivery)
    except BaseException:
        rt.outbox.release(delivery, token)
        raise
    rt.outbox.mark_sent(delivery)
    log.info("%s delivered (%s, %.0f ms)", context, outcome.detail, outcome.seconds * 1000)
    return "delivered"


def flush_digest(rt: Runtime, alert: str, channel: str, window_end: str) -> int:
    end = parse_utc(window_end)
    assert end is not None
    count = rt.outbox.flush_digest(alert, channel, end, rt.clock())
    log.info("alert=%s channel=%s digest of %d items queued", alert, channel, count)
    return count

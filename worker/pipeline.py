"""The pipeline, worker side: classify -> match -> story features -> commit -> deliver.

The scheduler side (fetch, read the source, pre-filter, enqueue) is worker.polling; sending is
worker.delivery. `process_items` is the RQ job body for a batch of new items. The commit
(SeenStore.commit_new) dedupes, places each item in its story, archives it and hands the
deliveries that fire to the outbox, in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from worker.adapters.alert_log import AlertLog, records_of
from worker.adapters.store import Candidate
from worker.config import Settings
from worker.core.models import Delivery, Item, parse_utc, utc_iso
from worker.core.outbox import AlertPolicy, postponed_flush
from worker.core.query import Node
from worker.core.render import deliveries_for
from worker.core.rules import Classified, classify_many, too_old_to_alert
from worker.core.stories import fingerprint
from worker.core.units import format_duration
from worker.delivery import deliver_new
from worker.runtime import Runtime

log = logging.getLogger(__name__)


def process_items(
    rt: Runtime, feed: str, item_dicts: Sequence[dict[str, Any]], baseline: bool = False
) -> int:
    """Dedupe, classify and match a batch; commit marks and deliveries in one transaction, then
    make the first tries. A baseline batch is recorded without alerting (the seen-store was
    wiped). Safe to run any number of times for the same batch (RQ retries, abandoned jobs)."""
    now = rt.clock()
    queries = rt.config.rules.alert_queries
    candidates = [
        _candidate(classified, rt.settings, queries, now, baseline)
        for classified in classify_many([Item.from_dict(data) for data in item_dicts], rt.config.rules)
    ]
    committed = rt.seen_store.commit_new(feed, candidates, rt.outbox, now)
    new = committed.new
    alerts = sum(len(c.deliveries) for c in new)
    # Counted after the commit: a batch run again finds its items seen and counts nothing twice.
    old = sum(1 for c in new if c.quiet == TOO_OLD)
    rt.feed_states.count_too_old(feed, old)
    max_age = rt.settings.polling.max_age
    log.info(
        "feed=%s batch: %d items, %d new, %d deliveries%s",
        feed, len(candidates), len(new), alerts, _too_old_note(old, max_age),
    )  # fmt: skip
    _record_alerts(rt, new, committed.immediate, now)
    deliver_new(rt, committed.immediate)
    return len(new)


def _record_alerts(
    rt: Runtime, new: Sequence[Candidate], immediate: Sequence[Delivery], now: datetime
) -> None:
    """What fired, for `newswatch alerts` (a bounded record; see adapters.alert_log)."""
    deliveries = [d for c in new for d in c.deliveries]
    if deliveries:
        records = records_of(deliveries, {d.delivery_id for d in immediate}, now)
        AlertLog(rt.redis).record(records)


def _too_old_note(count: int, max_age: timedelta | None) -> str:
    if not count or max_age is None:
        return ""
    return f"; {count} published before polling.max_age ({format_duration(max_age)}): recorded, not alerted"


BASELINE = "baseline: recorded without alerting (the feed's seen items were lost, see status)"
TOO_OLD = "published before polling.max_age"


def _candidate(
    classified: Classified, settings: Settings, queries: Mapping[str, Node], now: datetime, baseline: bool
) -> Candidate:
    """What the commit needs of one item: its deliveries (with highlights) unless it is quiet,
    what the archive keeps, and its story features."""
    item = classified.item
    quiet = (
        BASELINE if baseline else TOO_OLD if too_old_to_alert(item, now, settings.polling.max_age) else None
    )
    stories = settings.stories
    return Candidate(
        item,
        () if quiet else tuple(deliveries_for(classified, now, queries)),
        classified.topics,
        tuple(match.alert for match in classified.matches),
        quiet,
        fingerprint(item, stories.threshold) if stories.enabled else None,
    )


def flush_digest(rt: Runtime, alert: str, channel: str, window_end: str) -> int:
    """The digest of (alert, channel) due at `window_end` goes out, unless the alert is in
    quiet hours that end later: then it waits for their end."""
    end = parse_utc(window_end)
    assert end is not None
    now = rt.clock()
    later = postponed_flush(end, now, rt.outbox.policies.get(alert, AlertPolicy()))
    if later is not None:
        rt.outbox.postpone_digest(alert, channel, later)
        log.info("alert=%s channel=%s digest held for quiet hours until %s", alert, channel, utc_iso(later))
        return 0
    count = rt.outbox.flush_digest(alert, channel, end, now)
    log.info("alert=%s channel=%s digest of %d items queued", alert, channel, count)
    return count

"""Feed health, told: the events worker.core.ops decides after a poll become deliveries on
`ops.channels`, through the outbox like any alert (claims, retries, the failed registry,
`replay-failed`), and a line in the scheduler's log whether or not channels are set.

Each delivery's id is derived from its event's key (feed, kind, the episode's start) and the
channel: an event decided twice (a poll made again after its state write was refused, another
scheduler taking the feed over) is enqueued again under the same id, and sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from worker.config import FeedConfig
from worker.core.identity import delivery_id
from worker.core.models import Delivery
from worker.core.ops import FAILING, OPS_ALERT, SILENT, FeedEvent, OpsPolicy, headline
from worker.runtime import Runtime

log = logging.getLogger("newswatch.ops")


def policy(rt: Runtime, feed: FeedConfig) -> OpsPolicy:
    ops = rt.settings.ops
    return OpsPolicy(rt.settings.feed_interval(feed), ops.failing_after, ops.silent_factor, feed.expect_every)


def deliveries(rt: Runtime, events: Sequence[FeedEvent]) -> list[Delivery]:
    """One delivery per (event, ops channel); an error text is redacted (a feed URL may carry a
    key) before it leaves."""
    result = []
    for event in events:
        if event.error:
            event = replace(event, error=rt.config.redact(event.error))
        payload = event.payload()
        for channel in rt.settings.ops.channels:
            result.append(Delivery(delivery_id(OPS_ALERT, event.key, channel), OPS_ALERT, channel, payload))
    return result


def tell(rt: Runtime, events: Sequence[FeedEvent]) -> None:
    """Log each event and enqueue its deliveries, in one round trip. Done before the poll's
    state write: if the process dies in between, the next poll decides the same event again."""
    if not events:
        return
    for event in events:
        level = logging.WARNING if event.type in (FAILING, SILENT) else logging.INFO
        log.log(level, "feed=%s %s", event.feed, rt.config.redact(headline(event.payload())))
    to_send = deliveries(rt, events)
    if not to_send:
        return
    with rt.redis.pipeline() as pipe:
        rt.outbox.enqueue(pipe, to_send)
        pipe.execute()

"""Counters the workers keep in Redis for the metrics endpoint (see worker.metrics).

Workers run on many hosts (and with --fork, a process per job), so in-process counters would be
split or lost; Redis gives one set of totals for the whole deployment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from worker.adapters import keys

log = logging.getLogger(__name__)


def count_delivery(connection: redis.Redis, alert: str, channel: str, outcome: str) -> None:
    """outcome: delivered, retried or failed. Best effort: a lost count must not fail a delivery."""
    try:
        connection.hincrby(keys.METRICS_DELIVERIES, keys.delivery_counter(alert, channel, outcome), 1)
    except redis.RedisError:
        log.debug("could not count a delivery outcome; Redis unavailable")


@dataclass(frozen=True)
class Counts:
    items: dict[tuple[str, ...], float]  # (feed, new|duplicate) -> count
    deliveries: dict[tuple[str, ...], float]  # (alert, channel, outcome) -> count


def read_counts(connection: redis.Redis) -> Counts:
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.METRICS_ITEMS)
        pipe.hgetall(keys.METRICS_DELIVERIES)
        items, deliveries = pipe.execute()
    return Counts(_labelled(items), _labelled(deliveries))


def _labelled(raw: dict[bytes, bytes]) -> dict[tuple[str, ...], float]:
    counts = {}
    for field, value in raw.items():
        try:
            counts[tuple(field.decode("utf-8", "replace").split("\x1f"))] = float(value)
        except ValueError:  # a field that is not a number: skipped, not a broken scrape
            log.warning("metrics: ignoring a counter that is not a number: %r", field[:80])
    return counts

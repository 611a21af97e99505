"""Counters in Redis hashes: what the workers count for the metrics endpoint (see worker.metrics),
and the counts beside a feed's poll state (items seen, too old).

Workers run on many hosts (and with --fork, a process per job), so in-process counters would be
split or lost; Redis gives one set of totals for the whole deployment.

Every increment goes through one script that survives garbage: a field that is not an integer
(HINCRBY would refuse it, and with it the transaction's reply) starts again from the increment,
and a metrics hash of another type is replaced. A feed's state of another type is left to the
poll that replaces it knowingly (adapters.store): a worker must not wipe it in passing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from worker.adapters import garbage, keys

log = logging.getLogger(__name__)

# KEYS[1]: a hash of counters. ARGV: field, increment, '1' if a key of another type may be
# replaced, garbage.MARK. Returns '' or, when it met garbage, what it was (garbage.report).
_INCREMENT = """
local found = redis.call('TYPE', KEYS[1])['ok']
local kind = string.find(KEYS[1], ARGV[5], 1, true) == 1 and 'feed_state' or 'metrics'
local mark = ARGV[4] .. '\\0' .. kind .. '\\0' .. KEYS[1] .. '\\0'
if found ~= 'hash' and found ~= 'none' then
  if ARGV[3] ~= '1' then
    return mark .. 'not counted; its next poll replaces it\\0type\\0hash\\0' .. found
  end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return mark .. 'replaced, counted afresh\\0type\\0hash\\0' .. found
end
local counted = redis.pcall('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if type(counted) == 'table' and counted.err then
  local old = redis.call('HGET', KEYS[1], ARGV[1]) or ''
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return mark .. 'counted afresh\\0field\\0' .. ARGV[1] .. '\\0' .. string.sub(old, 1, 60)
end
return ''
"""


def increment(client: redis.Redis | Pipeline, key: str, field: str, amount: int, replace_key: bool) -> Any:
    """HINCRBY that survives garbage (see above). On a pipeline it is queued: pass the pipeline's
    results to garbage.report after it ran."""
    args: list[str | int] = [field, amount, "1" if replace_key else "0", garbage.MARK, keys.feed_state("")]
    return client.eval(_INCREMENT, 1, key, *args)


def count_delivery(connection: redis.Redis, alert: str, channel: str, outcome: str) -> None:
    """outcome: delivered, retried or failed. Best effort: a lost count must not fail a delivery."""
    try:
        field = keys.delivery_counter(alert, channel, outcome)
        garbage.report([increment(connection, keys.METRICS_DELIVERIES, field, 1, replace_key=True)])
    except redis.RedisError:
        log.debug("could not count a delivery outcome; Redis unavailable")


@dataclass(frozen=True)
class Counts:
    items: dict[tuple[str, ...], float]  # (feed, new|duplicate) -> count
    deliveries: dict[tuple[str, ...], float]  # (alert, channel, outcome) -> count


def read_counts(connection: redis.Redis) -> Counts:
    """The counters for a scrape. A hash of another type reads as empty (the next count
    replaces it), a field that is not a number is skipped: a scrape never breaks on garbage."""
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.METRICS_ITEMS)
        pipe.hgetall(keys.METRICS_DELIVERIES)
        items, deliveries = pipe.execute(raise_on_error=False)
    return Counts(_labelled(keys.METRICS_ITEMS, items), _labelled(keys.METRICS_DELIVERIES, deliveries))


def _labelled(key: str, raw: dict[bytes, bytes] | Exception) -> dict[tuple[str, ...], float]:
    if isinstance(raw, Exception):
        if not garbage.is_wrong_type(raw):
            raise raw
        log.warning("metrics: %s in Redis is not a hash; its counts are not shown until it is replaced", key)
        return {}
    counts = {}
    for field, value in raw.items():
        try:
            counts[tuple(field.decode("utf-8", "replace").split("\x1f"))] = float(value)
        except ValueError:  # a field that is not a number: skipped, not a broken scrape
            log.warning("metrics: ignoring a counter that is not a number: %r", field[:80])
    return counts

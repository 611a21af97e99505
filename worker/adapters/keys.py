"""Every Redis key newswatch writes, in one place, with why it lives as long as it does."""

from __future__ import annotations

PREFIX = "nw"

# RQ queue names. Items and deliveries are separate so a slow webhook never delays ingestion.
ITEMS_QUEUE = "newswatch-items"
DELIVERIES_QUEUE = "newswatch-deliveries"
# Workers take deliveries first: alerts are the product, and a flood of items must not delay them.
QUEUES = (DELIVERIES_QUEUE, ITEMS_QUEUE)


def seen(identity: str) -> str:
    """An item identity that was processed. TTL: dedupe.ttl, the promise of 'remembered for'."""
    return f"{PREFIX}:s:{identity}"


def sent(delivery_id: str) -> str:
    """A delivery that a receiver accepted. TTL: dedupe.ttl, so a replay within it is never re-sent."""
    return f"{PREFIX}:sent:{delivery_id}"


def feed_state(feed: str) -> str:
    """Hash of a feed's poll state (validators, errors, counters). No TTL: it is the feed's
    memory for as long as the feed is configured; `status` reads it."""
    return f"{PREFIX}:feed:{feed}"


def heartbeat(role: str) -> str:
    """Liveness of a process role ('scheduler'). TTL: a few heartbeat periods, so silence = dead."""
    return f"{PREFIX}:hb:{role}"

"""Every Redis key newswatch writes, in one place, with why it lives as long as it does."""

from __future__ import annotations

import hashlib

PREFIX = "nw"

# RQ queue names. Items and deliveries are separate so a slow webhook never delays ingestion.
ITEMS_QUEUE = "newswatch-items"
DELIVERIES_QUEUE = "newswatch-deliveries"
# Workers take deliveries first: alerts are the product, and a flood of items must not delay them.
QUEUES = (DELIVERIES_QUEUE, ITEMS_QUEUE)


# Counters for Prometheus (see worker.metrics). No TTL: they are counters, they only grow, and
# their size is bounded by feeds x 2 and alerts x channels x 3 fields.
METRICS_ITEMS = f"{PREFIX}:metrics:items"
METRICS_DELIVERIES = f"{PREFIX}:metrics:deliveries"


def delivery_counter(alert: str, channel: str, outcome: str) -> str:
    """The field of METRICS_DELIVERIES that counts one alert, channel and outcome."""
    return f"{alert}\x1f{channel}\x1f{outcome}"


def seen(identity: str) -> str:
    """An item identity that was processed. TTL: dedupe.ttl, the promise of 'remembered for'."""
    return f"{PREFIX}:s:{identity}"


def story_band(band: str) -> str:
    """Ids of the recent reports whose features fall into one LSH bucket (space-separated, the
    newest few). TTL: stories.window from the last report written to it; reports older than the
    window are no longer joined, which is what the window means."""
    return f"{PREFIX}:sb:{band}"


def story_report(item_id: str) -> str:
    """A recent report's story id and its compared words (packed, about 100 bytes). TTL:
    stories.window, like the band keys that lead to it."""
    return f"{PREFIX}:sr:{item_id}"


def story(story_id: str) -> str:
    """Hash of one story: `n` reports, `r:<item>` each report's number, `a:<alert>` the item an
    alert fired with. TTL: the longer of stories.window and archive.keep, from its last report,
    so `explain` can list a story's reports as long as they are archived."""
    return f"{PREFIX}:st:{story_id}"


# The archive (`try`, `explain`): item id -> compressed record, and item id scored by the time
# it was archived. No TTL: every commit trims both by age (archive.keep) and count
# (archive.max_items), so they are bounded without one.
ARCHIVE_ITEMS = f"{PREFIX}:archive:items"
ARCHIVE_INDEX = f"{PREFIX}:archive:index"


def delivery_state(delivery_id: str) -> str:
    """'sending:<token>' while a worker holds the claim (TTL: the lease, one send timeout and a
    margin, so a killed worker's claim lapses), then 'sent' (TTL: dedupe.ttl, so a replay or
    re-run job within it is never sent again)."""
    return f"{PREFIX}:d:{delivery_id}"


def hourly_count(alert: str, hour: int) -> str:
    """Immediate alerts of a capped rule in one clock hour. TTL: two hours, then it is history."""
    return f"{PREFIX}:rate:{alert}:{hour}:n"


def digest_buffer(alert: str, channel: str) -> str:
    """Alerts held for the next digest of (alert, channel), as JSON entries. TTL: dedupe.ttl,
    refreshed on every push; the flush job empties it long before."""
    return f"{PREFIX}:digest:{alert}:{channel}"


def digest_id(alert: str, channel: str, window_end: str) -> str:
    return hashlib.blake2b(f"{alert}\x1f{channel}\x1f{window_end}".encode(), digest_size=12).hexdigest()


def feed_state(feed: str) -> str:
    """Hash of a feed's poll state (validators, errors, counters, the revision of its last write).
    No TTL: it is the feed's memory for as long as the feed is configured; `status` reads it."""
    return f"{PREFIX}:feed:{feed}"


def heartbeat(role: str) -> str:
    """Liveness of a process role ('scheduler'). TTL: a few heartbeat periods, so silence = dead."""
    return f"{PREFIX}:hb:{role}"


# The shared poll schedule of every scheduler process (see adapters.schedule). No TTL: it is
# the feeds' timetable for as long as they are configured; a scheduler's start removes feeds
# that left the config.
SCHEDULE = f"{PREFIX}:schedule"  # sorted set: feed -> when it is due (epoch seconds)
LEASES = f"{PREFIX}:lease"  # hash: feed -> the token of the scheduler polling it right now
# Scheduler processes, for `status` and `health`: id -> JSON about it, and id -> last heartbeat.
# No TTL on the keys; entries whose heartbeat is older than a few leases are pruned when read.
SCHEDULERS = f"{PREFIX}:schedulers"
SCHEDULER_BEATS = f"{PREFIX}:schedulers:beat"
# Every scheduler and worker process, for `status` (the config revision each runs) and `newswatch
# reload` (which pid to signal): a hash, process id -> JSON about it with its last beat. Entries
# of processes silent for PROCESS_STALE are pruned when read; the key itself expires
# PROCESS_RECORD_TTL seconds after the last beat of any process.
PROCESSES = f"{PREFIX}:processes"
PROCESS_RECORD_TTL = 3600
# The revision of the config that last put its feeds on the schedule (a start or a reload): a
# scheduler on another revision does not put "lost" feeds back, so a feed a reload removed stays
# removed while schedulers still on the old config catch up. No TTL: it belongs to SCHEDULE.
SCHEDULE_REVISION = f"{PREFIX}:schedule:revision"
# The recent-alerts record behind `newswatch alerts`: a stream, one entry per (alert, item)
# that fired, with its deliveries' ids. Bounded twice: at most ALERT_LOG_MAX entries (trimmed on
# every write), and the key expires ALERT_LOG_TTL after the last write; the deliveries' own state
# lives elsewhere (delivery_state, RQ's job hashes) for as long as it lives.
ALERT_LOG = f"{PREFIX}:alerts"
ALERT_LOG_MAX = 10_000
ALERT_LOG_TTL = 30 * 24 * 3600  # seconds


# The keys above that are not per feed, item or delivery, with the type each holds: `status`
# and `health` look for garbage in them (a key of another type; see adapters.garbage).
SHARED_KEY_TYPES = {
    SCHEDULE: "zset", LEASES: "hash", SCHEDULERS: "hash", SCHEDULER_BEATS: "zset",
    METRICS_ITEMS: "hash", METRICS_DELIVERIES: "hash", ARCHIVE_ITEMS: "hash", ARCHIVE_INDEX: "zset",
    ALERT_LOG: "stream", PROCESSES: "hash",
}  # fmt: skip


def robots(origin: str) -> str:
    """A host's robots.txt as we last fetched it ("scheme://host:port"). TTL: a day when it was
    read (SPEC §8: "cached for a day"), minutes when the host could not say, so a passing
    outage does not block or allow a host for a whole day. Shared by every scheduler process."""
    return f"{PREFIX}:robots:{origin}"


def article(item_id: str) -> str:
    """An article page's progress for one new item: "queued" once its item is on the queue (TTL:
    an hour, ample for a worker to mark it seen; until then later polls do not fetch the page
    again), or the number of failed tries of a page that did not answer (TTL: a day)."""
    return f"{PREFIX}:article:{item_id}"

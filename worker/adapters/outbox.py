"""The outbox in Redis: delivery jobs, digest buffers, hourly caps and per-delivery claims.

Writing happens inside the seen-store's transaction (see store.SeenStore.commit_new): `watch_keys`
names what the routing decision reads, `plan` reads it (the pipeline is still in WATCH mode),
`write` queues the result after MULTI. Claims make a delivery go out at most once even if its
job is run twice (replayed, abandoned and re-run): claim, send, then mark sent.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.client import Pipeline
from rq import Callback, Queue, Retry

from worker.adapters import counters, garbage, keys, rqcompat
from worker.adapters.queues import FAILURE_TTL, RESULT_TTL
from worker.core.errors import ClaimHeldError
from worker.core.models import Delivery, utc_iso
from worker.core.outbox import AlertPolicy, Routing, digest_delivery, digest_entry, hour_index, route

log = logging.getLogger(__name__)

# A claim outlives one send attempt by this much, then lapses so a killed worker's delivery goes on.
CLAIM_MARGIN = timedelta(seconds=30)
# A held job waits this much longer than a claim lives, so that when it runs the claim has lapsed.
HOLD_MARGIN = timedelta(seconds=5)
DELIVERY_JOB = "worker.jobs.deliver"
DIGEST_JOB = "worker.jobs.flush_digest"
DELIVERY_FAILURE_CALLBACK = "worker.jobs.on_delivery_failure"
# KEYS[1]: a delivery's claim; ARGV: 'sending:<token>', the lease in ms. Returns (outcome,
# detail): won; sent; held (detail: the lease's ms left); or replaced (detail: the garbage it
# held, a value that is neither 'sent' nor a claim with a lease, or the type of a key of
# another type). A claim without a lease (all of ours have one) would be held forever.
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'won', ''} end
local found = redis.call('TYPE', KEYS[1])['ok']
if found == 'string' then
  local value = redis.call('GET', KEYS[1])
  if value == 'sent' then return {'sent', ''} end
  local left = redis.call('PTTL', KEYS[1])
  if string.sub(value, 1, 8) == 'sending:' and left > 0 then return {'held', tostring(left)} end
  found = string.sub(value, 1, 60)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'replaced', found}
"""
# KEYS[1]: a digest buffer; ARGV: the entry, the TTL, garbage.MARK. A buffer of another type
# (garbage, holding no entry of ours) is replaced first: RPUSH into it would fail inside the
# commit and lose the entry.
_HOLD_FOR_DIGEST = """
local found = redis.call('TYPE', KEYS[1])['ok']
if found ~= 'list' and found ~= 'none' then redis.call('DEL', KEYS[1]) end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if found ~= 'list' and found ~= 'none' then
  return ARGV[3] .. '\\0digest\\0' .. KEYS[1] .. '\\0replaced\\0type\\0list\\0' .. found
end
return ''
"""
_TYPES = {b"list", b"set", b"zset", b"hash", b"stream"}
_RELEASE_CLAIM = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_EXTEND_CLAIM = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass
class Outbox:
    connection: redis.Redis
    deliveries_queue: Queue
    retries: tuple[timedelta, ...]
    policies: dict[str, AlertPolicy]
    remember_for: timedelta  # how long a sent delivery and a digest buffer are kept
    send_timeout: timedelta = timedelta(seconds=10)  # delivery.timeout

    @property
    def lease(self) -> timedelta:
        """How long a claim lives: one send, and a margin. Claims of deliveries still waiting
        in a worker's sender are renewed (`keep`); a killed worker's lapse after this."""
        return self.send_timeout + CLAIM_MARGIN

    @property
    def hold(self) -> timedelta:
        """How long a delivery's job waits while a worker's sender has the delivery: its first
        try right after the commit, or a retry handed off by its job. Longer than a claim, so
        that if the worker dies the job finds the claim lapsed; renewed while the delivery
        waits, so that the job does not run while the sender still has it."""
        return self.lease + HOLD_MARGIN

    @property
    def job_timeout(self) -> int:
        """One try: connect, TLS, login and send may each take up to the send timeout."""
        return max(30, int(self.send_timeout.total_seconds()) * 4 + 10)

    # --- routing, inside the seen-store transaction -------------------------------------------

    def _capped_alerts(self, deliveries: Sequence[Delivery]) -> list[str]:
        return sorted({d.alert for d in deliveries if self.policies.get(d.alert, AlertPolicy()).max_per_hour})

    def watch_keys(self, deliveries: Sequence[Delivery], now: datetime) -> list[str]:
        return [keys.hourly_count(alert, hour_index(now)) for alert in self._capped_alerts(deliveries)]

    def plan(self, pipe: Pipeline, deliveries: Sequence[Delivery], now: datetime) -> Routing:
        alerts = self._capped_alerts(deliveries)
        counts: dict[str, int] = {}
        if alerts:
            values = pipe.mget(self.watch_keys(deliveries, now))  # immediate: pipeline in WATCH mode
            counts = {alert: _count(value) for alert, value in zip(alerts, values, strict=True)}
        return route(list(deliveries), self.policies, counts, now)

    def write(self, pipe: Pipeline, routing: Routing, now: datetime) -> None:
        hour = hour_index(now)
        for alert, count in routing.sent_this_hour.items():
            pipe.set(keys.hourly_count(alert, hour), count, ex=int(timedelta(hours=2).total_seconds()))
        # The immediate deliveries get their job now, held back: the worker makes the first try
        # itself right after this transaction (see delivery.deliver_new) and cancels the job
        # when it succeeds. If the worker dies first, the job goes out.
        self.enqueue(pipe, routing.immediate, hold_until=now + self.hold)
        scheduled: set[tuple[str, str, datetime]] = set()
        for held in routing.digested:
            d = held.delivery
            entry = json.dumps(d.payload["data"], ensure_ascii=False)
            buffer, ttl = keys.digest_buffer(d.alert, d.channel), int(self.remember_for.total_seconds())
            pipe.eval(_HOLD_FOR_DIGEST, 1, buffer, entry, ttl, garbage.MARK)
            scheduled.add((d.alert, d.channel, held.window_end))
        for alert, channel, end in sorted(scheduled):
            self._schedule_flush(pipe, alert, channel, end)

    def enqueue(
        self, pipe: Pipeline, deliveries: Sequence[Delivery], hold_until: datetime | None = None
    ) -> None:
        if not deliveries:
            return
        retry = (
            Retry(max=len(self.retries), interval=[_seconds(r) for r in self.retries])
            if self.retries
            else None
        )
        for delivery in deliveries:
            job = self.deliveries_queue.create_job(
                DELIVERY_JOB,
                args=(delivery.to_dict(),),
                job_id=delivery.delivery_id,
                retry=retry,
                timeout=self.job_timeout,
                on_failure=Callback(DELIVERY_FAILURE_CALLBACK),
                result_ttl=RESULT_TTL,
                failure_ttl=FAILURE_TTL,
                description=f"alert {delivery.alert} -> {delivery.channel}",
            )
            if hold_until is None:
                self.deliveries_queue.enqueue_job(job, pipeline=pipe)
            else:
                rqcompat.schedule_job(self.deliveries_queue, job, hold_until, pipe)

    # --- settling what a worker's sender had --------------------------------------------------------

    def cancel(self, delivery_ids: Sequence[str]) -> None:
        """Sent already: the held jobs are not needed."""
        rqcompat.drop_scheduled(self.deliveries_queue, delivery_ids)

    def retry_later(self, delivery: Delivery, at: datetime, retries_left: int) -> None:
        """The try failed: the held job becomes the next retry, at `at`, with `retries_left`
        tries after that one."""
        rqcompat.reschedule(self.deliveries_queue, delivery.delivery_id, at, retries_left)

    def hand_back(self, claims: Sequence[tuple[Delivery, str]], now: datetime) -> None:
        """Deliveries a worker will not send after all (it is stopping): claims given back and
        their held jobs due now, tries unchanged, for any worker to take. One round trip."""
        with self.connection.pipeline(transaction=False) as pipe:
            for delivery, token in claims:
                pipe.eval(_RELEASE_CLAIM, 1, keys.delivery_state(delivery.delivery_id), f"sending:{token}")
            due = {delivery.delivery_id: now for delivery, _ in claims}
            rqcompat.move_scheduled(self.deliveries_queue, due, pipe)
            pipe.execute()

    def keep(self, claims: Sequence[tuple[Delivery, str]], now: datetime) -> None:
        """Deliveries still waiting in a worker's sender: their claims (where still ours) and
        their held jobs renewed, in one round trip."""
        lease_ms = int(self.lease.total_seconds() * 1000)
        with self.connection.pipeline(transaction=False) as pipe:
            for delivery, token in claims:
                state = keys.delivery_state(delivery.delivery_id)
                pipe.eval(_EXTEND_CLAIM, 1, state, f"sending:{token}", lease_ms)
            held = {delivery.delivery_id: now + self.hold for delivery, _ in claims}
            rqcompat.move_scheduled(self.deliveries_queue, held, pipe)
            pipe.execute()

    def fail(self, delivery: Delivery, reason: str) -> None:
        """The first try failed for good: into the failed registry now, with its reason."""
        rqcompat.fail_scheduled(self.deliveries_queue, delivery.delivery_id, reason, FAILURE_TTL)

    def _schedule_flush(self, pipe: Pipeline, alert: str, channel: str, end: datetime) -> None:
        # The same id for the same window: scheduling it again for every held alert is harmless.
        job = self.deliveries_queue.create_job(
            DIGEST_JOB,
            args=(alert, channel, utc_iso(end)),
            job_id=f"digest_{keys.digest_id(alert, channel, utc_iso(end))}",
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            timeout=30,
            description=f"digest {alert} -> {channel} for the window ending {utc_iso(end)}",
        )
        rqcompat.schedule_job(self.deliveries_queue, job, end, pipe)

    # --- digests -------------------------------------------------------------------------------

    def postpone_digest(self, alert: str, channel: str, end: datetime) -> None:
        """The digest of (alert, channel) waits until `end`: its buffer stays as it is, a flush
        job for `end` is scheduled (see core.outbox.postponed_flush)."""
        with self.connection.pipeline() as pipe:
            self._schedule_flush(pipe, alert, channel, end)
            pipe.execute()

    def flush_digest(self, alert: str, channel: str, end: datetime, now: datetime) -> int:
        """Move a digest buffer into one delivery job, atomically. Returns the items it holds."""
        buffer = keys.digest_buffer(alert, channel)
        for _ in range(20):
            with self.connection.pipeline() as pipe:
                try:
                    pipe.watch(buffer)  # type: ignore[no-untyped-call]
                    raw = _entries(pipe, buffer)
                    if not raw:
                        pipe.unwatch()
                        return 0
                    entries = _readable(alert, channel, raw)
                    pipe.multi()
                    pipe.delete(buffer)
                    if entries:  # garbage alone sends no digest
                        self.enqueue(pipe, [digest_delivery(alert, channel, end, entries, now)])
                    pipe.execute()
                    return len(entries)
                except redis.WatchError:
                    continue
        raise RuntimeError(f"alert={alert} channel={channel}: digest buffer kept changing")

    # --- claims --------------------------------------------------------------------------------

    def claim(self, delivery: Delivery, lease: timedelta) -> str | None:
        """A token if this worker may send now; None if it was already sent. Raises while another
        worker holds a claim (its lease ends after one send timeout). Garbage where the claim
        belongs is replaced by this claim (see _CLAIM)."""
        token = uuid.uuid4().hex
        outcome, detail = _claimed(delivery, self._claim(delivery, token, lease, self.connection))
        if outcome == b"held":
            raise ClaimHeldError(
                f"channel {delivery.channel}: claimed by another worker (running, or died mid-send)",
                retry_after=max(1.0, int(detail) / 1000),
            )
        return None if outcome == b"sent" else token

    def claim_many(self, deliveries: Sequence[Delivery], lease: timedelta) -> list[str | None]:
        """claim() for a batch in one round trip: per delivery a token, None if it was already
        sent, or "" while another worker holds it."""
        tokens = [uuid.uuid4().hex for _ in deliveries]
        with self.connection.pipeline(transaction=False) as pipe:
            for delivery, token in zip(deliveries, tokens, strict=True):
                self._claim(delivery, token, lease, pipe)
            replies = pipe.execute()
        outcomes = [_claimed(d, reply)[0] for d, reply in zip(deliveries, replies, strict=True)]
        return [
            None if outcome == b"sent" else "" if outcome == b"held" else token
            for outcome, token in zip(outcomes, tokens, strict=True)
        ]

    def _claim(self, delivery: Delivery, token: str, lease: timedelta, client: redis.Redis | Pipeline) -> Any:
        key = keys.delivery_state(delivery.delivery_id)
        return client.eval(_CLAIM, 1, key, f"sending:{token}", _seconds(lease) * 1000)

    def release(self, delivery: Delivery, token: str) -> None:
        self.release_many([(delivery, token)])

    def release_many(self, claims: Sequence[tuple[Delivery, str]]) -> None:
        """Give claims back unsent (each only if still ours), in one round trip."""
        with self.connection.pipeline(transaction=False) as pipe:
            for delivery, token in claims:
                pipe.eval(_RELEASE_CLAIM, 1, keys.delivery_state(delivery.delivery_id), f"sending:{token}")
            pipe.execute()

    def mark_sent(self, delivery: Delivery, cancel_job: bool = False) -> None:
        """Remember the delivery as sent, count it for the metrics and (`cancel_job`) drop its
        held job, in one round trip."""
        counter = keys.delivery_counter(delivery.alert, delivery.channel, "delivered")
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.set(keys.delivery_state(delivery.delivery_id), b"sent", ex=_seconds(self.remember_for))
            counters.increment(pipe, keys.METRICS_DELIVERIES, counter, 1, replace_key=True)
            if cancel_job:
                rqcompat.drop_scheduled(self.deliveries_queue, [delivery.delivery_id], pipe)
            garbage.report(pipe.execute())


def _claimed(delivery: Delivery, reply: list[bytes]) -> tuple[bytes, bytes]:
    """The claim script's (outcome, detail); garbage it replaced is said and counted."""
    outcome, detail = reply[0], reply[1]
    if outcome == b"replaced":
        what = (
            garbage.wrong_type(detail.decode(), "string")
            if detail in _TYPES
            else f"held {garbage.shown(detail)}, neither 'sent' nor a claim with a lease"
        )
        key = keys.delivery_state(delivery.delivery_id)
        garbage.found(
            "claim", key, f"(alert={delivery.alert} channel={delivery.channel}) {what}", "claimed anew"
        )
    return outcome, detail


def _count(value: bytes | str | None) -> int:
    """An hourly count; garbage counts as none sent (the commit then writes a true count)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _entries(pipe: Pipeline, buffer: str) -> list[bytes]:
    """A digest buffer's entries; one of another type (garbage) holds none: it is dropped."""
    try:
        return pipe.lrange(buffer, 0, -1)  # type: ignore[return-value]
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        garbage.found(
            "digest",
            buffer,
            "holds another type than a list",
            "read as empty; the next alert held replaces it",
        )
        return []


def _readable(alert: str, channel: str, raw: Sequence[bytes]) -> list[Any]:
    """A buffer's entries that read as alerts: one that does not (garbage) is left out and said."""
    entries = []
    for entry in raw:
        try:
            data = json.loads(entry)
        except (ValueError, RecursionError):
            data = None
        if digest_entry(data):
            entries.append(data)
        else:
            what = f"held an entry that is no alert: {garbage.shown(entry)}"
            garbage.found("digest", keys.digest_buffer(alert, channel), what, "left out")
    return entries


def _seconds(delta: timedelta) -> int:
    return max(1, int(delta.total_seconds()))

"""Delivery, worker side, in three steps: claim -> send -> settle.

1. claim: take the deliveries' claims in Redis (a delivery already sent is skipped; one another
   worker holds is left to it);
2. send: the only step that talks to receivers, on the process's sender (worker/sender.py): up
   to `delivery.concurrency` sends in flight, fair across channels and alerts, oldest first;
   each delivery a receiver accepted is marked sent at once, so a crash can repeat at most the
   sends in flight;
3. settle: each delivery as soon as its send ends: sent -> its held job cancelled (in the same
   round trip as the mark); failed -> its job moved to the next retry, or to the failed
   registry with the reason; not sent because the worker stops -> its job due at once.

Every delivery has an RQ job with the delivery's id, held in the scheduled registry while a
sender has the delivery (the hold is renewed while it waits): if the worker dies, the job runs
once the claim has lapsed. Deliveries reach the sender two ways:

- first tries: `deliver_new`, from the batch job right after its commit; the batch job does
  not wait for them, so the next batch is matched while these are in flight;
- retries, replays, digests, jobs of a dead worker: `deliver`, the RQ job. In a `newswatch
  worker` it hands its send to the sender and ends at once, held again by RQ (see
  rqcompat.run_again_in); the sender settles the job when the send ends.

Without a long-lived sender (`newswatch worker --fork`, a bare `rq worker`, queues drained
in-process), a batch job's first tries go through a sender of their own that starts sends for at
most INLINE_BUDGET, and a delivery job sends itself and raises on failure for RQ to retry.

A delivery that a receiver accepted is never sent again, however often its job runs. Only a
worker killed between 'accepted' and 'marked' can cause a repeat, with the same id, after its
claim lapses.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from worker import channels, metrics
from worker.adapters import rqcompat
from worker.adapters.webhook import SendOutcome
from worker.core.errors import DeliveryError, PermanentDeliveryError
from worker.core.lanes import Limits
from worker.core.models import Delivery
from worker.core.timing import next_retry_delay
from worker.monitoring import report_delivery_failure
from worker.runtime import Runtime
from worker.sender import Sender

log = logging.getLogger(__name__)
# How long a batch job without the worker's sender goes on starting its first tries.
INLINE_BUDGET = timedelta(seconds=10)
# After a job, a worker whose sender has more than a round of sends waiting takes its next job
# only once that has shrunk, or after ROOM_WAIT: the other workers take the jobs meanwhile.
ROOM_WAIT = timedelta(milliseconds=500)
# A channel whose oldest send in flight has lasted this long is stalled (a dead or very slow
# receiver): what waits for it does not make the worker wait.
STALLED_AFTER = timedelta(seconds=1)
HANDED_OFF = "handed off"  # deliver(): the worker's sender has it now


@dataclass(frozen=True)
class Claim:
    delivery: Delivery
    token: str


@dataclass(frozen=True)
class Claimed:
    mine: list[Claim] = field(default_factory=list)  # to send now
    already_sent: list[Delivery] = field(default_factory=list)  # their held jobs have nothing to do


@dataclass(frozen=True)
class Pending:
    """A claimed delivery waiting in a sender, and the tries its job has after this one."""

    claim: Claim
    tries_left: int  # 0: a failure is final


@dataclass(frozen=True)
class Sent:
    claim: Claim
    outcome: SendOutcome


@dataclass(frozen=True)
class Failed:
    claim: Claim
    error: DeliveryError


def deliver_new(rt: Runtime, deliveries: Sequence[Delivery]) -> None:
    """The first try of each new delivery, made right after the commit rather than by its own RQ
    job: a job costs RQ a few milliseconds and dozens of Redis round trips; a webhook to a
    healthy receiver costs about one. Each delivery's job already exists, held; whatever does
    not succeed here (failure, this worker stopping or killed) is taken over by that job."""
    if not deliveries:
        return
    claimed = claim(rt, deliveries)
    rt.outbox.cancel([d.delivery_id for d in claimed.already_sent])
    tries = len(rt.settings.delivery.retries)
    pending = [Pending(held, tries) for held in claimed.mine]
    if rt.sender is not None:
        rt.sender.submit(pending)
        return
    sender = make_sender(rt)
    sender.submit(pending)
    sender.close(rt.clock() + INLINE_BUDGET, send_grace(rt))


def claim(rt: Runtime, deliveries: Sequence[Delivery]) -> Claimed:
    """Step 1: the claims of a batch, in one round trip (a second reads those not won)."""
    tokens = rt.outbox.claim_many(deliveries, rt.outbox.lease)
    mine = [Claim(d, token) for d, token in zip(deliveries, tokens, strict=True) if token]
    sent = [d for d, token in zip(deliveries, tokens, strict=True) if token is None]
    return Claimed(mine, sent)


def send_one(rt: Runtime, held: Claim, cancel_job: bool) -> Sent | Failed:
    """Step 2: one delivery through its channel, marked sent as soon as the receiver accepted it
    (and its held job dropped, with `cancel_job`). A failure gives the claim back. Anything but
    a DeliveryError is a bug: it propagates (RQ or the sender logs it, Sentry sees it)."""
    delivery = held.delivery
    try:
        outcome = channels.send(rt, delivery)
    except DeliveryError as e:
        rt.outbox.release(delivery, held.token)
        return Failed(held, e)
    except BaseException:
        rt.outbox.release(delivery, held.token)
        raise
    rt.outbox.mark_sent(delivery, cancel_job)  # counts it as delivered too
    log.info(
        "alert=%s channel=%s id=%s delivered (%s, %.0f ms)",
        delivery.alert, delivery.channel, delivery.delivery_id, outcome.detail, outcome.seconds * 1000,
    )  # fmt: skip
    return Sent(held, outcome)


def send_and_settle(rt: Runtime, pending: Pending) -> None:
    """Steps 2 and 3 for a delivery whose job is held: what a sender thread runs."""
    result = send_one(rt, pending.claim, cancel_job=True)
    if isinstance(result, Failed):
        settle_failure(rt, pending, result.error)


def settle_failure(rt: Runtime, pending: Pending, error: DeliveryError) -> None:
    """Step 3 for a failed try: the held job becomes the next retry, with the configured wait
    (jittered) or the receiver's Retry-After, or goes to the failed registry when the failure
    is permanent or no tries are left. The same rules as for a job RQ retries itself."""
    delivery = pending.claim.delivery
    retries = rt.settings.delivery.retries
    if isinstance(error, PermanentDeliveryError) or pending.tries_left <= 0 or not retries:
        fail_for_good(rt, delivery, error)
        return
    configured = retries[rqcompat.retry_index(len(retries), pending.tries_left)]
    wait = next_retry_delay(int(configured.total_seconds()), error.retry_after, rt.random())
    metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "retried")
    log.warning(
        "alert=%s channel=%s id=%s try failed, retry in %ss (%d tries left): %s",
        delivery.alert, delivery.channel, delivery.delivery_id, wait, pending.tries_left, error,
    )  # fmt: skip
    rt.outbox.retry_later(delivery, rt.clock() + timedelta(seconds=wait), pending.tries_left - 1)


def fail_for_good(rt: Runtime, delivery: Delivery, error: DeliveryError) -> None:
    log.error("alert=%s channel=%s delivery failed for good: %s", delivery.alert, delivery.channel, error)
    rt.outbox.fail(delivery, f"{error.__class__.__name__}: {error}")
    metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "failed")
    report_delivery_failure(delivery.alert, delivery.channel, error)


def deliver(rt: Runtime, delivery: Delivery, tries_left: int | None = None) -> str:
    """One delivery job (a retry, a replay, a digest, or the held job of a worker that died).
    With the worker's sender: claim and hand the send to it (HANDED_OFF: the job stays held).
    Without: claim, send, and raise a failure for RQ to retry on its schedule."""
    token = rt.outbox.claim(delivery, rt.outbox.lease)  # raises ClaimHeldError while another worker sends
    if token is None:
        log.info(
            "alert=%s channel=%s id=%s already delivered",
            delivery.alert,
            delivery.channel,
            delivery.delivery_id,
        )
        return "already delivered"
    held = Claim(delivery, token)
    if rt.sender is not None:
        tries = len(rt.settings.delivery.retries) if tries_left is None else tries_left
        rt.sender.hand_off(Pending(held, tries))
        return HANDED_OFF
    result = send_one(rt, held, cancel_job=False)
    if isinstance(result, Failed):
        raise result.error
    return "delivered"


# --- the sender ----------------------------------------------------------------------------------


def make_sender(rt: Runtime) -> Sender[Pending]:
    return Sender(
        _limits(rt),
        _routed(rt),
        lane_of=_lane_of,
        work=lambda pending: send_and_settle(rt, pending),
        hand_back=lambda pending: hand_back(rt, pending),
        clock=rt.clock,
        refresh=lambda pending: rt.outbox.keep([_claim_of(p) for p in pending], rt.clock()),
        refresh_every=rt.outbox.lease.total_seconds() / 4,
    )


def _limits(rt: Runtime) -> Limits:
    settings = rt.settings
    caps = {name: cap for name, ch in settings.channels.items() if (cap := getattr(ch, "concurrency", None))}
    return Limits(settings.delivery.concurrency, caps)


def _routed(rt: Runtime) -> set[str]:
    return {name for rule in rt.config.rules.alerts for name in rule.channels}


def reconfigure_sender(rt: Runtime) -> None:
    """After a live reload: the process's sender takes the new channels and limits (each send
    reads its channel's settings when it starts)."""
    if rt.sender is not None:
        rt.sender.reconfigure(_limits(rt), _routed(rt))


def start_sender(rt: Runtime) -> Callable[[], None]:
    """The sender of a worker process, for every delivery it makes, until `stop_sender`.
    Returns what the worker runs after each job (see `after_job`)."""
    rt.sender = make_sender(rt)
    return lambda: after_job(rt)


def after_job(rt: Runtime) -> None:
    """Run by the worker once RQ has written a job's outcome: the sends the job handed off may
    start now. Then, while more than one round of sends waits here for receivers that answer,
    the worker waits (at most ROOM_WAIT) before its next job, so that in a burst the workers
    share the batches by how fast they send, not by how fast they match."""
    sender = rt.sender
    if sender is None:
        return
    sender.admit_handed_off()
    sender.wait_for_room(rt.settings.delivery.concurrency, ROOM_WAIT, STALLED_AFTER)


def stop_sender(rt: Runtime, finish: bool) -> None:
    """`finish` (a burst worker that ran dry): send everything that waits. Otherwise (SIGTERM):
    what has not started goes back to its job at once, what is in flight ends and is settled."""
    sender, rt.sender = rt.sender, None
    if sender is None:
        return
    handed_back = sender.close(None if finish else rt.clock(), send_grace(rt))
    if handed_back:
        log.info("stopping: %d deliveries not started went back to their jobs", handed_back)


def hand_back(rt: Runtime, pending: Sequence[Pending]) -> None:
    rt.outbox.hand_back([_claim_of(p) for p in pending], rt.clock())


def send_grace(rt: Runtime) -> float:
    """How long a stopping sender waits for its sends in flight: each ends within the timeout."""
    return rt.settings.delivery.timeout.total_seconds() + 5


def _claim_of(pending: Pending) -> tuple[Delivery, str]:
    return pending.claim.delivery, pending.claim.token


def _lane_of(pending: Pending) -> tuple[str, str, str]:
    """Channel, alert, and the order within their lane: the item's publication date (an alert
    of an undated item, or a digest, by when it was made)."""
    delivery = pending.claim.delivery
    item = delivery.payload.get("data", {}).get("item") or {}
    order = item.get("published") or delivery.payload.get("timestamp") or ""
    return delivery.channel, delivery.alert, str(order)

"""Delivery, worker side, in three steps: claim -> send -> settle.

1. claim: take the batch's claims in Redis (a delivery already sent is skipped; one another
   worker holds is left to it);
2. send: the only step that talks to receivers, and the only one that may run side by side;
   each delivery a receiver accepted is marked sent at once (the window for a repeat stays one
   delivery wide); it stops starting new sends when its time budget (from the runtime's
   clock) is spent;
3. settle: cancel the held jobs of what went out, give back the claims of what was not tried,
   and turn failures into retries (or the failed registry, when permanent).

A delivery that a receiver accepted is never sent again, however often its job runs. Only a
worker killed between 'accepted' and 'marked' can cause a repeat, with the same id, after its
claim lapses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from worker import channels, metrics
from worker.adapters.webhook import SendOutcome
from worker.core.errors import DeliveryError, PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.timing import next_retry_delay
from worker.monitoring import report_delivery_failure
from worker.runtime import Runtime

log = logging.getLogger(__name__)
# A claim outlives one send attempt by this much, then lapses so a killed worker's delivery goes on.
CLAIM_MARGIN = timedelta(seconds=30)
# How long a batch job spends on first tries before leaving the rest to their delivery jobs.
INLINE_BUDGET = timedelta(seconds=10)


@dataclass(frozen=True)
class Claim:
    delivery: Delivery
    token: str


@dataclass(frozen=True)
class Claimed:
    mine: list[Claim] = field(default_factory=list)  # to send now
    already_sent: list[Delivery] = field(default_factory=list)  # their held jobs have nothing to do


@dataclass(frozen=True)
class Sent:
    claim: Claim
    outcome: SendOutcome


@dataclass(frozen=True)
class Failed:
    claim: Claim
    error: DeliveryError


@dataclass(frozen=True)
class Untried:
    claim: Claim  # the time budget ran out before its turn


SendResult = Sent | Failed | Untried


def deliver_new(rt: Runtime, deliveries: Sequence[Delivery]) -> None:
    """The first try of each new delivery, made right after the commit rather than by its own RQ
    job: a job costs RQ a few milliseconds and dozens of Redis round trips; a webhook to a
    healthy receiver costs about one. Each delivery's job already exists (held back by one retry
    interval), so whatever does not succeed here (failure, time budget spent, this worker
    killed) is taken over by that job with the usual retries. Should this worker die mid-batch,
    the rest wait out the claims' lease, under a minute, before their jobs may send them."""
    if not deliveries:
        return
    lease = INLINE_BUDGET + rt.settings.delivery.timeout + CLAIM_MARGIN
    claimed = claim(rt, deliveries, lease)
    results = send_all(rt, claimed.mine, rt.clock() + INLINE_BUDGET)
    settle_first_tries(rt, claimed, results)


def claim(rt: Runtime, deliveries: Sequence[Delivery], lease: timedelta) -> Claimed:
    """Step 1: the claims of a batch, in one round trip (a second reads those not won)."""
    tokens = rt.outbox.claim_many(deliveries, lease)
    mine = [Claim(d, token) for d, token in zip(deliveries, tokens, strict=True) if token]
    sent = [d for d, token in zip(deliveries, tokens, strict=True) if token is None]
    return Claimed(mine, sent)


def send_all(rt: Runtime, claims: Sequence[Claim], deadline: datetime) -> list[SendResult]:
    """Step 2: send each claimed delivery; none is started after `deadline`."""
    results: list[SendResult] = []
    for held in claims:
        if rt.clock() > deadline:
            results.append(Untried(held))
            continue
        results.append(send_one(rt, held))
    return results


def send_one(rt: Runtime, held: Claim) -> Sent | Failed:
    """One delivery through its channel, marked sent as soon as the receiver accepted it. A
    failure gives the claim back. Anything but a DeliveryError is a bug: it propagates (RQ
    marks the job failed, Sentry sees it)."""
    delivery = held.delivery
    try:
        outcome = channels.send(rt, delivery)
    except DeliveryError as e:
        rt.outbox.release(delivery, held.token)
        return Failed(held, e)
    except BaseException:
        rt.outbox.release(delivery, held.token)
        raise
    rt.outbox.mark_sent(delivery)  # counts it as delivered too
    log.info(
        "alert=%s channel=%s id=%s delivered (%s, %.0f ms)",
        delivery.alert, delivery.channel, delivery.delivery_id, outcome.detail, outcome.seconds * 1000,
    )  # fmt: skip
    return Sent(held, outcome)


def settle_first_tries(rt: Runtime, claimed: Claimed, results: Sequence[SendResult]) -> None:
    """Step 3 for first tries: sent ones are marked and their held jobs cancelled, untried ones
    go back to their held jobs at once, failed ones become their job's first retry (or fail
    for good)."""
    rt.outbox.release_many([(r.claim.delivery, r.claim.token) for r in results if isinstance(r, Untried)])
    retries = rt.settings.delivery.retries
    for result in results:
        if isinstance(result, Failed):
            delivery, error = result.claim.delivery, result.error
            if isinstance(error, PermanentDeliveryError) or not retries:
                fail_for_good(rt, delivery, error)
                continue
            metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "retried")
            wait = next_retry_delay(int(retries[0].total_seconds()), error.retry_after, rt.random())
            log.warning(
                "alert=%s channel=%s first try failed, retry in %ss: %s",
                delivery.alert, delivery.channel, wait, error,
            )  # fmt: skip
            rt.outbox.retry_later(delivery, rt.clock() + timedelta(seconds=wait))
    sent = [r.claim.delivery.delivery_id for r in results if isinstance(r, Sent)]
    rt.outbox.cancel(sent + [d.delivery_id for d in claimed.already_sent])


def deliver(rt: Runtime, delivery: Delivery) -> str:
    """One delivery job (a retry, a replay, or the held job of a worker that died): claim,
    send, settle. A failure is raised, so RQ retries the job on its schedule."""
    lease = rt.settings.delivery.timeout + CLAIM_MARGIN
    token = rt.outbox.claim(delivery, lease)  # raises ClaimHeldError while another worker sends
    if token is None:
        log.info(
            "alert=%s channel=%s id=%s already delivered",
            delivery.alert,
            delivery.channel,
            delivery.delivery_id,
        )
        return "already delivered"
    result = send_one(rt, Claim(delivery, token))
    if isinstance(result, Failed):
        raise result.error
    return "delivered"


def fail_for_good(rt: Runtime, delivery: Delivery, error: DeliveryError) -> None:
    log.error("alert=%s channel=%s delivery failed for good: %s", delivery.alert, delivery.channel, error)
    rt.outbox.fail(delivery, f"{error.__class__.__name__}: {error}")
    metrics.count_delivery(rt.redis, delivery.alert, delivery.channel, "failed")
    report_delivery_failure(delivery.alert, delivery.channel, error)

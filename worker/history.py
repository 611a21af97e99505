"""What fired lately and where each delivery stands: `newswatch alerts`, and the failed
deliveries `newswatch status` lists with their reasons.

A delivery is `sent` (a receiver accepted it), `sending` (a worker holds its claim now),
`waiting` (its first try is due), `retrying` (a try failed; `next_try` says when the next is),
`failed` (no tries left, or a permanent refusal; `reason` says why; `replay-failed` sends it
again), `in digest` (held for its alert's digest) or `unknown` (its traces have expired).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from worker.adapters import rqcompat
from worker.adapters.alert_log import AlertLog, AlertRecord
from worker.core.models import utc_iso
from worker.core.ops import headline, is_ops_event
from worker.core.text import printable
from worker.runtime import Runtime


def delivery_state(
    held: bool, mark: str | None, job: rqcompat.JobState | None, tries: int
) -> tuple[str, datetime | None, str | None]:
    """(state, next try, reason) of one delivery from its claim mark and its RQ job. `tries`:
    the retries a delivery job starts with; fewer left means a try has failed."""
    if mark == "sent":
        return "sent", None, None
    if mark is not None and mark.startswith("sending:"):
        return "sending", None, None
    if job is None:
        return ("in digest" if held else "unknown"), None, None
    if job.status == "failed":
        return "failed", None, job.reason
    retried = job.retries_left is not None and job.retries_left < tries
    if job.status in ("scheduled", "queued"):
        return ("retrying" if retried else "waiting"), job.runs_at, None
    if job.status == "started":
        return "sending", None, None
    if job.status == "finished":
        return "sent", None, None
    return job.status, job.runs_at, job.reason


def recent_alerts(
    rt: Runtime, since: timedelta, alert: str | None = None, channel: str | None = None
) -> list[dict[str, Any]]:
    """The alerts of the last `since`, newest first, each with its deliveries' states."""
    log = AlertLog(rt.redis)
    records = [
        r
        for r in log.since(rt.clock() - since)
        if (alert is None or r.alert == alert)
        and (channel is None or any(d[0] == channel for d in r.deliveries))
    ]
    ids = [delivery_id for r in records for _, delivery_id, _ in r.deliveries]
    marks = log.marks(ids)
    jobs = rqcompat.job_states(rt.deliveries_queue, ids) if ids else {}
    tries = len(rt.settings.delivery.retries)
    return [_alert_view(r, marks, jobs, tries, channel) for r in records]


def _alert_view(
    record: AlertRecord,
    marks: dict[str, str],
    jobs: dict[str, rqcompat.JobState],
    tries: int,
    channel: str | None,
) -> dict[str, Any]:
    deliveries = []
    for name, delivery_id, held in record.deliveries:
        if channel is not None and name != channel:
            continue
        state, next_try, reason = delivery_state(held, marks.get(delivery_id), jobs.get(delivery_id), tries)
        deliveries.append(
            {
                "channel": name, "id": delivery_id, "state": state,
                "next_try": utc_iso(next_try) if next_try else None,
                "reason": _readable(reason),
            }
        )  # fmt: skip
    return {
        "time": utc_iso(record.at), "alert": record.alert, "feed": record.feed, "item": record.item,
        "title": printable(record.title), "link": printable(record.link) if record.link else None,
        "deliveries": deliveries,
    }  # fmt: skip


def failed_deliveries(rt: Runtime, limit: int) -> list[dict[str, Any]]:
    """The newest failed deliveries (and digests), newest first, with their reasons."""
    return [_failed_view(f) for f in rqcompat.recent_failures(rt.deliveries_queue, limit)]


def _failed_view(failure: rqcompat.Failure) -> dict[str, Any]:
    alert, channel, title = _what(failure.job.args)
    return {
        "id": failure.job.id, "alert": alert, "channel": channel,
        "title": printable(title) if title else None,
        "failed_at": utc_iso(failure.at) if failure.at else None, "reason": _readable(failure.reason),
    }  # fmt: skip


_EXPECTED = re.compile(r"^(?:[\w]+\.)*(?:DeliveryError|PermanentDeliveryError|ClaimHeldError): ")


def _readable(reason: str | None) -> str | None:
    """A failure's message as a person reads it: our own delivery errors without their class
    name (a bug's exception keeps it); printable, since it may quote a receiver."""
    return printable(_EXPECTED.sub("", reason)) if reason else None


def _what(args: Sequence[Any]) -> tuple[str | None, str | None, str | None]:
    """(alert, channel, title) of a delivery job's arguments, or a digest job's."""
    try:
        if isinstance(args[0], dict):  # worker.jobs.deliver(delivery)
            payload = args[0]["payload"]
            data = payload["data"]
            if is_ops_event(payload):  # a feed's health event (worker.core.ops)
                title = headline(payload)
            elif "item" in data:
                title = data["item"]["title"]
            else:
                title = f"digest of {len(data['items'])} items"
            return str(args[0]["alert"]), str(args[0]["channel"]), str(title)
        return str(args[0]), str(args[1]), "digest"  # worker.jobs.flush_digest(alert, channel, end)
    except (IndexError, KeyError, TypeError):
        return None, None, None

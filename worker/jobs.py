"""The RQ job functions: thin, JSON-serialisable arguments, the work is in `worker.pipeline`.

The process that runs the worker installs its Runtime with `install`; a job started without one
(e.g. by a bare `rq worker`) builds it from $NEWSWATCH_CONFIG.
"""

from __future__ import annotations

import logging
import math
import random
from types import TracebackType
from typing import Any

from worker import pipeline
from worker.config import load_config
from worker.core.errors import DeliveryError, PermanentDeliveryError
from worker.core.models import Delivery
from worker.runtime import Runtime, connect

log = logging.getLogger(__name__)
_runtime: Runtime | None = None
MAX_RETRY_AFTER = 86400


def install(rt: Runtime) -> None:
    global _runtime
    _runtime = rt


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = connect(load_config())
    return _runtime


def process_items(feed: str, items: list[dict[str, Any]], baseline: bool = False) -> int:
    return pipeline.process_items(runtime(), feed, items, baseline)


def deliver(delivery: dict[str, Any]) -> str:
    return pipeline.deliver(runtime(), Delivery.from_dict(delivery))


def flush_digest(alert: str, channel: str, window_end: str) -> int:
    return pipeline.flush_digest(runtime(), alert, channel, window_end)


def on_delivery_failure(
    job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """RQ calls this before it decides on a retry. A permanent failure (HTTP 410, SMTP 5xx) is not
    retried; otherwise the next wait is the configured one with jitter, or the receiver's
    Retry-After when it sent one."""
    if isinstance(exc, PermanentDeliveryError):
        job.retries_left = 0
        log.error("job=%s delivery failed permanently: %s", job.id, exc)
        return
    if not job.retries_left or not job.retry_intervals:
        log.error("job=%s delivery failed, no tries left: %s", job.id, exc)
        return
    index = max(len(job.retry_intervals) - job.retries_left, 0)
    retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
    job.retry_intervals[index] = next_retry_delay(job.retry_intervals[index], retry_after, random.random())
    log.warning(
        "job=%s delivery failed, retry in %ss (%s tries left): %s",
        job.id, job.retry_intervals[index], job.retries_left, exc,
    )  # fmt: skip


def next_retry_delay(configured: int, retry_after: float | None, unit_random: float) -> int:
    """±20 % jitter around the configured wait, so retries of many alerts do not arrive together;
    a Retry-After from the receiver wins (capped at a day)."""
    if retry_after is not None:
        return max(1, min(math.ceil(retry_after), MAX_RETRY_AFTER))
    return max(1, round(configured * (0.8 + 0.4 * unit_random)))

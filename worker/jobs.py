"""The RQ job functions: thin, JSON-serialisable arguments, the work is in `worker.pipeline`
and `worker.delivery`.

The process that runs the worker installs its Runtime with `install`; a job started without one
(e.g. by a bare `rq worker`) builds it from $NEWSWATCH_CONFIG.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from worker import delivery, metrics, pipeline
from worker.adapters import rqcompat
from worker.config import load_config
from worker.core.errors import ClaimHeldError, DeliveryError, PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.timing import next_retry_delay
from worker.monitoring import report_job_failure, tag
from worker.runtime import Runtime, connect

log = logging.getLogger(__name__)
_runtime: Runtime | None = None


def install(rt: Runtime) -> None:
    global _runtime
    _runtime = rt


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = connect(load_config())
    return _runtime


def process_items(feed: str, items: list[dict[str, Any]], baseline: bool = False) -> int:
    tag(feed=feed)
    return pipeline.process_items(runtime(), feed, items, baseline)


def deliver(data: dict[str, Any]) -> Any:
    """A delivery job. Handed to the worker's sender, it stays held in RQ (safety net) until the
    sender settles it; see worker.delivery."""
    tag(alert=data["alert"], channel=data["channel"])
    rt = runtime()
    outcome = delivery.deliver(rt, Delivery.from_dict(data), rqcompat.current_retries_left())
    if outcome == delivery.HANDED_OFF:
        return rqcompat.run_again_in(rt.outbox.hold.total_seconds())
    return outcome


def flush_digest(alert: str, channel: str, window_end: str) -> int:
    tag(alert=alert, channel=channel)
    return pipeline.flush_digest(runtime(), alert, channel, window_end)


def on_delivery_failure(
    job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """RQ calls this before it decides on a retry. A permanent failure (HTTP 410, SMTP 5xx) is not
    retried; otherwise the next wait is the configured one with jitter, or the receiver's
    Retry-After when it sent one."""
    alert, channel = _delivery_labels(job)
    report_job_failure(job, exc)
    if isinstance(exc, PermanentDeliveryError):
        rqcompat.stop_retrying(job)
        log.error("job=%s alert=%s channel=%s delivery failed permanently: %s", job.id, alert, channel, exc)
        metrics.count_delivery(connection, alert, channel, "failed")
        return
    if isinstance(exc, ClaimHeldError):
        # Waiting for another worker's claim to lapse is not a failed try.
        rqcompat.give_back_try(job)
    left = rqcompat.retries_left(job)
    if not left:
        log.error(
            "job=%s alert=%s channel=%s delivery failed, no tries left: %s", job.id, alert, channel, exc
        )
        metrics.count_delivery(connection, alert, channel, "failed")
        return
    metrics.count_delivery(connection, alert, channel, "retried")
    retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
    configured = rqcompat.next_retry_wait(job)
    wait = next_retry_delay(configured, retry_after, runtime().random())
    rqcompat.set_next_retry_wait(job, wait)
    log.warning(
        "job=%s alert=%s channel=%s delivery failed, retry in %ss (%s tries left): %s",
        job.id, alert, channel, wait, left, exc,
    )  # fmt: skip


def on_items_failure(
    job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """A batch failed or was abandoned by a dead worker; RQ re-runs it while it has retries."""
    report_job_failure(job, exc)
    log.warning("job=%s batch failed (%s tries left): %s", job.id, job.retries_left, exc.__class__.__name__)


def _delivery_labels(job: Any) -> tuple[str, str]:
    try:
        data = job.args[0]
        return str(data["alert"]), str(data["channel"])
    except (IndexError, KeyError, TypeError):
        return "unknown", "unknown"

"""The RQ job functions: thin, JSON-serialisable arguments, the work is in `worker.pipeline`.

The process that runs the worker installs its Runtime with `install`; a job started without one
(e.g. by a bare `rq worker`) builds it from $NEWSWATCH_CONFIG.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from worker import pipeline
from worker.config import load_config
from worker.core.errors import PermanentDeliveryError
from worker.core.models import Delivery
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


def process_items(feed: str, items: list[dict[str, Any]]) -> int:
    return pipeline.process_items(runtime(), feed, items)


def deliver(delivery: dict[str, Any]) -> str:
    return pipeline.deliver(runtime(), Delivery.from_dict(delivery))


def on_delivery_failure(
    job: Any, connection: Any, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """RQ calls this before deciding on a retry: a permanent failure (HTTP 410) is not retried."""
    if isinstance(exc, PermanentDeliveryError):
        job.retries_left = 0
        log.error("job=%s delivery failed permanently: %s", job.id, exc)
    else:
        log.warning("job=%s delivery failed, %s tries left: %s", job.id, job.retries_left, exc)

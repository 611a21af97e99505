"""RQ queues with the JSON serializer: item batches in, deliveries out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Callback, Queue, Retry
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker

from worker.adapters import garbage, keys, rqcompat
from worker.core.errors import DeliveryError
from worker.core.models import Item

ITEM_JOB = "worker.jobs.process_items"
ITEMS_FAILURE_CALLBACK = "worker.jobs.on_items_failure"
ITEM_RETRIES = 5
ITEM_JOB_TIMEOUT = 45  # seconds: a batch takes milliseconds (without the worker's sender: + INLINE_BUDGET)
JOB_TIMEOUT = 300  # the queues' default, for anything else
RESULT_TTL = 600  # finished delivery jobs stay visible in rq-dashboard for a while, then go
# A finished item batch is deleted at once: its items are in the seen-store and its alerts in
# delivery jobs; keeping ~6 KB per batch for minutes would only cost Redis memory at scale.
ITEM_RESULT_TTL = 0
FAILURE_TTL = int(timedelta(days=30).total_seconds())  # failed deliveries wait for replay-failed
_DAWN = datetime.min.replace(tzinfo=UTC)


# Recovery from a killed worker, deliberately fast. RQ keeps a running job's registry entry alive
# for (its timeout + 60 s) in a simple worker, (monitoring interval + 60 s) in a forking one, and
# looks for dead entries every 10 minutes by default; a SIGKILLed worker's batch would wait that
# long. Here: entries live (timeout or monitoring interval) + 15 s (rqcompat.HEARTBEAT_MARGIN),
# maintenance runs every 15 s.
JOB_MONITORING_INTERVAL = 5
MAINTENANCE_INTERVAL = 15
WORKER_TTL = 60  # a worker that stops heartbeating leaves `Worker.all` (and `health`) after this


def worker(
    connection: redis.Redis,
    names: Sequence[str],
    name: str | None = None,
    work_horse_killed: Callable[..., None] | None = None,
    fork: bool = False,
    after_job: Callable[[], None] | None = None,
    job_guard: Callable[[], AbstractContextManager[Any]] | None = None,
) -> BaseWorker:
    """`after_job` (simple workers only) runs after RQ has written each job's outcome;
    `job_guard` is held while each job runs (a live reload waits for it)."""
    worker_class = rqcompat.NewswatchForkingWorker if fork else rqcompat.NewswatchWorker
    rq_worker = worker_class(
        [queue(connection, n) for n in names],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
        work_horse_killed_handler=work_horse_killed,
    )
    # A receiver that is down is no bug: one line from the job's on_failure, no RQ traceback.
    rq_worker.expected_failures = (DeliveryError,)
    rq_worker.job_guard = job_guard
    if isinstance(rq_worker, rqcompat.NewswatchWorker):
        rq_worker.after_job = after_job
    return rq_worker


def queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


def enqueue_item_batches(
    items_queue: Queue, feed: str, items: Sequence[Item], batch_size: int, baseline: bool = False
) -> list[str]:
    """Push items in batches (one job per batch keeps queue overhead per item small). Returns the
    jobs' ids. Batches carry retries: a batch whose worker died is re-run (the commit makes that
    safe). Oldest first: feeds list their newest items first, and batches are worked in queue
    order, so a feed's alerts reach a channel in publication order (undated items last, in feed
    order)."""
    items = sorted(items, key=lambda item: (item.published is None, item.published or _DAWN))
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not batches:
        return []
    try:
        return _enqueue(items_queue, feed, batches, baseline)
    except redis.ResponseError as e:
        # The queue's keys hold garbage (another type): replaced, then queued once more.
        if not garbage.is_wrong_type(e) or not rqcompat.repair_queue_keys(
            items_queue.connection, [items_queue]
        ):
            raise
        return _enqueue(items_queue, feed, batches, baseline)


def _enqueue(items_queue: Queue, feed: str, batches: Sequence[Sequence[Item]], baseline: bool) -> list[str]:
    with items_queue.connection.pipeline() as pipe:
        jobs = items_queue.enqueue_many(
            [
                Queue.prepare_data(
                    ITEM_JOB,
                    args=(feed, [item.to_dict() for item in batch], baseline),
                    retry=Retry(max=ITEM_RETRIES),
                    timeout=ITEM_JOB_TIMEOUT,
                    on_failure=Callback(ITEMS_FAILURE_CALLBACK),
                    result_ttl=ITEM_RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                    description=f"process {len(batch)} items of feed {feed}",
                )
                for batch in batches
            ],
            pipeline=pipe,
        )
        pipe.execute()
    return [job.id for job in jobs]


@dataclass(frozen=True)
class QueueCounts:
    name: str
    queued: int
    started: int
    failed: int


def queue_counts(connection: redis.Redis) -> list[QueueCounts]:
    """Jobs per queue. A queue or registry key of another type (garbage) counts 0: `status`
    and `health` say what it holds, the workers replace it."""
    counts = []
    for name in keys.QUEUES:
        q = queue(connection, name)
        numbers = [_count(count, q) for count in (_queued, rqcompat.started_count, rqcompat.failed_count)]
        counts.append(QueueCounts(name, *numbers))
    return counts


def _queued(q: Queue) -> int:
    return q.count


def _count(count: Callable[[Queue], int], q: Queue) -> int:
    try:
        return count(q)
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        return 0

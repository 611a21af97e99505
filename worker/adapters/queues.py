"""RQ queues with the JSON serializer: item batches in, deliveries out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis
from rq import Callback, Queue, Retry, Worker
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from worker.adapters import keys
from worker.core.models import Item

ITEM_JOB = "worker.jobs.process_items"
ITEMS_FAILURE_CALLBACK = "worker.jobs.on_items_failure"
ITEM_RETRIES = 5
JOB_TIMEOUT = 300  # seconds; one batch or one delivery try is far below this
RESULT_TTL = 600  # finished jobs stay visible in rq-dashboard for a while, then go
FAILURE_TTL = int(timedelta(days=30).total_seconds())  # failed deliveries wait for replay-failed


# Recovery from a killed worker, deliberately fast. RQ keeps a running job's registry entry alive
# for (monitoring interval + 60 s) and looks for dead ones every 10 minutes by default; a job of a
# SIGKILLed worker would wait that long. Here: entries live monitoring + 15 s, maintenance runs
# every 15 s, so another worker re-runs an abandoned batch within about 30-45 s.
JOB_MONITORING_INTERVAL = 5
HEARTBEAT_MARGIN = 15
MAINTENANCE_INTERVAL = 15
WORKER_TTL = 60  # a worker that stops heartbeating leaves `Worker.all` (and `health`) after this


class NewswatchWorker(Worker):
    """RQ's forking worker (a crashing or hanging job cannot take the worker down) with the
    short heartbeats above."""

    def get_heartbeat_ttl(self, job: Any) -> int:
        monitoring = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            remaining = int(job.timeout - self.current_job_working_time)
            return min(remaining, monitoring) + HEARTBEAT_MARGIN
        return monitoring + HEARTBEAT_MARGIN


def worker(
    connection: redis.Redis,
    names: Sequence[str],
    name: str | None = None,
    work_horse_killed: Callable[..., None] | None = None,
) -> NewswatchWorker:
    return NewswatchWorker(
        [queue(connection, n) for n in names],
        connection=connection,
        serializer=JSONSerializer,
        name=name,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
        maintenance_interval=MAINTENANCE_INTERVAL,
        worker_ttl=WORKER_TTL,
        work_horse_killed_handler=work_horse_killed,
    )


def queue(connection: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer, default_timeout=JOB_TIMEOUT)


def enqueue_item_batches(
    items_queue: Queue, feed: str, items: Sequence[Item], batch_size: int, baseline: bool = False
) -> int:
    """Push items in batches (one job per batch keeps queue overhead per item small). Returns jobs.
    Batches carry retries: a batch whose worker died is re-run (the commit makes that safe)."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if not batches:
        return 0
    with items_queue.connection.pipeline() as pipe:
        items_queue.enqueue_many(
            [
                Queue.prepare_data(
                    ITEM_JOB,
                    args=(feed, [item.to_dict() for item in batch], baseline),
                    retry=Retry(max=ITEM_RETRIES),
                    on_failure=Callback(ITEMS_FAILURE_CALLBACK),
                    result_ttl=RESULT_TTL,
                    failure_ttl=FAILURE_TTL,
                    description=f"process {len(batch)} items of feed {feed}",
                )
                for batch in batches
            ],
            pipeline=pipe,
        )
        pipe.execute()
    return len(batches)


@dataclass(frozen=True)
class QueueCounts:
    name: str
    queued: int
    started: int
    failed: int


def queue_counts(connection: redis.Redis) -> list[QueueCounts]:
    counts = []
    for name in keys.QUEUES:
        q = queue(connection, name)
        started = StartedJobRegistry(queue=q).count
        failed = FailedJobRegistry(queue=q).count
        counts.append(QueueCounts(name, q.count, started, failed))
    return counts

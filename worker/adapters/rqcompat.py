"""Every use of RQ beyond its public enqueue-and-work API, in one place.

newswatch writes RQ's keys inside its own transactions, edits jobs' retry fields, moves jobs
between registries and tunes worker heartbeats. None of that is RQ's stable API, so each use
lives here, as one small function, with a contract test (tests/integration/test_rqcompat.py)
that fails loudly when an RQ upgrade changes what it relies on. Nothing else in newswatch
touches RQ's registries, job hash fields or worker internals.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue, Retry, SimpleWorker, Worker, get_current_job, worker_registration
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.worker import BaseWorker

from worker.adapters import garbage

# A job's registry entry outlives its expected end by this much (see NewswatchWorker).
HEARTBEAT_MARGIN = 15
# Jobs carry their own timeout (the queue's default fills it in); this is only a safety net.
FALLBACK_JOB_TIMEOUT = 300
# The names RQ gives the exceptions it hands to on_failure for jobs whose worker died.
DEAD_WORKER_ERRORS = ("AbandonedJobError", "WorkHorseKilled")


def close_connections_in_forked_children(connection: redis.Redis) -> None:
    """RQ forks its scheduler from the worker (and, with --fork, a work horse for each job). A
    forked child inherits the worker's Redis sockets, and its pool would only drop them, not
    close them, when it first talks to Redis (the scheduler's sockets stayed open for its whole
    life). Killed while it waited in BLPOP on one of them (SIGKILL, the OOM killer), the worker
    then left that wait open at Redis, which handed the next job to it: a job nobody reads,
    marked queued but in no queue, its items lost. So a forked child closes its copies at once
    (another pid: the close does not shut the socket down for the parent) and its pool opens
    its own when it needs them. Runs in the child, single-threaded: no lock is taken."""
    pool = connection.connection_pool

    def close_copies() -> None:
        inherited = [*getattr(pool, "_available_connections", []), *getattr(pool, "_in_use_connections", [])]
        for inherited_connection in inherited:
            with contextlib.suppress(Exception):  # a child must start whatever a socket does
                inherited_connection.disconnect()

    os.register_at_fork(after_in_child=close_copies)


_PR_SET_PDEATHSIG = 1  # prctl(2), Linux


def forked_children_stop_with_the_worker() -> None:
    """RQ's scheduler, forked from the worker, outlived a worker killed alone (SIGKILL, the OOM
    killer): unsupervised, on the config of its day, holding the scheduler lock, until the whole
    service stopped. So a child the worker's main thread forks (RQ forks there: its scheduler,
    and with --fork each job's work horse) gets SIGTERM when the worker dies. The scheduler
    stops as on any SIGTERM, releasing its lock for the restarted worker's own; a work horse
    stops at once, and its job is re-run as abandoned, as it would be anyway. Elsewhere than
    Linux nothing changes."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    forking: dict[str, int] = {}

    def before() -> None:
        forking["parent"] = os.getpid() if threading.current_thread() is threading.main_thread() else 0

    def in_child() -> None:
        parent = forking.get("parent", 0)
        if parent and prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)  # the worker died before the wish was made

    os.register_at_fork(before=before, after_in_child=in_child)


def schedule_job(queue: Queue, job: Job, at: datetime, pipe: Pipeline) -> None:
    """Queue.schedule_job, every write inside `pipe`. RQ 2.x's own adds the job to the scheduled
    registry with an immediate ZADD outside the pipeline given (ScheduledJobRegistry.schedule
    ignores it): a round trip per delivery, and a registry entry that outlives an aborted
    transaction. The rest is what RQ does: status, job hash, its TTL, the queue's registration."""
    job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
    job.save(pipeline=pipe)
    job.cleanup(ttl=job.ttl, pipeline=pipe)
    pipe.sadd(queue.redis_queues_keys, queue.key)
    pipe.zadd(_scheduled(queue).key, {job.id: int(at.timestamp())})


def reschedule(queue: Queue, job_id: str, at: datetime, retries_left: int) -> None:
    """A scheduled job runs at `at` instead, with `retries_left` tries after that one."""
    with queue.connection.pipeline(transaction=False) as pipe:
        pipe.hset(Job.key_for(job_id), "retries_left", retries_left)
        pipe.zadd(_scheduled(queue).key, {job_id: at.timestamp()}, xx=True)
        pipe.execute()


def drop_scheduled(queue: Queue, job_ids: Sequence[str], pipe: Pipeline | None = None) -> None:
    """Scheduled jobs that are no longer needed: out of the registry, their hashes deleted (in
    `pipe` when given, for the caller to execute)."""
    if not job_ids:
        return
    if pipe is None:
        with queue.connection.pipeline(transaction=False) as own:
            drop_scheduled(queue, job_ids, own)
            own.execute()
        return
    registry = _scheduled(queue)
    for job_id in job_ids:
        registry.remove(job_id, pipeline=pipe)
        pipe.delete(Job.key_for(job_id))


def move_scheduled(queue: Queue, times: Mapping[str, datetime], pipe: Pipeline) -> None:
    """Scheduled jobs run at other times, their tries unchanged; jobs no longer scheduled (run,
    cancelled) are left alone. Whole seconds, as RQ's scheduler compares them: a job moved to
    "now" is due now, not at the next second."""
    if times:
        pipe.zadd(
            _scheduled(queue).key, {job_id: int(at.timestamp()) for job_id, at in times.items()}, xx=True
        )


def fail_scheduled(queue: Queue, job_id: str, reason: str, ttl: int) -> bool:
    """A scheduled job into the failed registry now, with `reason` as its exception text (what
    rq-dashboard and replay-failed show). False when the job no longer exists."""
    job = queue.fetch_job(job_id)
    if job is None:
        return False
    with queue.connection.pipeline() as pipe:
        _scheduled(queue).remove(job, pipeline=pipe)
        job.set_status(JobStatus.FAILED, pipeline=pipe)
        job.failed_job_registry.add(job, ttl=ttl, exc_string=reason, pipeline=pipe)
        Result.create_failure(job, ttl, exc_string=reason, pipeline=pipe)
        pipe.execute()
    return True


def any_unfinished(queue: Queue, job_ids: Sequence[str]) -> bool:
    """Whether any of these jobs still exists and has not finished or failed (a job deleted on
    success, `result_ttl=0`, counts as finished)."""
    jobs = Job.fetch_many(list(job_ids), connection=queue.connection, serializer=queue.serializer)
    done = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
    return any(job is not None and job.get_status(refresh=False) not in done for job in jobs)


def failed_jobs(queue: Queue) -> list[Job]:
    """The jobs in the queue's failed registry (those still stored)."""
    ids = FailedJobRegistry(queue=queue).get_job_ids()
    return [
        job for job in Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer) if job
    ]


@dataclass(frozen=True)
class Failure:
    job: Job
    at: datetime | None  # when it failed
    reason: str | None  # its exception's message


def recent_failures(queue: Queue, limit: int) -> list[Failure]:
    """The newest `limit` failures of the failed registry, newest first. Entries are scored by
    when they expire, in whole seconds, and a queue's failures are all kept equally long
    (FAILURE_TTL): the highest scores are the latest failures; the time of each failure's
    result orders those of one second."""
    ids = FailedJobRegistry(queue=queue).get_job_ids(0, limit - 1, desc=True)
    jobs = Job.fetch_many(ids, connection=queue.connection, serializer=queue.serializer)
    failures = [Failure(job, _failed_at(job), failure_reason(job)) for job in jobs if job]
    oldest = datetime.min.replace(tzinfo=UTC)
    return sorted(failures, key=lambda f: f.at or oldest, reverse=True)


def _failed_at(job: Job) -> datetime | None:
    """When a failed job failed: its failure result's time (fail_scheduled stores one too)."""
    result = job.latest_result()
    moment = result.created_at if result is not None else job.ended_at
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class JobState:
    """Where one job stands, for `newswatch alerts`."""

    status: str  # RQ's: queued, started, scheduled, finished, failed, stopped, canceled, deferred
    runs_at: datetime | None  # a scheduled job's time
    retries_left: int | None
    reason: str | None  # a failed job's exception message


def job_states(queue: Queue, job_ids: Sequence[str]) -> dict[str, JobState]:
    """The state of each of these jobs that still exists, in two round trips (plus one per
    failed job, for its reason)."""
    jobs = [
        j
        for j in Job.fetch_many(list(job_ids), connection=queue.connection, serializer=queue.serializer)
        if j
    ]
    registry = _scheduled(queue)
    with queue.connection.pipeline(transaction=False) as pipe:
        for job in jobs:
            pipe.zscore(registry.key, job.id)
        scores = pipe.execute()
    states = {}
    for job, score in zip(jobs, scores, strict=True):
        status = job.get_status(refresh=False)
        failed = status == JobStatus.FAILED
        states[job.id] = JobState(
            str(status.value if isinstance(status, JobStatus) else status),
            datetime.fromtimestamp(score, UTC) if score is not None else None,
            job.retries_left,
            failure_reason(job) if failed else None,
        )
    return states


def failure_reason(job: Job) -> str | None:
    """The exception text a failed job was stored with (its last line: the message)."""
    result = job.latest_result()
    text = result.exc_string if result is not None else None
    return text.strip().splitlines()[-1] if text and text.strip() else None


def requeue_failed(queue: Queue, job: Job, retry_intervals: Sequence[int]) -> None:
    """A failed job back on its queue, same id, with the given retries again."""
    job.retries_left = len(retry_intervals) or None
    job.retry_intervals = list(retry_intervals) or None
    job.save()
    FailedJobRegistry(queue=queue).requeue(job.id)


# --- inside a running job ---------------------------------------------------------------------

# A job that returns run_again_in(...) is not counted as retried by RQ beyond this many times.
_HAND_OFFS = 2**31 - 1


def run_again_in(seconds: float) -> Retry:
    """What a job returns to stay held in the scheduled registry for `seconds`, its tries
    (retries_left) untouched: RQ schedules it again (RQ >= 2.1: a job may return a Retry). A
    delivery job does this when it hands its send to the process's sender, which then settles
    the job: cancels it once sent, moves it to its next retry or to the failed registry."""
    return Retry(max=_HAND_OFFS, interval=[max(1, round(seconds))])


def current_retries_left() -> int | None:
    """The tries the running job has after this one (None outside a job)."""
    job = get_current_job()
    if job is None:
        return None
    return retries_left(job)


# --- inside on_failure callbacks: RQ reads these fields right after the callback returns ------


def stop_retrying(job: Any) -> None:
    """The failure is permanent: RQ moves the job to the failed registry instead of retrying."""
    job.retries_left = 0


def give_back_try(job: Any) -> None:
    """This failure does not count as a try (RQ is about to take one), even if it was the last."""
    job.retries_left = (job.retries_left or 0) + 1
    job.retry_intervals = job.retry_intervals or [1]


def retries_left(job: Any) -> int:
    return int(job.retries_left or 0) if job.retry_intervals else 0


def next_retry_wait(job: Any) -> int:
    """The configured wait, in seconds, before the retry RQ is about to schedule."""
    return int(job.retry_intervals[_retry_index(job)])


def set_next_retry_wait(job: Any, seconds: int) -> None:
    """Change the wait before the retry RQ is about to schedule (jitter, Retry-After)."""
    job.retry_intervals[_retry_index(job)] = seconds


def _retry_index(job: Any) -> int:
    return retry_index(len(job.retry_intervals), int(job.retries_left))


def retry_index(intervals: int, retries_left: int) -> int:
    """Which of `intervals` retry waits comes next with `retries_left` tries left, as RQ picks it
    (Job.get_retry_interval: intervals[len - retries_left], the last one repeated)."""
    return min(max(intervals - retries_left, 0), intervals - 1)


def died_with_its_worker(error: BaseException) -> bool:
    """RQ's exception for a job whose worker died while running it (abandoned, or killed)."""
    return error.__class__.__name__ in DEAD_WORKER_ERRORS


# --- registries and workers, for status, metrics and health ---------------------------------


def started_count(queue: Queue) -> int:
    return int(StartedJobRegistry(queue=queue).count)


def scheduled_count(queue: Queue) -> int:
    return int(_scheduled(queue).count)


def failed_count(queue: Queue) -> int:
    return int(FailedJobRegistry(queue=queue).count)


def live_workers(connection: redis.Redis) -> int:
    """Workers registered and beating. RQ's sets of another type (garbage) count none: `health`
    then says what they hold, and a worker's start replaces them."""
    try:
        return len(Worker.all(connection=connection))
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        return 0


_REGISTRIES = (StartedJobRegistry, FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry,
               ScheduledJobRegistry, CanceledJobRegistry)  # fmt: skip


def queue_key_types(queues: Sequence[Queue]) -> dict[str, str]:
    """Every RQ key a worker on these queues reads, with the type it must hold: the queues and
    their intermediate lists, their registries (sorted sets), and the sets RQ keeps of queues
    and workers. A key of another type stops RQ's work loop (it quits on the first error)."""
    expected = {Queue.redis_queues_keys: "set", worker_registration.REDIS_WORKER_KEYS: "set"}
    for queue in queues:
        expected[queue.key] = "list"
        expected[queue.intermediate_queue_key] = "list"
        expected[worker_registration.WORKERS_BY_QUEUE_KEY % queue.name] = "set"
        for registry in _REGISTRIES:
            expected[registry(queue=queue).key] = "zset"
    return expected


def repair_queue_keys(connection: redis.Redis, queues: Sequence[Queue]) -> list[str]:
    """Replace those of the queues' RQ keys that hold another type (garbage: no job of ours is
    in them). Returns the keys replaced."""
    expected = queue_key_types(queues)
    return [
        key
        for key in garbage.wrong_types(connection, expected)
        if garbage.replace_wrong_type(connection, "queue", key, expected[key], "workers can take jobs again")
    ]


class _ErrorsAsDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose ERROR (and worse) lines come out at DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG if level >= logging.ERROR else level, msg, *args, **kwargs)


class _ExpectedFailuresInOneLine:
    """RQ logs every exception a job raises at ERROR with its whole traceback (Worker.handle_exception,
    before its exception handlers run). For the failures newswatch expects, a receiver that is
    down or refuses (DeliveryError), the job's on_failure callback has already logged one line
    naming alert and channel: the 60-line traceback after it says nothing more and buries it.
    So for `expected_failures` RQ's own line goes to DEBUG; everything else (a bug) keeps it.
    Nothing else changes: exception handlers and Sentry's RQ integration (which wraps
    handle_exception) still see every failure."""

    expected_failures: tuple[type[BaseException], ...] = ()
    log: Any

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if not isinstance(exc_info[1], self.expected_failures):
            super().handle_exception(job, *exc_info)  # type: ignore[misc]
            return
        log, self.log = self.log, _ErrorsAsDebug(self.log, {})
        try:
            super().handle_exception(job, *exc_info)  # type: ignore[misc]
        finally:
            self.log = log


class _OneConfigPerJob:
    """`job_guard` (a live reload's, worker.reload.BetweenJobs.job) is held while a job runs:
    a reload waits for the job to end, and the job runs on one config from start to end."""

    job_guard: Callable[[], AbstractContextManager[Any]] | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        with self.job_guard() if self.job_guard is not None else contextlib.nullcontext():
            super().execute_job(job, queue)  # type: ignore[misc]


class _ExpiredRunsForgotten:
    """RQ keeps an execution's id in its job's execution registry 60 s longer than the
    execution's hash. A worker killed during a job leaves both behind; the job is found abandoned
    when the hash expires and runs again at once. Deleting it on success (result_ttl=0: item
    batches) then reads every execution in that registry, and RQ 2.12 raised `ValueError:
    Execution … not found in Redis` for the dead one: each retry failed the same way, and a batch
    that had done its work ended in the failed registry. So those ids go first."""

    execution: Any
    default_result_ttl: int

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry) -> None:
        if job.get_result_ttl(self.default_result_ttl) == 0:
            forget_expired_executions(job, self.execution.id if self.execution is not None else None)
        super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]


def forget_expired_executions(job: Job, running: str | None) -> list[str]:
    """Drop the ids of the job's executions other than `running` whose records expired, from
    its execution registry and the started registry. One round trip when there are none.
    Returns the ids dropped."""
    registry = ExecutionRegistry(job_id=job.id, connection=job.connection)
    ids: list[bytes] = job.connection.zrange(registry.key, 0, -1)  # type: ignore[assignment]
    others = [i for i in map(bytes.decode, ids) if i != running]
    if not others:
        return []
    with job.connection.pipeline(transaction=False) as pipe:
        for execution_id in others:
            pipe.exists(Execution(execution_id, job.id, job.connection).key)
        expired = [i for i, exists in zip(others, pipe.execute(), strict=True) if not exists]
    if expired:
        with job.connection.pipeline(transaction=False) as pipe:
            pipe.zrem(registry.key, *expired)
            pipe.zrem(job.started_job_registry.key, *(f"{job.id}:{i}" for i in expired))
            pipe.execute()
    return expired


class NewswatchWorker(_ExpiredRunsForgotten, _OneConfigPerJob, _ExpectedFailuresInOneLine, SimpleWorker):
    """The default: jobs run in the worker process itself. RQ's forking worker spends ~10 ms per
    job on fork() and a fresh process (and our runtime's HTTP client and TLS context with it);
    that caps deliveries at a few dozen per second and worker. The price is isolation: a job that
    crashes the interpreter takes the worker with it (the supervisor or the container restarts
    it, and the job is re-run as abandoned).

    `after_job` runs once RQ has written a job's outcome (result, retry, registries): the
    sender admits the deliveries that job handed off only then."""

    after_job: Callable[[], None] | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            if self.after_job is not None:
                self.after_job()

    def get_heartbeat_ttl(self, job: Any) -> int:
        # No heartbeats during a job in a simple worker: the entry must outlive the job's timeout.
        return int(job.timeout or FALLBACK_JOB_TIMEOUT) + HEARTBEAT_MARGIN


def stop_requested(worker: BaseWorker) -> bool:
    """Whether the worker's loop ended on a signal (SIGTERM, SIGINT) rather than running dry,
    or on an error RQ did not expect (its loop quits on the first one, and returns: then the
    worker must go on). RQ sets `_stop_requested` only when the signal came during a job; the
    date in both cases."""
    return getattr(worker, "_shutdown_requested_date", None) is not None


class NewswatchForkingWorker(_ExpiredRunsForgotten, _OneConfigPerJob, _ExpectedFailuresInOneLine, Worker):
    """`newswatch worker --fork`: every job in a forked work horse, for isolation over speed."""

    def get_heartbeat_ttl(self, job: Any) -> int:
        monitoring = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            remaining = int(job.timeout - self.current_job_working_time)
            return min(remaining, monitoring) + HEARTBEAT_MARGIN
        return monitoring + HEARTBEAT_MARGIN


def _scheduled(queue: Queue) -> ScheduledJobRegistry:
    return ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]

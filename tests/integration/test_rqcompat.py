"""Contract tests for worker.adapters.rqcompat: what newswatch relies on in RQ's internals.

Each test pins one function against a real Redis and real RQ workers, so an RQ upgrade that
changes a registry, a job field or a worker hook fails here, by name, not somewhere downstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import rq.exceptions
from rq import Callback, Queue, Retry, SimpleWorker
from rq.executions import Execution, ExecutionRegistry
from rq.job import Job, JobStatus, get_current_job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from worker.adapters import queues, rqcompat
from worker.core.errors import DeliveryError

CALLS: list[str] = []


def record(label: str) -> str:
    CALLS.append(label)
    return label


def always_fails(label: str) -> None:
    CALLS.append(label)
    raise RuntimeError(f"{label} failed")


def stop_on_failure(job: Any, connection: Any, *exc: Any) -> None:
    rqcompat.stop_retrying(job)


def give_back_on_failure(job: Any, connection: Any, *exc: Any) -> None:
    if CALLS.count(job.args[0]) < 3:
        rqcompat.give_back_try(job)


def shorten_wait_on_failure(job: Any, connection: Any, *exc: Any) -> None:
    CALLS.append(f"configured={rqcompat.next_retry_wait(job)} left={rqcompat.retries_left(job)}")
    rqcompat.set_next_retry_wait(job, 0)


@pytest.fixture
def queue(redis_url: str) -> Iterator[Queue]:
    CALLS.clear()
    connection = redis.Redis.from_url(redis_url)
    yield queues.queue(connection, "contract")
    connection.close()


def work(queue: Queue) -> None:
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(
        burst=True, with_scheduler=True
    )


def make_job(queue: Queue, func: Any, label: str, **options: Any) -> Job:
    return queue.create_job(func, args=(label,), job_id=label, **options)


def test_schedule_job_writes_everything_inside_the_transaction(queue: Queue) -> None:
    job = make_job(queue, record, "scheduled")
    at = datetime.now(UTC) - timedelta(seconds=1)
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, at, pipe)
        pipe.reset()  # abandoned: nothing may remain
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []
    assert not queue.connection.exists(Job.key_for("scheduled"))
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, at, pipe)
        pipe.execute()
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == ["scheduled"]
    assert queue.fetch_job("scheduled").get_status() == JobStatus.SCHEDULED  # type: ignore[union-attr]
    work(queue)  # RQ's scheduler moves it to the queue when due, and it runs
    assert CALLS == ["scheduled"]


def test_reschedule_moves_a_held_job_and_sets_its_tries(queue: Queue) -> None:
    job = make_job(queue, always_fails, "held", retry=Retry(max=3, interval=0))
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, datetime.now(UTC) + timedelta(hours=1), pipe)
        pipe.execute()
    work(queue)
    assert CALLS == []  # not due
    rqcompat.reschedule(queue, "held", datetime.now(UTC) - timedelta(seconds=1), retries_left=1)
    assert queue.fetch_job("held").retries_left == 1  # type: ignore[union-attr]
    work(queue)
    work(queue)
    assert CALLS == ["held", "held"]  # the try it was moved to, and the one retry left
    assert FailedJobRegistry(queue=queue).get_job_ids() == ["held"]


def test_drop_scheduled_leaves_nothing_to_run(queue: Queue) -> None:
    job = make_job(queue, record, "dropped")
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, datetime.now(UTC) - timedelta(seconds=1), pipe)
        pipe.execute()
    rqcompat.drop_scheduled(queue, ["dropped"])
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []
    assert not queue.connection.exists(Job.key_for("dropped"))
    work(queue)
    assert CALLS == []


def test_fail_scheduled_lands_in_the_failed_registry_with_its_reason(queue: Queue) -> None:
    job = make_job(queue, record, "failing", failure_ttl=3600)
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, datetime.now(UTC) + timedelta(hours=1), pipe)
        pipe.execute()
    assert rqcompat.fail_scheduled(queue, "failing", "DeliveryError: HTTP 410 Gone", 3600)
    assert not rqcompat.fail_scheduled(queue, "no-such-job", "x", 3600)
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []
    (failed,) = rqcompat.failed_jobs(queue)
    assert failed.id == "failing" and failed.get_status() == JobStatus.FAILED
    assert rqcompat.failure_reason(failed) == "DeliveryError: HTTP 410 Gone"
    assert rqcompat.failed_count(queue) == 1


def test_requeue_failed_runs_the_job_again_with_fresh_retries(queue: Queue) -> None:
    queue.enqueue_job(make_job(queue, always_fails, "replayed", retry=Retry(max=1, interval=0)))
    work(queue)
    work(queue)
    assert CALLS == ["replayed", "replayed"] and rqcompat.failed_count(queue) == 1
    (job,) = rqcompat.failed_jobs(queue)
    assert "replayed failed" in (rqcompat.failure_reason(job) or "")
    rqcompat.requeue_failed(queue, job, [0, 0])
    assert rqcompat.failed_count(queue) == 0
    for _ in range(3):
        work(queue)
    assert CALLS.count("replayed") == 5  # one try and the two retries it was given again


def test_stop_retrying_in_on_failure_fails_the_job_at_once(queue: Queue) -> None:
    queue.enqueue_job(
        make_job(
            queue,
            always_fails,
            "permanent",
            retry=Retry(max=5, interval=0),
            on_failure=Callback(stop_on_failure),
        )
    )
    work(queue)
    work(queue)
    assert CALLS == ["permanent"]
    assert FailedJobRegistry(queue=queue).get_job_ids() == ["permanent"]


def test_give_back_try_in_on_failure_keeps_the_job_retrying(queue: Queue) -> None:
    queue.enqueue_job(
        make_job(
            queue,
            always_fails,
            "patient",
            retry=Retry(max=1, interval=0),
            on_failure=Callback(give_back_on_failure),
        )
    )
    for _ in range(5):
        work(queue)
    # Max 1 retry, but the first two failures gave their try back: four runs in all.
    assert CALLS.count("patient") == 4


def test_next_retry_wait_reads_and_sets_the_interval_rq_uses(queue: Queue) -> None:
    queue.enqueue_job(
        make_job(
            queue,
            always_fails,
            "waits",
            retry=Retry(max=2, interval=[3600, 7200]),
            on_failure=Callback(shorten_wait_on_failure),
        )
    )
    for _ in range(4):
        work(queue)
    # Without the callback's 0, the second run would wait an hour; it ran at once, twice.
    assert [c for c in CALLS if c.startswith("configured")] == [
        "configured=3600 left=2",
        "configured=7200 left=1",
        "configured=0 left=0",
    ]
    assert CALLS.count("waits") == 3


def test_dead_worker_errors_are_the_exceptions_rq_raises_for_them() -> None:
    for name in rqcompat.DEAD_WORKER_ERRORS[:1]:
        error_type = getattr(rq.exceptions, name)
        assert rqcompat.died_with_its_worker(error_type("x"))
    assert not rqcompat.died_with_its_worker(RuntimeError("x"))


def started_entry_lifetime(label: str) -> float:
    """Run as a job: how long RQ keeps this running job's started-registry entry alive."""
    job = get_current_job()
    assert job is not None
    registry = StartedJobRegistry(queue=Queue(job.origin, connection=job.connection))
    # Entries are "<job id>:<execution id>" in RQ 2.x.
    scores = [
        s
        for m, s in job.connection.zrange(registry.key, 0, -1, withscores=True)
        if m.startswith(job.id.encode())
    ]
    return max(scores) - time.time() if scores else 0.0


@pytest.mark.parametrize("fork", [False, True], ids=["simple", "forking"])
def test_workers_keep_a_running_job_alive_as_long_as_its_timeout_says(queue: Queue, fork: bool) -> None:
    """RQ asks get_heartbeat_ttl(job) how long a running job's registry entry lives: ours say
    (timeout + margin) for a simple worker, (monitoring interval + margin) for a forking one."""
    job = queue.enqueue(started_entry_lifetime, "alive", job_timeout=120, result_ttl=60)
    worker = queues.worker(queue.connection, [queue.name], fork=fork)
    worker.work(burst=True)
    lifetime = job.latest_result().return_value  # type: ignore[union-attr]
    expected = (queues.JOB_MONITORING_INTERVAL if fork else 120) + rqcompat.HEARTBEAT_MARGIN
    assert expected - 10 <= lifetime <= expected + 1, lifetime


def count_started_and_workers(label: str) -> list[int]:
    """Run as a job: what newswatch's status would count while this job runs."""
    job = get_current_job()
    assert job is not None
    queue = Queue(job.origin, connection=job.connection)
    return [rqcompat.started_count(queue), rqcompat.live_workers(job.connection)]


def test_started_and_live_worker_counts(queue: Queue) -> None:
    assert rqcompat.started_count(queue) == 0
    assert rqcompat.live_workers(queue.connection) == 0
    job = queue.enqueue(count_started_and_workers, "counting", result_ttl=60)
    work(queue)
    assert job.latest_result().return_value == [1, 1]  # type: ignore[union-attr]
    assert rqcompat.started_count(queue) == 0


def fails_as_expected(label: str) -> None:
    CALLS.append(label)
    raise DeliveryError(f"{label}: HTTP 503")


def test_expected_failures_leave_rq_s_traceback_at_debug_bugs_keep_it(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """RQ logs each job exception at ERROR with its traceback before its exception handlers run;
    our workers move that line to DEBUG for DeliveryError (a receiver that is down) only. The
    exception handlers (and so Sentry's integration, which wraps handle_exception) see both.
    (The forking worker has the same handle_exception; its work horse logs in another process.)"""
    handled: list[str] = []
    queue.enqueue_job(make_job(queue, fails_as_expected, "receiver-down", result_ttl=60))
    queue.enqueue_job(make_job(queue, always_fails, "a-bug", result_ttl=60))
    worker = queues.worker(queue.connection, [queue.name])
    worker.push_exc_handler(lambda job, *exc_info: handled.append(job.id))
    with caplog.at_level(logging.DEBUG, logger="rq.worker"):
        worker.work(burst=True)
    assert sorted(handled) == ["a-bug", "receiver-down"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "a-bug" in errors[0] and "Traceback" in errors[0]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("receiver-down" in m and "Traceback" in m for m in debug)
    assert rqcompat.failed_count(queue) == 2
    assert isinstance(
        queues.worker(queue.connection, [queue.name], fork=True), rqcompat.NewswatchForkingWorker
    )
    assert rqcompat.NewswatchForkingWorker.handle_exception is rqcompat.NewswatchWorker.handle_exception


def test_recent_failed_jobs_and_job_states_for_status_and_alerts(queue: Queue) -> None:
    """What `status` and `alerts` read: the newest failures first, when and why each failed;
    where a scheduled job stands and when it runs, with its tries left."""
    for label in ("older", "newer"):
        queue.enqueue_job(make_job(queue, always_fails, label, failure_ttl=3600, result_ttl=60))
        work(queue)
    failures = rqcompat.recent_failures(queue, 5)
    assert [f.job.id for f in failures] == ["newer", "older"]
    assert [f.reason for f in failures] == ["RuntimeError: newer failed", "RuntimeError: older failed"]
    moment = failures[0].at
    assert moment is not None and abs((datetime.now(UTC) - moment).total_seconds()) < 60
    held = make_job(queue, record, "held", retry=Retry(max=3, interval=0))
    at = datetime.now(UTC) + timedelta(hours=1)
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, held, at, pipe)
        pipe.execute()
    rqcompat.reschedule(queue, "held", at, retries_left=2)
    states = rqcompat.job_states(queue, ["newer", "held", "no-such-job"])
    assert set(states) == {"newer", "held"}
    assert states["newer"].status == "failed" and states["newer"].reason == "RuntimeError: newer failed"
    scheduled = states["held"]
    assert (scheduled.status, scheduled.retries_left, scheduled.reason) == ("scheduled", 2, None)
    assert scheduled.runs_at is not None and abs((scheduled.runs_at - at).total_seconds()) < 1


def test_any_unfinished_tells_waiting_jobs_from_done_ones(queue: Queue) -> None:
    waiting = queue.enqueue(record, "waiting")
    assert rqcompat.any_unfinished(queue, [waiting.id, "gone"])
    work(queue)  # result_ttl 0 would delete it; a kept result says finished: both count as done
    assert not rqcompat.any_unfinished(queue, [waiting.id, "gone"])
    failing = queue.enqueue(always_fails, "failing")
    work(queue)
    assert not rqcompat.any_unfinished(queue, [failing.id])


def hands_off(label: str) -> Any:
    """Run as a job: report its tries left, then ask to stay held for an hour."""
    CALLS.append(f"{label} left={rqcompat.current_retries_left()}")
    return rqcompat.run_again_in(3600)


def test_run_again_in_keeps_the_job_held_with_its_tries(queue: Queue) -> None:
    """A delivery job that hands its send to the sender stays scheduled, tries untouched."""
    queue.enqueue_job(make_job(queue, hands_off, "handed", retry=Retry(max=4, interval=[10, 60])))
    states: list[tuple[str, float | None]] = []

    def after_job() -> None:  # what the worker's sender sees when it admits the hand-off
        job = queue.fetch_job("handed")
        assert job is not None
        states.append(
            (job.get_status(), queue.connection.zscore(ScheduledJobRegistry(queue=queue).key, "handed"))
        )

    worker = queues.worker(queue.connection, [queue.name], after_job=after_job)
    started = time.time()
    worker.work(burst=True, with_scheduler=True)
    assert CALLS == ["handed left=4"]
    ((status, due),) = states  # the hook ran once, after RQ had written the job's new state
    assert status == JobStatus.SCHEDULED and due is not None and started + 3500 < due < time.time() + 3700
    job = queue.fetch_job("handed")
    assert job is not None and job.retries_left == 4 and job.retry_intervals == [10, 60]
    assert rqcompat.failed_count(queue) == 0 and rqcompat.started_count(queue) == 0
    assert rqcompat.current_retries_left() is None  # outside a job
    assert not rqcompat.stop_requested(worker)  # ran dry, no signal


def test_move_scheduled_moves_held_jobs_and_leaves_others_alone(queue: Queue) -> None:
    job = make_job(queue, record, "moved")
    with queue.connection.pipeline() as pipe:
        pipe.multi()
        rqcompat.schedule_job(queue, job, datetime.now(UTC) + timedelta(hours=1), pipe)
        pipe.execute()
    with queue.connection.pipeline() as pipe:
        due = datetime.now(UTC) - timedelta(seconds=1)
        rqcompat.move_scheduled(queue, {"moved": due, "not-scheduled": due}, pipe)
        pipe.execute()
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == ["moved"]  # nothing added
    work(queue)
    assert CALLS == ["moved"]
    with queue.connection.pipeline() as pipe:  # a job that ran is not brought back
        rqcompat.move_scheduled(queue, {"moved": due}, pipe)
        pipe.execute()
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []


@pytest.mark.parametrize("fork", [False, True], ids=["simple", "forking"])
def test_a_job_re_run_after_its_worker_died_finishes_once_the_dead_run_s_record_expired(
    queue: Queue, fork: bool
) -> None:
    """RQ keeps an execution's id in its job's execution registry 60 s longer than the
    execution's hash. A killed worker's batch is found abandoned when the hash expires, and
    re-runs at once; on success RQ deletes the job (result_ttl=0) and reads every execution in
    that registry: `ValueError: Execution … not found in Redis`. Its retries failed the same
    way, and a batch that had done its work ended in the failed registry."""
    job = make_job(queue, record, "re-run", result_ttl=0, retry=Retry(max=2))
    with queue.connection.pipeline() as pipe:
        dead = Execution.create(job, ttl=60, pipeline=pipe, worker_name="killed")
        pipe.execute()
    queue.connection.delete(dead.key)  # expired; its ids in the registries have not
    queue.enqueue_job(job)
    queues.worker(queue.connection, [queue.name], fork=fork).work(burst=True)
    assert fork or CALLS == ["re-run"]  # a work horse records in its own memory
    assert rqcompat.failed_count(queue) == 0
    assert not queue.connection.exists(Job.key_for("re-run"), ExecutionRegistry(job.id, queue.connection).key)
    assert rqcompat.started_count(queue) == 0

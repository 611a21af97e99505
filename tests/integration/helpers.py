"""Helpers for integration tests: a runtime on the test Redis and draining queues in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from worker import jobs
from worker.adapters import keys, queues, rqcompat
from worker.config import load_config
from worker.runtime import Runtime, connect

BASE_CONFIG = """
redis: {{url: "{redis_url}"}}
polling: {polling}
delivery: {{retries: [1s, 1s], timeout: 3s}}
{body}
"""


def make_runtime(tmp_path: Path, redis_url: str, body: str, polling: str = "") -> Runtime:
    """A runtime on the test Redis; `polling` adds or overrides keys of the polling section."""
    path = tmp_path / "newswatch.yaml"
    settings = {"interval": "1m", "timeout": "5s", "max_age": "off", "allow_private_addresses": True}
    settings.update(yaml.safe_load("{" + polling + "}"))
    text = BASE_CONFIG.format(redis_url=redis_url, body=body, polling=json.dumps(settings))
    path.write_text(text, encoding="utf-8")
    rt = connect(load_config(str(path), {}))
    jobs.install(rt)
    return rt


def drain(rt: Runtime) -> None:
    """Run every queued job (items, then the deliveries they cause) in this process."""
    worker = SimpleWorker(
        [queues.queue(rt.redis, name) for name in keys.QUEUES], connection=rt.redis, serializer=JSONSerializer
    )
    worker.work(burst=True, with_scheduler=True)


def settled(rt: Runtime) -> bool:
    """No delivery job queued, running or held for later: whatever will be sent has been."""
    queue = rt.deliveries_queue
    return not (queue.count or rqcompat.started_count(queue) or rqcompat.scheduled_count(queue))


def drain_until(rt: Runtime, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """`drain` again and again (retries and held jobs fall due meanwhile) until `condition`."""
    deadline = time.monotonic() + timeout
    while True:
        drain(rt)
        if condition():
            return
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.2)


def drain_settled(rt: Runtime, timeout: float = 60.0) -> None:
    """`drain` until every delivery is settled: on a loaded machine a batch's first tries may
    not all start within its inline budget, and a failed try waits for its retry; one `drain`
    would end before those are sent."""
    drain_until(rt, lambda: settled(rt), timeout)


def meldung(n: int) -> dict[str, str]:
    """Feed item number n; every one matches `DeepSeek`."""
    return {"title": f"DeepSeek Meldung {n}", "guid": str(n), "link": f"https://n.example/{n}"}


def flush_held_digest(rt: Runtime) -> tuple[str, ...]:
    """Run the one digest flush job held for later now, as RQ would when its window ends;
    returns its arguments (alert, channel, window end)."""
    (held,) = ScheduledJobRegistry(queue=rt.deliveries_queue).get_job_ids()
    flush = rt.deliveries_queue.fetch_job(held)
    assert flush is not None
    jobs.flush_digest(*flush.args)
    return tuple(flush.args)

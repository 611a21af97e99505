"""Garbage in Redis (issue 20, point 5), against real processes: a real Redis written with
garbage, the `newswatch` command as subprocesses (scheduler, worker, run, status, poll, health)
and a webhook receiver on 127.0.0.1. Whatever the garbage, the process goes on, the feed or
delivery it touches says so in `status` and the logs, and `health` tells the truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ROOT, LocalServer, Response, feed_items, free_port, rss, stop_processes, wait_for
from worker.adapters import keys
from worker.core.identity import delivery_id

A = {"title": "DeepSeek R2 verschoben", "guid": "a", "link": "https://n.example/a"}
B = {"title": "DeepSeek kehrt zu Nvidia zurück", "guid": "b", "link": "https://n.example/b"}
C = {"title": "DeepSeek trainiert auf Huawei Ascend", "guid": "c", "link": "https://n.example/c"}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN", "NEWSWATCH_CONFIG")}


def cli(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "worker.cli", *args, "--config", config]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)


@pytest.fixture
def spawn() -> Iterator[Any]:
    """Start `newswatch` processes (output to a file each); all are stopped at the end."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(config: str, *args: str) -> Path:
        log = Path(config).parent / f"{args[0]}-{len(started)}.log"
        argv = [sys.executable, "-m", "worker.cli", *args, "--config", config]
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env())
        started.append((process, log))
        return log

    yield start
    stop_processes(*(process for process, _ in started))


def write_config(tmp_path: Path, redis_url: str, server: LocalServer, extra: str = "") -> str:
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 2s, jitter: 0%, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s, 1s], timeout: 3s}}
feeds:
  - {{name: f1, url: "{server.url("/f1")}"}}
  - {{name: f2, url: "{server.url("/f2")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}"}}
{extra}
""",
        encoding="utf-8",
    )
    return str(path)


def serve(server: LocalServer, f1: list[dict[str, str]], f2: list[dict[str, str]] | None = None) -> None:
    server.routes["/f1"] = Response(rss(f1))
    server.routes["/f2"] = Response(rss(f2 if f2 is not None else [{"title": "Wetter", "guid": "w"}]))
    server.routes["/hook"] = Response(b"ok")


def alerted(server: LocalServer) -> set[str]:
    return {r.json()["data"]["item"]["title"] for r in server.received("/hook")}


def status(config: str) -> dict[str, Any]:
    result = cli(config, "status", "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def feed(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in data["feeds"] if f["name"] == name)


# --- a feed's state ---------------------------------------------------------------------------


def test_unreadable_fields_of_a_feed_state_are_shown_then_unset_by_its_next_poll(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A non-integer error_count made `status` and `poll` exit 1 and stopped the feed's polls.
    Now: `status` names the fields that do not read, `poll` goes on and unsets them, and for a
    while `status` says that it did."""
    serve(http_server, [A])
    config = write_config(tmp_path, redis_url, http_server)
    assert cli(config, "poll").returncode == 0
    client = redis.Redis.from_url(redis_url)
    client.hset(
        keys.feed_state("f1"), mapping={"error_count": "abc", "items_seen": "x", "not_before": "soon"}
    )
    before = feed(status(config), "f1")
    assert "error_count='abc'" in before["warning"] and "items_seen='x'" in before["warning"]
    assert "not_before='soon'" in before["warning"] and before["error_count"] == 0
    polled = cli(config, "poll")
    assert polled.returncode == 0 and "f1: " in polled.stdout, polled.stdout + polled.stderr
    assert "garbage in Redis: nw:feed:f1 had unreadable values error_count='abc'" in polled.stderr
    assert client.hget(keys.feed_state("f1"), "items_seen") is None  # unset: a counter starts afresh
    assert client.hget(keys.feed_state("f1"), "error_count") == b"0"  # written afresh by the poll
    after = feed(status(config), "f1")
    assert after["warning"].startswith("its state in Redis had unreadable values, unset: error_count='abc'")


def test_a_feed_state_of_another_type_is_its_error_in_status_until_its_next_poll_replaces_it(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, [A], [B])
    config = write_config(tmp_path, redis_url, http_server)
    client = redis.Redis.from_url(redis_url)
    client.rpush(keys.feed_state("f1"), "garbage")
    before = status(config)
    assert (
        feed(before, "f1")["error"]
        == "its state in Redis holds a list, not a hash: read as empty until its next poll"
    )
    assert feed(before, "f2")["error"] is None
    polled = cli(config, "poll")
    assert polled.returncode == 0, polled.stderr[-2000:]
    assert "f1: new, 1 items, 1 new" in polled.stdout and "f2: new, 1 items, 1 new" in polled.stdout
    assert client.type(keys.feed_state("f1")) == b"hash"
    after = feed(status(config), "f1")
    assert after["error"] is None and after["warning"].startswith(
        "its state in Redis held a list, not a hash"
    )


def test_a_scheduler_alerts_new_items_after_the_last_success_of_a_feed_turned_to_garbage(
    tmp_path: Path, redis_url: str, http_server: LocalServer, spawn: Any
) -> None:
    """Read as unset, a garbage last_success looked like a wiped Redis to the scheduler that
    had polled the feed: it re-baselined, and the feed's next new item was never alerted."""
    serve(http_server, [A])
    config = write_config(tmp_path, redis_url, http_server)
    scheduler, _ = spawn(config, "scheduler"), spawn(config, "worker")
    wait_for(lambda: A["title"] in alerted(http_server))
    client = redis.Redis.from_url(redis_url)
    # A new revision too, as any writer but this scheduler leaves: the poll reads Redis, not its memory.
    client.hset(keys.feed_state("f1"), mapping={"last_success": "garbage", "rev": "by-hand"})
    serve(http_server, [A, B])
    wait_for(lambda: B["title"] in alerted(http_server))
    assert "re-baselining" not in scheduler.read_text()
    assert (
        "garbage in Redis: nw:feed:f1 had unreadable values last_success='garbage'" in scheduler.read_text()
    )


def test_garbage_in_the_scheduling_keys_stops_no_feed(
    tmp_path: Path, redis_url: str, http_server: LocalServer, spawn: Any
) -> None:
    """A lease hash of another type stopped every poll (while `health` said healthy); a feed
    state of another type made the claim script fail for every feed claimed with it; a
    schedule member that is not UTF-8 killed the dispatcher thread; a registry of another type
    kept the scheduler from beating, so `health` said it was dead while it polled."""
    serve(http_server, [A], [B])
    config = write_config(tmp_path, redis_url, http_server)
    client = redis.Redis.from_url(redis_url)
    client.set(keys.LEASES, "garbage")
    client.set(keys.SCHEDULERS, "garbage")
    client.rpush(keys.feed_state("f2"), "garbage")
    client.zadd(keys.SCHEDULE, {b"\xff\xfe": 0, "f1": float("inf")})
    scheduler, _ = spawn(config, "scheduler"), spawn(config, "worker")
    wait_for(lambda: alerted(http_server) == {A["title"], B["title"]})
    wait_for(lambda: cli(config, "health").stdout == "healthy\n")
    data = status(config)
    assert [s["id"] for s in data["schedulers"]] and not data["redis_problems"]
    log = scheduler.read_text()
    for said in (
        "nw:lease holds a string, not a hash; replaced",
        "nw:schedulers holds a string",
        "nw:feed:f2 holds a list, not a hash; replaced",
        "nw:schedule had feed f1 due beyond any backoff",
    ):
        assert f"garbage in Redis: {said}" in log, log  # fmt: skip
    assert "Traceback" not in log


# --- seen-keys --------------------------------------------------------------------------------


def test_a_seen_key_holding_garbage_is_read_as_seen_and_rewritten(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """`poll` exited 1 on every poll of the feed (int() of the value) while `status` looked clean."""
    serve(http_server, [A, B])
    config = write_config(tmp_path, redis_url, http_server)
    a_id, b_id = (item.id for item in feed_items("f1", rss([A, B]), http_server.url("/f1")))
    client = redis.Redis.from_url(redis_url)
    client.set(keys.seen(a_id), "garbage", ex=3600)
    client.hset(keys.seen(b_id), "x", "y")  # another type: MGET reads it as unseen, the commit replaces it
    polled = cli(config, "poll")
    assert polled.returncode == 0 and "f1: new, 2 items, 1 new" in polled.stdout, (
        polled.stdout + polled.stderr
    )
    assert int(client.get(keys.seen(a_id)) or 0) > 0 and 0 < client.ttl(keys.seen(a_id)) <= 3600
    worker = cli(config, "worker", "--burst")
    assert "Traceback" not in worker.stderr, worker.stderr[-3000:]
    assert client.type(keys.seen(b_id)) == b"string" and alerted(http_server) == {B["title"]}


# --- RQ's keys, workers and health ----------------------------------------------------------------


def test_a_worker_goes_on_through_queue_keys_of_another_type_and_health_tells_the_truth(
    tmp_path: Path, redis_url: str, http_server: LocalServer, spawn: Any
) -> None:
    """A queue key of another type made the worker exit 0 and `run` restart it in a loop while
    `health` said healthy. Now the worker replaces it; while it is there, `health` names it."""
    serve(http_server, [A])
    config = write_config(tmp_path, redis_url, http_server)
    client = redis.Redis.from_url(redis_url)
    client.set(f"rq:queue:{keys.ITEMS_QUEUE}", "garbage")
    run = spawn(config, "run", "--workers", "1")
    wait_for(lambda: A["title"] in alerted(http_server))
    wait_for(lambda: cli(config, "health").stdout == "healthy\n")
    client.delete(f"rq:queue:{keys.DELIVERIES_QUEUE}")
    client.set(f"rq:queue:{keys.DELIVERIES_QUEUE}", "garbage")  # the worker waits on it right now
    unhealthy = cli(config, "health")
    assert unhealthy.returncode == 1
    assert (
        f"rq:queue:{keys.DELIVERIES_QUEUE} holds a string, not a list: workers take no jobs"
        in unhealthy.stdout
    )
    assert "rq:queue:newswatch-deliveries holds a string" in " ".join(status(config)["redis_problems"])
    serve(http_server, [A, B])  # a new item: the scheduler queues it, replacing the garbage
    wait_for(lambda: B["title"] in alerted(http_server), timeout=60)
    wait_for(lambda: cli(config, "health").returncode == 0, timeout=60)
    log = run.read_text()
    assert (
        "exited with code" not in log and "garbage in Redis: rq:queue:newswatch-items holds a string" in log
    )


def test_health_does_not_take_a_heartbeat_without_a_lease_of_life(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, [A])
    config = write_config(tmp_path, redis_url, http_server)
    redis.Redis.from_url(redis_url).set(keys.heartbeat("scheduler"), "garbage")  # no TTL: never lapses
    result = cli(config, "health")
    assert result.returncode == 1 and "no scheduler heartbeat" in result.stdout


# --- metrics ----------------------------------------------------------------------------------------


def test_garbage_counters_stop_no_scheduler_and_fail_no_batch(
    tmp_path: Path, redis_url: str, http_server: LocalServer, spawn: Any
) -> None:
    """A metrics field that is not a number stopped the scheduler at its start (the endpoint's
    first collect); in a worker, HINCRBY refused it inside the commit and failed every batch."""
    serve(http_server, [A, B])
    port = free_port()
    config = write_config(tmp_path, redis_url, http_server)
    text = (
        Path(config).read_text(encoding="utf-8").replace("metrics: {port: 0}", f"metrics: {{port: {port}}}")
    )
    Path(config).write_text(text, encoding="utf-8")
    client = redis.Redis.from_url(redis_url)
    client.hset(keys.METRICS_ITEMS, mapping={"f1\x1fnew": "abc", "f2\x1fnew": "1.5"})
    client.set(keys.METRICS_DELIVERIES, "garbage")
    client.hset(keys.feed_state("f1"), "items_seen", "many")
    scheduler, worker = spawn(config, "scheduler"), spawn(config, "worker")
    wait_for(lambda: alerted(http_server) == {A["title"], B["title"]})
    wait_for(lambda: 'newswatch_items_total{feed="f1",kind="new"} 2.0' in (_scrape(port) or ""))
    # The scheduler unset the feed's garbage items_seen as it polled, and counts what it replaced.
    assert 'newswatch_redis_garbage_total{key="feed_state"} 1.0' in (_scrape(port) or "")
    assert client.hget(keys.METRICS_ITEMS, "f1\x1fnew") == b"2"
    wait_for(lambda: client.hget(keys.METRICS_DELIVERIES, "deepseek\x1fhook\x1fdelivered") == b"2")
    wait_for(lambda: feed(status(config), "f1")["items_seen"] == 2)
    assert "batch failed" not in worker.read_text() and "Traceback" not in worker.read_text()
    assert "Traceback" not in scheduler.read_text()


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
    except OSError:
        return None
    return text if "newswatch_items_total" in text else None


# --- delivery claims -----------------------------------------------------------------------


def test_a_garbage_claim_is_replaced_and_its_alert_delivered(
    tmp_path: Path, redis_url: str, http_server: LocalServer, spawn: Any
) -> None:
    """A claim that is neither 'sent' nor 'sending:<token>' (or one without a TTL, or a key of
    another type) was read as another worker's: the delivery was retried every second forever,
    neither delivered nor failed."""
    serve(http_server, [A, B, C])
    config = write_config(tmp_path, redis_url, http_server)
    assert cli(config, "poll", "--feed", "f1").returncode == 0
    items = feed_items("f1", rss([A, B, C]), http_server.url("/f1"))
    claims = [keys.delivery_state(delivery_id("deepseek", item.id, "hook")) for item in items]
    client = redis.Redis.from_url(redis_url)
    client.set(claims[0], "garbage")
    client.set(claims[1], "sending:no-lease")
    client.hset(claims[2], "x", "y")
    worker = spawn(config, "worker")
    wait_for(lambda: alerted(http_server) == {A["title"], B["title"], C["title"]}, timeout=20)
    wait_for(lambda: [client.get(key) for key in claims] == [b"sent"] * 3)
    log = worker.read_text()
    assert f"garbage in Redis: {claims[0]} (alert=deepseek channel=hook) held 'garbage'" in log
    assert "holds a hash, not a string; claimed anew" in log and "claimed by another worker" not in log


# --- status, alerts and health over garbage everywhere -------------------------------------------


def test_status_alerts_and_health_read_garbage_in_every_shared_key_and_name_it(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, [A])
    config = write_config(tmp_path, redis_url, http_server)
    client = redis.Redis.from_url(redis_url)
    wrong = {"zset": "hash", "hash": "zset", "stream": "hash"}  # a type each key must not hold
    for key, kind in keys.SHARED_KEY_TYPES.items():
        if wrong[kind] == "hash":
            client.hset(key, "x", "y")
        else:
            client.zadd(key, {"x": 1})
    for queue in (keys.ITEMS_QUEUE, keys.DELIVERIES_QUEUE):
        client.set(f"rq:queue:{queue}", "garbage")
        client.set(f"rq:failed:{queue}", "garbage")
        client.set(f"rq:wip:{queue}", "garbage")
    client.set(keys.feed_state("f1"), "garbage")
    data = status(config)
    problems = " ".join(data["redis_problems"])
    for key in [*keys.SHARED_KEY_TYPES, f"rq:queue:{keys.ITEMS_QUEUE}", f"rq:failed:{keys.DELIVERIES_QUEUE}"]:
        assert f"{key} holds a" in problems, (key, problems)
    assert feed(data, "f1")["error"].startswith("its state in Redis holds a string, not a hash")
    assert data["queues"][0]["queued"] == 0 and data["failed_deliveries"] == [] and data["schedulers"] == []
    text = cli(config, "status")
    assert text.returncode == 0 and "garbage in Redis: nw:schedule holds a hash" in text.stdout, text.stderr
    recent = cli(config, "alerts")
    assert recent.returncode == 0 and "no alerts in the last 1d" in recent.stdout, recent.stderr
    health = cli(config, "health")
    assert health.returncode == 1
    for said in (
        "nw:schedule holds a hash, not a sorted set: no feed is polled",
        "nw:lease holds a sorted set, not a hash",
        f"rq:queue:{keys.ITEMS_QUEUE} holds a string",
    ):
        assert said in health.stdout, health.stdout  # fmt: skip
    assert client.type(keys.SCHEDULE) == b"hash"  # status, alerts and health only look

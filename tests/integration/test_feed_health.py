"""Silence and failure are told (SPEC §11, issue 15.4): a failing feed and a silent feed are each
reported once on ops.channels, then their recovery; with a real Redis, the scheduler's poll,
RQ delivery jobs and a local webhook receiver; once more with scheduler and worker processes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.conftest import ROOT, LocalServer, Response, rss, stop_processes, wait_for
from tests.integration.helpers import drain, make_runtime
from worker import commands, ops
from worker.adapters.schedule import Schedule
from worker.commands import status_data
from worker.core.ops import FAILING, FeedEvent
from worker.core.poll import StateUpdate
from worker.metrics import RedisCollector
from worker.polling import PollOutcome, poll_feed
from worker.runtime import Runtime

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
FEED_TYPE = {"Content-Type": "application/rss+xml"}


def config_body(server: LocalServer, feed: str, ops_keys: str) -> str:
    return f"""
feeds:
  - {{name: börse, url: "{server.url("/feed.rss")}"{feed}}}
channels:
  ops-hook: {{type: webhook, url: "{server.url("/ops")}", secret: "{SECRET}"}}
ops: {{channels: [ops-hook, console], {ops_keys}}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def runtime(tmp_path: Path, redis_url: str, body: str) -> tuple[Runtime, Clock]:
    rt = make_runtime(tmp_path, redis_url, body)  # polling.interval: 1m
    clock = Clock()
    rt.clock, rt.random = clock, lambda: 0.5  # backoffs without jitter: 1m, 2m, 4m, ...
    return rt, clock


def poll_at(rt: Runtime, clock: Clock, minutes: float) -> PollOutcome:
    """The scheduler's poll of the feed at T0 + minutes, and the delivery jobs it caused, run."""
    clock.now = T0 + timedelta(minutes=minutes)
    outcome = poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    return outcome


def events(server: LocalServer, signed: bool = False) -> list[dict[str, Any]]:
    """The ops events the receiver got; `signed`: each checked for its Standard Webhooks
    signature (only with the real clock: the check refuses timestamps far from now)."""
    requests = server.received("/ops")
    if signed:
        return [Webhook(SECRET).verify(r.body, r.headers) for r in requests]
    return [r.json() for r in requests]


def told(server: LocalServer) -> list[tuple[str, str | None]]:
    return [(e["type"], e["data"].get("condition")) for e in events(server)]


def gauges(rt: Runtime) -> dict[str, float]:
    collected = RedisCollector(rt.redis, lambda: [f.name for f in rt.settings.feeds]).collect()
    return {
        f"{family.name}:{sample.labels['feed']}": sample.value
        for family in collected
        if family.name in ("newswatch_feed_failing", "newswatch_feed_silent")
        for sample in family.samples
    }


def test_a_failing_feed_is_told_once_after_failing_after_then_its_recovery(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/feed.rss"] = Response(b"boom", 500)
    http_server.routes["/ops"] = Response(b"ok")
    rt, clock = runtime(tmp_path, redis_url, config_body(http_server, "", "failing_after: 10m"))
    # Failures at 0, 1, 3, 7 minutes (the backoff doubles): not yet failing for 10 minutes.
    for minute in (0, 1, 3, 7):
        assert poll_at(rt, clock, minute).status == "error"
    assert told(http_server) == []
    assert status_data(rt)["feeds"][0]["failing_since"] is None
    assert gauges(rt) == {"newswatch_feed_failing:börse": 0, "newswatch_feed_silent:börse": 0}

    assert poll_at(rt, clock, 15).status == "error"  # 15 minutes since the first failure
    (failing,) = events(http_server)
    assert failing == {
        "type": "newswatch.feed_failing",
        "timestamp": "2026-11-29T08:15:00Z",
        "data": {"feed": "börse", "since": "2026-11-29T08:00:00Z", "error": "HTTP 500", "failures": 5},
    }
    assert status_data(rt)["feeds"][0]["failing_since"] == "2026-11-29T08:00:00Z"
    assert gauges(rt)["newswatch_feed_failing:börse"] == 1

    for minute in (31, 63):  # failing on: not told again
        assert poll_at(rt, clock, minute).status == "error"
    # The same event decided again (a poll made again after its write was refused, another
    # scheduler): enqueued under the same delivery id, and not sent twice.
    ops.tell(rt, [FeedEvent(FAILING, "börse", "failing", T0, T0 + timedelta(minutes=15), "HTTP 500", 5)])
    drain(rt)
    assert told(http_server) == [("newswatch.feed_failing", None)]

    http_server.routes["/feed.rss"] = Response(rss([{"title": "Markt", "guid": "1"}]), headers=FEED_TYPE)
    assert poll_at(rt, clock, 127).status == "new"
    assert told(http_server) == [("newswatch.feed_failing", None), ("newswatch.feed_recovered", "failing")]
    assert events(http_server)[1]["data"] == {
        "feed": "börse", "since": "2026-11-29T08:00:00Z", "condition": "failing", "until": "2026-11-29T10:07:00Z",
    }  # fmt: skip
    ids = [r.headers["webhook-id"] for r in http_server.received("/ops")]
    assert len(set(ids)) == 2
    assert status_data(rt)["feeds"][0]["failing_since"] is None
    assert gauges(rt)["newswatch_feed_failing:börse"] == 0
    poll_at(rt, clock, 128)
    assert len(http_server.received("/ops")) == 2


def test_a_silent_feed_is_told_once_after_expect_every_then_its_recovery(
    tmp_path: Path, redis_url: str, http_server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="newswatch.alerts")
    items = [{"title": "Markt", "guid": "1"}]
    http_server.routes["/feed.rss"] = lambda request: Response(rss(items), headers=FEED_TYPE)
    http_server.routes["/ops"] = Response(b"ok")
    body = config_body(http_server, ", expect_every: 10m", "failing_after: 1h")
    rt, clock = runtime(tmp_path, redis_url, body)
    assert poll_at(rt, clock, 0).status == "new"
    for minute in range(1, 10):  # answers, nothing new: not silent before 10 minutes
        assert poll_at(rt, clock, minute).status == "unchanged"
    assert told(http_server) == []
    assert status_data(rt)["feeds"][0]["silent_after"] == "10m"

    assert poll_at(rt, clock, 10).status == "unchanged"
    (silent,) = events(http_server)
    assert silent["type"] == "newswatch.feed_silent"
    assert silent["data"] == {
        "feed": "börse", "since": "2026-11-29T08:00:00Z", "last_new_item": "2026-11-29T08:00:00Z",
        "expected_every": "10m", "learned": False,
    }  # fmt: skip
    feed_status = status_data(rt)["feeds"][0]
    assert feed_status["silent_since"] == "2026-11-29T08:00:00Z" and feed_status["error"] is None
    assert gauges(rt)["newswatch_feed_silent:börse"] == 1

    for minute in range(11, 20):
        poll_at(rt, clock, minute)
    assert len(events(http_server)) == 1

    items.append({"title": "Neu", "guid": "2"})
    assert poll_at(rt, clock, 20).status == "new"
    assert told(http_server) == [("newswatch.feed_silent", None), ("newswatch.feed_recovered", "silent")]
    assert status_data(rt)["feeds"][0]["silent_since"] is None
    assert gauges(rt)["newswatch_feed_silent:börse"] == 0
    # The console channel got the same two events, as log lines.
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("FEED ")]
    assert [line.split()[1] for line in lines] == ["event=feed_silent", "event=feed_recovered"]


def test_without_ops_channels_nothing_is_enqueued_but_status_tells(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/feed.rss"] = Response(b"boom", 503)
    body = f"""
feeds:
  - {{name: börse, url: "{http_server.url("/feed.rss")}"}}
ops: {{failing_after: 1m}}
"""
    rt, clock = runtime(tmp_path, redis_url, body)
    poll_at(rt, clock, 0)
    poll_at(rt, clock, 1)
    assert status_data(rt)["feeds"][0]["failing_since"] == "2026-11-29T08:00:00Z"
    assert rt.deliveries_queue.count == 0 and rt.deliveries_queue.failed_job_registry.count == 0


def test_scheduler_and_worker_processes_tell_a_failing_and_a_silent_feed_once_then_recovery(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    quiet_items = [{"title": "Markt", "guid": "1"}]
    http_server.routes["/failing.rss"] = Response(b"boom", 500)
    http_server.routes["/quiet.rss"] = lambda request: Response(rss(quiet_items), headers=FEED_TYPE)
    http_server.routes["/ops"] = Response(b"ok")
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1s, jitter: 0%, max_age: off, allow_private_addresses: true, lease: 15s}}
delivery: {{retries: [1s], timeout: 3s}}
feeds:
  - {{name: failing, url: "{http_server.url("/failing.rss")}"}}
  - {{name: quiet, url: "{http_server.url("/quiet.rss")}", expect_every: 3s}}
channels:
  ops-hook: {{type: webhook, url: "{http_server.url("/ops")}", secret: "{SECRET}"}}
ops: {{channels: [ops-hook], failing_after: 2s}}
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", role, "--config", str(config)],
            stdout=(tmp_path / f"{role}.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
        )
        for role in ("scheduler", "worker")
    ]

    def of(feed: str) -> list[str]:
        return [e["type"] for e in events(http_server, signed=True) if e["data"]["feed"] == feed]

    try:
        wait_for(lambda: of("failing") and of("quiet"), timeout=60)
        assert of("failing") == ["newswatch.feed_failing"] and of("quiet") == ["newswatch.feed_silent"]
        # Both go on as they are for a few more polls: nothing more is told.
        failed_polls = len(http_server.received("/failing.rss"))
        quiet_polls = len(http_server.received("/quiet.rss"))
        wait_for(lambda: len(http_server.received("/failing.rss")) > failed_polls, timeout=30)
        wait_for(lambda: len(http_server.received("/quiet.rss")) >= quiet_polls + 3, timeout=30)
        assert of("failing") == ["newswatch.feed_failing"] and of("quiet") == ["newswatch.feed_silent"]

        http_server.routes["/failing.rss"] = Response(rss([{"title": "A", "guid": "a"}]), headers=FEED_TYPE)
        quiet_items.append({"title": "Neu", "guid": "2"})
        wait_for(lambda: len(of("failing")) >= 2 and len(of("quiet")) >= 2, timeout=60)
        assert of("failing") == ["newswatch.feed_failing", "newswatch.feed_recovered"]
        # (3 s after its new item the quiet feed is silent again: a new episode, told again.)
        assert of("quiet")[:2] == ["newswatch.feed_silent", "newswatch.feed_recovered"]
        status = subprocess.run(
            [sys.executable, "-m", "worker.cli", "status", "--json", "--config", str(config)],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
        ).stdout  # fmt: skip
        (failing,) = [f for f in json.loads(status)["feeds"] if f["name"] == "failing"]
        assert failing["failing_since"] is None and failing["error"] is None
    finally:
        stop_processes(*processes)


def test_an_ops_event_a_receiver_refuses_is_in_the_failed_registry_and_replayed_with_its_id(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/feed.rss"] = Response(b"gone", 410)
    http_server.routes["/ops"] = Response(b"no", 410)  # the receiver refuses for good
    rt, clock = runtime(tmp_path, redis_url, config_body(http_server, "", "failing_after: 1h"))
    assert poll_at(rt, clock, 0).status == "error"  # 410 Gone: told at once, not after an hour
    (refused,) = http_server.received("/ops")
    assert refused.json()["data"]["error"] == "HTTP 410 Gone: feed disabled"
    data = status_data(rt)
    (failed,) = data["failed_deliveries"]
    assert (failed["alert"], failed["channel"]) == ("newswatch.ops", "ops-hook")
    assert failed["title"] == "feed börse is failing since 2026-11-29T08:00:00Z"
    assert data["feeds"][0]["failing_since"] == "2026-11-29T08:00:00Z" and data["feeds"][0]["disabled"]
    assert commands.status(rt.config, as_json=False) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "failing since 2026-11-29T08:00:00Z" in shown and "newswatch.ops" in shown

    http_server.routes["/ops"] = Response(b"ok")
    assert commands.replay_failed(rt.config, "ops-hook") == 0
    drain(rt)
    replayed = http_server.received("/ops")[1]
    assert replayed.headers["webhook-id"] == refused.headers["webhook-id"]
    assert replayed.json() == refused.json()


def test_a_scheduler_whose_lease_lapsed_tells_nothing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/feed.rss"] = Response(b"boom", 500)
    http_server.routes["/ops"] = Response(b"ok")
    rt, clock = runtime(tmp_path, redis_url, config_body(http_server, "", "failing_after: 1h"))
    rt.feed_states.write("börse", StateUpdate(error="HTTP 500", error_count=9, error_since=T0))
    a, b = Schedule(rt.redis, "a"), Schedule(rt.redis, "b")
    a.sync({"börse": T0})
    (stale,) = a.claim(["börse"], T0, timedelta(seconds=30))
    b.claim(["börse"], T0 + timedelta(seconds=31), timedelta(seconds=30))  # a's poll took too long
    clock.now = T0 + timedelta(hours=2)
    outcome = poll_feed(rt, rt.settings.feeds[0], lease=stale)
    assert outcome.status == "lease lost"
    assert rt.deliveries_queue.count == 0 and rt.feed_states.get("börse").failing_told is None
    assert poll_feed(rt, rt.settings.feeds[0]).status == "error"  # without a lease: told
    drain(rt)
    assert told(http_server) == [("newswatch.feed_failing", None)]

"""Quiet hours (`alerts[].quiet`): matches inside the window are held in Redis and reach the
receiver as one digest when it ends, across restarts of the runtime and of the daemon's
processes; matches outside it go out at once. Each test asserts exactly what the receiver got.

The window's end is reached the way RQ reaches it: the held flush job becomes due in RQ's
scheduled registry (the test moves it to now instead of waiting for 07:00), and the worker
that runs it decides with its own clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import redis
from rq.registry import ScheduledJobRegistry
from standardwebhooks import Webhook

from tests.conftest import ROOT, LocalServer, Response, rss, stop_processes, wait_for
from tests.integration.helpers import drain, make_runtime, meldung
from worker.adapters import keys, queues, rqcompat
from worker.core.explain import explain_alerts
from worker.core.quiet import parse_quiet_hours, quiet_until
from worker.history import recent_alerts
from worker.polling import poll_feed
from worker.runtime import Runtime

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def alerts_yaml(server: LocalServer, night: str, always: str = "") -> str:
    return f"""
feeds:
  - {{name: news, url: "{server.url("/feed")}"}}
alerts:
  - {{name: night, query: DeepSeek, channels: [hook], quiet: "{night}"}}
  - {{name: always, query: DeepSeek, channels: [hook]{always}}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}", secret: "{SECRET}"}}
"""


def payloads(server: LocalServer) -> list[dict[str, Any]]:
    """The bodies received (signed with the runtime's clock: a test's clock is a year ahead, too
    far for the receiver's check of the timestamp, which the daemon test makes)."""
    return [json.loads(r.body) for r in server.received("/hook")]


def of_alert(server: LocalServer, alert: str) -> list[dict[str, Any]]:
    return [p for p in payloads(server) if p["data"]["alert"] == alert]


def titles(payload: dict[str, Any]) -> list[str]:
    return sorted(entry["item"]["title"] for entry in payload["data"]["items"])


def flush_jobs(connection: redis.Redis) -> dict[str, float]:
    """The held digest flush jobs: id -> when RQ's scheduler will run it (epoch seconds)."""
    queue = queues.queue(connection, keys.DELIVERIES_QUEUE)
    registry = ScheduledJobRegistry(queue=queue)
    return {
        job_id: float(connection.zscore(registry.key, job_id) or 0)  # type: ignore[arg-type]
        for job_id in registry.get_job_ids()
        if job_id.startswith("digest_")
    }


def window_ends_now(connection: redis.Redis) -> None:
    """What 07:00 is to RQ: every held flush job is due now."""
    queue = queues.queue(connection, keys.DELIVERIES_QUEUE)
    with connection.pipeline() as pipe:
        rqcompat.move_scheduled(queue, dict.fromkeys(flush_jobs(connection), datetime.now(UTC)), pipe)
        pipe.execute()


# The night DST starts in Berlin (2027-03-28, 02:00 CET -> 03:00 CEST), a year ahead of any test
# run, so RQ's scheduler (on the real clock) holds the flush job until the test moves it.
EVENING = datetime(2027, 3, 27, 22, 30, tzinfo=UTC)  # 23:30 CET
DAWN = datetime(2027, 3, 28, 4, 30, tzinfo=UTC)  # 06:30 CEST: still quiet
SEVEN = datetime(2027, 3, 28, 5, 0, tzinfo=UTC)  # 07:00 CEST: the window's end


def runtime(tmp_path: Path, redis_url: str, server: LocalServer, at: datetime) -> Runtime:
    """A fresh runtime (a restarted worker) whose clock shows `at`."""
    rt = make_runtime(tmp_path, redis_url, alerts_yaml(server, "22:00-07:00 Europe/Berlin"))
    rt.clock = lambda: at
    return rt


def test_quiet_hours_hold_matches_for_one_digest_at_their_end(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    http_server.routes["/feed"] = Response(rss([meldung(1), meldung(2)]))
    rt = runtime(tmp_path, redis_url, http_server, EVENING)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert sorted(p["data"]["item"]["title"] for p in of_alert(http_server, "always")) == [
        "DeepSeek Meldung 1",
        "DeepSeek Meldung 2",
    ]
    assert of_alert(http_server, "night") == []  # held
    assert rt.redis.llen(keys.digest_buffer("night", "hook")) == 2
    assert list(flush_jobs(rt.redis).values()) == [SEVEN.timestamp()]  # 07:00 CEST, DST-correct
    # `newswatch alerts`, run on the real clock (the alert log is named by Redis's clock)
    shown = recent_alerts(Runtime(rt.config, rt.redis), timedelta(hours=1), alert="night")
    assert [d["state"] for a in shown for d in a["deliveries"]] == ["in digest", "in digest"]
    record = rt.archive.get(shown[0]["item"])
    assert record is not None
    sources = {alert.name: alert.query for alert in rt.settings.alerts}
    night = next(r for r in explain_alerts(record, rt.config.rules, sources) if r.alert == "night")
    assert night.fired and night.outcome is not None and night.outcome.outcome == "quiet_hours"
    assert night.reason == (
        "held for the alert's quiet hours (until 07:00 Europe/Berlin; in the digest at 2027-03-28T05:00:00Z)"
    )

    # A restart within the window: the new runtime finds the held matches and adds to them.
    http_server.routes["/feed"] = Response(rss([meldung(1), meldung(2), meldung(3)]))
    rt = runtime(tmp_path, redis_url, http_server, DAWN)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert len(of_alert(http_server, "always")) == 3 and of_alert(http_server, "night") == []
    assert list(flush_jobs(rt.redis).values()) == [SEVEN.timestamp()]  # still one digest to come

    # 07:00, and another restart: one digest with every held match.
    rt = runtime(tmp_path, redis_url, http_server, SEVEN)
    window_ends_now(rt.redis)
    drain(rt)
    (digest,) = of_alert(http_server, "night")
    assert digest["type"] == "newswatch.digest" and digest["data"]["window_end"] == "2027-03-28T05:00:00Z"
    assert titles(digest) == ["DeepSeek Meldung 1", "DeepSeek Meldung 2", "DeepSeek Meldung 3"]
    assert flush_jobs(rt.redis) == {} and not rt.redis.exists(keys.digest_buffer("night", "hook"))
    drain(rt)
    assert len(of_alert(http_server, "night")) == 1  # once

    # After the window a match goes out at once.
    http_server.routes["/feed"] = Response(rss([meldung(n) for n in range(1, 5)]))
    rt = runtime(tmp_path, redis_url, http_server, SEVEN + timedelta(minutes=1))
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert [p["type"] for p in of_alert(http_server, "night")] == ["newswatch.digest", "newswatch.alert"]
    assert of_alert(http_server, "night")[1]["data"]["item"]["title"] == "DeepSeek Meldung 4"


def test_a_digest_due_in_quiet_hours_waits_for_their_end(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """An hourly digest that closes at 23:00 CET, inside the alert's quiet hours: it goes out
    at 07:00 with what the quiet hours held, as one message."""
    http_server.routes["/hook"] = Response(b"ok")
    http_server.routes["/feed"] = Response(rss([meldung(1)]))
    body = alerts_yaml(http_server, "22:00-07:00 Europe/Berlin", always=', digest: 1h, quiet: "22:30-23:30"')
    rt = make_runtime(tmp_path, redis_url, body)
    evening = datetime(2027, 3, 27, 20, 40, tzinfo=UTC)  # 21:40 CET: neither alert is quiet
    rt.clock = lambda: evening
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert of_alert(http_server, "night")[0]["type"] == "newswatch.alert"  # sent at once
    # `always` (digest 1h, quiet 22:30-23:30 UTC): its window closes at 21:00Z, not quiet: kept.
    assert list(flush_jobs(rt.redis).values()) == [datetime(2027, 3, 27, 21, 0, tzinfo=UTC).timestamp()]

    # The flush runs late, at 22:45Z, inside `always`'s quiet hours: it waits for their end.
    late = datetime(2027, 3, 27, 22, 45, tzinfo=UTC)
    rt.clock = lambda: late
    window_ends_now(rt.redis)
    drain(rt)
    assert of_alert(http_server, "always") == []
    assert list(flush_jobs(rt.redis).values()) == [datetime(2027, 3, 27, 23, 30, tzinfo=UTC).timestamp()]
    assert rt.redis.llen(keys.digest_buffer("always", "hook")) == 1

    after = datetime(2027, 3, 27, 23, 30, tzinfo=UTC)
    rt.clock = lambda: after
    window_ends_now(rt.redis)
    drain(rt)
    (digest,) = of_alert(http_server, "always")
    assert titles(digest) == ["DeepSeek Meldung 1"]
    assert digest["data"]["window_end"] == "2027-03-27T23:30:00Z"


# --- the daemon's real processes, restarted inside the window ----------------------------------


class Daemon:
    """`newswatch scheduler` and one `newswatch worker`, on the real clock. Restarted with
    SIGTERM: after a SIGKILL, RQ's scheduler lock of the dead worker keeps a new worker from
    running due jobs (any retry or digest) for up to two minutes, which is RQ's, not ours."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
        self.processes = [self.start("scheduler"), self.start("worker")]

    def start(self, role: str) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / f"{role}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "worker.cli", role, "--config", str(self.config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
        )  # fmt: skip

    def stop(self) -> str:
        stop_processes(*self.processes)
        return "".join(p.read_text(errors="replace") for p in self.tmp_path.glob("*.log"))


def quiet_around_now() -> tuple[str, str, datetime]:
    """Quiet hours in Berlin from two hours ago to two hours ahead (now is inside), quiet hours
    that exclude now, and the first one's end."""
    local = datetime.now(ZoneInfo("Europe/Berlin"))
    inside = f"{local - timedelta(hours=2):%H:%M}-{local + timedelta(hours=2):%H:%M} Europe/Berlin"
    outside = f"{local + timedelta(hours=3):%H:%M}-{local + timedelta(hours=4):%H:%M} Europe/Berlin"
    end = quiet_until(datetime.now(UTC), parse_quiet_hours(inside))
    assert end is not None
    return inside, outside, end


def test_held_matches_survive_a_daemon_restart_and_go_out_once(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    http_server.routes["/feed"] = Response(rss([meldung(1), meldung(2)]))
    inside, outside, end = quiet_around_now()
    config = tmp_path / "newswatch.yaml"
    body = alerts_yaml(http_server, inside, always=f', quiet: "{outside}"')
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 1s, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s], timeout: 3s}}
{body}""",
        encoding="utf-8",
    )
    connection = redis.Redis.from_url(redis_url)
    daemon = Daemon(tmp_path, config)
    try:
        wait_for(lambda: len(of_alert(http_server, "always")) == 2, timeout=60)
        wait_for(lambda: connection.llen(keys.digest_buffer("night", "hook")) == 2, timeout=30)
        assert list(flush_jobs(connection).values()) == [int(end.timestamp())]

        daemon.stop()  # a restart inside the window (a deploy, a reboot)
        http_server.routes["/feed"] = Response(rss([meldung(1), meldung(2), meldung(3)]))
        daemon = Daemon(tmp_path, config)
        wait_for(lambda: len(of_alert(http_server, "always")) == 3, timeout=60)
        wait_for(lambda: connection.llen(keys.digest_buffer("night", "hook")) == 3, timeout=30)
        assert of_alert(http_server, "night") == []
        assert len(flush_jobs(connection)) == 1

        window_ends_now(connection)
        wait_for(lambda: of_alert(http_server, "night"), timeout=60)
        wait_for(lambda: flush_jobs(connection) == {} and _idle(connection), timeout=60)
    finally:
        logs = daemon.stop()
    (digest,) = of_alert(http_server, "night")
    assert digest["type"] == "newswatch.digest", logs[-3000:]
    assert titles(digest) == ["DeepSeek Meldung 1", "DeepSeek Meldung 2", "DeepSeek Meldung 3"]
    assert len(http_server.received("/hook")) == 4  # three alerts of `always` and one digest
    for request in http_server.received("/hook"):
        Webhook(SECRET).verify(request.body, request.headers)


def _idle(connection: redis.Redis) -> bool:
    counts = queues.queue_counts(connection)
    held = sum(rqcompat.scheduled_count(queues.queue(connection, c.name)) for c in counts)
    return held == 0 and all(c.queued == 0 and c.started == 0 for c in counts)

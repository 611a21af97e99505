"""The pipeline against a real Redis and real local HTTP servers: poll, dedupe, match, deliver."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rq.registry import ScheduledJobRegistry
from standardwebhooks import Webhook

from tests.conftest import EULERPOOL_RSS, LocalServer, Response, rss, wait_for
from tests.integration.helpers import drain, make_runtime
from worker.adapters import keys, rqcompat
from worker.commands import status_data
from worker.config import FeedConfig
from worker.core.models import utc_iso
from worker.pipeline import process_items
from worker.polling import poll_feed
from worker.runtime import Runtime

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def config_body(server: LocalServer, feeds: str | None = None, alerts: str | None = None) -> str:
    feeds = feeds or f'  - {{name: eulerpool, url: "{server.url("/eulerpool.rss")}", tags: [Finanzen]}}'
    alerts = alerts or (
        "  - {name: deepseek, query: DeepSeek, channels: [hook]}\n"
        "  - {name: china-chips, query: '(Huawei OR SMIC) AND (Chip* OR Ascend) NOT Smartphone',"
        " topics: [Halbleiter], channels: [hook]}"
    )
    return f"""
feeds:
{feeds}
topics:
  Halbleiter: [Nvidia, Huawei, Ascend, "Chip*"]
alerts:
{alerts}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}", secret: "{SECRET}"}}
"""


def alerts_received(server: LocalServer) -> list[tuple[str, str]]:
    return sorted(
        (r.json()["data"]["alert"], r.json()["data"]["item"]["title"]) for r in server.received("/hook")
    )


@pytest.fixture
def feed_server(http_server: LocalServer) -> LocalServer:
    http_server.routes["/eulerpool.rss"] = Response(
        EULERPOOL_RSS.read_bytes(), headers={"Content-Type": "application/rss+xml"}
    )
    http_server.routes["/hook"] = Response(b"ok")
    return http_server


def test_eulerpool_fixture_alerts_once_with_valid_signatures(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    rt = make_runtime(tmp_path, redis_url, config_body(feed_server))
    outcome = poll_feed(rt, rt.settings.feeds[0])
    assert (outcome.status, outcome.items, outcome.enqueued) == ("new", 7, 7)
    drain(rt)
    title = "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"
    assert alerts_received(feed_server) == [("china-chips", title), ("deepseek", title)]

    for request in feed_server.received("/hook"):
        assert request.headers["content-type"] == "application/json"
        payload = Webhook(SECRET).verify(request.body, request.headers)
        item = payload["data"]["item"]
        assert item["published"] == "2025-08-15T13:51:00Z"
        assert item["categories"] == ["Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"]
        assert "Halbleiter" in item["topics"] and "Finanzen" in item["topics"]
        assert "<p>" not in item["summary"] and item["summary"].startswith("DeepSeek hat die Einführung")

    # Polling again (new body bytes, same items) and re-running the same batch alert nothing new.
    feed_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes() + b"\n")
    assert poll_feed(rt, rt.settings.feeds[0]).enqueued == 0
    drain(rt)
    assert len(feed_server.received("/hook")) == 2


def test_processing_the_same_batch_twice_enqueues_deliveries_once(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    """What a worker killed after EXEC and retried (or an abandoned job re-run) would do."""
    rt = make_runtime(tmp_path, redis_url, config_body(feed_server))
    from tests.conftest import feed_items

    items = [
        i.to_dict() for i in feed_items("eulerpool", EULERPOOL_RSS.read_bytes(), "https://eulerpool.com/news")
    ]
    assert process_items(rt, "eulerpool", items) == 7  # first tries made inline, held jobs cancelled
    assert process_items(rt, "eulerpool", items) == 0
    assert len(feed_server.received("/hook")) == 2
    assert ScheduledJobRegistry(queue=rt.deliveries_queue).count == 0
    drain(rt)
    assert len(feed_server.received("/hook")) == 2
    assert rt.redis.hget(keys.feed_state("eulerpool"), "items_seen") == b"7"


def test_a_worker_killed_between_commit_and_first_try_loses_nothing(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    """The commit holds a job for every delivery; the worker's own first try is only a shortcut."""
    rt = make_runtime(tmp_path, redis_url, config_body(feed_server))
    from tests.conftest import feed_items
    from worker.adapters.store import Candidate
    from worker.core.render import deliveries_for
    from worker.core.rules import classify

    items = feed_items("eulerpool", EULERPOOL_RSS.read_bytes(), "https://eulerpool.com/news")
    now = rt.clock()
    candidates = [Candidate(i, tuple(deliveries_for(classify(i, rt.config.rules), now))) for i in items]
    rt.seen_store.commit_new("eulerpool", candidates, rt.outbox, now)  # ... and the worker dies here
    registry = ScheduledJobRegistry(queue=rt.deliveries_queue)
    held = registry.get_job_ids()
    assert len(held) == 2
    assert feed_server.received("/hook") == []
    # Held until a claim the dead worker might have taken has lapsed (outbox.hold) ...
    assert {rt.redis.zscore(registry.key, job_id) for job_id in held} == {
        int((now + rt.outbox.hold).timestamp())
    }
    with rt.redis.pipeline() as pipe:  # ... which is now
        rqcompat.move_scheduled(rt.deliveries_queue, dict.fromkeys(held, now), pipe)
        pipe.execute()
    wait_for(lambda: drain(rt) or len(feed_server.received("/hook")) == 2, timeout=20, interval=0.2)


def test_same_story_via_two_feeds_or_changed_guid_alerts_once(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    story = {
        "title": "DeepSeek R2 kommt",
        "description": "DeepSeek",
        "link": "https://news.example/r2?utm_source=a",
    }
    http_server.routes["/a.rss"] = Response(rss([{**story, "guid": "a-1"}]))
    http_server.routes["/b.rss"] = Response(
        rss([{**story, "guid": "b-9", "link": "HTTPS://NEWS.example/r2#x"}])
    )
    feeds = (
        f'  - {{name: a, url: "{http_server.url("/a.rss")}"}}\n'
        f'  - {{name: b, url: "{http_server.url("/b.rss")}"}}'
    )
    rt = make_runtime(
        tmp_path,
        redis_url,
        config_body(
            http_server, feeds=feeds, alerts="  - {name: deepseek, query: DeepSeek, channels: [hook]}"
        ),
    )
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    # feed a now changes the GUID of the same link on every poll
    http_server.routes["/a.rss"] = Response(rss([{**story, "guid": "a-2"}]))
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert alerts_received(http_server) == [("deepseek", "DeepSeek R2 kommt")]


def test_conditional_get_and_unchanged_body_skip_parsing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    body = rss([{"title": "Nvidia", "guid": "1"}])
    calls = {"n": 0}

    def answer(request):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if request.headers.get("if-none-match") == '"v1"':
            return Response(status=304, headers={"ETag": '"v1"'})
        return Response(body, headers={"ETag": '"v1"'})

    http_server.routes["/feed.rss"] = answer
    http_server.routes["/plain.rss"] = Response(body)  # no validators: the body hash decides
    feeds = (
        f'  - {{name: etag, url: "{http_server.url("/feed.rss")}"}}\n'
        f'  - {{name: plain, url: "{http_server.url("/plain.rss")}"}}'
    )
    rt = make_runtime(tmp_path, redis_url, config_body(http_server, feeds=feeds))
    assert [poll_feed(rt, f).status for f in rt.settings.feeds] == ["new", "new"]
    assert [poll_feed(rt, f).status for f in rt.settings.feeds] == ["unchanged", "unchanged"]
    assert http_server.received("/feed.rss")[-1].headers["if-none-match"] == '"v1"'
    assert rt.items_queue.count == 2  # one batch per feed, from the first poll only


def _calls(rt: Runtime, command: str) -> int:
    return int(rt.redis.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def _versioned_feed(
    tmp_path: Path, redis_url: str, http_server: LocalServer, version: dict[str, int]
) -> tuple[Runtime, Runtime, FeedConfig]:
    """One feed whose items 1..version["n"] carry the ETag "v<n>" (304 for the current one), and
    two runtimes on it, as two processes would have."""

    def answer(request):  # type: ignore[no-untyped-def]
        n = version["n"]
        etag = f'"v{n}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status=304, headers={"ETag": etag})
        items = [{"title": f"Nvidia {i}", "guid": str(i)} for i in range(1, n + 1)]
        return Response(rss(items), headers={"ETag": etag})

    http_server.routes["/feed.rss"] = answer
    http_server.routes["/hook"] = Response(b"ok")
    feeds = f'  - {{name: etag, url: "{http_server.url("/feed.rss")}"}}'
    body = config_body(http_server, feeds=feeds)
    rt, other = make_runtime(tmp_path, redis_url, body), make_runtime(tmp_path, redis_url, body)
    return rt, other, rt.settings.feeds[0]


def _assert_rebaselined(rt: Runtime, feed: FeedConfig, items: int) -> None:
    outcome = poll_feed(rt, feed)
    assert (outcome.status, outcome.enqueued) == ("new", items)
    (job,) = rt.items_queue.get_jobs()
    assert job.args[2] is True  # a baseline batch: recorded, not alerted


def test_an_unchanged_poll_is_one_round_trip_and_a_state_moved_on_is_polled_again(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A poll starts from the state this process last wrote and writes only if Redis still has
    it. When another process polled in between, or Redis was flushed, the poll is made again
    from Redis's state: nothing is enqueued twice, and a flush still re-baselines."""
    version = {"n": 1}
    rt, other, feed = _versioned_feed(tmp_path, redis_url, http_server, version)
    assert poll_feed(rt, feed).status == "new"
    drain(rt)
    # The first write found no revision (as a flushed Redis has none): nothing to trust yet, so
    # the next poll reads the state, and the one after starts from memory.
    assert poll_feed(rt, feed).status == "unchanged"
    reads, commands = _calls(rt, "hgetall"), _calls(rt, "evalsha") + _calls(rt, "eval")
    assert poll_feed(rt, feed).status == "unchanged"
    assert _calls(rt, "hgetall") == reads  # no state read: the one command is the write
    assert _calls(rt, "evalsha") + _calls(rt, "eval") == commands + 1

    version["n"] = 2  # a new item, which another process polls first
    assert poll_feed(other, feed).enqueued == 1
    jobs_before, requests_before = rt.items_queue.count, len(http_server.received("/feed.rss"))
    assert poll_feed(rt, feed).status == "unchanged"  # from v1 it looked new; Redis knew v2
    assert rt.items_queue.count == jobs_before
    assert len(http_server.received("/feed.rss")) == requests_before + 2
    assert rt.feed_states.get(feed.name).etag == '"v2"'

    rt.redis.flushall()  # the seen-store and the feed state are gone
    _assert_rebaselined(rt, feed, items=2)


def test_a_state_without_revision_is_not_trusted_from_memory(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A state read without a revision (written by an older newswatch) looks just like a
    flushed Redis's. Remembered, it would let a write "expecting no revision" through after a
    flush, and the flush would never be noticed: no re-baseline, the feed's old items alerted."""
    rt, older, feed = _versioned_feed(tmp_path, redis_url, http_server, {"n": 1})
    assert poll_feed(older, feed).status == "new"
    drain(older)
    now = datetime.now(UTC)
    state_key = keys.feed_state(feed.name)
    rt.redis.hdel(state_key, "rev")  # as an older newswatch left it, waiting out a cache lifetime
    rt.redis.hset(state_key, "not_before", utc_iso(now + timedelta(hours=1)))
    rt.clock = lambda: now
    assert poll_feed(rt, feed).status == "waiting"  # read from Redis, no write

    rt.redis.flushall()
    rt.clock = lambda: now + timedelta(hours=2)
    rt.polled_feeds.add(feed.name)  # as a scheduler that had polled it (a cold start cannot tell)
    _assert_rebaselined(rt, feed, items=1)


def test_a_feed_waits_for_its_re_baseline_before_it_is_polled_again(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """After a flush, the baseline batch must be processed before the feed's next poll: a poll
    in between would find the baseline's items unseen yet and queue them again, as new, and a
    worker could take that batch first and alert them a second time."""
    version = {"n": 2}
    _, _, feed = _versioned_feed(tmp_path, redis_url, http_server, version)
    body = config_body(
        http_server, feeds=f'  - {{name: etag, url: "{feed.url}"}}',
        alerts="  - {name: nvidia, query: Nvidia, channels: [hook]}",
    )  # fmt: skip
    rt = make_runtime(tmp_path, redis_url, body)
    assert poll_feed(rt, feed).status == "new"
    drain(rt)
    alerted = len(http_server.received("/hook"))
    rt.redis.flushall()
    _assert_rebaselined(rt, feed, items=2)  # queued, not processed yet
    version["n"] = 3  # one more item, while the baseline still waits in the queue
    assert poll_feed(rt, feed).status == "waiting"  # not fetched: the baseline comes first
    assert rt.items_queue.count == 1
    drain(rt)
    outcome = poll_feed(rt, feed)
    assert (outcome.status, outcome.enqueued) == ("new", 1)  # only the new item
    drain(rt)
    titles = [h.json()["data"]["item"]["title"] for h in http_server.received("/hook")[alerted:]]
    assert titles == ["Nvidia 3"]


def test_max_age_records_old_items_without_alerting(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    rt = make_runtime(tmp_path, redis_url, config_body(feed_server), polling="max_age: 3d")
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    assert feed_server.received("/hook") == []  # the fixture's items are all older than 3 days
    assert rt.redis.hget(keys.feed_state("eulerpool"), "items_seen") == b"7"


def test_broken_feeds_are_reported_and_others_go_on(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    feed_server.routes["/500"] = Response(b"oops", status=500)
    feed_server.routes["/html"] = Response(
        b"<html><body>Hello</body></html>", headers={"Content-Type": "text/html"}
    )
    feed_server.routes["/gone"] = Response(b"", status=410)
    feed_server.routes["/big"] = Response(b"<rss>" + b"x" * 3_000_000 + b"</rss>")
    names = {"server-error": "/500", "html": "/html", "gone": "/gone", "big": "/big", "missing": "/nothing"}
    feeds = "\n".join(f'  - {{name: {n}, url: "{feed_server.url(p)}"}}' for n, p in names.items())
    feeds += f'\n  - {{name: eulerpool, url: "{feed_server.url("/eulerpool.rss")}"}}'
    feeds += '\n  - {name: refused, url: "http://127.0.0.1:9/feed"}'
    rt = make_runtime(tmp_path, redis_url, config_body(feed_server, feeds=feeds), polling="max_bytes: 1MB")
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    assert len(feed_server.received("/hook")) == 2  # the good feed delivered its alerts
    errors = {f["name"]: (f["error"], f["error_count"], f["disabled"]) for f in status_data(rt)["feeds"]}
    assert errors == {
        "server-error": ("HTTP 500", 1, False),
        "html": ("not a feed: text/html", 1, False),
        "gone": ("HTTP 410 Gone: feed disabled", 1, True),
        "big": ("response larger than 1MB", 1, False),
        "missing": ("HTTP 404", 1, False),
        "eulerpool": (None, 0, False),
        "refused": ("connection refused by 127.0.0.1", 1, False),
    }
    poll_feed(rt, rt.settings.feed("gone"))
    assert len(feed_server.received("/gone")) == 1  # a disabled feed is not fetched again


def test_a_fixed_feed_url_starts_afresh_without_waiting_out_the_old_backoff(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    """Issue 17.5: a changed feed entry (here its URL) drops the old backoff and error count;
    the feed keeps its count of items seen."""
    feed_server.routes["/typo"] = Response(b"oops", status=500)

    def runtime_with(path: str) -> Runtime:
        feeds = f'  - {{name: eulerpool, url: "{feed_server.url(path)}"}}'
        return make_runtime(tmp_path, redis_url, config_body(feed_server, feeds=feeds))

    broken = runtime_with("/typo")
    feed = broken.settings.feeds[0]
    assert [poll_feed(broken, feed).status for _ in range(2)] == ["error", "waiting"]  # backing off
    fixed = runtime_with("/eulerpool.rss")  # the user fixed the URL and restarted
    outcome = poll_feed(fixed, fixed.settings.feeds[0])
    assert outcome.status == "new" and outcome.error is None
    (state,) = status_data(fixed)["feeds"]
    assert state["error"] is None and state["error_count"] == 0
    again = runtime_with("/typo")  # and back to the broken URL: a new episode, counted from one
    assert poll_feed(again, again.settings.feeds[0]).status == "error"
    assert status_data(again)["feeds"][0]["error_count"] == 1


def test_webhook_retries_keep_the_same_id_and_410_stops(
    tmp_path: Path, redis_url: str, feed_server: LocalServer
) -> None:
    answers = iter([500, 500, 200])
    feed_server.routes["/hook"] = lambda request: Response(status=next(answers))
    rt = make_runtime(
        tmp_path,
        redis_url,
        config_body(feed_server, alerts="  - {name: deepseek, query: DeepSeek, channels: [hook]}"),
    )
    poll_feed(rt, rt.settings.feeds[0])
    wait_for(lambda: drain(rt) or len(feed_server.received("/hook")) >= 3, timeout=20, interval=0.3)
    tries = feed_server.received("/hook")
    assert len(tries) == 3
    assert len({t.headers["webhook-id"] for t in tries}) == 1
    assert len({t.body for t in tries}) == 1
    for t in tries:
        Webhook(SECRET).verify(t.body, t.headers)

    feed_server.routes["/hook"] = Response(status=410)
    feed_server.routes["/eulerpool.rss"] = Response(rss([{"title": "DeepSeek again", "guid": "new-1"}]))
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)  # the first try meets the 410 and fails the delivery for good at once
    assert len(feed_server.received("/hook")) == 4  # one try only
    assert rt.deliveries_queue.failed_job_registry.count == 1


def test_status_json_from_the_cli(tmp_path: Path, redis_url: str, feed_server: LocalServer) -> None:
    import subprocess
    import sys

    rt = make_runtime(tmp_path, redis_url, config_body(feed_server))
    poll_feed(rt, rt.settings.feeds[0])
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--json", "--config", rt.config.path],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert data["feeds"][0]["name"] == "eulerpool" and data["feeds"][0]["error"] is None
    assert set(data["feeds"][0]) == set(
        [
            "name",
            "url",
            "disabled",
            "last_poll",
            "last_success",
            "next_poll",
            "error",
            "error_count",
            "items_seen",
            "too_old",
            "warning",
            "late",
            "polled_by",
            "failing_since",
            "silent_since",
            "silent_after",
        ]
    )
    assert data["feeds"][0]["failing_since"] is data["feeds"][0]["silent_since"] is None
    assert data["feeds"][0]["polled_by"] is None  # a manual poll, not a scheduler's
    assert data["schedulers"] == []  # none running
    queues = {q["name"]: q for q in data["queues"]}
    assert queues["newswatch-items"]["queued"] == 1
    assert set(queues["newswatch-items"]) == {"name", "queued", "started", "failed"}

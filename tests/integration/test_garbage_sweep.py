"""Garbage in every other key newswatch reads (issue 20, point 5, the sweep): a real Redis written
with garbage, polls and batches run through the real pipeline in-process, and a webhook
receiver on 127.0.0.1. For each key: nothing crashes, no feed or alert is stopped for good,
and what can be replaced is."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import ROOT, LocalServer, Response, feed_items, rss
from tests.integration.helpers import drain, make_runtime
from tests.sites import fixture_site, serve
from worker.adapters import keys
from worker.adapters.alert_log import AlertLog
from worker.adapters.schedule import Schedule
from worker.core.errors import ClaimHeldError
from worker.core.models import Delivery
from worker.core.outbox import hour_index
from worker.polling import poll_feed
from worker.runtime import Runtime
from worker.sources import Page, read_items

DELAY = "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"
DELAY_TEXT = (
    "DeepSeek hat die Einführung seines KI-Modells R2 verschoben, nachdem Trainingsläufe auf Huaweis "
    "Ascend-Chips wiederholt fehlschlugen. Das chinesische Start-up kehrt für das Training zu "
    "Nvidia-Prozessoren zurück und nutzt die Huawei-Chips nur noch für die Inferenz."
)
MODEL = "DeepSeek stellt neues Modell vor"
MODEL_TEXT = (
    "Das chinesische KI-Start-up DeepSeek hat ein neues Sprachmodell vorgestellt, das bei Mathematik- "
    "und Programmieraufgaben mit den besten US-Modellen mithalten soll. Das Modell ist quelloffen."
)
ONE = [{"title": "DeepSeek R2 verschoben", "guid": "1", "link": "https://n.example/1"}]


def runtime(tmp_path: Path, redis_url: str, server: LocalServer, alert: str = "", feeds: str = "") -> Runtime:
    server.routes.setdefault("/feed", Response(rss(ONE)))
    server.routes["/hook"] = Response(b"ok")
    feeds = feeds or f'  - {{name: news, url: "{server.url("/feed")}"}}'
    return make_runtime(
        tmp_path,
        redis_url,
        f"""
feeds:
{feeds}
alerts:
  - {alert or "{name: deepseek, query: DeepSeek, channels: [hook]}"}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}"}}
""",
    )


def alerted(server: LocalServer) -> list[str]:
    return [r.json()["data"]["item"]["title"] for r in server.received("/hook") if "item" in r.json()["data"]]


def failed_batches(rt: Runtime) -> int:
    return int(rt.redis.zcard(f"rq:failed:{keys.ITEMS_QUEUE}"))


def poll_and_drain(rt: Runtime, feed: str = "news") -> None:
    poll_feed(rt, rt.settings.feed(feed), force=True)
    drain(rt)


# --- the poll schedule, for every scheduler ---------------------------------------------------


def test_the_schedule_replaces_its_keys_of_another_type(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    rt = runtime(tmp_path, redis_url, http_server)
    rt.redis.set(keys.SCHEDULE, "garbage")
    schedule, now = Schedule(rt.redis, "s1"), rt.clock()
    assert Schedule(rt.redis, "status").next_polls(["news"]) == {"news": None}  # status only looks
    assert rt.redis.type(keys.SCHEDULE) == b"string"
    schedule.sync({"news": now})
    rt.redis.delete(keys.LEASES)
    rt.redis.rpush(keys.LEASES, "garbage")
    (lease,) = schedule.claim(["news"], now, timedelta(seconds=30))
    assert lease.feed == "news" and schedule.complete(lease, now + timedelta(minutes=1))
    assert rt.redis.type(keys.SCHEDULE) == b"zset" and rt.redis.type(keys.LEASES) in (b"hash", b"none")


# --- stories -------------------------------------------------------------------------------------


def test_a_batch_commits_through_garbage_in_the_story_index(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A band key that is not UTF-8 or a report that does not unpack failed every commit of a
    copy (its batch retried, then failed for good: its alerts lost); so did a story hash of
    another type."""
    routes = {"one": (DELAY, "1"), "two": (f"ROUNDUP: {DELAY}", "2"), "three": (MODEL, "3"),
              "four": (f"ROUNDUP: {MODEL}", "4")}  # fmt: skip
    for name, (title, n) in routes.items():
        text = DELAY_TEXT if "Modellstart" in title else MODEL_TEXT
        item = {"title": title, "description": text, "guid": n, "link": f"https://{name}.example/{n}"}
        http_server.routes[f"/{name}"] = Response(rss([item]))
    feeds = "\n".join(f'  - {{name: {name}, url: "{http_server.url(f"/{name}")}"}}' for name in routes)
    rt = runtime(tmp_path, redis_url, http_server, feeds=feeds)
    poll_and_drain(rt, "one")
    first = _item_id(http_server, "one")
    for band in rt.redis.keys(keys.story_band("*")):
        rt.redis.set(band, b"\xff\xfe " + first.encode())
    rt.redis.set(keys.story_report(first), b"\xffgarbage")
    poll_and_drain(rt, "three")
    model_story = rt.redis.get(keys.story_report(_item_id(http_server, "three"))).partition(b"\x00")[0]  # type: ignore[union-attr]
    rt.redis.delete(keys.story(model_story.decode()))
    rt.redis.rpush(keys.story(model_story.decode()), "garbage")
    poll_and_drain(rt, "two")
    poll_and_drain(rt, "four")
    assert failed_batches(rt) == 0
    # The garbage hid each copy's story: each copy is alerted as a story of its own.
    assert alerted(http_server) == [DELAY, MODEL, f"ROUNDUP: {DELAY}", f"ROUNDUP: {MODEL}"]
    assert rt.redis.type(keys.story(model_story.decode())) == b"hash"


def _item_id(server: LocalServer, feed: str) -> str:
    body = server.routes[f"/{feed}"].body  # type: ignore[union-attr]
    return str(feed_items(feed, body, server.url(f"/{feed}"))[0].id)


# --- the archive ---------------------------------------------------------------------------------


def test_the_archive_replaces_keys_of_another_type_and_skips_records_that_do_not_read(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """An archive key of another type failed every batch after its commit (its first tries never
    made); a record that does not unpack crashed `try` and `explain`."""
    rt = runtime(tmp_path, redis_url, http_server)
    rt.redis.set(keys.ARCHIVE_INDEX, "garbage")
    poll_and_drain(rt)
    assert alerted(http_server) == [ONE[0]["title"]] and failed_batches(rt) == 0
    assert rt.archive.count() == 1
    rt.redis.hset(keys.ARCHIVE_ITEMS, "garbage-item", b"not zlib")
    rt.redis.zadd(keys.ARCHIVE_INDEX, {"garbage-item": rt.clock().timestamp()})
    config = str(tmp_path / "newswatch.yaml")
    tried = _cli("try", "DeepSeek", "--config", config)
    assert tried.returncode == 0 and ONE[0]["title"] in tried.stdout, tried.stderr[-2000:]
    explained = _cli("explain", "garbage-item", "--config", config)
    assert explained.returncode == 1 and "is not in the archive" in explained.stderr, explained.stderr[-2000:]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


# --- outbox: the alert log, digests, hourly caps, claims --------------------------------------------


def test_an_alert_log_of_another_type_is_replaced_and_the_first_tries_made(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    rt = runtime(tmp_path, redis_url, http_server)
    rt.redis.hset(keys.ALERT_LOG, "x", "y")
    poll_and_drain(rt)
    assert alerted(http_server) == [ONE[0]["title"]] and failed_batches(rt) == 0
    (record,) = AlertLog(rt.redis).since(rt.clock() - timedelta(hours=1))
    assert record.title == ONE[0]["title"]


def test_a_digest_buffer_of_another_type_loses_no_alert_and_garbage_entries_are_left_out(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """RPUSH into a buffer of another type failed inside the commit, after the items were marked
    seen: the held alert was lost. A buffer entry that is not JSON failed the flush for good."""
    rt = runtime(
        tmp_path,
        redis_url,
        http_server,
        alert="{name: deepseek, query: DeepSeek, channels: [hook], digest: 1h}",
    )
    buffer = keys.digest_buffer("deepseek", "hook")
    rt.redis.set(buffer, "garbage")
    poll_and_drain(rt)
    assert rt.redis.llen(buffer) == 1 and failed_batches(rt) == 0
    rt.redis.rpush(buffer, b"{not json", b'{"item": "not an item"}')
    assert rt.outbox.flush_digest("deepseek", "hook", rt.clock(), rt.clock()) == 1
    drain(rt)
    (digest,) = [r.json()["data"] for r in http_server.received("/hook")]
    assert [entry["item"]["title"] for entry in digest["items"]] == [ONE[0]["title"]]


def test_an_hourly_count_that_is_not_a_number_stops_no_alert(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """int() of it failed every commit of a capped alert's items: retried, then failed for good."""
    rt = runtime(
        tmp_path,
        redis_url,
        http_server,
        alert="{name: deepseek, query: DeepSeek, channels: [hook], max_per_hour: 5}",
    )
    rt.redis.set(keys.hourly_count("deepseek", hour_index(rt.clock())), "garbage", ex=3600)
    poll_and_drain(rt)
    assert alerted(http_server) == [ONE[0]["title"]] and failed_batches(rt) == 0
    assert rt.redis.get(keys.hourly_count("deepseek", hour_index(rt.clock()))) == b"1"


def test_a_delivery_job_claims_over_garbage_and_waits_only_for_a_claim_with_a_lease(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    rt = runtime(tmp_path, redis_url, http_server)
    delivery = Delivery("d1", "deepseek", "hook", {"data": {}})
    key, lease = keys.delivery_state("d1"), timedelta(seconds=30)
    rt.redis.hset(key, "x", "y")
    assert rt.outbox.claim(delivery, lease)  # another type: replaced by this claim
    rt.redis.set(key, "sending:no-lease")
    token = rt.outbox.claim(delivery, lease)
    assert token and rt.redis.get(key) == f"sending:{token}".encode() and rt.redis.pttl(key) > 0
    with pytest.raises(ClaimHeldError):  # a claim with a lease is another worker's
        rt.outbox.claim(delivery, lease)
    rt.redis.set(key, "sent")
    assert rt.outbox.claim(delivery, lease) is None


# --- pages: robots.txt and article marks --------------------------------------------------------------


def test_a_robots_cache_of_another_type_and_garbage_article_marks_stop_no_poll(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A robots.txt cache key of another type failed every poll of every html feed on its host
    ("Redis unavailable"); an article mark such as '²' (isdigit, but no int) failed the poll."""
    serve(http_server, fixture_site())
    feeds = f'  - {{name: eulerpool, url: "{http_server.url("/de/news")}", type: html, articles: true}}'
    rt = runtime(tmp_path, redis_url, http_server, feeds=feeds)
    origin = f"http://127.0.0.1:{http_server.httpd.server_address[1]}"
    rt.redis.hset(keys.robots(origin), "x", "y")
    feed = rt.settings.feed("eulerpool")
    with urllib.request.urlopen(http_server.url("/de/news"), timeout=5) as response:
        listing = read_items(
            feed, Page(http_server.url("/de/news"), response.read(), "text/html"), rt.clock()
        )
    for item in listing.items:
        rt.redis.set(keys.article(item.id), "²", ex=3600)
    outcome = poll_feed(rt, feed)
    assert outcome.status == "new" and outcome.enqueued == len(listing.items) == 6, outcome
    assert rt.redis.type(keys.robots(origin)) == b"string"

"""Stories through the real pipeline: local feeds on 127.0.0.1, a real Redis, workers draining the
queues in-process, as threads committing at once, and as processes. An alert fires once per
story; later reports are counted, archived and shown by `explain`; `try` searches the archive."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import ROOT, LocalServer, Response, rss, wait_for
from tests.integration.helpers import drain, make_runtime
from worker.adapters import keys
from worker.cli import main
from worker.pipeline import process_items
from worker.polling import poll_feed
from worker.runtime import Runtime

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
# Ten copies of one report as ten sites carry it, two per feed.
COPIES = [
    (DELAY, DELAY_TEXT),
    (f"ROUNDUP: {DELAY}", f"PEKING (dpa-AFX) - {DELAY_TEXT}"),
    (f"dpa-AFX: {DELAY}", DELAY_TEXT[:130] + " …"),
    (f"{DELAY} - Aktie", DELAY_TEXT),
    (f"{DELAY} | Finanzportal", DELAY_TEXT[:160] + "…"),
    ("DeepSeek verschiebt Start von R2 – Huawei-Chips machen Probleme", DELAY_TEXT),
    (f"KORREKTUR: {DELAY}", f"PEKING (dpa-AFX) - {DELAY_TEXT}"),
    (f"{DELAY} - boerse.de", ""),
    (f"ROUNDUP 2/Aktie: {DELAY}", DELAY_TEXT[:200] + " [...]"),
    (f"{DELAY} | Nachricht | finanzen.net", DELAY_TEXT),
]
# For workers committing at once: ten copies each alike with every other. (COPIES[5] and
# COPIES[7] are each like the rest but not like each other: which story they open or join then
# depends on which comes first, for one worker as for many; see docs/decisions.md.)
ALIKE = [
    *COPIES[:5],
    COPIES[6],
    *COPIES[8:],
    (f"EILMELDUNG: {DELAY}", DELAY_TEXT),
    (f"{DELAY} - FOCUS online", DELAY_TEXT[:180] + "…"),
]
FEEDS = [f"site{n}" for n in range(1, 6)]


def entry(title: str, text: str, link: str, minute: int) -> dict[str, str]:
    return {
        "title": title,
        "link": link,
        "guid": link,
        "description": text,
        "category": "Finanzen / KI / DeepSeek",
        "pubDate": f"Fri, 15 Aug 2025 13:{minute:02d}:00 +0000",
    }


def serve(
    server: LocalServer,
    extra: dict[str, list[dict[str, str]]] | None = None,
    copies: list[tuple[str, str]] = COPIES,
) -> None:
    """Five feeds with two copies each, and `extra` items per feed."""
    for index, feed in enumerate(FEEDS):
        items = [
            entry(*copies[2 * index + n], f"https://{feed}.example.org/a/{n}", 10 + 2 * index + n)
            for n in range(2)
        ]
        items += (extra or {}).get(feed, [])
        server.routes[f"/{feed}.rss"] = Response(rss(items), headers={"Content-Type": "application/rss+xml"})
    server.routes["/hook"] = Response(b"ok")


def config_body(server: LocalServer, stories: str = "", batch: bool = False) -> str:
    feeds = "\n".join(f'  - {{name: {f}, url: "{server.url(f"/{f}.rss")}"}}' for f in FEEDS)
    return f"""
{stories}
feeds:
{feeds}
topics:
  Halbleiter: [Nvidia, Huawei, "Chip*"]
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
  - {{name: chips, query: 'Huawei AND Chip* NOT Smartphone', topics: [Halbleiter], channels: [hook]}}
  - {{name: site2-only, query: DeepSeek, feeds: [site2], channels: [hook]}}
  - {{name: bitcoin, query: Bitcoin, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}"}}
"""


def alerts(server: LocalServer) -> list[dict[str, Any]]:
    return [r.json()["data"] for r in server.received("/hook")]


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def feeds(http_server: LocalServer) -> LocalServer:
    serve(
        http_server,
        {
            "site3": [entry(MODEL, MODEL_TEXT, "https://site3.example.org/model", 40)],
            "site5": [
                entry(
                    f"ROUNDUP: {MODEL}",
                    f"HANGZHOU (dpa-AFX) - {MODEL_TEXT}",
                    "https://site5.example.org/m",
                    41,
                )
            ],
        },
    )
    return http_server


def test_ten_copies_across_five_feeds_alert_once_and_two_deepseek_stories_twice(
    tmp_path: Path, redis_url: str, feeds: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = make_runtime(tmp_path, redis_url, config_body(feeds))
    for feed in rt.settings.feeds:
        assert poll_feed(rt, feed).enqueued >= 2
    drain(rt)
    fired = alerts(feeds)
    deepseek = sorted((a["item"]["title"], a["item"]["reports"]) for a in fired if a["alert"] == "deepseek")
    assert deepseek == [(MODEL, 1), (DELAY, 1)]  # ten copies: once; the other DeepSeek story: once
    assert sorted(a["alert"] for a in fired) == ["chips", "deepseek", "deepseek", "site2-only"]
    first = next(a["item"] for a in fired if a["alert"] == "deepseek" and a["item"]["title"] == DELAY)
    assert first["story"] == first["id"]
    # site2's copies are reports 3 and 4 of a story already alerted by deepseek, but site2-only
    # had not fired for this story: it fires once, with the story's id and count.
    (site2,) = [a["item"] for a in fired if a["alert"] == "site2-only"]
    assert (site2["story"], site2["reports"], site2["feed"]) == (first["id"], 3, "site2")

    story = rt.redis.hgetall(keys.story(first["id"]))
    assert story[b"n"] == b"10"
    assert sorted(int(v) for k, v in story.items() if k.startswith(b"r:")) == list(range(1, 11))

    # explain, on the last copy: it joined the story, was counted, and why nothing fired for it.
    last = _archived_id(rt, "https://site5.example.org/a/1")
    data = cli_json(capsys, "explain", last, "--json", "--config", str(tmp_path / "newswatch.yaml"))
    assert (
        data["story"]["id"] == first["id"]
        and data["story"]["report"] == 10
        and data["story"]["reports"] == 10
    )
    assert len(data["story"]["others"]) == 9 and data["story"]["others"][0]["id"] == first["id"]
    reasons = {a["alert"]: a for a in data["alerts"]}
    assert reasons["deepseek"]["fired"] is False and reasons["deepseek"]["outcome"] == "story"
    assert first["id"] in reasons["deepseek"]["detail"]
    assert reasons["deepseek"]["terms"] == [
        {
            "term": "DeepSeek",
            "negated": False,
            "matched": True,
            "fields": {"title": ["DeepSeek"], "summary": ["DeepSeek"], "categories": ["DeepSeek"]},
        }
    ]
    assert reasons["site2-only"]["reason"] == "the item's feed is not among the alert's feeds"
    assert reasons["site2-only"]["feeds"] == {"only": ["site2"], "ok": False}
    assert reasons["bitcoin"]["reason"] == "the query does not match"
    assert reasons["bitcoin"]["terms"][0]["matched"] is False
    chips = reasons["chips"]
    assert chips["topics"] == {"only": ["halbleiter"], "ok": True} and chips["query_matches"]
    assert {t["term"]: (t["negated"], t["matched"]) for t in chips["terms"]} == {
        "Huawei": (False, True), "Chip*": (False, True), "Smartphone": (True, False),
    }  # fmt: skip

    # explain on the first report: the alerts that fired with it.
    data = cli_json(capsys, "explain", first["id"], "--json", "--config", str(tmp_path / "newswatch.yaml"))
    outcomes = {a["alert"]: (a["fired"], a["outcome"]) for a in data["alerts"]}
    assert outcomes["deepseek"] == (True, "sent") and outcomes["chips"] == (True, "sent")
    assert data["item"]["topics"] == ["DeepSeek", "Finanzen", "Halbleiter", "KI"]


def _archived_id(rt: Runtime, link: str) -> str:
    for record in rt.archive.newest_first(rt.clock().replace(year=2000)):
        if record.item.link == link:
            return record.item.id
    raise AssertionError(f"{link} not archived")


def test_try_lists_archived_matches_newest_first_with_highlights(
    tmp_path: Path, redis_url: str, feeds: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = make_runtime(tmp_path, redis_url, config_body(feeds))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    config = str(tmp_path / "newswatch.yaml")
    data = cli_json(capsys, "try", '"neues Modell" OR title:R2', "--json", "--config", config)
    assert [i["title"] for i in data["items"]] == [f"ROUNDUP: {MODEL}", MODEL, COPIES[5][0]]  # newest first
    assert (data["matched"], data["searched"]) == (3, 12)
    marks = data["items"][0]["highlights"]
    assert [(m["text"], m["term"]) for m in marks["title"]] == [("neues Modell", '"neues Modell"')]
    title = data["items"][2]["title"]
    assert [title[m["start"] : m["end"]] for m in data["items"][2]["highlights"]["title"]] == ["R2"]
    only = cli_json(capsys, "try", "DeepSeek", "--feed", "site2", "--json", "--config", config)
    assert {i["feed"] for i in only["items"]} == {"site2"} and only["matched"] == 2
    # On a terminal: the matched words bold, nothing read as markup.
    capsys.readouterr()
    assert main(["try", "Sprachmodell", "--config", config]) == 0
    out = capsys.readouterr().out
    assert MODEL in out and "2 of 12 archived items from the last 3d match" in out


def test_try_with_a_query_that_does_not_parse_says_what_check_config_says(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    make_runtime(tmp_path, redis_url, config_body(http_server))
    config = tmp_path / "newswatch.yaml"
    capsys.readouterr()
    assert main(["try", '"unclosed', "--config", str(config)]) == 2
    said = capsys.readouterr().err.strip()
    assert said == "newswatch: query does not parse: unclosed quotation mark"
    config.write_text(config.read_text().replace("query: Bitcoin", "query: '\"unclosed'"))
    assert main(["check-config", "--config", str(config)]) == 2
    assert "alerts[3].query: query does not parse: unclosed quotation mark" in capsys.readouterr().err
    assert (
        main(["explain", "no-such-item", "--config", str(tmp_path / "newswatch.yaml")]) == 2
    )  # bad config now


def test_explain_an_item_not_in_the_archive(
    tmp_path: Path, redis_url: str, http_server: LocalServer, capsys: pytest.CaptureFixture[str]
) -> None:
    make_runtime(tmp_path, redis_url, config_body(http_server))
    assert main(["explain", "nope", "--config", str(tmp_path / "newswatch.yaml")]) == 1
    assert (
        "item 'nope' is not in the archive (it keeps 7d and at most 200000 items)" in capsys.readouterr().err
    )


def _copy_batches(round_: int) -> list[tuple[str, list[dict[str, Any]]]]:
    from tests.conftest import feed_items

    batches = []
    for n, (title, text) in enumerate(ALIKE):
        feed = FEEDS[n % 5]
        body = rss([entry(title, text, f"https://{feed}.example.org/r{round_}/{n}", n)])
        (item,) = feed_items(feed, body, f"https://{feed}.example.org/")
        batches.append((feed, [item.to_dict()]))
    return batches


def _at_once(rt: Runtime, batches: list[tuple[str, list[dict[str, Any]]]]) -> list[BaseException]:
    """Each batch in its own thread, all released at once; what they raised."""
    start = threading.Barrier(len(batches))
    errors: list[BaseException] = []

    def work(feed: str, items: list[dict[str, Any]]) -> None:
        try:
            start.wait()
            process_items(rt, feed, items)
        except BaseException as e:  # reported by the caller; a thread's exception is otherwise lost
            errors.append(e)

    threads = [threading.Thread(target=work, args=batch) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_committing_copies_at_once_never_split_or_double_a_story(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server)
    rt = make_runtime(tmp_path, redis_url, config_body(http_server))
    for round_ in range(5):
        rt.redis.flushdb()  # each round a story nobody has seen
        batches = _copy_batches(round_)
        errors = _at_once(rt, batches)
        assert not errors
        ids = [batch[1][0]["id"] for batch in batches]
        records = rt.archive.get_many(ids)
        assert len({r.story for r in records}) == 1, f"round {round_}: story split"
        assert sorted(r.report for r in records) == list(range(1, 11)), f"round {round_}: counts"
        deepseek = [a for a in alerts(http_server) if a["alert"] == "deepseek"]
        assert len(deepseek) == round_ + 1, f"round {round_}: alerted {len(deepseek) - round_} times"


def test_worker_processes_never_split_or_double_a_story(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, copies=ALIKE)
    rt = make_runtime(tmp_path, redis_url, config_body(http_server), polling="batch_size: 1")
    for feed in rt.settings.feeds:
        assert poll_feed(rt, feed).enqueued == 2  # ten jobs of one item each
    command = [
        sys.executable,
        "-m",
        "worker.cli",
        "worker",
        "--burst",
        "--config",
        str(tmp_path / "newswatch.yaml"),
    ]
    workers = [
        subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(3)
    ]
    for process in workers:
        assert process.wait(timeout=120) == 0
    records = list(rt.archive.newest_first(rt.clock().replace(year=2000)))
    assert len(records) == 10 and len({r.story for r in records}) == 1
    assert sorted(r.report for r in records) == list(range(1, 11))
    wait_for(lambda: len(alerts(http_server)) >= 3)
    assert sorted(a["alert"] for a in alerts(http_server)) == ["chips", "deepseek", "site2-only"]


def test_stories_off_alerts_every_copy(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    serve(http_server)
    rt = make_runtime(tmp_path, redis_url, config_body(http_server, stories="stories: off"))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    fired = [a for a in alerts(http_server) if a["alert"] == "deepseek"]
    assert len(fired) == 10 and all(a["item"]["story"] == a["item"]["id"] for a in fired)
    assert not rt.redis.keys(keys.story("*"))


def test_highlights_point_at_the_characters_the_payload_carries(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    title = "Deep\u00adSeek: Künstliche\u00a0Intelligenz aus Großbritannien – DeepSeeks KI\u2011Chips"
    summary = "Die Straße der KI: DeepSeek’s Modell für Überweisungen"
    http_server.routes["/site1.rss"] = Response(
        rss([entry(title.replace("\u00ad", "&#173;"), summary, "https://site1.example.org/h", 1)])
    )
    http_server.routes["/hook"] = Response(b"ok")
    body = config_body(http_server).replace(
        "  - {name: bitcoin, query: Bitcoin, channels: [hook]}",
        "  - {name: words, query: '\"künstliche Intelligenz\" OR Grossbritannien OR Strasse OR Ueberweisung*', channels: [hook]}",
    )
    rt = make_runtime(tmp_path, redis_url, body)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    by_alert = {a["alert"]: a for a in alerts(http_server)}
    item = by_alert["deepseek"]["item"]
    assert item["title"] == title.replace("\u00a0", " ")  # html_to_text: a space is a space
    marks = by_alert["deepseek"]["highlights"]
    assert [item["title"][m["start"] : m["end"]] for m in marks["title"]] == ["Deep\u00adSeek", "DeepSeeks"]
    assert [item["summary"][m["start"] : m["end"]] for m in marks["summary"]] == ["DeepSeek’s"]
    assert marks["categories"] == [{"index": 2, "start": 0, "end": 8, "text": "DeepSeek", "term": "DeepSeek"}]
    words = by_alert["words"]["highlights"]
    assert [m["text"] for m in words["title"]] == ["Künstliche Intelligenz", "Großbritannien"]
    assert [m["text"] for m in words["summary"]] == ["Straße", "Überweisungen"]
    for field in ("title", "summary"):
        for mark in words[field]:
            assert item[field][mark["start"] : mark["end"]] == mark["text"]


def test_the_archive_is_trimmed_by_count_and_age(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    from datetime import timedelta

    serve(http_server)
    rt = make_runtime(tmp_path, redis_url, "archive: {keep: 1h, max_items: 4}\n" + config_body(http_server))
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    drain(rt)
    assert rt.archive.count() == 4
    assert rt.redis.hlen(keys.ARCHIVE_ITEMS) == 4
    assert rt.archive.trim(rt.clock() + timedelta(hours=2)) == 4
    assert rt.archive.count() == 0 and not rt.redis.exists(keys.ARCHIVE_ITEMS)


def test_story_keys_expire_with_the_window(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    serve(http_server)
    rt = make_runtime(tmp_path, redis_url, "stories: {window: 1h}\n" + config_body(http_server))
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    client: redis.Redis = rt.redis
    bands, reports, stories = (
        client.keys(keys.story_band("*")),
        client.keys(keys.story_report("*")),
        client.keys(keys.story("*")),
    )
    assert bands and reports and stories
    assert {client.ttl(k) for k in bands + reports} <= set(range(3590, 3601))
    assert {client.ttl(k) for k in stories} <= set(range(7 * 86400 - 10, 7 * 86400 + 1))  # archive.keep

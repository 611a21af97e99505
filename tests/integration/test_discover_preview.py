"""`newswatch discover` and `newswatch preview` on the fixture site, as a user runs them (SPEC §8).
Both fetch from 127.0.0.1 only and write nothing to Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from tests.conftest import EULERPOOL_RSS, ROOT, LocalServer, Response
from tests.sites import fixture_site, serve


def newswatch(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(config)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60,
    )  # fmt: skip


def write(tmp_path: Path, redis_url: str, server: LocalServer) -> Path:
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{max_age: 3d, allow_private_addresses: true}}
feeds:
  - {{name: eulerpool, url: "{server.url("/de/news")}", type: html, articles: true, max_articles: 4}}
topics:
  KI: [KI, DeepSeek]
  Halbleiter: [Nvidia, Huawei, "Chip*"]
alerts:
  - {{name: deepseek, query: DeepSeek}}
  - {{name: infineon, query: Infineon}}
""",
        encoding="utf-8",
    )
    return config


def test_discover_shows_what_an_html_source_of_a_page_without_feeds_yields(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, fixture_site())
    config = write(tmp_path, redis_url, http_server)
    found = json.loads(newswatch("discover", http_server.url("/de/news"), "--json", config=config).stdout)
    assert found["feeds"] == []
    assert len(found["html"]["items"]) == 6
    assert (
        found["html"]["items"][0]["title"]
        == "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"
    )
    assert found["config"] == {
        "name": "127-0-0-1",
        "url": http_server.url("/de/news"),
        "type": "html",
        "articles": True,
    }
    tried = {r.path for r in http_server.received()}
    assert {"/feed", "/rss", "/rss.xml", "/de/news/feed"} <= tried  # the usual feed addresses
    text = newswatch("discover", http_server.url("/de/news"), config=config).stdout
    assert "links to no feed" in text and "type: html" in text and "articles: true" in text
    assert redis.Redis.from_url(redis_url).dbsize() == 0


def test_discover_lists_the_feeds_a_page_links_to(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    page = b'<html><head><link rel="alternate" type="application/rss+xml" title="News" href="/de/rss"></head><body>x</body></html>'
    http_server.routes["/de"] = Response(page, headers={"Content-Type": "text/html"})
    http_server.routes["/de/rss"] = Response(
        EULERPOOL_RSS.read_bytes(), headers={"Content-Type": "application/rss+xml"}
    )
    config = write(tmp_path, redis_url, http_server)
    found = json.loads(newswatch("discover", http_server.url("/de"), "--json", config=config).stdout)
    assert found["feeds"] == [{"url": http_server.url("/de/rss"), "items": 7}]
    assert found["config"] == {"name": "127-0-0-1", "url": http_server.url("/de/rss")}
    text = newswatch("discover", http_server.url("/de"), config=config).stdout
    assert f"offers 1 feed(s):\n  {http_server.url('/de/rss')}  (7 items)" in text


def test_preview_shows_items_topics_and_alerts_and_writes_nothing(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, fixture_site())
    config = write(tmp_path, redis_url, http_server)
    result = newswatch("preview", "eulerpool", "--json", config=config)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    by_title = {i["title"]: i for i in shown["items"]}
    deepseek = by_title["DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"]
    assert deepseek["published"] == "2025-08-15T13:51:00Z"
    assert deepseek["categories"] == ["Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"]
    assert "KI" in deepseek["topics"] and "Halbleiter" in deepseek["topics"]
    # The sample is from 2025: older than max_age, so the alert would be recorded, not sent.
    assert deepseek["alerts"] == ["deepseek (not sent: older than polling.max_age)"]
    over = [i for i in shown["items"] if i["note"]]
    assert len(over) == 2 and all("over max_articles (4)" in i["note"] for i in over)
    assert redis.Redis.from_url(redis_url).dbsize() == 0
    text = newswatch("preview", "--url", http_server.url("/de/news"), "--type", "html", config=config)
    assert "published:  2025-08-15T13:51:00Z" in text.stdout
    assert "alerts:     infineon (not sent: older than polling.max_age)" in text.stdout
    usage = newswatch("preview", config=config)
    assert usage.returncode == 2 and "one of them" in usage.stderr

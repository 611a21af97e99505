"""Sources that are not feeds, polled for real (SPEC §8): the fixture site and our two layouts
served from 127.0.0.1, a real Redis, polls through worker.polling and jobs run by an RQ worker.
What is alerted, what is fetched and how often, and what status says about bad input."""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from tests.conftest import LocalServer, Request, Response
from tests.integration.helpers import drain, make_runtime
from tests.sites import finanzpost_site, fixture_site, kurier_site, serve
from worker import articles
from worker.adapters import keys
from worker.adapters.http_fetch import client
from worker.commands import status_data
from worker.core.poll import LAYOUT_WARNING
from worker.polling import poll_feed
from worker.runtime import Runtime

EVERYTHING = "NOT zzzqqqxxx"  # an alert that fires for every item: shows exactly what was queued


def config(server: LocalServer, feeds: str, everything: bool = True) -> str:
    every = f"  - {{name: everything, query: '{EVERYTHING}', channels: [hook]}}" if everything else ""
    return f"""
feeds:
{feeds}
alerts:
{every}
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}"}}
"""


@pytest.fixture
def site(http_server: LocalServer) -> LocalServer:
    serve(http_server, {**fixture_site(), **finanzpost_site(), **kurier_site()})
    http_server.routes["/hook"] = Response(b"ok")
    return http_server


def alerted(server: LocalServer, alert: str = "everything") -> collections.Counter[str]:
    bodies = [r.json()["data"] for r in server.received("/hook")]
    return collections.Counter(b["item"]["title"] for b in bodies if b["alert"] == alert)


def payloads(server: LocalServer, alert: str) -> dict[str, dict[str, Any]]:
    bodies = [r.json()["data"] for r in server.received("/hook")]
    return {b["item"]["title"]: b["item"] for b in bodies if b["alert"] == alert}


def feed_status(rt: Runtime, name: str) -> dict[str, Any]:
    return next(f for f in status_data(rt)["feeds"] if f["name"] == name)


def gets(server: LocalServer, prefix: str) -> collections.Counter[str]:
    return collections.Counter(r.path.split("?")[0] for r in server.received() if r.path.startswith(prefix))


def test_fixture_site_alerts_from_its_article_pages(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    """The DeepSeek story comes from the HTML article page: its German date, its tag line."""
    body = config(site, f'  - {{name: eulerpool, url: "{site.url("/de/news")}", type: html, articles: true}}')
    rt = make_runtime(tmp_path, redis_url, body)
    feed = rt.settings.feed("eulerpool")
    assert poll_feed(rt, feed).enqueued == 6
    drain(rt)
    assert sorted(alerted(site)) == sorted(
        [
            "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
            "Ethereum scheitert erneut an kritischer Widerstandszone",
            "Personalabbau trifft Manager und Führungskräfte mit voller Wucht",
            "Infineon-Aktie gefragt: Bernstein sieht weiter Kurspotenzial",
            "Künstliche Intelligenz könnte den Leerstand von Büroimmobilien erhöhen",
            "iPhone 17e mit Dynamic Island und A19-Chip erwartet",
        ]
    )
    (deepseek,) = payloads(site, "deepseek").values()
    assert deepseek["published"] == "2025-08-15T13:51:00Z"
    assert deepseek["categories"] == ["Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"]
    assert {"Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"} <= set(deepseek["topics"])
    # Polled again: nothing fetched but the listing, nothing alerted twice.
    assert poll_feed(rt, feed, force=True).status == "unchanged"
    drain(rt)
    assert set(alerted(site).values()) == {1}
    assert set(gets(site, "/de/news/").values()) == {1}  # each article page once
    assert gets(site, "/robots.txt")["/robots.txt"] == 1


def test_items_over_max_articles_wait_for_the_next_poll_and_none_is_lost(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    listing = site.url("/nk/wirtschaft/")
    body = config(
        site, f'  - {{name: kurier, url: "{listing}", type: html, articles: true, max_articles: 2}}'
    )
    rt = make_runtime(tmp_path, redis_url, body)
    feed = rt.settings.feed("kurier")
    assert poll_feed(rt, feed).enqueued == 2
    # The page was not fully processed: its hash is not stored, or the next poll would skip it.
    assert rt.feed_states.get("kurier").body_hash is None
    drain(rt)
    assert poll_feed(rt, feed, force=True).enqueued == 2
    assert rt.feed_states.get("kurier").body_hash is not None
    drain(rt)
    assert poll_feed(rt, feed, force=True).status == "unchanged"
    assert sorted(alerted(site)) == sorted(
        [
            "Hafen Hamburg meldet Rekordumschlag im ersten Halbjahr",
            "Werft in Husum sichert 300 Arbeitsplätze",
            "Start-up aus Kiel baut Übersetzungsdienst für Reedereien",
            "Krabbenfischer klagen über niedrige Preise an der Küste",
        ]
    )
    assert set(alerted(site).values()) == {1}
    assert set(gets(site, "/nk/wirtschaft/").values()) == {3, 1}  # the listing thrice, each page once
    # Full text: the Kiel story names DeepSeek only in its body.
    assert list(payloads(site, "deepseek")) == ["Start-up aus Kiel baut Übersetzungsdienst für Reedereien"]


def test_a_poll_before_the_worker_neither_refetches_pages_nor_queues_twice(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    body = config(site, f'  - {{name: fp, url: "{site.url("/fp/nachrichten")}", type: html, articles: true}}')
    rt = make_runtime(tmp_path, redis_url, body)
    feed = rt.settings.feed("fp")
    assert poll_feed(rt, feed).enqueued == 4
    site.routes["/fp/nachrichten"] = Response(finanzpost_site()["/fp/nachrichten"][0] + b"<!-- changed -->")
    assert poll_feed(rt, feed, force=True).enqueued == 0  # its items are on the queue already
    drain(rt)
    assert set(alerted(site).values()) == {1} and len(alerted(site)) == 4
    assert set(gets(site, "/fp/unternehmen/").values()) | set(gets(site, "/fp/politik/").values()) == {1}
    deepseek = payloads(site, "deepseek")
    assert list(deepseek) == [
        "Chipkonzern meldet Rekordumsatz dank KI-Servern"
    ]  # only its body names DeepSeek
    chip = deepseek["Chipkonzern meldet Rekordumsatz dank KI-Servern"]
    assert chip["author"] == "Katrin Vogel, Jens Ohm" and chip["published"] == "2025-08-15T15:20:00Z"
    assert (
        payloads(site, "everything")["Bundesregierung plant neue Förderung für Rechenzentren"]["published"]
        is None
    )


def test_robots_txt_is_honoured_cached_and_reported(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    site.routes["/robots.txt"] = Response(
        b"User-agent: *\nDisallow: /nk/\n\nUser-agent: newswatch\nDisallow: /fp/\nDisallow: /nk/wirtschaft/werft\n",
        headers={"Content-Type": "text/plain"},
    )
    body = config(
        site,
        f"""  - {{name: kurier, url: "{site.url("/nk/wirtschaft/")}", type: html, articles: true}}
  - {{name: fp, url: "{site.url("/fp/nachrichten")}", type: html}}
  - {{name: fp-anyway, url: "{site.url("/fp/nachrichten")}", type: html, robots: ignore}}""",
    )
    rt = make_runtime(tmp_path, redis_url, body)
    for name in ("kurier", "fp", "fp-anyway"):
        poll_feed(rt, rt.settings.feed(name))
    assert not gets(site, "/nk/wirtschaft/werft")  # disallowed for every agent: never fetched
    kurier = feed_status(rt, "kurier")
    assert kurier["error"] is None and "disallowed by robots.txt" in kurier["warning"]
    assert feed_status(rt, "fp")["error"] == f"disallowed by robots.txt: {site.url('/fp/nachrichten')}"
    assert feed_status(rt, "fp-anyway")["error"] is None  # the operator's choice
    assert gets(site, "/robots.txt")["/robots.txt"] == 1  # once per host, then from Redis
    assert 86000 < rt.redis.ttl(keys.robots(f"http://127.0.0.1:{site.httpd.server_address[1]}")) <= 86400
    drain(rt)
    assert "Werft in Husum sichert 300 Arbeitsplätze" in alerted(site)  # as listed: nothing lost


class _Envelopes(Transport):
    def __init__(self, sink: list[str]) -> None:
        super().__init__()
        self.sink = sink

    def capture_envelope(self, envelope: Any) -> None:
        self.sink.append(json.dumps([item.get_event() for item in envelope.items], default=str))


def test_a_layout_change_is_warned_about_once(
    tmp_path: Path, redis_url: str, site: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    sentry_sdk.init(dsn="http://key@127.0.0.1:9/1", transport=_Envelopes(events))
    try:
        body = config(site, f'  - {{name: eulerpool, url: "{site.url("/de/news")}", type: html}}')
        rt = make_runtime(tmp_path, redis_url, body)
        feed = rt.settings.feed("eulerpool")
        assert poll_feed(rt, feed).items == 6
        redesign = b"<html><body><div id='app'></div><script src='/bundle.js'></script></body></html>"
        with caplog.at_level(logging.WARNING, logger="worker.monitoring"):
            site.routes["/de/news"] = Response(redesign)
            poll_feed(rt, feed, force=True)
            site.routes["/de/news"] = Response(redesign + b" ")
            poll_feed(rt, feed, force=True)  # still nothing: the same episode
        assert feed_status(rt, "eulerpool")["warning"] == LAYOUT_WARNING
        warned = [r.getMessage() for r in caplog.records if r.name == "worker.monitoring"]
        assert warned == [f"feed=eulerpool {LAYOUT_WARNING}"]
        sentry_sdk.flush()
        assert len([e for e in events if LAYOUT_WARNING in e]) == 1
        site.routes["/de/news"] = Response(fixture_site()["/de/news"][0])
        poll_feed(rt, feed, force=True)
        assert feed_status(rt, "eulerpool")["warning"] is None
    finally:
        sentry_sdk.init()


def test_bad_pages_get_clear_messages_and_the_other_sources_go_on(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    site.routes["/huge"] = Response(b"<html><body>" + b"<p>Text</p>" * 200_000 + b"</body></html>")
    links = "".join(
        f'<li><a href="/arch/meldung-nummer-{n}-aus-dem-archiv-{10000 + n}">Meldung Nummer {n} aus dem Archiv</a></li>'
        for n in range(2000)
    )
    site.routes["/archiv"] = Response(f"<html><body><main><ul>{links}</ul></main></body></html>".encode())
    site.routes["/api"] = Response(
        b"<html><body>Wartungsarbeiten</body></html>", headers={"Content-Type": "text/html"}
    )
    site.routes["/api-error"] = Response(
        b'{"error": "invalid API key"}', headers={"Content-Type": "application/json"}
    )
    body = config(
        site,
        f"""  - {{name: huge, url: "{site.url("/huge")}", type: html}}
  - {{name: archiv, url: "{site.url("/archiv")}", type: html}}
  - {{name: api, url: "{site.url("/api")}", type: json}}
  - {{name: api-error, url: "{site.url("/api-error")}", type: json}}
  - {{name: eulerpool, url: "{site.url("/de/news")}", type: html}}""",
        everything=False,
    )
    rt = make_runtime(tmp_path, redis_url, body, polling="max_bytes: 1MB")
    for feed in rt.settings.feeds:
        poll_feed(rt, feed)
    assert feed_status(rt, "huge")["error"] == "response larger than 1MB"
    assert (
        feed_status(rt, "archiv")["warning"] == "the page links to 2000 articles; only the first 500 are read"
    )
    assert feed_status(rt, "api")["error"] == "not JSON: text/html"
    assert feed_status(rt, "api-error")["error"] == "the API answered an error: invalid API key"
    assert feed_status(rt, "eulerpool")["error"] is None and feed_status(rt, "eulerpool")["items_seen"] == 0
    drain(rt)
    assert feed_status(rt, "eulerpool")["items_seen"] == 6


def test_json_source_sends_its_headers_and_never_shows_the_key(
    tmp_path: Path, redis_url: str, site: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    api = {
        "data": [
            {
                "headline": "DeepSeek-Modell R2 verschoben",
                "realUrl": "https://eulerpool.example/de/news/4711",
                "datetime": 1755265860,
                "category": "Finanzen / KI",
            }
        ]
    }

    def answer(request: Request) -> Response:
        ok = request.headers.get("authorization") == "Bearer key-that-must-never-leak"
        data = api if ok else {"error": {"message": "unauthorized"}}
        return Response(json.dumps(data).encode(), headers={"Content-Type": "application/json"})

    site.routes["/api/news"] = answer
    body = config(
        site,
        f"""  - name: eulerpool-api
    type: json
    url: "{site.url("/api/news")}"
    headers: {{Authorization: "Bearer ${{EULERPOOL_API_KEY:-}}"}}
    map: {{items: data, title: headline, link: "realUrl || url", published: datetime, categories: category}}""",
    )
    path = tmp_path / "newswatch.yaml"
    rt = make_runtime(tmp_path, redis_url, body)
    from worker.config import load_config

    rt.config = load_config(str(path), {"EULERPOOL_API_KEY": "key-that-must-never-leak"})
    with caplog.at_level(logging.DEBUG):
        assert poll_feed(rt, rt.settings.feed("eulerpool-api")).enqueued == 1
        drain(rt)
    (item,) = payloads(site, "deepseek").values()
    assert item["published"] == "2025-08-15T13:51:00Z" and item["categories"] == ["Finanzen", "KI"]
    assert "key-that-must-never-leak" not in json.dumps(status_data(rt)) + caplog.text


def test_article_fetches_are_guarded_and_stay_on_the_site(
    tmp_path: Path, redis_url: str, site: LocalServer
) -> None:
    """The URL guard applies to every article page, and a story link that redirects to another
    site is not followed; either way the item goes on as listed."""
    site.routes["/de/news/krypto/ethereum-scheitert-erneut-an-widerstandszone-4709"] = Response(
        b"", 302, {"Location": "http://localhost:9/elsewhere"}
    )
    body = config(site, f'  - {{name: eulerpool, url: "{site.url("/de/news")}", type: html, articles: true}}')
    rt = make_runtime(tmp_path, redis_url, body)
    feed = rt.settings.feed("eulerpool")
    items = [i for i in _listing_items(rt, site)]
    pages = articles.page_fetcher(rt, feed)
    ready, held, failed = articles.read_pages(rt, feed, pages, items[:2], {})
    assert [r for _, r in failed] == ["article page redirected off the site, to localhost: not followed"]
    assert len(ready) == 2 and not held
    guarded = Runtime(rt.config, rt.redis)
    guarded.http = client(allow_private=False)  # type: ignore[misc]
    unguarded_robots = feed.model_copy(update={"robots": "ignore"})  # robots.txt would be refused too
    pages = articles.page_fetcher(guarded, unguarded_robots, in_redis=False)
    ready, held, failed = articles.read_pages(guarded, unguarded_robots, pages, items[:1], {})
    assert len(ready) == 1 and failed[0][1].startswith("refused: 127.0.0.1 resolves to a loopback address")


def _listing_items(rt: Runtime, site: LocalServer) -> list[Any]:
    from datetime import UTC, datetime

    from worker.sources import Page, read_items

    body, content_type = fixture_site()["/de/news"]
    url = site.url("/de/news")
    return read_items(rt.settings.feed("eulerpool"), Page(url, body, content_type), datetime.now(UTC)).items

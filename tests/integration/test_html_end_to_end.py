"""End to end for news sites without a feed: `newswatch scheduler` and a `newswatch worker`
process, the fixture site and our two layouts served from 127.0.0.1, a webhook receiver.
Exactly the article items, each alerted once across polls, each article page fetched once,
full-text alerts, dates and tags from the article pages, and the layout-change warning."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, LocalServer, Response, stop_processes, wait_for
from tests.integration.test_end_to_end import start
from tests.sites import finanzpost_site, fixture_site, kurier_site, serve

STORIES = {
    "eulerpool": {
        "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
        "Ethereum scheitert erneut an kritischer Widerstandszone",
        "Personalabbau trifft Manager und Führungskräfte mit voller Wucht",
        "Infineon-Aktie gefragt: Bernstein sieht weiter Kurspotenzial",
        "Künstliche Intelligenz könnte den Leerstand von Büroimmobilien erhöhen",
        "iPhone 17e mit Dynamic Island und A19-Chip erwartet",
    },
    "finanzpost": {
        "Chipkonzern meldet Rekordumsatz dank KI-Servern",
        "Dax schließt mit leichtem Plus – Anleger warten auf die Fed",
        "Reederei bestellt zwölf neue Containerschiffe in Südkorea",
        "Bundesregierung plant neue Förderung für Rechenzentren",
    },
    "kurier": {
        "Hafen Hamburg meldet Rekordumschlag im ersten Halbjahr",
        "Werft in Husum sichert 300 Arbeitsplätze",
        "Start-up aus Kiel baut Übersetzungsdienst für Reedereien",
        "Krabbenfischer klagen über niedrige Preise an der Küste",
    },
}
DEEPSEEK = {  # the fixture's story by its tag line; the other two name DeepSeek only in their text
    "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
    "Chipkonzern meldet Rekordumsatz dank KI-Servern",
    "Start-up aus Kiel baut Übersetzungsdienst für Reedereien",
}


def test_news_sites_without_feeds_end_to_end(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    serve(http_server, {**fixture_site(), **finanzpost_site(), **kurier_site()})
    http_server.routes["/hook"] = Response(b"ok")
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 1s, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s], timeout: 3s}}
feeds:
  - {{name: eulerpool, url: "{http_server.url("/de/news")}", type: html, articles: true}}
  - {{name: finanzpost, url: "{http_server.url("/fp/nachrichten")}", type: html, articles: true}}
  - {{name: kurier, url: "{http_server.url("/nk/wirtschaft/")}", type: html, articles: true, max_articles: 3}}
topics:
  KI: [KI, DeepSeek]
alerts:
  - {{name: everything, query: 'NOT zzzqqqxxx', channels: [hook]}}
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{http_server.url("/hook")}"}}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    processes = [
        start(["scheduler"], str(config), env, tmp_path / "scheduler.log"),
        start(["worker", "--name", "w1"], str(config), env, tmp_path / "w1.log"),
    ]

    def alerted(alert: str) -> collections.Counter[str]:
        bodies = [r.json()["data"] for r in http_server.received("/hook")]
        return collections.Counter(b["item"]["title"] for b in bodies if b["alert"] == alert)

    def status() -> dict[str, dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "worker.cli", "status", "--json", "--config", str(config)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True,
        ).stdout  # fmt: skip
        return {f["name"]: f for f in json.loads(out)["feeds"]}

    try:
        everything = set().union(*STORIES.values())
        wait_for(lambda: set(alerted("everything")) == everything, timeout=90)
        wait_for(lambda: set(alerted("deepseek")) == DEEPSEEK, timeout=30)
        listing_polls = len(http_server.received("/de/news"))
        wait_for(lambda: len(http_server.received("/de/news")) >= listing_polls + 3, timeout=30)
        assert set(alerted("everything").values()) == {1}, alerted("everything")
        assert set(alerted("deepseek").values()) == {1}, alerted("deepseek")
        listings = {"/de/news", "/fp/nachrichten", "/nk/wirtschaft/"}
        article_paths = [
            p for p in (*fixture_site(), *finanzpost_site(), *kurier_site()) if p not in listings
        ]
        assert len(article_paths) == 14
        fetched = collections.Counter(r.path.split("?")[0] for r in http_server.received())
        assert {p: fetched[p] for p in article_paths} == dict.fromkeys(article_paths, 1)

        hooks = [r.json()["data"] for r in http_server.received("/hook")]
        deepseek = next(b["item"] for b in hooks if b["item"]["title"].startswith("DeepSeek verschiebt"))
        assert deepseek["published"] == "2025-08-15T13:51:00Z"
        assert deepseek["categories"] == ["Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"]
        assert {b["item"]["feed"] for b in hooks if b["item"]["title"] in STORIES["kurier"]} == {"kurier"}

        # The Nordsee-Kurier redesigns its page: the next polls find no articles.
        http_server.routes["/nk/wirtschaft/"] = Response(b"<html><body><div id='root'></div></body></html>")
        wait_for(
            lambda: status()["kurier"]["warning"] == "no items found on the page: has its layout changed?"
        )
        assert status()["eulerpool"]["error"] is None and status()["eulerpool"]["warning"] is None
        wait_for(lambda: all(p.poll() is None for p in processes), timeout=1)
    finally:
        stop_processes(*processes)
    logs = "".join((tmp_path / f"{n}.log").read_text() for n in ("scheduler", "w1"))
    assert "Traceback" not in logs, logs[-3000:]
    assert logs.count("feed=kurier no items found on the page") == 1, logs[-3000:]

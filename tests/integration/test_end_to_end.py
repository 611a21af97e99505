"""End to end, as users run it: `newswatch scheduler` and two `newswatch worker` processes against
local feeds (RSS 2.0, Atom, RDF in ISO-8859-1) and a local webhook receiver. Each expected alert
arrives exactly once across repeated polls and feed changes, with a valid signature."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

from standardwebhooks import Webhook

from tests.conftest import ROOT, LocalServer, Response, rss, stop_processes, wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def atom(entries: list[tuple[str, str, str]]) -> bytes:
    body = "".join(
        f"<entry><id>{eid}</id><title>{title}</title><link href='https://atom.example/{eid}'/>"
        f"<updated>2026-11-28T10:00:00Z</updated><content type='html'>{content}</content></entry>"
        for eid, title, content in entries
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>Atom</title><id>urn:atom</id><updated>2026-11-28T10:00:00Z</updated>{body}</feed>"
    ).encode()


def rdf_latin1(items: list[tuple[str, str]]) -> bytes:
    body = "".join(
        f"<item rdf:about='https://rdf.example/{slug}'><title>{title}</title>"
        f"<link>https://rdf.example/{slug}</link><description>{title}</description></item>"
        for slug, title in items
    )
    text = (
        "<?xml version='1.0' encoding='iso-8859-1'?>"
        "<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#' xmlns='http://purl.org/rss/1.0/'>"
        f"<channel rdf:about='https://rdf.example/'><title>RDF</title><link>https://rdf.example/</link>"
        f"<description>d</description></channel>{body}</rdf:RDF>"
    )
    return text.encode("iso-8859-1")


def start(args: list[str], config: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args, "--config", config],
        stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
    )  # fmt: skip


def test_scheduler_and_two_workers_deliver_each_alert_exactly_once(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    deepseek = {"title": "DeepSeek verschiebt Modellstart", "guid": "r1", "link": "https://rss.example/1"}
    deepseek |= {"description": "&lt;p&gt;Huawei-Chips&lt;/p&gt;", "category": "Finanzen / KI / DeepSeek"}
    rss_items = [
        deepseek,
        {"title": "Ethereum scheitert an 3.300 Dollar", "guid": "r2", "link": "https://rss.example/2"},
    ]
    http_server.routes["/rss"] = Response(rss(rss_items), headers={"Content-Type": "application/rss+xml"})
    http_server.routes["/atom"] = Response(atom([("a1", "Nvidia und DeepSeek", "&lt;b&gt;KI&lt;/b&gt;")]))
    http_server.routes["/rdf"] = Response(
        rdf_latin1([("grossbank", "Großbank prüft Künstliche Intelligenz"), ("kiel", "Kieler Woche")]),
        headers={"Content-Type": "application/rdf+xml"},
    )
    config = tmp_path / "newswatch.yaml"
    config.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 1s, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s, 1s], timeout: 3s}}
feeds:
  - {{name: rss, url: "{http_server.url("/rss")}"}}
  - {{name: atom, url: "{http_server.url("/atom")}"}}
  - {{name: rdf, url: "{http_server.url("/rdf")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
  - {{name: grossbank-ki, query: 'Grossbank AND "künstliche Intelligenz"', channels: [hook]}}
  - {{name: ki, query: 'KI -Ethereum', feeds: [atom, rdf], channels: [hook]}}
channels:
  hook: {{type: webhook, url: "{http_server.url("/hook")}", secret: "{SECRET}"}}
""",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("REDIS_URL", None)
    processes = [
        start(["scheduler"], str(config), env, tmp_path / "scheduler.log"),
        start(["worker", "--name", "w1"], str(config), env, tmp_path / "w1.log"),
        # w2 runs each job in a forked work horse (with the hooks every forked child gets)
        start(["worker", "--name", "w2", "--fork"], str(config), env, tmp_path / "w2.log"),
    ]
    try:
        expected_first = {
            ("deepseek", "DeepSeek verschiebt Modellstart"),
            ("deepseek", "Nvidia und DeepSeek"),
            ("ki", "Nvidia und DeepSeek"),
            ("grossbank-ki", "Großbank prüft Künstliche Intelligenz"),
        }
        wait_for(lambda: len(http_server.received("/hook")) >= len(expected_first), timeout=60)
        # Several more polls of unchanged feeds; then the feeds change: reorder, one new story,
        # and the RSS feed re-issues the DeepSeek story under a new GUID with a tracking link.
        polls_before = len(http_server.received("/rss"))
        wait_for(lambda: len(http_server.received("/rss")) >= polls_before + 3, timeout=30)
        http_server.routes["/rss"] = Response(
            rss(
                [
                    {"title": "Huawei meldet DeepSeek-Deal", "guid": "r3", "link": "https://rss.example/3"},
                    rss_items[1],
                    {**rss_items[0], "guid": "r1-new", "link": "https://rss.example/1?utm_source=feed"},
                ]
            )
        )
        expected = expected_first | {("deepseek", "Huawei meldet DeepSeek-Deal")}
        wait_for(lambda: len(http_server.received("/hook")) >= len(expected), timeout=60)
        polls_after = len(http_server.received("/rss"))
        wait_for(lambda: len(http_server.received("/rss")) >= polls_after + 3, timeout=30)
        wait_for(lambda: all(p.poll() is None for p in processes), timeout=1)

        hooks = http_server.received("/hook")
        received = collections.Counter(
            (r.json()["data"]["alert"], r.json()["data"]["item"]["title"]) for r in hooks
        )
        assert set(received) == expected
        assert all(count == 1 for count in received.values()), received
        for request in hooks:
            Webhook(SECRET).verify(request.body, request.headers)
        assert len({r.headers["webhook-id"] for r in hooks}) == len(hooks)

        status = subprocess.run(
            [sys.executable, "-m", "worker.cli", "status", "--json", "--config", str(config)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True,
        )  # fmt: skip
        assert '"error": null' in status.stdout and '"error_count": 0' in status.stdout
        feeds = json.loads(status.stdout)["feeds"]
        assert all(f["next_poll"] and f["next_poll"] >= f["last_poll"] for f in feeds), feeds
    finally:
        stop_processes(*processes)
    logs = "".join((tmp_path / f"{n}.log").read_text() for n in ("scheduler", "w1", "w2"))
    assert "Traceback" not in logs, logs[-3000:]

"""The `newswatch` command as users call it: run (supervised, Ctrl-C), poll, test-alert, health."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from standardwebhooks import Webhook

from tests.conftest import EULERPOOL_RSS, ROOT, LocalServer, Response, alive, children_of, wait_for
from tests.integration.mail_servers import start_mail_server

SAMPLE_TITLE = "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips"

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def write_config(tmp_path: Path, redis_url: str, server: LocalServer, smtp_port: int = 9) -> str:
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 2s, jitter: 0%, max_age: off, allow_private_addresses: true}}
feeds:
  - {{name: eulerpool, url: "{server.url("/eulerpool.rss")}", tags: [Finanzen]}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook, console]}}
channels:
  hook: {{type: webhook, url: "{server.url("/hook")}", secret: "{SECRET}"}}
  console: {{type: log}}
  down: {{type: webhook, url: "http://127.0.0.1:9/hook"}}
  mail: {{type: email, to: [ops@example.org], from: newswatch@example.org,
          smtp: {{host: 127.0.0.1, port: {smtp_port}, starttls: false}}}}
""",
        encoding="utf-8",
    )
    return str(path)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NEWSWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_run_delivers_and_ctrl_c_stops_everything(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(b"ok")
    config = write_config(tmp_path, redis_url, http_server)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    unhealthy = cli("health", "--config", config)
    assert unhealthy.returncode == 1 and "no scheduler heartbeat" in unhealthy.stdout  # nothing runs yet
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", "--workers", "2", "--config", config],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: len(http_server.received("/hook")) >= 1, timeout=60)
        children = wait_for(lambda: len(children_of(run.pid)) == 3 and children_of(run.pid), timeout=30)
        health = wait_for(lambda: (h := cli("health", "--config", config)).returncode == 0 and h, timeout=30)
        assert health.stdout.strip() == "healthy"
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=30) == 0
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10)
    finally:
        if run.poll() is None:
            run.kill()
    output = (tmp_path / "run.log").read_text()
    assert "ALERT alert=deepseek feed=eulerpool" in output
    assert "Traceback" not in output
    assert len(http_server.received("/hook")) == 1
    assert cli("health", "--config", config).returncode == 1  # nothing runs any more


def test_poll_enqueues_and_names_unknown_feeds(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    config = write_config(tmp_path, redis_url, http_server)
    first = cli("poll", "--config", config)
    assert first.returncode == 0, first.stderr
    assert "eulerpool: new, 7 items, 7 new" in first.stdout
    assert cli("poll", "--feed", "eulerpool", "--config", config).stdout.startswith("eulerpool: unchanged")
    unknown = cli("poll", "--feed", "nope", "--config", config)
    assert unknown.returncode == 2 and "nope" in unknown.stderr


def test_test_alert_reports_the_outcome(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    http_server.routes["/hook"] = Response(b"ok")
    config = write_config(tmp_path, redis_url, http_server)
    ok = cli("test-alert", "hook", "--config", config)
    assert ok.returncode == 0, ok.stderr
    assert "delivered (HTTP 200)" in ok.stdout
    (request,) = http_server.received("/hook")
    assert (
        Webhook(SECRET).verify(request.body, request.headers)["data"]["item"]["title"].startswith("DeepSeek")
    )

    console = cli("test-alert", "console", "--config", config)
    assert console.returncode == 0 and "ALERT alert=newswatch-test" in console.stdout

    down = cli("test-alert", "down", "--config", config)
    assert down.returncode == 1 and "connection refused" in down.stdout
    assert cli("test-alert", "slak", "--config", config).returncode == 2


def test_test_alert_by_email_prints_the_smtp_reply(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    mail = start_mail_server("plain", tmp_path)
    try:
        config = write_config(tmp_path, redis_url, http_server, smtp_port=mail.port)
        result = cli("test-alert", "mail", "--config", config)
    finally:
        mail.stop()
    assert result.returncode == 0, result.stderr
    assert "delivered (SMTP 250 Message accepted for delivery)" in result.stdout
    (received,) = mail.handler.received
    assert received.message["Subject"] == "[newswatch] newswatch-test: " + SAMPLE_TITLE


def test_commands_say_clearly_when_redis_is_unreachable(tmp_path: Path, http_server: LocalServer) -> None:
    config = write_config(tmp_path, "redis://127.0.0.1:9/0", http_server)
    result = cli("status", "--config", config)
    assert result.returncode == 1
    assert "cannot reach Redis" in result.stderr and "Traceback" not in result.stderr
    assert cli("health", "--config", config).returncode == 1


def test_make_demo_shows_the_deepseek_alert_offline() -> None:
    """`make demo` runs scripts/demo.py: its own feed server and redis-server, nothing else."""
    result = subprocess.run(
        [sys.executable, "scripts/demo.py"], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NEWSWATCH_CONFIG")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ALERT alert=deepseek feed=eulerpool item=" in result.stdout
    assert f'title="{SAMPLE_TITLE}"' in result.stdout
    assert "published=2025-08-15T13:51:00Z" in result.stdout
    # What the README says the demo shows is what it shows: two alerts for the one story, from
    # the feed, then the same two from the news site without a feed (a database of its own).
    alerts = [line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("ALERT ")]
    assert alerts == [
        ["alert=deepseek", "feed=eulerpool"], ["alert=china-chips", "feed=eulerpool"],
        ["alert=deepseek", "feed=eulerpool-site"], ["alert=china-chips", "feed=eulerpool-site"],
    ]  # fmt: skip
    assert "demo: 2 alerts (deepseek, china-chips) for the one DeepSeek story" in result.stdout
    assert "demo: 2 alerts (deepseek, china-chips) from the site's article pages" in result.stdout
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert "prints two alerts for its DeepSeek story on the console, `deepseek`" in readme
    assert "prints the same story's alerts from its HTML article page" in readme
    # The same story from the news site without a feed: its HTML article page's date and tag line.
    (site_alert,) = [
        line for line in result.stdout.splitlines() if "alert=deepseek feed=eulerpool-site" in line
    ]
    assert f'title="{SAMPLE_TITLE}"' in site_alert and "published=2025-08-15T13:51:00Z" in site_alert
    assert "link=http://127.0.0.1:" in site_alert and "/de/news/ki/deepseek-verschiebt" in site_alert
    assert "topics=DeepSeek,Finanzen,Halbleiter,Huawei,KI,Nvidia" in site_alert

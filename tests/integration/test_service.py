"""Running it as a service: container files, metrics, Sentry, health, logs, rq-dashboard in a
real browser. The Dockerfile is linted with hadolint here; `make image-check` builds and runs the
image, and test_compose.py reads the compose file with podman-compose's parser."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    EULERPOOL_RSS,
    ROOT,
    LocalServer,
    RedisServer,
    Request,
    Response,
    free_port,
    stop_processes,
    wait_for,
)
from tests.integration.helpers import drain
from worker.polling import poll_feed

SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"
URL_PASSWORD = "url-pass-never-leaks-42"
ARTIFACTS = ROOT / "tests" / "artifacts"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("FROM ") >= 2 and "-slim" in text  # multi-stage, slim base
    assert re.search(r"^USER \d+", text, re.M)  # non-root
    assert "HEALTHCHECK" in text and '"newswatch", "health"' in text
    assert "pip uninstall --yes pip" in text


def service_config(tmp_path: Path, redis_url: str, server: LocalServer, extra: str = "") -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
polling: {{interval: 1s, jitter: 0%, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s], timeout: 2s}}
{extra}
feeds:
  - {{name: eulerpool, url: "{server.url("/eulerpool.rss")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "http://alerts:{URL_PASSWORD}@127.0.0.1:{server.httpd.server_address[1]}/hook", secret: "{SECRET}"}}
""",
        encoding="utf-8",
    )
    return path


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN")} | {
        "PYTHONUNBUFFERED": "1"
    }
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
        cwd=ROOT, env=base | (env or {}),
    )  # fmt: skip


def test_metrics_are_scraped_from_the_scheduler(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    body = EULERPOOL_RSS.read_bytes()
    http_server.routes["/eulerpool.rss"] = lambda request: (
        Response(status=304, headers={"ETag": '"v1"'})
        if request.headers.get("if-none-match") == '"v1"'
        else Response(body, headers={"ETag": '"v1"'})
    )
    http_server.routes["/hook"] = Response(status=500)
    port = free_port()
    config = service_config(tmp_path, redis_url, http_server, f"metrics: {{port: {port}}}")
    scheduler = spawn(["scheduler", "--config", str(config)], tmp_path / "scheduler.log")
    worker = spawn(["worker", "--config", str(config)], tmp_path / "worker.log")
    try:

        def scrape() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return ""

        text = wait_for(
            lambda: 'outcome="retried"' in scrape() and 'outcome="unchanged"' in scrape() and scrape(),
            timeout=60,
        )
    finally:
        stop_processes(scheduler, worker)
    for expected in (
        'newswatch_polls_total{feed="eulerpool",outcome="new"} 1.0',
        'newswatch_fetched_bytes_total{feed="eulerpool"}',
        'newswatch_fetch_seconds_bucket{feed="eulerpool",le="0.5"}',
        'newswatch_items_total{feed="eulerpool",kind="new"} 7.0',
        'newswatch_deliveries_total{alert="deepseek",channel="hook",outcome="retried"}',
        'newswatch_queue_jobs{queue="newswatch-deliveries",state="queued"}',
    ):
        assert expected in text, expected
    assert re.search(r'newswatch_not_modified_total\{feed="eulerpool"\} [1-9]', text)


def _envelope_items(request: Request) -> list[str]:
    body = request.body
    encoding = request.headers.get("content-encoding", "")
    if encoding == "gzip":
        body = gzip.decompress(body)
    elif encoding == "deflate":
        body = zlib.decompress(body)
    elif encoding == "br":  # pragma: no cover - only if brotli is installed
        import brotli  # type: ignore[import-not-found]

        body = brotli.decompress(body)
    return body.decode("utf-8", "replace").splitlines()


def test_sentry_gets_failing_jobs_and_never_a_secret(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    sink = LocalServer()
    sink.routes["/api/1/envelope/"] = Response(b"{}")
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(status=500)
    http_server.routes["/broken.rss"] = Response(status=503)
    dsn = f"http://publickey@127.0.0.1:{sink.httpd.server_address[1]}/1"
    config = service_config(tmp_path, redis_url, http_server, "metrics: {port: 0}")
    text = config.read_text().replace(
        "retries: [1s]", "retries: []"
    )  # RQ's integration reports final failures
    config.write_text(
        text.replace("feeds:\n", f'feeds:\n  - {{name: broken, url: "{http_server.url("/broken.rss")}"}}\n')
    )
    try:
        poll = spawn(["poll", "--config", str(config)], tmp_path / "poll.log", {"SENTRY_DSN": dsn})
        poll.wait(timeout=60)
        worker = spawn(
            ["worker", "--burst", "--config", str(config)], tmp_path / "worker.log", {"SENTRY_DSN": dsn}
        )
        worker.wait(timeout=60)
        lines = [line for r in sink.received("/api/1/envelope/") for line in _envelope_items(r)]
    finally:
        sink.close()
    everything = "\n".join(lines)
    events = [
        json.loads(line)
        for line in lines
        if line.startswith("{") and '"event_id"' in line and '"level"' in line
    ]
    messages = [json.dumps(e) for e in events]
    assert any("DeliveryError" in m and "webhook hook: HTTP 500" in m for m in messages), everything[:3000]
    assert any("feed broken: HTTP 503" in m for m in messages)
    assert any('"alert": "deepseek"' in m and '"channel": "hook"' in m for m in messages)  # tags
    assert any('"release": "newswatch@' in m for m in messages)
    assert SECRET not in everything and SECRET.removeprefix("whsec_") not in everything
    assert URL_PASSWORD not in everything


def test_feed_errors_reach_sentry_once_per_feed_and_kind_an_hour() -> None:
    from worker.monitoring import report_feed_error

    assert report_feed_error("storm", RuntimeError("HTTP 500"), now=1000.0)
    assert not report_feed_error("storm", RuntimeError("HTTP 502"), now=1500.0)  # same kind: http_5xx
    assert report_feed_error("storm", RuntimeError("timed out after 20s"), now=1500.0)
    assert report_feed_error("storm", RuntimeError("HTTP 500"), now=1000.0 + 3601)


def test_health_and_json_logs(
    tmp_path: Path, redis_server: RedisServer, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(b"ok")
    config = service_config(tmp_path, redis_url, http_server, "metrics: {port: 0}")

    def health() -> int:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "health", "--config", str(config)], capture_output=True, cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"}, timeout=60,
        ).returncode  # fmt: skip

    assert health() == 1  # nothing runs yet
    scheduler = spawn(
        ["scheduler", "--log-format", "json", "--config", str(config)], tmp_path / "scheduler.log"
    )
    worker = spawn(["worker", "--log-format", "json", "--config", str(config)], tmp_path / "worker.log")
    try:
        wait_for(lambda: health() == 0, timeout=60)
        redis_server.stop()
        try:
            assert health() == 1
        finally:
            redis_server.start()
        wait_for(lambda: health() == 0, timeout=60)
    finally:
        stop_processes(scheduler, worker)
    lines = (tmp_path / "scheduler.log").read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(p) for p in parsed)
    assert any("feed=eulerpool" in p["message"] for p in parsed)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browse(url: str, screenshot: Path | None = None) -> str:
    browser = chromium()
    assert browser, "chromium is not installed; `make test` installs it (scripts/ensure_chromium.sh)"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={ARTIFACTS / 'chromium-profile'}", "--virtual-time-budget=8000", "--window-size=1280,900",
    ]  # fmt: skip
    if screenshot:
        subprocess.run([browser, *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=90)
    result = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    return result.stdout


def test_dashboard_shows_our_queues_and_the_failed_delivery_in_a_browser(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    http_server.routes["/hook"] = Response(status=410)
    config = service_config(tmp_path, redis_url, http_server, "metrics: {port: 0}")
    rt = _runtime_from(config)
    poll_feed(rt, rt.settings.feeds[0])
    drain(rt)
    (failed_id,) = rt.deliveries_queue.failed_job_registry.get_job_ids()
    port = free_port()
    dashboard = spawn(
        ["dashboard", "--port", str(port), "--config", str(config)], tmp_path / "dashboard.log",
        {"NEWSWATCH_DASHBOARD_USER": "admin", "NEWSWATCH_DASHBOARD_PASSWORD": "pw"},
    )  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), timeout=30)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401  # basic auth
        base = f"http://admin:pw@127.0.0.1:{port}"
        overview = browse(f"{base}/", screenshot=ARTIFACTS / "dashboard-queues.png")
        failed = browse(
            f"{base}/0/view/jobs/newswatch-deliveries/failed/8/asc/1",
            screenshot=ARTIFACTS / "dashboard-failed.png",
        )
    finally:
        stop_processes(dashboard)
    assert "newswatch-deliveries" in overview and "newswatch-items" in overview
    assert failed_id in failed
    assert (ARTIFACTS / "dashboard-queues.png").stat().st_size > 10_000


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False


def _runtime_from(config: Path):  # type: ignore[no-untyped-def]
    from worker import jobs
    from worker.config import load_config
    from worker.runtime import connect

    rt = connect(load_config(str(config), {}))
    jobs.install(rt)
    return rt


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SENTRY_DSN", raising=False)


def test_status_table_for_people(tmp_path: Path, redis_url: str, http_server: LocalServer) -> None:
    http_server.routes["/eulerpool.rss"] = Response(status=500)
    config = service_config(tmp_path, redis_url, http_server, "metrics: {port: 0}")
    poll_feed(_runtime_from(config), _runtime_from(config).settings.feeds[0])
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--config", str(config)], capture_output=True, text=True,
        cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"COLUMNS": "160"}, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0
    assert "eulerpool" in result.stdout and "HTTP 500" in result.stdout and "newswatch-items" in result.stdout

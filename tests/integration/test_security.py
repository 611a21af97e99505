"""What an adversarial probe found (issue 20), each against real processes: hostile feed servers
on 127.0.0.1, the `newswatch` command as a subprocess, a local Sentry sink, a real SMTP server."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, LocalServer, Request, Response, free_port, rss
from tests.integration.helpers import make_runtime
from tests.integration.mail_servers import start_mail_server
from worker.commands import sample_item
from worker.pipeline import process_items

ESCAPES = ("\x1b", "\x9b", "\x07", "\u202e", "\u2066")


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SENTRY_DSN", "NEWSWATCH_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], capture_output=True, text=True, cwd=ROOT,
        env=base | (env or {}), timeout=timeout,
    )  # fmt: skip


def config_file(
    tmp_path: Path, redis_url: str, body: str, polling: str = "allow_private_addresses: true"
) -> str:
    path = tmp_path / "newswatch.yaml"
    path.write_text(
        f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1m, jitter: 0%, max_age: off, {polling}}}
delivery: {{retries: [], timeout: 3s}}
{body}
""",
        encoding="utf-8",
    )
    return str(path)


def assert_printable(*outputs: str) -> None:
    for output in outputs:
        for char in ESCAPES:
            assert char not in output, (repr(char), output[:2000])


# --- 2, 3: terminal escapes and rich markup from feed servers ------------------------------------


def test_escapes_from_feed_servers_reach_no_terminal_or_log(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """Headers with screen-clear, colour, OSC 8 hyperlinks and 8-bit CSI; categories with bidi
    overrides and isolates: `poll`, `status` and the logs (text and JSON) show them as escapes."""
    http_server.routes["/type"] = Response(
        b"<html></html>",
        headers={"Content-Type": "text/\x1b[2J\x1b[31mred\x9b31m\x1b]8;;http://evil.example/\x07"},
    )
    http_server.routes["/encoding"] = Response(
        rss([{"title": "x"}]), headers={"Content-Encoding": "\x1b]8;;http://evil.example/\x07click"}
    )
    http_server.routes["/bidi.rss"] = Response(
        rss([{"title": "DeepSeek \u202eevil", "guid": "b1", "category": "KI\u202egnp.exe\u2066\u009b31m"}])
    )
    config = config_file(
        tmp_path, redis_url,
        f"""
feeds:
  - {{name: type, url: "{http_server.url("/type")}"}}
  - {{name: encoding, url: "{http_server.url("/encoding")}"}}
  - {{name: bidi, url: "{http_server.url("/bidi.rss")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [console]}}
""",
    )  # fmt: skip
    text_poll = cli("poll", "--config", config)
    assert "type: error: not a feed: text/\\x1b[2j" in text_poll.stdout, text_poll.stdout
    assert "unsupported content encoding: \\x1b]8" in text_poll.stdout
    json_poll = cli("poll", "--log-format", "json", "--config", config)
    assert json_poll.stderr.strip(), "the JSON logs were to carry the errors"
    for line in json_poll.stderr.splitlines():
        assert_printable(json.loads(line)["message"])
    worker = cli("worker", "--burst", "--config", config)
    assert "ALERT alert=deepseek feed=bidi" in worker.stdout, worker.stdout + worker.stderr
    status = cli("status", "--config", config, env={"COLUMNS": "250"})
    status_json = cli("status", "--json", "--config", config)
    assert status.returncode == 0 and "\\x1b[2j" in status.stdout, status.stdout + status.stderr
    feeds = {f["name"]: f for f in json.loads(status_json.stdout)["feeds"]}
    assert feeds["type"]["error"].startswith("not a feed: text/\\x1b[2j")
    assert_printable(
        text_poll.stdout, text_poll.stderr, json_poll.stdout, json_poll.stderr,
        worker.stdout, worker.stderr, status.stdout, status.stderr, status_json.stdout,
    )  # fmt: skip


def test_status_shows_markup_from_a_server_as_text(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """`Content-Type: text/[/oops]` crashed `status` (rich.errors.MarkupError) and a `[link=…]`
    became a live hyperlink; rich is forced to style its output here, as on a terminal."""
    http_server.routes["/oops"] = Response(b"<html/>", headers={"Content-Type": "text/[/oops]"})
    http_server.routes["/link"] = Response(
        b"<html/>", headers={"Content-Type": "text/[link=http://evil.example/]click[/link]"}
    )
    config = config_file(
        tmp_path, redis_url,
        f"""
feeds:
  - {{name: oops, url: "{http_server.url("/oops")}"}}
  - {{name: link, url: "{http_server.url("/link")}"}}
""",
    )  # fmt: skip
    cli("poll", "--config", config)
    status = cli("status", "--config", config, env={"COLUMNS": "250", "FORCE_COLOR": "1", "TERM": "xterm"})
    assert status.returncode == 0, status.stderr
    assert "text/[/oops]" in status.stdout
    assert "text/[link=http://evil.example/]click[/link]" in status.stdout
    assert "\x1b]8;" not in status.stdout  # no OSC 8 hyperlink
    assert "\x1b[" in status.stdout  # rich did style the table: the check above means something


# --- 4: Sentry ------------------------------------------------------------------------------------

SMTP_PASSWORD = 'pa\\ss"word-never-leaks'
HOOK_TOKEN = "T0001/B0002/XoXoTokenNeverLeaks42"


def test_sentry_gets_no_secret_in_any_spelling(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    """A password holding `\\` and `"` (JSON and repr spell it differently) and a webhook whose
    URL path is its token, both in frame variables of the exception events Sentry gets."""
    sink = LocalServer()
    sink.routes["/api/1/envelope/"] = Response(b"{}")
    http_server.routes["/feed.rss"] = Response(rss([{"title": "DeepSeek", "guid": "s1"}]))
    http_server.routes[f"/services/{HOOK_TOKEN}"] = Response(status=500)
    config = config_file(
        tmp_path, redis_url,
        f"""
feeds:
  - {{name: f, url: "{http_server.url("/feed.rss")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook, mail]}}
channels:
  hook: {{type: webhook, url: "{http_server.url("/services/" + HOOK_TOKEN)}"}}
  mail:
    type: email
    to: [ops@example.org]
    from: newswatch@example.org
    smtp: {{host: 127.0.0.1, port: {free_port()}, starttls: false, username: alerts, password: "${{SMTP_PASSWORD}}"}}
""",
    )  # fmt: skip
    env = {
        "SENTRY_DSN": f"http://publickey@127.0.0.1:{sink.httpd.server_address[1]}/1",
        "SMTP_PASSWORD": SMTP_PASSWORD,
    }
    try:
        assert cli("poll", "--config", config, env=env).returncode == 0
        cli("worker", "--burst", "--config", config, env=env)
        bodies = [_envelope(r) for r in sink.received("/api/1/envelope/")]
    finally:
        sink.close()
    events = [json.loads(line) for body in bodies for line in body.splitlines() if '"exception"' in line]
    assert len(events) >= 2, bodies  # both deliveries failed for good and were reported
    frames = [f for e in events for v in e["exception"]["values"] for f in v["stacktrace"]["frames"]]
    assert any("***" in json.dumps(f.get("vars", {})) for f in frames)  # the variables were there, scrubbed
    everything = "\n".join(bodies)
    strings = "\n".join(_strings(events))
    for secret in (SMTP_PASSWORD, HOOK_TOKEN):
        for spelling in (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]):
            assert spelling not in everything and spelling not in strings, spelling
    assert "XoXoToken" not in everything  # not even a part of the token, cut off by Sentry's limits


def _envelope(request: Request) -> str:
    gzipped = request.headers.get("content-encoding") == "gzip"
    return (gzip.decompress(request.body) if gzipped else request.body).decode("utf-8", "replace")


def _strings(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


# --- 6, 7, 8, 9: what check-config refuses, and what it never prints -----------------------------


def test_check_config_refuses_what_the_fetcher_would(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('feeds:\n  - {name: octal, url: "http://0177.0.0.1:8000/feed"}\n', encoding="utf-8")
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "feeds[0].url: not a URL newswatch can fetch: Invalid IPv4 address" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    scheduler = cli("scheduler", "--config", str(path))  # refused the same way, not crashed at start
    assert scheduler.returncode == 2 and "Traceback" not in scheduler.stderr


# 628 bytes, as in the issue: nine levels of nine aliases, 9**9 values once expanded.
ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(
            f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ALIAS_BOMB, "aliases (*name) would expand the document by more than 100000 values"),
        ("feeds: " + "[" * 5000 + "]" * 5000, "line 1, column 57: nested deeper than 50 levels"),
        (
            "alerts: [{name: a, query: '" + "(" * 1000 + "x" + ")" * 1000 + "'}]",
            "alerts[0].query: query does not parse: nested more than 50 levels deep",
        ),
        (
            "alerts: [{name: a, query: '" + "NOT " * 1000 + "x'}]",
            "alerts[0].query: query does not parse: nested more than 50 levels deep",
        ),
        ("topics: {T: ['" + "(" * 5000 + "x" + ")" * 5000 + "']}", "topics: topic 'T': nested more than 50"),
    ],
    ids=["alias-bomb", "nested-brackets", "nested-parentheses", "nested-not", "nested-topic"],
)
def test_config_limits_refuse_bombs_with_a_clear_message(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(text, encoding="utf-8")
    if text == ALIAS_BOMB:
        assert len(text.encode()) <= 628
    result = cli("check-config", "--config", str(path), timeout=30)
    assert result.returncode == 2, result.stdout
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "RecursionError" not in result.stderr


def test_check_config_never_prints_a_value_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
polling: {timeout: '${SMTP_PASSWORD}', interval: 'five minutes', max_bytes: '${SIZE}'}
alerts:
  - {name: a, query: '${QUERY}', channels: ['${CHANNEL}']}
""",
        encoding="utf-8",
    )
    env = {"SMTP_PASSWORD": 'hunter2\\"pw', "SIZE": "lots", "QUERY": "hunter3 )", "CHANNEL": "hunter4"}
    result = cli("check-config", "--config", str(path), env=env)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    for value in ("hunter2", "lots", "hunter3", "hunter4"):
        assert value not in output, output
    assert "polling.timeout: '${SMTP_PASSWORD}' is not a duration" in output
    assert "polling.max_bytes: '${SIZE}' is not a size" in output
    assert "alerts[0].query: invalid value (written '${QUERY}'; not shown" in output
    assert "alerts[0].channels[0]: unknown channel '${CHANNEL}'" in output
    assert "polling.interval: 'five minutes' is not a duration" in output  # written in the file: quoted


def test_an_invalid_sentry_dsn_is_a_config_error(tmp_path: Path, redis_url: str) -> None:
    config = config_file(tmp_path, redis_url, "")
    bad = {"SENTRY_DSN": "https://sentry.example.invalid/1"}  # no public key; parsed, never resolved
    check = cli("check-config", "--config", config, env=bad)
    assert check.returncode == 2
    assert "sentry.dsn: not a Sentry DSN" in check.stderr and "sentry.example.invalid" not in check.stderr
    status = cli("status", "--config", config, env=bad)
    assert status.returncode == 2 and "BadDsn" not in status.stderr and "Traceback" not in status.stderr


# --- 10 and issue 17.3: SMTP under the URL guard, refusals that read as refusals ------------------

REFUSAL = "refused: 127.0.0.1 resolves to a loopback address (polling.allow_private_addresses is off)"


def test_the_url_guard_covers_smtp_and_says_refused(
    tmp_path: Path, redis_url: str, http_server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    mail = start_mail_server("plain", tmp_path)
    http_server.routes["/hook"] = Response(b"ok")
    body = f"""
feeds:
  - {{name: local, url: "{http_server.url("/feed")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek, channels: [hook, mail]}}
channels:
  hook: {{type: webhook, url: "{http_server.url("/hook")}"}}
  mail: {{type: email, to: [ops@example.org], from: newswatch@example.org,
          smtp: {{host: 127.0.0.1, port: {mail.port}, starttls: false}}}}
"""
    config = config_file(tmp_path, redis_url, body, polling="allow_private_addresses: false")
    try:
        hook = cli("test-alert", "hook", "--config", config)
        email = cli("test-alert", "mail", "--config", config)
        check = cli("check-config", "--config", config)
        (tmp_path / "rt").mkdir()
        rt = make_runtime(tmp_path / "rt", redis_url, body, polling="allow_private_addresses: false")
        with caplog.at_level(logging.WARNING):
            process_items(rt, "local", [sample_item().to_dict()])  # the first tries, in the worker
    finally:
        mail.stop()
    assert hook.returncode == 1 and f"webhook hook: {REFUSAL}" in hook.stdout, hook.stdout
    assert email.returncode == 1 and REFUSAL in email.stdout, email.stdout
    assert http_server.received("/hook") == [] and mail.handler.received == []
    logged = {
        line.split("channel=")[1].split()[0]: line for line in caplog.text.splitlines() if "channel=" in line
    }
    assert f"webhook hook: {REFUSAL}" in logged["hook"], logged
    assert f"SMTP 127.0.0.1:{mail.port}: {REFUSAL}" in logged["mail"], logged
    assert check.returncode == 0
    for path, kind in (
        ("feeds[0].url", "loopback"),
        ("channels.hook.url", "loopback"),
        ("channels.mail.smtp.host", "loopback"),
    ):
        assert f"warning: {path}: a {kind} address" in check.stderr, check.stderr


def test_smtp_allowed_on_loopback_when_the_config_says_so(tmp_path: Path, redis_url: str) -> None:
    mail = start_mail_server("plain", tmp_path)
    body = f"""
channels:
  mail: {{type: email, to: [ops@example.org], from: newswatch@example.org,
          smtp: {{host: 127.0.0.1, port: {mail.port}, starttls: false}}}}
"""
    try:
        result = cli("test-alert", "mail", "--config", config_file(tmp_path, redis_url, body))
    finally:
        mail.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(mail.handler.received) == 1


# --- 11: caps on item text ------------------------------------------------------------------------


def test_huge_items_are_capped_in_webhook_bodies_and_log_lines(
    tmp_path: Path, redis_url: str, http_server: LocalServer
) -> None:
    title = "DeepSeek " + "t" * 2_000_000
    item = {
        "title": title,
        "guid": "huge-1",
        "description": "Huawei " + "s" * 300_000,
        "category": "</category><category>".join(f"{i:03d}" + "c" * 1_000 for i in range(100)),
    }
    http_server.routes["/huge.rss"] = Response(rss([item]))
    http_server.routes["/hook"] = Response(b"ok")
    config = config_file(
        tmp_path, redis_url,
        f"""
feeds:
  - {{name: huge, url: "{http_server.url("/huge.rss")}"}}
alerts:
  - {{name: deepseek, query: DeepSeek AND Huawei, channels: [hook, console]}}
channels:
  hook: {{type: webhook, url: "{http_server.url("/hook")}"}}
""",
    )  # fmt: skip
    assert cli("poll", "--config", config).returncode == 0
    worker = cli("worker", "--burst", "--config", config)
    (request,) = http_server.received("/hook")
    sent: Request = request
    data = sent.json()["data"]
    assert data["matched"] == ["DeepSeek", "Huawei"]  # matching still sees what it needs
    assert len(data["item"]["title"]) == 1_000 and data["item"]["title"].endswith("…")
    assert len(data["item"]["summary"]) == 100_000
    assert len(data["item"]["categories"]) == 50 and all(len(c) == 200 for c in data["item"]["categories"])
    assert len(sent.body) < 150_000
    (alert_line,) = [line for line in worker.stdout.splitlines() if line.startswith("ALERT")]
    assert len(alert_line) < 15_000

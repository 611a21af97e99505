"""Configuration: interpolation, units, every problem named by its key path, no secret in output."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from worker.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFr"


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "newswatch.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load(tmp_path, text, env)
    return error.value.problems


def test_shipped_configs_are_valid() -> None:
    for path in [
        ROOT / "config" / "newswatch.yaml",
        ROOT / "config" / "demo.yaml",
        *ROOT.glob("config/examples/*.yaml"),
    ]:
        load_config(str(path), {})


def test_defaults_interpolation_and_units(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
polling: {interval: "${POLL:-90s}", max_bytes: 512KB, jitter: 5%}
feeds:
  - {name: eulerpool, url: "https://eulerpool.example/rss", interval: 2m, tags: [finanzen]}
alerts:
  - {name: deepseek, query: DeepSeek}
channels:
  hook: {type: webhook, url: "https://hooks.example/x", secret: "${WEBHOOK_SECRET:-}"}
""",
        {"WEBHOOK_SECRET": SECRET},
    )
    s = config.settings
    assert s.polling.interval == timedelta(seconds=90)
    assert s.polling.max_bytes == 512_000
    assert s.polling.jitter == pytest.approx(0.05)
    assert s.feed_interval(s.feeds[0]) == timedelta(minutes=2)
    assert s.dedupe.ttl == timedelta(days=30)
    assert s.channels["hook"].secret == SECRET  # type: ignore[union-attr]
    assert config.rules.alerts[0].channels == ("console",)  # the log channel is the default sink
    assert SECRET in config.secrets
    assert config.redact(f"x {SECRET} redis://user:pw@host/0") == "x *** redis://user:***@host/0"


def test_empty_secret_means_unset(tmp_path: Path) -> None:
    config = load(tmp_path, 'channels: {hook: {type: webhook, url: "https://h.example/", secret: "${S:-}"}}')
    assert config.settings.channels["hook"].secret is None  # type: ignore[union-attr]


def test_environment_overrides_redis_and_sentry(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "redis: {url: redis://file:6379/0}\nsentry: {dsn: ''}",
        {"REDIS_URL": "redis://env:6379/1", "SENTRY_DSN": "http://key@127.0.0.1:1/1"},
    )
    assert config.settings.redis.url == "redis://env:6379/1"
    assert config.settings.sentry.dsn == "http://key@127.0.0.1:1/1"


def test_every_problem_is_named_by_its_key_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
polling: {interval: 5x, timeout: soon}
feeds:
  - {name: eulerpool, url: "ftp://eulerpool.example/rss"}
  - {name: eulerpool, url: "https://ok.example/rss", colour: blue}
  - {name: nourl}
alerts:
  - {name: deepseek, query: DeepSeek, channels: [team-hook]}
  - {name: chips, query: "(Huawei AND", channels: [team-hook, slak], feeds: [nowhere]}
channels:
  team-hook: {type: webhook, url: "https://hooks.example/x", secret: not-base64!}
  pager: {type: pager}
topics:
  KI: ["(KI"]
""",
    )
    expected = [
        "polling.interval: '5x' is not a duration",
        "polling.timeout: 'soon' is not a duration",
        "feeds[0].url: must be an http:// or https:// URL",
        "feeds[1].colour: unknown key",
        "feeds[2].url: Field required",
        "alerts[1].query: query does not parse: ",
        "channels.team-hook.secret: must be a Standard Webhooks secret",
        "channels.pager: unknown channel type",
        "topics: topic 'KI': ",
        "feeds[1].name: duplicate feed name 'eulerpool'",
        "alerts[1].channels[1]: unknown channel 'slak'",
        "alerts[1].feeds[0]: unknown feed 'nowhere'",
    ]
    for prefix in expected:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    assert len(found) == len(expected), found


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "feeds:\n  - name: a\n    url: [unclosed\n")
    assert len(found) == 1 and "line " in found[0]


def test_duplicate_keys_are_refused_not_silently_merged(tmp_path: Path) -> None:
    found = problems(tmp_path, "polling: {interval: 5m}\nfeeds: []\npolling: {timeout: 5s}\n")
    assert len(found) == 1 and "line 3" in found[0] and "duplicate key 'polling'" in found[0]


def test_missing_environment_variable_is_a_problem(tmp_path: Path) -> None:
    found = problems(tmp_path, "redis: {url: '${NOPE}'}")
    assert found == ["redis.url: environment variable NOPE is not set (write ${NOPE:-default})"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_exits_2_without_traceback_and_without_secrets(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        f"""
channels:
  team-hook: {{type: webhook, url: "https://user:{SECRET}@hooks.example/x", secret: "{SECRET}"}}
alerts:
  - {{name: a, query: "x", channels: [slak]}}
feeds:
  - {{name: f, url: "https://f.example/rss", interval: never}}
""",
        encoding="utf-8",
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "alerts[0].channels[0]: unknown channel 'slak'" in result.stderr
    assert "feeds[0].interval" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert SECRET not in result.stderr + result.stdout


def test_check_config_ok_and_usage_errors() -> None:
    ok = run_cli("check-config", "--config", str(ROOT / "config" / "newswatch.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert run_cli("check-config", "--config", "/nonexistent.yaml").returncode == 2
    assert run_cli("no-such-command").returncode == 2


def test_sources_that_are_not_feeds_are_checked_by_key_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
feeds:
  - {name: a, url: "https://news.example/", type: html, select: {item: "div[", title: h2}}
  - {name: b, url: "https://api.example/", type: json, map: {items: "data[", title: headline}}
  - {name: c, url: "https://news.example/rss", select: {item: div}}
  - {name: d, url: "https://news.example/", type: html, robots: sometimes, max_articles: 0}
""",
    )
    assert "feeds[0].select.item: invalid CSS selector: Expected ident or '*', got <EOF at 4>" in found
    assert any(p.startswith("feeds[1].map.items: invalid JMESPath") for p in found)
    assert "feeds[2]: select: only for type: html" in found
    assert any(p.startswith("feeds[3].robots:") for p in found)
    assert any(p.startswith("feeds[3].max_articles:") for p in found)


def test_a_json_sources_headers_are_secrets(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
feeds:
  - name: eulerpool-api
    type: json
    url: https://api.example/news
    headers: {Authorization: "Bearer ${EULERPOOL_API_KEY:-}"}
""",
        {"EULERPOOL_API_KEY": "key-that-must-never-leak"},
    )
    assert config.settings.feeds[0].headers == {"Authorization": "Bearer key-that-must-never-leak"}
    assert "key-that-must-never-leak" not in config.redact(
        "sent Authorization: Bearer key-that-must-never-leak"
    )
    unset = load(
        tmp_path,
        "feeds: [{name: a, type: json, url: 'https://api.example/', headers: {Authorization: 'Bearer ${K:-}'}}]",
    )
    assert unset.redact("Bearer tokens") == "Bearer tokens"  # no key set: the scheme word is no secret


def test_a_feed_of_an_older_config_keeps_its_fingerprint() -> None:
    """Unset keys of html and json sources do not change a feed's fingerprint: an upgrade must
    not start every feed afresh (which would re-enable feeds that answered 410)."""
    from worker.config import FeedConfig
    from worker.core.poll import config_fingerprint

    feed = FeedConfig(name="eulerpool", url="https://eulerpool.example/rss", tags=["Finanzen"])
    before = config_fingerprint({"url": feed.url, "type": "feed", "interval": None, "tags": ["Finanzen"]})
    assert feed.fingerprint == before
    assert FeedConfig(name="e", url=feed.url, tags=["Finanzen"], robots="ignore").fingerprint != before

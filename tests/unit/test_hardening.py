"""The pure parts of issue 20's fixes: printable text, item caps, query nesting, YAML limits,
secret spellings and structural Sentry scrubbing, literal private addresses."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker import monitoring
from worker.adapters.net import literal_blocked_reason
from worker.config import ConfigError, load_config
from worker.config_yaml import MAX_DEPTH
from worker.core.errors import QuerySyntaxError
from worker.core.limits import MAX_CATEGORIES, MAX_CATEGORY, MAX_LINK, MAX_TEXT, MAX_TITLE, cap_item
from worker.core.models import Item
from worker.core.query import MAX_NESTING, parse_query
from worker.core.text import printable
from worker.logs import JsonFormatter, TextFormatter
from worker.monitoring import _scrub


def test_printable_escapes_what_steers_a_terminal_and_keeps_the_rest() -> None:
    assert printable("text/\x1b[2J\x9b31m\x07") == "text/\\x1b[2J\\x9b31m\\x07"
    assert printable("a\u202eb\u2066c\u2069d\u200fe\u061cf") == "a\\u202eb\\u2066c\\u2069d\\u200fe\\u061cf"
    assert printable("line\nbreak\r\tand\u2028sep\ud800") == "line\\nbreak\\r\\tand\\u2028sep\\ud800"
    kept = "Grüße, 東京, 👨‍👩‍👧 (ZWJ), Trenn\u00adstrich, ß"
    assert printable(kept) is kept


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("newswatch", logging.WARNING, __file__, 1, message, args, exc_info)


def test_log_formatters_make_message_arguments_and_tracebacks_printable() -> None:
    try:
        raise ValueError("bad \x1b[2J value")
    except ValueError as e:
        error = e
    record = _record("feed=%s failed: %s\n%s", "f\u202e", "text/\x1b]8;;x\x07", "line two", exc=error)
    text = TextFormatter("%(levelname)s %(message)s").format(record)
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "feed=f\\u202e failed: text/\\x1b]8;;x\\x07\nline two" in text  # our own line break stays
    assert "ValueError: bad \\x1b[2J value" in text
    entry = json.loads(JsonFormatter().format(_record("C1 \x9b and bidi \u2066", exc=error)))
    assert entry["message"] == "C1 \\x9b and bidi \\u2066" and "\\x1b[2J" in entry["exception"]


def _item(**fields: object) -> Item:
    base: dict[str, object] = {
        "feed": "f", "guid": "g", "link": "https://n.example/1", "canonical_link": "https://n.example/1",
        "title": "DeepSeek", "summary": "s", "content": "c", "categories": ("KI",),
        "published": datetime(2025, 8, 15, tzinfo=UTC), "id": "id-1",
    }  # fmt: skip
    return Item(**(base | fields))  # type: ignore[arg-type]


def test_cap_item_keeps_what_matching_reads_first_and_the_identity() -> None:
    normal = _item()
    assert cap_item(normal) is normal
    huge = _item(
        title="DeepSeek " + "t" * 5_000_000,
        summary="Huawei " + "s" * 80_000,
        content="Nvidia " + "c" * 80_000,
        categories=tuple(f"{i}" + "k" * 1_000 for i in range(500)),
        link="https://n.example/" + "l" * MAX_LINK,
    )
    capped = cap_item(huge)
    assert (
        len(capped.title) == MAX_TITLE
        and capped.title.startswith("DeepSeek t")
        and capped.title.endswith("…")
    )
    assert len(capped.summary) + len(capped.content) == MAX_TEXT
    assert capped.summary == huge.summary and capped.content.startswith("Nvidia ")
    assert len(capped.categories) == MAX_CATEGORIES and {len(c) for c in capped.categories} == {MAX_CATEGORY}
    assert capped.link is None and capped.canonical_link == huge.canonical_link  # the short one stays
    assert capped.id == huge.id
    assert cap_item(_item(summary="s" * (MAX_TEXT + 5), content="c" * 10)).content == ""


def test_query_nesting_is_limited_with_a_clear_error() -> None:
    parse_query("(" * MAX_NESTING + "x" + ")" * MAX_NESTING)
    parse_query("NOT " * MAX_NESTING + "x")
    for query in (
        "(" * (MAX_NESTING + 1) + "x" + ")" * (MAX_NESTING + 1),
        "NOT " * 1000 + "x",
        "-(" * 30 + "x",
    ):
        with pytest.raises(QuerySyntaxError, match="nested more than 50 levels deep"):
            parse_query(query)


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), env or {})


def test_yaml_limits_leave_ordinary_anchors_and_nesting_alone(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        """
alerts:
  - {name: one, query: x, channels: &both [a, b]}
  - {name: two, query: y, channels: *both}
channels: {a: {type: log}, b: {type: log}}
""",
    )
    assert [a.channels for a in config.settings.alerts] == [["a", "b"], ["a", "b"]]
    # mapping, mapping, list, then nested lists, then the scalar: MAX_DEPTH levels in all
    deep = "topics: {T: [" + "[" * (MAX_DEPTH - 4) + "x" + "]" * (MAX_DEPTH - 4) + "]}"
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, deep)
    assert "nested deeper" not in str(error.value)  # 50 levels are allowed (and then a schema error)
    with pytest.raises(ConfigError, match="nested deeper than 50 levels"):
        _load(tmp_path, deep.replace("[x]", "[[x]]"))
    with pytest.raises(ConfigError, match="an alias refers to itself"):
        _load(tmp_path, "a: &a [1, *a]")


def test_config_secrets_in_every_spelling_and_channel_urls(tmp_path: Path) -> None:
    password = "p\\a\"ss'wörd"
    config = _load(
        tmp_path,
        """
channels:
  hook: {type: webhook, url: "https://hooks.example/services/T0/B0/tok3n"}
  mail: {type: email, to: [a@example.org], from: b@example.org, smtp: {password: "${PW}"}}
""",
        {"PW": password},
    )
    for spelling in (
        password,
        repr(password)[1:-1],
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
    ):
        assert config.redact(f"x{spelling}y") == "x***y", spelling
    assert config.redact(repr({"a": password, "b": '"'})) == "{'a': '***', 'b': '\"'}"
    assert config.redact("https://hooks.example/services/T0/B0/tok3n") == "***"
    assert config.redact("URL(target=b'/services/T0/B0/tok3n')") == "URL(target=b'***')"


def test_sentry_events_are_scrubbed_as_a_tree_keys_and_cut_values_included(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "channels: {hook: {type: webhook, url: 'https://h.example/x', secret: whsec_c2VjcmV0LXRva2VuLXZhbHVl}}",
    )
    secret = "whsec_c2VjcmV0LXRva2VuLXZhbHVl"
    event = {
        "exception": {
            "values": [{"stacktrace": {"frames": [{"vars": {f"k{secret}": [f"'{secret}'", 3, None]}}]}}]
        },
        "extra": {"cut": "config=" + secret[:12] + "..."},  # Sentry cut a long value mid-secret
        "timestamp": datetime(2025, 1, 1, tzinfo=UTC),
    }
    scrubbed = _scrub(config, event)
    text = json.dumps(scrubbed, default=str)
    assert "c2VjcmV0" not in text and "whsec_c2Vj" not in text
    assert scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"] == {
        "k***": ["'***'", 3, None]
    }
    assert scrubbed["extra"]["cut"] == "config=***..." and isinstance(scrubbed["timestamp"], datetime)


def test_after_a_reload_sentry_scrubs_the_new_configs_secrets_and_the_old_ones(tmp_path: Path) -> None:
    """A reload may add a channel whose URL carries a token; a send begun before it may still
    carry the old one. Sentry's hook scrubs both."""
    old_token, new_token = "T0KEN-of-the-old-channel-123", "T0KEN-of-the-new-channel-456"
    old = _load(tmp_path, f"channels: {{hook: {{type: webhook, url: 'https://h.example/{old_token}'}}}}")
    new = _load(tmp_path, f"channels: {{hook: {{type: webhook, url: 'https://h.example/{new_token}'}}}}")
    monitoring._configs.clear()
    monitoring.scrub_with(old)
    message = {"m": f"POST https://h.example/{old_token} then https://h.example/{new_token}"}
    assert old_token not in json.dumps(monitoring._scrub_all(message))
    assert new_token in json.dumps(monitoring._scrub_all(message))
    monitoring.scrub_with(new)
    assert monitoring._scrub_all(message) == {"m": "POST *** then ***"}
    monitoring.scrub_with(
        _load(tmp_path, f"channels: {{hook: {{type: webhook, url: 'https://h.example/{new_token}'}}}}")
    )
    assert len(monitoring._configs) == 2  # a reload that changes no secret adds none
    monitoring._configs.clear()


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"), ("127.1", "loopback"), ("0x7f000001", "loopback"), ("2130706433", "loopback"),
        ("[::1]", "loopback"), ("localhost", "loopback"), ("mail.localhost", "loopback"), ("10.0.0.5", "private"),
        ("[::ffff:169.254.169.254]", "link-local (cloud metadata)"), ("smtp.example.org", None),
        ("93.184.216.34", None), ("mailpit", None),
    ],
)  # fmt: skip
def test_literal_private_addresses_are_told_without_dns(host: str, reason: str | None) -> None:
    assert literal_blocked_reason(host) == reason

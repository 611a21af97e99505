"""Pure core: canonical links, identity, categories and topics, text, units, rendering."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from worker.core.identity import delivery_id, link_identity, primary_identity
from worker.core.links import canonical_link
from worker.core.matcher import normalize
from worker.core.models import AlertMatch, Item
from worker.core.query import parse_query, parse_term_list
from worker.core.render import alert_payload, deliveries_for, log_lines, webhook_body, webhook_signature
from worker.core.rules import AlertRule, RuleSet, TopicRule, classify, classify_many, too_old_to_alert
from worker.core.text import fold, html_to_text, one_line
from worker.core.topics import merge_topics, split_categories
from worker.core.units import format_duration, parse_duration, parse_fraction, parse_size

CORE = Path(__file__).resolve().parents[2] / "worker" / "core"
IO_MODULES = {
    "redis", "rq", "httpx", "httpcore", "smtplib", "ssl", "feedparser", "apscheduler", "socket",
    "requests", "urllib.request", "subprocess", "os", "threading", "time", "random", "sentry_sdk",
    "prometheus_client", "rich", "aiosmtpd", "worker.adapters", "worker.sources", "worker.runtime",
}  # fmt: skip
# The clock and randomness come from the caller (the runtime), never from the core itself.
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "random", "uniform", "urandom"}


def test_core_imports_no_io_library_and_reads_no_clock() -> None:
    for path in CORE.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                prefixes = {".".join(parts[: n + 1]) for n in range(len(parts))}
                assert not prefixes & IO_MODULES, f"{path.name} imports {name}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in CLOCK_CALLS, (
                    f"{path.name}:{node.lineno} calls .{node.func.attr}()"
                )


@pytest.mark.parametrize(
    ("link", "canonical"),
    [
        ("HTTPS://EuLerPool.com/News/x#top", "https://eulerpool.com/News/x"),
        (
            "https://eulerpool.com:443/news?utm_source=rss&utm_medium=feed&id=7",
            "https://eulerpool.com/news?id=7",
        ),
        ("https://eulerpool.com/news?fbclid=abc&gclid=def", "https://eulerpool.com/news"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://eulerpool.com/news/büroflächen", "https://eulerpool.com/news/b%C3%BCrofl%C3%A4chen"),
        (
            "https://eulerpool.com/news/b%c3%bcrofl%c3%a4chen",
            "https://eulerpool.com/news/b%C3%BCrofl%C3%A4chen",
        ),
        ("  https://example.com/a?b=1&a=2  ", "https://example.com/a?b=1&a=2"),
        ("ftp://example.com/a", None),
        ("not a link", None),
        ("", None),
        (None, None),
        ("http://[::1", None),
    ],
)
def test_canonical_link(link: str | None, canonical: str | None) -> None:
    assert canonical_link(link) == canonical


def test_identity_prefers_guid_then_link_then_title_and_date() -> None:
    date = datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    by_guid = primary_identity("f", "g1", "https://a/1", "T", date)
    assert by_guid == primary_identity("f", "g1", "https://a/other", "Other", None)
    assert by_guid != primary_identity("other-feed", "g1", "https://a/1", "T", date)
    by_link = primary_identity("f", None, "https://a/1", "T", date)
    assert by_link == primary_identity("f", None, "https://a/1", "Changed title", None)
    by_text = primary_identity("f", None, None, "T", date)
    assert by_text != primary_identity("f", None, None, "T", date + timedelta(minutes=1))
    assert len({by_guid, by_link, by_text}) == 3
    assert link_identity("https://a/1") == link_identity("https://a/1")
    assert link_identity(None) is None


def test_delivery_id_is_stable_and_distinct() -> None:
    assert delivery_id("deepseek", "item1", "hook") == delivery_id("deepseek", "item1", "hook")
    assert delivery_id("deepseek", "item1", "hook").startswith("msg_")
    assert len({delivery_id("a", "i", "c"), delivery_id("a", "i", "d"), delivery_id("b", "i", "c")}) == 3


def test_split_categories() -> None:
    assert split_categories(["Finanzen / KI / DeepSeek / Huawei / Nvidia"]) == (
        "Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia",
    )  # fmt: skip
    assert split_categories(["Märkte, Aktien; Krypto|Bitcoin", "aktien", " ", ""]) == (
        "Märkte", "Aktien", "Krypto", "Bitcoin",
    )  # fmt: skip


def test_merge_topics_keeps_first_spelling_and_sorts() -> None:
    assert merge_topics(["KI", "Halbleiter"], ["finanzen"], ["Finanzen", "ki", "Nvidia"]) == (
        "finanzen", "Halbleiter", "KI", "Nvidia",
    )  # fmt: skip


def test_text_helpers() -> None:
    assert fold("Großbank ÄRGER Über Öl") == "grossbank aerger ueber oel"
    assert fold("Mu\u0308nchen") == "muenchen"  # decomposed umlaut
    assert normalize("KI-Modell,  DeepSeek's\nR2") == "ki modell, deepseek's r2"
    assert normalize("Modellstart – Tesla") == "modellstart tesla"
    assert normalize(" KI ") == "ki"
    assert html_to_text("<p>Eins</p><p>Zwei &amp; drei</p><script>alert(1)</script>") == "Eins Zwei & drei"
    assert html_to_text("A&nbsp;B &lt;b&gt;") == "A B <b>"  # entities decoded, nbsp is whitespace
    # Decoded once, with or without tags: an escaped entity stays an entity.
    assert (
        html_to_text("<p>Preis &amp;lt; 5 Euro</p>")
        == html_to_text("Preis &amp;lt; 5 Euro")
        == "Preis &lt; 5 Euro"
    )
    assert one_line("a\r\nb\u2028c\x00d\te") == "a b c d e"


def test_units() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration(5) == timedelta(seconds=5)
    assert parse_size("10MB") == 10_000_000
    assert parse_size("512KB") == 512_000
    assert parse_fraction("10%") == pytest.approx(0.1)
    assert format_duration(timedelta(seconds=20)) == "20s"
    for bad in ("5x", "", "m5", "-5s"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    for bad in ("ten", "10XB", -1):
        with pytest.raises(ValueError):
            parse_size(bad)


def _item(**overrides: object) -> Item:
    values: dict[str, object] = {
        "feed": "eulerpool",
        "guid": "eulerpool-news-deepseek-r2",
        "link": "https://eulerpool.com/news/deepseek",
        "canonical_link": "https://eulerpool.com/news/deepseek",
        "title": "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
        "summary": "Trainingsläufe mit Huaweis Ascend-Prozessoren scheiterten.",
        "content": "",
        "categories": ("Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"),
        "published": datetime(2025, 8, 15, 13, 51, tzinfo=UTC),
        "id": "item-1",
    }
    values.update(overrides)
    return Item(**values)  # type: ignore[arg-type]


RULES = RuleSet(
    topics=(
        TopicRule("Halbleiter", parse_term_list(["Nvidia", "Huawei", "Ascend", "Chip*"])),
        TopicRule("Krypto", parse_term_list(["Bitcoin"])),
    ),
    alerts=(
        AlertRule("deepseek", parse_query("DeepSeek"), ("hook",)),
        AlertRule(
            "chips", parse_query("Huawei AND Chip*"), ("hook", "mail"), topics=frozenset({"halbleiter"})
        ),
        AlertRule("crypto", parse_query("Bitcoin"), ("hook",)),
        AlertRule("other-feed", parse_query("DeepSeek"), ("hook",), feeds=frozenset({"heise"})),
        AlertRule("krypto-only", parse_query("DeepSeek"), ("hook",), topics=frozenset({"krypto"})),
    ),
    feed_tags={"eulerpool": ("finanzen", "Börse")},
)


def test_classify_topics_and_alert_filters() -> None:
    classified = classify(_item(), RULES)
    assert classified.topics == ("Börse", "DeepSeek", "finanzen", "Halbleiter", "Huawei", "KI", "Nvidia")
    assert [(m.alert, m.matched, m.channels) for m in classified.matches] == [
        ("deepseek", ("DeepSeek",), ("hook",)),
        ("chips", ("Huawei", "Chip*"), ("hook", "mail")),
    ]


def test_a_batch_is_classified_as_each_item_alone() -> None:
    """One automaton pass over a job's items must give each item exactly its own terms, fields
    and matches: a hit at the start or end of one item must not count for its neighbour."""
    batch = [
        _item(),
        _item(id="2", title="Bitcoin", summary="", categories=()),  # a term that fills its whole field
        _item(id="3", title="Huawei", summary="Chips", categories=("Krypto",), feed="heise"),
        _item(id="4", title="", summary="", categories=()),
        _item(id="5", title="Neues von DeepSeeks Chipfertigung", summary="Bitcoin-Kurs", categories=()),
    ]
    assert classify_many(batch, RULES) == [classify(item, RULES) for item in batch]
    assert [[m.alert for m in c.matches] for c in classify_many(batch, RULES)] == [
        ["deepseek", "chips"], ["crypto"], ["chips"], [], ["deepseek", "crypto", "krypto-only"]
    ]  # fmt: skip
    assert classify_many([], RULES) == []


def test_the_marks_between_fields_in_an_item_move_no_term_to_another_field() -> None:
    """The matcher tells fields and items apart by marks (U+241C..U+241F); text that carries
    them must not shift a term into another field or item."""
    rules = RuleSet((), (AlertRule("t", parse_query("title:Huawei"), ("hook",)),), {})
    batch = [
        _item(title="Chips \u241d\u241e Huawei", summary="", categories=()),
        _item(id="2", title="Nvidia", summary="Huawei \u241c", categories=("\u241d",)),
        _item(id="3", title="Huawei", summary="", categories=()),
    ]
    assert [len(c.matches) for c in classify_many(batch, rules)] == [1, 0, 1]
    assert [len(classify(item, rules).matches) for item in batch] == [1, 0, 1]


def test_max_age() -> None:
    now = datetime(2025, 8, 20, tzinfo=UTC)
    assert too_old_to_alert(_item(), now, timedelta(days=3))
    assert not too_old_to_alert(_item(), now, timedelta(days=7))
    assert not too_old_to_alert(_item(), now, None)
    assert not too_old_to_alert(_item(published=None), now, timedelta(days=3))


def test_webhook_payload_shape_and_signature_verify_with_reference_library() -> None:
    now = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    payload = alert_payload(
        AlertMatch("deepseek", ("DeepSeek",), ("hook",)), _item(), ("Halbleiter", "KI"), now
    )
    assert payload == {
        "type": "newswatch.alert",
        "timestamp": "2026-11-28T20:00:00Z",
        "data": {
            "alert": "deepseek",
            "matched": ["DeepSeek"],
            "item": {
                "id": "item-1",
                "feed": "eulerpool",
                "title": "DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
                "link": "https://eulerpool.com/news/deepseek",
                "published": "2025-08-15T13:51:00Z",
                "summary": "Trainingsläufe mit Huaweis Ascend-Prozessoren scheiterten.",
                "categories": ["Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"],
                "topics": ["Halbleiter", "KI"],
                "story": "item-1",  # a story of its own until the commit places it
                "reports": 1,
            },
            "highlights": {"title": [], "summary": [], "categories": []},
        },
    }
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = webhook_body(payload)
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(secret, "msg_1", timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    headers["webhook-signature"] = webhook_signature("whsec_" + "A" * 32, "msg_1", timestamp, body)
    with pytest.raises(Exception):  # noqa: B017 - the reference library raises its own error type
        Webhook(secret).verify(body, headers)


def test_deliveries_one_per_alert_and_channel_and_log_line() -> None:
    classified = classify(_item(title="DeepSeek\r\nBcc: evil@example.com"), RULES)
    deliveries = deliveries_for(classified, datetime(2026, 1, 1, tzinfo=UTC))
    assert [(d.alert, d.channel) for d in deliveries] == [("deepseek", "hook")]
    (line,) = log_lines(deliveries[0])
    assert "\n" not in line and "\r" not in line
    assert line.startswith("ALERT alert=deepseek feed=eulerpool item=item-1 matched=DeepSeek")


def test_poll_timing_backoff_and_politeness() -> None:
    from worker.core.timing import wait_after_error, wait_after_success

    five = timedelta(minutes=5)
    assert wait_after_success(five) == five
    assert wait_after_success(five, fresh_for=60) == five  # never below the configured interval
    assert wait_after_success(five, fresh_for=3600) == timedelta(hours=1)
    assert wait_after_success(five, ttl_minutes=30) == timedelta(minutes=30)
    assert wait_after_success(five, fresh_for=10**9) == timedelta(days=1)
    assert wait_after_error(five, 1, 0.5) == five
    assert wait_after_error(five, 3, 0.5) == timedelta(minutes=20)
    assert wait_after_error(five, 50, 0.5) == timedelta(hours=6)
    assert wait_after_error(five, 1, 0.0) == five * 0.9
    assert wait_after_error(five, 1, 0.5, retry_after=7200) == timedelta(hours=2)


def test_item_links_are_made_absolute_against_the_feed_and_only_http_kept() -> None:
    from tests.conftest import feed_items

    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        b"<item><title>a</title><link>/news/a?utm_source=rss</link></item>"
        b"<item><title>b</title><link>javascript:alert(1)</link></item>"
        b"<item><title>c</title><link>https://other.example/c</link></item>"
        b"</channel></rss>"
    )
    items = feed_items("f", body, "https://news.example/feed/rss")
    assert [i.link for i in items] == [
        "https://news.example/news/a?utm_source=rss",
        None,
        "https://other.example/c",
    ]
    assert items[0].canonical_link == "https://news.example/news/a"


def test_poll_threads_follow_the_hosts_that_can_be_fetched_at_once() -> None:
    from worker.config import FeedConfig
    from worker.polling import poll_threads

    def feeds(*urls: str) -> list[FeedConfig]:
        return [FeedConfig(name=f"f{n}", url=url) for n, url in enumerate(urls)]

    one_host = feeds(*(f"https://news.example/feed/{n}" for n in range(200)))
    assert poll_threads(one_host, 100, 2) == 2  # more would only wait for a host slot
    assert poll_threads(feeds("https://a.example/", "http://b.example/x"), 100, 2) == 2
    assert poll_threads(feeds(*(f"https://h{n}.example/" for n in range(500))), 100, 2) == 100
    assert poll_threads([], 100, 2) == 1

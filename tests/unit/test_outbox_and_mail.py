"""Routing under digests and caps, retry delays, and alert emails — pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.core.mail import SUBJECT_MAX, alert_email, subject_line
from worker.core.models import Delivery
from worker.core.outbox import AlertPolicy, digest_delivery, route, window_end
from worker.core.timing import next_retry_delay

NOW = datetime(2026, 11, 28, 20, 15, 30, tzinfo=UTC)


def delivery(alert: str, item: str, channel: str = "hook") -> Delivery:
    data = {"alert": alert, "matched": ["x"], "item": {"id": item, "title": f"t{item}"}}
    return Delivery(f"{alert}-{item}-{channel}", alert, channel, {"type": "newswatch.alert", "data": data})


def test_route_caps_per_item_and_folds_the_rest_into_the_hourly_digest() -> None:
    deliveries = [delivery("a", str(i), ch) for i in range(4) for ch in ("hook", "mail")]
    routing = route(deliveries, {"a": AlertPolicy(max_per_hour=3)}, {"a": 1}, NOW)
    assert [d.delivery_id for d in routing.immediate] == ["a-0-hook", "a-0-mail", "a-1-hook", "a-1-mail"]
    assert [h.delivery.delivery_id for h in routing.digested] == [
        "a-2-hook",
        "a-2-mail",
        "a-3-hook",
        "a-3-mail",
    ]
    assert {h.window_end for h in routing.digested} == {datetime(2026, 11, 28, 21, 0, tzinfo=UTC)}
    assert routing.sent_this_hour == {"a": 3}


def test_route_digest_holds_everything_and_plain_alerts_pass() -> None:
    routing = route(
        [delivery("d", "1"), delivery("p", "1")], {"d": AlertPolicy(digest=timedelta(minutes=10))}, {}, NOW
    )
    assert [d.alert for d in routing.immediate] == ["p"]
    (held,) = routing.digested
    assert held.window_end == datetime(2026, 11, 28, 20, 20, tzinfo=UTC)


def test_windows_and_digest_ids() -> None:
    assert window_end(NOW, timedelta(hours=1)) == datetime(2026, 11, 28, 21, 0, tzinfo=UTC)
    end = window_end(NOW, timedelta(minutes=5))
    x, y = {"matched": [], "item": {"id": "x"}}, {"matched": [], "item": {"id": "y"}}
    one = digest_delivery("a", "hook", end, [x, y], NOW)
    again = digest_delivery("a", "hook", end, [y, x], NOW + timedelta(seconds=5))  # a try made later
    later_items = digest_delivery("a", "hook", end, [{"matched": [], "item": {"id": "z"}}], NOW)
    other = digest_delivery("a", "hook", end + timedelta(minutes=5), [x, y], NOW)
    assert one.delivery_id == again.delivery_id
    assert len({one.delivery_id, later_items.delivery_id, other.delivery_id}) == 3
    assert one.payload["data"]["count"] == 2


def test_retry_delay_jitter_and_retry_after() -> None:
    assert next_retry_delay(60, None, 0.0) == 48
    assert next_retry_delay(60, None, 1.0) == 72
    assert next_retry_delay(60, 3.2, 0.5) == 4
    assert next_retry_delay(60, 10**9, 0.5) == 86400
    from worker.core.timing import retry_after_seconds

    now = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Sat, 28 Nov 2026 20:16:00 GMT", now) == 960  # an HTTP date ahead
    assert retry_after_seconds("Sat, 28 Nov 2000 20:16:00 GMT", now) == 0
    assert retry_after_seconds("soon", now) is None


def test_subject_is_one_capped_line_without_encoded_words() -> None:
    subject = subject_line("deepseek", "A\r\nBcc: x@y\u2028=?utf-8?b?QmNjOg==?=\x00" + "x" * 500)
    assert subject.startswith("[newswatch] deepseek: A Bcc: x@y = ?utf-8?b?QmNjOg== ?=")
    assert len(subject) <= SUBJECT_MAX and "\n" not in subject and "\x00" not in subject


def test_digest_email_lists_every_item() -> None:
    def item(i: int) -> dict[str, object]:
        return {"id": str(i), "feed": "f", "title": f"Titel {i}", "link": f"https://n.example/{i}",
                "published": None, "summary": "s", "topics": []}  # fmt: skip

    entries = [{"matched": ["DeepSeek"], "item": item(i)} for i in range(3)]
    message = alert_email(
        digest_delivery("deepseek", "mail", NOW, entries, NOW), "nw@example.org", ["a@example.org"], NOW
    )
    assert message["Subject"] == "[newswatch] deepseek: 3 new items"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert all(f"Titel {i}" in text for i in range(3))

"""Highlights in the email's HTML part: escaped, sanitised, and at the right characters."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

from worker.core.highlights import payload_highlights
from worker.core.mail import alert_email
from worker.core.models import AlertMatch, Delivery, Item
from worker.core.query import parse_query
from worker.core.render import alert_payload

NOW = datetime(2026, 11, 28, 20, 0, tzinfo=UTC)


def html_part(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_the_html_part_marks_matched_words_and_escapes_the_rest() -> None:
    item = Item(
        "f", None, "https://example.org/a", None,
        "<b>Deep\u00adSeek</b> & Huaweis KI-Chips",
        "Die Straße\nder <script>alert(1)</script> DeepSeek’s Pläne",
        "", ("KI",), NOW, "i1",
    )  # fmt: skip
    query = parse_query("DeepSeek OR Chip* OR Strasse")
    marks = payload_highlights(item, query)
    payload = alert_payload(AlertMatch("deepseek", ("DeepSeek",), ("mail",)), item, ("KI",), NOW, marks)
    message = alert_email(
        Delivery("msg_1", "deepseek", "mail", payload), "nw@example.org", ["a@example.org"], NOW
    )
    body = html_part(message)
    assert "&lt;b&gt;<mark>Deep\u00adSeek</mark>&lt;/b&gt; &amp; Huaweis KI-<mark>Chips</mark>" in body
    assert (
        "Die <mark>Straße</mark> der &lt;script&gt;alert(1)&lt;/script&gt; <mark>DeepSeek’s</mark> Pläne"
        in body
    )
    assert "<script>" not in body


def test_marks_that_do_not_fit_the_text_are_ignored() -> None:
    item = Item("f", None, None, None, "DeepSeek", "", "", (), NOW, "i1")
    payload = alert_payload(AlertMatch("a", ("x",), ("mail",)), item, (), NOW)
    payload["data"]["highlights"] = {
        "title": [
            {"start": 3, "end": 99},
            {"start": "0", "end": 2},
            {"start": 0, "end": 4},
            {"start": 2, "end": 6},
        ]
    }
    body = html_part(
        alert_email(Delivery("msg_1", "a", "mail", payload), "nw@example.org", ["a@example.org"], NOW)
    )
    assert "<mark>Deep</mark>Seek" in body


def test_try_prints_matched_words_bold_and_outside_text_never_as_markup() -> None:
    from rich.console import Console

    from worker.backtest import _try_text
    from worker.core.archive import ArchivedItem
    from worker.core.query import all_terms

    title = "[bold red]Alarm[/] DeepSeek\x1b[2J KI-Chips"
    item = Item(
        "f[/]", None, "https://example.org/a", None, title, "Die DeepSeek-Aktie steigt", "", (), NOW, "i1"
    )
    text = _try_text(ArchivedItem(item, (), NOW, "i1", 1), all_terms(parse_query("DeepSeek OR Chip*")))
    bold = [text.plain[span.start : span.end] for span in text.spans if span.style == "bold"]
    assert bold == ["DeepSeek", "Chips", "DeepSeek"]
    console = Console(record=True, width=200, force_terminal=True)
    console.print(text)
    shown = console.export_text()
    assert "[bold red]Alarm[/] DeepSeek\\x1b[2J KI-Chips" in shown and "f[/]" in shown

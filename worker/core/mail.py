"""Alert emails: multipart text + HTML built from plain text we escape ourselves, so no feed
markup reaches the message; headers built with `email.message` and checked after building.
The HTML part marks the words the alert matched (`data.highlights`) with <mark>."""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Any

import nh3

from worker.core.charsets import BIDI_CONTROL, IGNORABLE
from worker.core.errors import PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.ops import details, headline, is_ops_event
from worker.core.text import one_line

SUBJECT_MAX = 180
_HTML_TAGS = {"p", "ul", "li", "a", "b", "br", "small", "hr", "mark"}


def subject_line(alert: str, title: str) -> str:
    """`[newswatch] <alert>: <title>`, one line whatever the title holds, capped in length."""
    # "=?" would let a title pose as an RFC 2047 encoded word and change how clients decode it.
    text = one_line(f"[newswatch] {alert}: {title}").replace("=?", "= ?")
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 1].rstrip() + "…"


def _entries(payload: dict[str, Any]) -> list[dict[str, Any]]:
    data = payload["data"]
    if "items" in data:
        return list(data["items"])
    return [{"matched": data["matched"], "item": data["item"], "highlights": data.get("highlights")}]


def _text_entry(entry: dict[str, Any]) -> str:
    item = entry["item"]
    lines = [one_line(item["title"] or "(no title)"), _web_link(item["link"])]
    lines.append(
        f"{item['feed']} · {item['published'] or 'no date'} · matched: {', '.join(entry['matched'])}"
    )
    if item.get("summary"):
        lines.append(item["summary"])
    return "\n".join(line for line in lines if line)


def _html_entry(entry: dict[str, Any]) -> str:
    item = entry["item"]
    marks = entry.get("highlights") or {}
    title = _marked(item["title"], marks.get("title", ())) if item["title"] else "(no title)"
    link = _web_link(item["link"])
    heading = f'<a href="{html.escape(link, quote=True)}">{title}</a>' if link else title
    meta = html.escape(
        f"{item['feed']} · {item['published'] or 'no date'} · matched: {', '.join(entry['matched'])}"
    )
    summary = f"<p>{_marked(item['summary'], marks.get('summary', ()))}</p>" if item.get("summary") else ""
    return f"<li><b>{heading}</b><br><small>{meta}</small>{summary}</li>"


def _marked(text: str, marks: Sequence[dict[str, Any]]) -> str:
    """The text escaped, one line, with each highlighted span in <mark>. Offsets count
    characters of the text as the payload carries it, so the text is escaped piece by piece."""
    spans = sorted(
        (m["start"], m["end"])
        for m in marks
        if isinstance(m.get("start"), int)
        and isinstance(m.get("end"), int)
        and 0 <= m["start"] < m["end"] <= len(text)
    )
    parts, position = [], 0
    for start, end in spans:
        if start < position:  # overlapping marks: the first wins
            continue
        parts += [_flat(text[position:start]), f"<mark>{_flat(text[start:end])}</mark>"]
        position = end
    parts.append(_flat(text[position:]))
    return "".join(parts)


def _flat(text: str) -> str:
    """one_line's character rules without its trimming, which would eat the spaces around a
    mark: line breaks and control characters become spaces, bidi controls go. Escaped."""
    flat = "".join(
        " " if unicodedata.category(ch)[0] in "CZ" and not IGNORABLE.fullmatch(ch) else ch
        for ch in BIDI_CONTROL.sub("", text)
    )
    return html.escape(flat)


def alert_email(delivery: Delivery, sender: str, recipients: list[str], now: datetime) -> EmailMessage:
    if is_ops_event(delivery.payload):
        return _ops_email(delivery, sender, recipients, now)
    entries = _entries(delivery.payload)
    alert = delivery.alert
    if len(entries) == 1:
        subject = subject_line(alert, entries[0]["item"]["title"] or "")
    else:
        subject = subject_line(alert, f"{len(entries)} new items")
    message = _message(delivery, subject, sender, recipients, now)
    message.set_content("\n\n".join(_text_entry(e) for e in entries) + "\n\n-- \nnewswatch\n")
    body = f"<ul>{''.join(_html_entry(e) for e in entries)}</ul><hr><small>newswatch</small>"
    _add_html(message, body)
    _check_headers(message, subject, sender, recipients)
    return message


def _ops_email(delivery: Delivery, sender: str, recipients: list[str], now: datetime) -> EmailMessage:
    """A feed's health event (worker.core.ops): its headline as the subject, its details."""
    title, lines = headline(delivery.payload), details(delivery.payload)
    subject = subject_line("ops", title)
    message = _message(delivery, subject, sender, recipients, now)
    message.set_content("\n".join([title, "", *lines]) + "\n\n-- \nnewswatch\n")
    paragraphs = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    _add_html(message, f"<p><b>{html.escape(title)}</b></p>{paragraphs}<hr><small>newswatch</small>")
    _check_headers(message, subject, sender, recipients)
    return message


def _message(
    delivery: Delivery, subject: str, sender: str, recipients: list[str], now: datetime
) -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{delivery.delivery_id}@{_domain(sender)}>"
    message["Auto-Submitted"] = "auto-generated"
    return message


def _add_html(message: EmailMessage, body: str) -> None:
    # Defence in depth: even our own escaped HTML goes through the sanitiser (http(s) links only).
    message.add_alternative(
        nh3.clean(body, tags=_HTML_TAGS, url_schemes={"http", "https"}, attributes={"a": {"href"}}),
        subtype="html",
    )


def _web_link(link: str | None) -> str:
    """Only http(s) links make it into a message; javascript:, data: and friends do not."""
    return link if link and link.lower().startswith(("http://", "https://")) else ""


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2].strip("<> ")
    return domain or "newswatch.invalid"


def _check_headers(message: EmailMessage, subject: str, sender: str, recipients: list[str]) -> None:
    """Parse the finished message back: exactly our headers, our subject, our recipients."""
    parsed = BytesParser(policy=policy.default).parsebytes(message.as_bytes())
    expected = [
        "Subject",
        "From",
        "To",
        "Date",
        "Message-ID",
        "Auto-Submitted",
        "MIME-Version",
        "Content-Type",
    ]
    if sorted(parsed.keys()) != sorted(expected):
        raise PermanentDeliveryError(f"email headers came out wrong: {parsed.keys()}")
    if str(parsed["Subject"]) != subject or str(parsed["To"]) != ", ".join(recipients):
        raise PermanentDeliveryError("email subject or recipients came out wrong")
    if str(parsed["From"]) != sender:
        raise PermanentDeliveryError("email sender came out wrong")

"""Alert emails: multipart text + HTML built from plain text we escape ourselves, so no feed
markup reaches the message; headers built with `email.message` and checked after building."""

from __future__ import annotations

import html
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from typing import Any

import nh3

from worker.core.errors import PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.text import one_line

SUBJECT_MAX = 180
_HTML_TAGS = {"p", "ul", "li", "a", "b", "br", "small", "hr"}


def subject_line(alert: str, title: str) -> str:
    """`[newswatch] <alert>: <title>`, one line whatever the title holds, capped in length."""
    # "=?" would let a title pose as an RFC 2047 encoded word and change how clients decode it.
    text = one_line(f"[newswatch] {alert}: {title}").replace("=?", "= ?")
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 1].rstrip() + "…"


def _entries(payload: dict[str, Any]) -> list[dict[str, Any]]:
    data = payload["data"]
    return data["items"] if "items" in data else [{"matched": data["matched"], "item": data["item"]}]


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
    title = html.escape(one_line(item["title"] or "(no title)"))
    link = _web_link(item["link"])
    heading = f'<a href="{html.escape(link, quote=True)}">{title}</a>' if link else title
    meta = html.escape(
        f"{item['feed']} · {item['published'] or 'no date'} · matched: {', '.join(entry['matched'])}"
    )
    summary = f"<p>{html.escape(item['summary'])}</p>" if item.get("summary") else ""
    return f"<li><b>{heading}</b><br><small>{meta}</small>{summary}</li>"


def alert_email(delivery: Delivery, sender: str, recipients: list[str], now: datetime) -> EmailMessage:
    entries = _entries(delivery.payload)
    alert = delivery.alert
    if len(entries) == 1:
        subject = subject_line(alert, entries[0]["item"]["title"] or "")
    else:
        subject = subject_line(alert, f"{len(entries)} new items")
    message = EmailMessage(policy=policy.SMTP)
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<{delivery.delivery_id}@{_domain(sender)}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n\n".join(_text_entry(e) for e in entries) + "\n\n-- \nnewswatch\n")
    body = f"<ul>{''.join(_html_entry(e) for e in entries)}</ul><hr><small>newswatch</small>"
    # Defence in depth: even our own escaped HTML goes through the sanitiser (http(s) links only).
    message.add_alternative(
        nh3.clean(body, tags=_HTML_TAGS, url_schemes={"http", "https"}, attributes={"a": {"href"}}),
        subtype="html",
    )
    _check_headers(message, subject, sender, recipients)
    return message


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

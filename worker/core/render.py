"""What receivers get: the webhook payload of SPEC §6, its Standard Webhooks signature, the log line."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from worker.core.highlights import PAYLOAD_FIELDS, payload_highlights
from worker.core.identity import delivery_id
from worker.core.models import AlertMatch, Delivery, Item, utc_iso
from worker.core.ops import is_ops_event, log_fields
from worker.core.query import Node
from worker.core.rules import Classified
from worker.core.text import one_line


def item_payload(
    item: Item, topics: tuple[str, ...], story: str | None = None, reports: int = 1
) -> dict[str, Any]:
    """The item as receivers get it. `story` and `reports` are the item's own (a story of one)
    until the commit places it in its story (see with_story)."""
    return {
        "id": item.id,
        "feed": item.feed,
        "title": item.title,
        "link": item.link,
        "published": utc_iso(item.published) if item.published else None,
        "summary": item.summary,
        "categories": list(item.categories),
        "topics": list(topics),
        "story": story or item.id,
        "reports": reports,
        **({"author": item.author} if item.author else {}),
    }


def alert_payload(
    match: AlertMatch,
    item: Item,
    topics: tuple[str, ...],
    now: datetime,
    highlights: dict[str, list[dict[str, object]]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "newswatch.alert",
        "timestamp": utc_iso(now),
        "data": {
            "alert": match.alert,
            "matched": list(match.matched),
            "item": item_payload(item, topics),
            "highlights": highlights or {name: [] for name in PAYLOAD_FIELDS},
        },
    }


def deliveries_for(
    classified: Classified, now: datetime, queries: Mapping[str, Node] | None = None
) -> list[Delivery]:
    """One delivery per (alert, channel); the payload is fixed now so every retry sends the same
    body. With the alerts' `queries`, the payload marks the words they matched (highlights)."""
    result = []
    for match in classified.matches:
        query = queries.get(match.alert) if queries else None
        marks = payload_highlights(classified.item, query) if query is not None else None
        payload = alert_payload(match, classified.item, classified.topics, now, marks)
        for channel in match.channels:
            result.append(
                Delivery(delivery_id(match.alert, classified.item.id, channel), match.alert, channel, payload)
            )
    return result


def with_story(delivery: Delivery, story: str, reports: int) -> Delivery:
    """The delivery with its item placed in a story: `data.item.story` and `.reports`."""
    if (
        delivery.payload["data"]["item"].get("story") == story
        and delivery.payload["data"]["item"].get("reports") == reports
    ):
        return delivery
    payload = copy.deepcopy(delivery.payload)
    payload["data"]["item"] |= {"story": story, "reports": reports}
    return Delivery(delivery.delivery_id, delivery.alert, delivery.channel, payload)


def webhook_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64). Raises ValueError if malformed."""
    encoded = secret.removeprefix("whsec_")
    return base64.b64decode(encoded, validate=True)


def webhook_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per Standard Webhooks."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def log_lines(delivery: Delivery) -> list[str]:
    """One structured (logfmt) line per alert, readable by people and by log shippers; a digest
    gives one line per item it holds; a feed's health event (worker.core.ops) one FEED line."""
    if is_ops_event(delivery.payload):
        fields = log_fields(delivery.payload)
        return ["FEED " + " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())]
    data = delivery.payload["data"]
    entries = data["items"] if "items" in data else [{"matched": data["matched"], "item": data["item"]}]
    kind = "DIGEST" if "items" in data else "ALERT"
    return [f"{kind} " + _logfmt_fields(data["alert"], e["matched"], e["item"]) for e in entries]


def _logfmt_fields(alert: str, matched: list[str], item: dict[str, Any]) -> str:
    fields = {
        "alert": alert,
        "feed": item["feed"],
        "item": item["id"],
        "matched": ",".join(matched),
        "title": one_line(item["title"] or ""),
        "link": one_line(item["link"] or ""),
        "published": item["published"] or "",
        # Topics hold the feed's own categories: outside text, made one line like the title.
        "topics": ",".join(one_line(topic) for topic in item["topics"]),
    }
    return " ".join(f"{key}={_logfmt(value)}" for key, value in fields.items())


def _logfmt(value: str) -> str:
    if value and not any(ch in value for ch in ' "=\\'):
        return value
    return json.dumps(value, ensure_ascii=False)

"""Plain data that flows through the pipeline: items, alert matches, deliveries.

Everything here converts to and from JSON-safe dicts, because RQ jobs carry it with
the JSON serializer (never pickle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utc_iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a trailing Z, seconds precision."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Item:
    """One feed entry, normalised. `published` is timezone-aware UTC or None."""

    feed: str
    guid: str | None
    link: str | None
    canonical_link: str | None
    title: str
    summary: str  # plain text, HTML stripped
    content: str  # plain text of the full content when the feed carries more than the summary
    categories: tuple[str, ...]
    published: datetime | None
    id: str  # stable item id (see identity.item_id)
    author: str | None = None  # from an article page or an API, when it names one

    def to_dict(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "guid": self.guid,
            "link": self.link,
            "canonical_link": self.canonical_link,
            "title": self.title,
            "summary": self.summary,
            "content": self.content,
            "categories": list(self.categories),
            "published": utc_iso(self.published) if self.published else None,
            "id": self.id,
            **({"author": self.author} if self.author else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(
            feed=data["feed"],
            guid=data.get("guid"),
            link=data.get("link"),
            canonical_link=data.get("canonical_link"),
            title=data.get("title", ""),
            summary=data.get("summary", ""),
            content=data.get("content", ""),
            categories=tuple(data.get("categories", ())),
            published=parse_utc(data.get("published")),
            id=data["id"],
            author=data.get("author") or None,
        )


@dataclass(frozen=True)
class AlertMatch:
    """An alert rule that fired for an item, with the query terms that matched."""

    alert: str
    matched: tuple[str, ...]
    channels: tuple[str, ...]


@dataclass(frozen=True)
class Delivery:
    """One (alert, item, channel) to send; `delivery_id` is the same on every try."""

    delivery_id: str
    alert: str
    channel: str
    payload: dict[str, Any] = field(hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "alert": self.alert,
            "channel": self.channel,
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(data["delivery_id"], data["alert"], data["channel"], data["payload"])

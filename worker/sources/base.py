"""What every source adapter takes and gives: a fetched page in, raw entries out."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.core.items import RawEntry


@dataclass(frozen=True)
class Page:
    """A fetched document: its final address (after redirects), body and media type."""

    url: str
    body: bytes
    content_type: str = ""


@dataclass(frozen=True)
class SourceResult:
    entries: list[RawEntry] = field(default_factory=list)
    ttl_minutes: float | None = None  # RSS <ttl>: how long the publisher says it may be cached
    warning: str | None = None  # something a person should know about this page (status shows it)

"""Publication dates from the text sources write them in (SPEC §4, §8). Pure.

Feeds write RFC 822 dates ("Fri, 15 Aug 2025 15:51:00 +0200"), often with a zone name;
pages and APIs write ISO 8601. German sites write zone names such as MESZ, which general
parsers read as UTC: here they get their real offset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# Dates further ahead than this are a source's mistake, not news from the future: shown as unknown.
FUTURE_TOLERANCE = timedelta(days=1)

_ZONE_OFFSETS = {
    "CET": "+0100", "MEZ": "+0100", "CEST": "+0200", "MESZ": "+0200",
    "WET": "+0000", "WEZ": "+0000", "WEST": "+0100", "WESZ": "+0100",
    "EET": "+0200", "OEZ": "+0200", "EEST": "+0300", "OESZ": "+0300",
}  # fmt: skip
_ZONE_NAME = re.compile(r"^(.*\d)\s+(" + "|".join(_ZONE_OFFSETS) + r")\s*$", re.IGNORECASE)

DateCandidate = str | datetime | None


def parse_date(text: str) -> datetime | None:
    """An aware UTC datetime from an RFC 822 date (European zone names included) or ISO 8601
    text; None when the text says no zone or is not a date this knows."""
    text = text.strip()
    if not text:
        return None
    match = _ZONE_NAME.match(text)
    if match:
        text = f"{match.group(1)} {_ZONE_OFFSETS[match.group(2).upper()]}"
    moment = _rfc822(text) or _iso8601(text)
    if moment is None or moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def _rfc822(text: str) -> datetime | None:
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _iso8601(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None


def first_date(candidates: Iterable[DateCandidate], now: datetime) -> datetime | None:
    """The first candidate that is a date (text is parsed, a datetime taken as it is), or None.
    A date more than FUTURE_TOLERANCE ahead of `now` is a mistake: None, not the next one."""
    latest = now + FUTURE_TOLERANCE
    for candidate in candidates:
        if isinstance(candidate, str):
            moment = parse_date(candidate)
        elif isinstance(candidate, datetime) and candidate.tzinfo is not None:
            moment = candidate.astimezone(UTC)
        else:
            moment = None
        if moment is not None:
            return moment if moment <= latest else None
    return None

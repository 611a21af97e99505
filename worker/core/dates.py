"""Publication dates from the text sources write them in (SPEC §4, §8). Pure.

Feeds write RFC 822 dates ("Fri, 15 Aug 2025 15:51:00 +0200"), often with a zone name;
pages and APIs write ISO 8601. German sites write zone names such as MESZ, which general
parsers read as UTC: here they get their real offset. German pages also write dates as text
("15. August 2025, 15:51 Uhr", "15.08.2025 · 15:51 Uhr"), meaning German time: those are read
in Europe/Berlin, summer time included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

# Dates further ahead than this are a source's mistake, not news from the future: shown as unknown.
FUTURE_TOLERANCE = timedelta(days=1)

_ZONE_OFFSETS = {
    "CET": "+0100", "MEZ": "+0100", "CEST": "+0200", "MESZ": "+0200",
    "WET": "+0000", "WEZ": "+0000", "WEST": "+0100", "WESZ": "+0100",
    "EET": "+0200", "OEZ": "+0200", "EEST": "+0300", "OESZ": "+0300",
}  # fmt: skip
_ZONE_NAME = re.compile(r"^(.*\d)\s+(" + "|".join(_ZONE_OFFSETS) + r")\s*$", re.IGNORECASE)

DateCandidate = str | datetime | None

GERMAN_TIME = ZoneInfo("Europe/Berlin")
_MONTHS = {
    "jan": 1, "jän": 1, "feb": 2, "mär": 3, "mae": 3, "mrz": 3, "apr": 4, "mai": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "okt": 10, "nov": 11, "dez": 12,
}  # fmt: skip
_MONTH_NAMES = (
    r"Januar|Jänner|Februar|März|Maerz|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember"
    r"|Jan|Jän|Feb|Mär|Mrz|Apr|Jun|Jul|Aug|Sept|Sep|Okt|Nov|Dez"
)
# "um 15:51 Uhr", ", 15:51", "· 15.51 Uhr": a time shortly after the date, in the same phrase.
_TIME = (
    r"(?:\s*(?:[,·•|–-]\s*)?(?:um\s+)?(?P<hour>[01]?\d|2[0-3])"
    r"(?::(?P<minute>[0-5]\d)(?:\s*Uhr)?|\.(?P<minute2>[0-5]\d)\s*Uhr))?"
)
_GERMAN_DATES = (
    re.compile(
        r"(?<![\d.])(?P<day>[0-3]?\d)\.\s*(?P<month>"
        + _MONTH_NAMES
        + r")\.?\s+(?P<year>(?:19|20)\d\d)\b"
        + _TIME,
        re.IGNORECASE,
    ),
    re.compile(
        r"(?<![\d.])(?P<day>[0-3]?\d)\.(?P<month>[01]?\d)\.(?P<year>(?:19|20)\d\d)(?![\d.]\d)" + _TIME
    ),
)


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
    if moment is None:
        moment = german_date(text)
    if moment is None or moment.tzinfo is None:
        return None
    return moment.astimezone(UTC)


def german_date(text: str) -> datetime | None:
    """The first German text date in `text` ("15. August 2025, 15:51 Uhr", "15.08.2025 · 15:51
    Uhr", "15.08.2025"), read as German time (Europe/Berlin, summer time included), in UTC.
    A date without a time is the start of that day. None when there is none, or it is impossible."""
    for pattern in _GERMAN_DATES:
        for match in pattern.finditer(text):
            moment = _german_moment(match)
            if moment is not None:
                return moment
    return None


def _german_moment(match: re.Match[str]) -> datetime | None:
    month_text = match.group("month")
    month = int(month_text) if month_text.isdigit() else _MONTHS.get(month_text[:3].casefold())
    if month is None:
        return None
    hour = int(match.group("hour") or 0)
    minute = int(match.group("minute") or match.group("minute2") or 0)
    try:
        local = datetime(int(match.group("year")), month, int(match.group("day")), hour, minute)
    except ValueError:
        return None
    return local.replace(tzinfo=GERMAN_TIME).astimezone(UTC)


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

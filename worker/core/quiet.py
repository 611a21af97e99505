"""Quiet hours of an alert (`quiet: "22:00-07:00 Europe/Berlin"`): whether an instant lies in
them and when they end. Pure. The window is wall-clock time in its zone, so it follows the local
clock across a DST change (07:00 is 07:00 whether the night had 23, 24 or 25 hours)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EXAMPLE = "22:00-07:00 Europe/Berlin"
_FORMAT = re.compile(r"(\d{1,2}):(\d\d)\s*-\s*(\d{1,2}):(\d\d)(?:\s+(\S+))?")


@dataclass(frozen=True)
class QuietHours:
    """From `start` (included) to `end` (excluded), local time in `zone`; crosses midnight
    when `end` is earlier in the day than `start`."""

    start: time
    end: time
    zone: str = "UTC"

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M} {self.zone}"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)  # ZoneInfo caches its instances: cheap to ask again


def parse_quiet_hours(text: object) -> QuietHours:
    """`"HH:MM-HH:MM [IANA zone]"`, the zone UTC when left out. Raises ValueError saying what is
    wrong (config.py puts the key path in front)."""
    written = text.strip() if isinstance(text, str) else ""
    found = _FORMAT.fullmatch(written)
    if found is None:
        raise ValueError(
            f"{text!r} is not quiet hours: write 'HH:MM-HH:MM' and optionally an IANA time zone, "
            f"e.g. '{EXAMPLE}' (without a zone: UTC)"
        )
    start = _time_of_day(found.group(1), found.group(2))
    end = _time_of_day(found.group(3), found.group(4))
    if start == end:
        raise ValueError(f"quiet hours start and end at the same time ({start:%H:%M}): no window")
    zone = found.group(5) or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError) as e:  # OSError: a directory, e.g. Europe
        raise ValueError(f"unknown time zone {zone!r} (an IANA name such as Europe/Berlin, or UTC)") from e
    return QuietHours(start, end, zone)


def _time_of_day(hours: str, minutes: str) -> time:
    if int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"'{hours}:{minutes}' is not a time of day (00:00 to 23:59)")
    return time(int(hours), int(minutes))


def quiet_until(now: datetime, quiet: QuietHours) -> datetime | None:
    """The end (UTC) of the quiet hours `now` lies in; None when `now` lies outside them."""
    zone = quiet.tz
    local = now.astimezone(zone)
    wall, today = time(local.hour, local.minute, local.second, local.microsecond), local.date()
    if quiet.start < quiet.end:
        if not quiet.start <= wall < quiet.end:
            return None
        day = today
    else:  # across midnight: from `start` today to `end` tomorrow, or from yesterday to today
        if quiet.end <= wall < quiet.start:
            return None
        day = today + timedelta(days=1) if wall >= quiet.start else today
    return _next_showing(now, day, quiet.end, zone)


def _next_showing(now: datetime, day: date, at: time, zone: ZoneInfo) -> datetime | None:
    """The first instant after `now` at which the clock in `zone` shows `at` on `day`. A time
    the clock shows twice (the hour repeated when DST ends) counts each time; one it skips (DST
    starts) is read as PEP 495 reads it, shifted by the jump (02:30 -> 03:30)."""
    readings = [datetime.combine(day, at, zone).replace(fold=fold).astimezone(UTC) for fold in (0, 1)]
    # What the clock really shows: both readings of a repeated time, neither of a skipped one,
    # whose fold=1 reading (02:30 at the later offset: 01:30 before the jump) is not a showing.
    shown = [instant for instant in readings if _shows(instant.astimezone(zone), at)] or readings[:1]
    return min((instant for instant in shown if instant > now), default=None)


def _shows(local: datetime, at: time) -> bool:
    return (local.hour, local.minute, local.second) == (at.hour, at.minute, at.second)


def release_time(end: datetime, quiet: QuietHours | None) -> datetime:
    """When a digest due at `end` goes out: at `end`, or when the quiet hours `end` falls in are
    over (a digest or an hour's cap never closes inside quiet hours)."""
    if quiet is None:
        return end
    return quiet_until(end, quiet) or end


def local_time(instant: datetime, quiet: QuietHours) -> str:
    """`07:00 Europe/Berlin`: an instant as the quiet hours' zone shows it."""
    return f"{instant.astimezone(quiet.tz):%H:%M} {quiet.zone}"

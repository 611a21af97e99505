"""When to poll a feed next: politeness after success, backoff after errors. Pure; the caller
passes the random number, so tests see exact schedules."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_ERROR_BACKOFF = timedelta(hours=6)
MAX_POLITE_WAIT = timedelta(days=1)
MAX_RETRY_AFTER = 86400  # seconds: a receiver's Retry-After is honoured up to a day


def wait_after_success(
    interval: timedelta, fresh_for: float | None = None, ttl_minutes: float | None = None
) -> timedelta:
    """The configured interval, lengthened (never shortened) by Cache-Control/Expires or RSS <ttl>."""
    wait = interval
    for hint in (fresh_for, ttl_minutes * 60 if ttl_minutes else None):
        if hint and timedelta(seconds=hint) > wait:
            wait = timedelta(seconds=hint)
    return min(wait, max(interval, MAX_POLITE_WAIT))


def wait_after_error(
    interval: timedelta, errors_in_a_row: int, unit_random: float, retry_after: float | None = None
) -> timedelta:
    """Exponential backoff with ±10 % jitter: the first error waits one interval, each further one
    doubles it, capped at six hours (or the interval, if that is longer). A server's Retry-After
    wins when it asks for longer."""
    doubling = min(max(errors_in_a_row - 1, 0), 30)
    cap = max(MAX_ERROR_BACKOFF, interval)
    wait = min(interval * (1 << doubling), cap) * (0.9 + 0.2 * unit_random)
    if retry_after is not None:
        wait = max(wait, min(timedelta(seconds=retry_after), max(cap, MAX_POLITE_WAIT)))
    return wait


def next_retry_delay(configured: int, retry_after: float | None, unit_random: float) -> int:
    """±20 % jitter around the configured wait, so retries of many alerts do not arrive together;
    a Retry-After from the receiver wins (capped at a day)."""
    if retry_after is not None:
        return max(1, min(math.ceil(retry_after), MAX_RETRY_AFTER))
    return max(1, round(configured * (0.8 + 0.4 * unit_random)))


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """An HTTP Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    moment = _http_date(value)
    return None if moment is None else max(0.0, (moment - now).total_seconds())


def fresh_for_seconds(cache_control: str | None, expires: str | None, now: datetime) -> float | None:
    """How long a response says it stays fresh: Cache-Control max-age, else Expires."""
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() in ("no-cache", "no-store"):
            return None
        if name.lower() == "max-age" and value.strip('"').isdigit():
            return float(value.strip('"'))
    moment = _http_date(expires) if expires else None
    return None if moment is None else max(0.0, (moment - now).total_seconds())


def _http_date(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else None

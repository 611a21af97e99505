"""robots.txt (RFC 9309, SPEC §8): fetched once per host through our own guarded fetcher,
cached for a day, read with Protego (RFC 9309: the longest matching rule wins, `*` and `$` in
paths), which is only ever given the text. The standard library's parser takes the first
matching rule instead and ignores wildcards: `Allow: /` before `Disallow: /private/` let it
fetch what the site forbids.

Answers: 2xx is the rules; 4xx (a missing file) allows everything; 5xx, 429, a timeout or
an unreachable host allows nothing for now and is asked again in a few minutes (RFC 9309
§2.3.1.4: a server that cannot answer is taken as "disallow").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Protocol
from urllib.parse import urlsplit

import redis
from protego import Protego

from worker.adapters import garbage, keys
from worker.adapters.http_fetch import FetchResult, HttpStatusError
from worker.core.errors import FeedGoneError, FetchError

RULES_TTL = timedelta(days=1)
UNAVAILABLE_TTL = timedelta(minutes=10)
MAX_ROBOTS_BYTES = 512_000  # RFC 9309 §2.5: at least 500 KiB must be read
AGENT = "newswatch"  # the product token of our User-Agent, as robots.txt groups name it
_ALLOW_ALL = "\x00allow"  # stored for a host without robots.txt (no robots.txt holds a NUL)
_UNAVAILABLE = "\x00unavailable"


class RobotsDisallowedError(FetchError):
    """robots.txt does not let newswatch fetch this page (or its host could not say)."""


class RobotsUnavailableError(RobotsDisallowedError):
    """The host could not say what its robots.txt allows (5xx, timeout): asked again soon."""


class RobotsStorage(Protocol):
    def get(self, origin: str) -> str | None: ...
    def put(self, origin: str, text: str, ttl: timedelta) -> None: ...


class RedisRobotsStorage:
    """In Redis, shared by every scheduler and `newswatch poll` process."""

    def __init__(self, connection: redis.Redis) -> None:
        self.redis = connection

    def get(self, origin: str) -> str | None:
        """The cached text, or None. A key of another type (garbage) reads as no cache: robots.txt
        is fetched again and `put` replaces it."""
        try:
            value = self.redis.get(keys.robots(origin))
        except redis.ResponseError as e:
            if not garbage.is_wrong_type(e):
                raise
            garbage.found("robots", keys.robots(origin), "holds another type than a string", "fetched afresh")
            return None
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else None

    def put(self, origin: str, text: str, ttl: timedelta) -> None:
        self.redis.set(keys.robots(origin), text, ex=int(ttl.total_seconds()))


@dataclass
class MemoryRobotsStorage:
    """In this process only: for `newswatch preview` and `discover`, which write nothing to Redis."""

    clock: Callable[[], datetime]
    entries: dict[str, tuple[str, datetime]] = field(default_factory=dict)

    def get(self, origin: str) -> str | None:
        entry = self.entries.get(origin)
        return entry[0] if entry and entry[1] > self.clock() else None

    def put(self, origin: str, text: str, ttl: timedelta) -> None:
        self.entries[origin] = (text, self.clock() + ttl)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def check(url: str, storage: RobotsStorage, fetch: Callable[[str], FetchResult]) -> None:
    """Raise RobotsDisallowedError unless robots.txt lets newswatch fetch `url`. `fetch` gets
    robots.txt (our guarded fetcher) when the storage has no fresh copy of it."""
    origin = origin_of(url)
    text = storage.get(origin)
    if text is None:
        text, ttl = _fetch_robots(origin, fetch)
        storage.put(origin, text, ttl)
    if text == _UNAVAILABLE:
        host = urlsplit(url).hostname
        raise RobotsUnavailableError(f"robots.txt of {host} could not be read: not fetching for now")
    if text != _ALLOW_ALL and not _rules(text).can_fetch(url, AGENT):
        raise RobotsDisallowedError(f"disallowed by robots.txt: {url}")


def _fetch_robots(origin: str, fetch: Callable[[str], FetchResult]) -> tuple[str, timedelta]:
    try:
        result = fetch(f"{origin}/robots.txt")
    except FeedGoneError:
        return _ALLOW_ALL, RULES_TTL
    except HttpStatusError as e:
        return (_ALLOW_ALL, RULES_TTL) if 400 <= e.status < 500 else (_UNAVAILABLE, UNAVAILABLE_TTL)
    except FetchError:  # 5xx, 429/503, timeouts, refused connections, a body over the cap
        return _UNAVAILABLE, UNAVAILABLE_TTL
    text = result.body.decode("utf-8", "replace")
    return (text if text.strip() else _ALLOW_ALL), RULES_TTL


@lru_cache(maxsize=64)
def _rules(text: str) -> Protego:
    """Parsed once per distinct text: every article page of a host asks the same rules."""
    return Protego.parse(text)

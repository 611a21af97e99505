"""HTTP fetch of one feed: conditional GET, a total deadline, a size cap counted after
decompression (with bounded memory), bounded redirects, the URL guard. Every failure becomes a
FetchError whose message a person understands."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import httpcore
import httpx

from worker import __version__
from worker.adapters.net import BlockedAddressError, GuardedBackend, deadline
from worker.core.errors import FeedGoneError, FetchError, TransientFetchError
from worker.core.timing import fresh_for_seconds, retry_after_seconds
from worker.core.units import format_duration, format_size

USER_AGENT = f"newswatch/{__version__} (+https://github.com/newswatch/newswatch)".encode()
ACCEPT = (
    b"application/rss+xml, application/atom+xml, application/rdf+xml, "
    b"application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
# What `html` and `json` sources and article pages ask for (SPEC §8).
ACCEPT_HTML = b"text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
ACCEPT_JSON = b"application/json, */*;q=0.5"
# A redirect policy: given the next URL, why not to follow it (None: follow).
RedirectCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class FetchResult:
    status: int
    url: str  # final URL after redirects
    body: bytes  # empty for 304
    content_type: str
    etag: str | None
    last_modified: str | None
    permanent_redirect: str | None  # where a chain of 301/308 ended: the feed's new home
    fresh_for: float | None  # seconds the server says the feed stays fresh (max-age / Expires)

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class FetchLimits:
    timeout: float  # seconds, for the whole fetch, redirects included
    max_bytes: int
    max_redirects: int


class HttpStatusError(FetchError):
    """The server answered with an error status (4xx/5xx other than 410, 429 and 503)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class RetryLaterError(FetchError):
    """HTTP 429/503 with Retry-After: the server named when to come back."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Everything httpcore raises for a request that did not get an answer.
TRANSPORT_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HostPools:
    """One small httpcore connection pool per server (scheme, host, port), made on first use.

    httpcore's pool scans every connection it holds, under one lock, for each request; with
    hundreds of polls in flight on hundreds of hosts that lock became the scheduler's
    bottleneck (threads waited on it most of the time). A pool per server keeps each scan short
    and lets polls of different servers never wait for each other. Connections are reused
    across polls of the same server and across webhook posts; all pools share the TLS context
    and the GuardedBackend (deadlines, URL guard). httpcore, not httpx.Client: a poll of an
    unchanged feed is one small request, and httpx's request and response models, cookie jar
    and URL merging cost a third of its CPU (docs/performance.md)."""

    def __init__(self, allow_private: bool, per_server: int = 64) -> None:
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._backend = GuardedBackend(allow_private)
        self._per_server = per_server
        self._pools: dict[tuple[bytes, bytes, int | None], httpcore.ConnectionPool] = {}
        self._lock = threading.Lock()

    def pool(self, url: httpcore.URL) -> httpcore.ConnectionPool:
        key = (url.scheme, url.host, url.port)
        pool = self._pools.get(key)
        if pool is None:
            with self._lock:
                pool = self._pools.get(key)
                if pool is None:
                    pool = self._pools[key] = httpcore.ConnectionPool(
                        ssl_context=self._ssl,
                        max_connections=self._per_server,
                        max_keepalive_connections=8,
                        keepalive_expiry=30.0,
                        network_backend=self._backend,
                    )
        return pool

    def stream(
        self, method: str, url: httpcore.URL, **kwargs: Any
    ) -> AbstractContextManager[httpcore.Response]:
        return self.pool(url).stream(method, url, **kwargs)

    def request(self, method: str, url: httpcore.URL, **kwargs: Any) -> httpcore.Response:
        return self.pool(url).request(method, url, **kwargs)


def client(allow_private: bool, per_server: int = 64) -> HostPools:
    """The process's HTTP client: connection pools per server, on the URL guard."""
    return HostPools(allow_private, per_server)


@lru_cache(maxsize=4096)
def request_url(url: str) -> httpcore.URL:
    """httpx parses and normalises the URL (IDNA hosts, percent-encoding), once per URL: feeds
    and webhooks are requested again and again at the same address."""
    parsed = httpx.URL(url)
    return httpcore.URL(
        scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port, target=parsed.raw_path
    )


def host_key(url: str) -> str:
    """The server a URL is fetched from, for per-host limits: host and port."""
    target = request_url(url)
    return f"{target.host.decode('ascii', 'replace')}:{target.port or ''}"


def response_headers(response: httpcore.Response) -> dict[str, str]:
    """Header names lower-cased; of a repeated header, the last one."""
    return {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in response.headers}


def timeouts(seconds: float) -> dict[str, dict[str, float]]:
    """The extensions httpcore takes for a timeout on every connect, read, write and pool wait."""
    return {"timeout": {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}}


def fetch(
    http: HostPools,
    url: str,
    limits: FetchLimits,
    now: datetime,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    accept: bytes = ACCEPT,
    extra_headers: Mapping[str, str] | None = None,
    redirect_check: RedirectCheck | None = None,
) -> FetchResult:
    """GET a document (conditionally, with validators); `now` reads Retry-After and Expires.
    `extra_headers` are the source's own (an API key); `redirect_check` may refuse a hop."""
    headers = _request_headers(accept, extra_headers, etag, last_modified)
    extensions = timeouts(limits.timeout)
    hops: list[int] = []  # the redirects followed, by status
    current = url
    try:
        with deadline(limits.timeout):
            while True:
                target = request_url(current)
                with http.stream("GET", target, headers=headers, extensions=extensions) as response:
                    fields = response_headers(response)
                    location = fields.get("location")
                    if response.status in _REDIRECTS and location:
                        if len(hops) >= limits.max_redirects:
                            raise FetchError("too many redirects")
                        hops.append(response.status)
                        current = str(httpx.URL(current).join(location))
                        refused = redirect_check(current) if redirect_check else None
                        if refused:
                            raise FetchError(refused)
                        continue
                    _check_status(response.status, fields, now)
                    # Reading the (empty) 304 body ends the message, so the connection goes back
                    # to the pool; leaving it unread would close it and cost a new connection.
                    body = _read_capped(response, fields, limits.max_bytes)
                    break
    except httpcore.TimeoutException as e:
        raise TransientFetchError(
            f"timed out after {format_duration(timedelta(seconds=limits.timeout))}"
        ) from e
    except httpcore.ConnectError as e:
        blocked = isinstance(e, BlockedAddressError)  # the guard's refusal stays as long as the URL
        raise (FetchError if blocked else TransientFetchError)(_connect_message(e, current)) from e
    except httpcore.RemoteProtocolError as e:
        raise TransientFetchError("server broke the HTTP protocol or closed the connection early") from e
    except (httpx.InvalidURL, httpcore.UnsupportedProtocol) as e:
        raise FetchError("invalid URL") from e
    except TRANSPORT_ERRORS as e:
        raise TransientFetchError(f"connection failed: {e.__class__.__name__}") from e
    return FetchResult(
        status=response.status,
        url=current,
        body=body,
        content_type=fields.get("content-type", ""),
        etag=fields.get("etag"),
        last_modified=fields.get("last-modified"),
        # Where a chain of 301/308 ended is the feed's new home; one 302 on the way makes it not.
        permanent_redirect=current if hops and all(h in (301, 308) for h in hops) else None,
        fresh_for=fresh_for_seconds(fields.get("cache-control"), fields.get("expires"), now),
    )


def _request_headers(
    accept: bytes, extra: Mapping[str, str] | None, etag: str | None, last_modified: str | None
) -> list[tuple[bytes, bytes]]:
    headers = [(b"User-Agent", USER_AGENT), (b"Accept", accept), (b"Accept-Encoding", b"gzip, deflate")]
    for name, value in (extra or {}).items():
        if value:
            headers.append((name.encode("latin-1", "replace"), value.encode("latin-1", "replace")))
    if etag:
        headers.append((b"If-None-Match", etag.encode("latin-1", "replace")))
    if last_modified:
        headers.append((b"If-Modified-Since", last_modified.encode("latin-1", "replace")))
    return headers


def _check_status(status: int, headers: dict[str, str], now: datetime) -> None:
    if status == 410:
        raise FeedGoneError("HTTP 410 Gone: feed disabled")
    if status in (429, 503):
        retry_after = retry_after_seconds(headers.get("retry-after"), now)
        raise RetryLaterError(f"HTTP {status}", retry_after)
    if status >= 400:
        raise HttpStatusError(status)
    if 300 <= status < 400 and status != 304:
        raise FetchError(f"HTTP {status} without a usable Location")


def _decoder(encoding: str) -> zlib._Decompress | None:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib or gzip header, auto-detected
    raise FetchError(f"unsupported content encoding: {encoding[:40]}")


def _read_capped(response: httpcore.Response, headers: dict[str, str], max_bytes: int) -> bytes:
    """Read the body, decompressing ourselves with a bounded output per step, so a gzip bomb
    costs at most max_bytes of memory and is cut off there. Content-Length is not trusted."""
    too_large = FetchError(f"response larger than {format_size(max_bytes)}")
    decoder = _decoder(headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    size = 0
    try:
        for raw in response.iter_stream():
            data = raw
            while data:
                if decoder is None:
                    out, data = data, b""
                else:
                    out = decoder.decompress(data, max_bytes - size + 1)
                    data = decoder.unconsumed_tail
                size += len(out)
                if size > max_bytes:
                    raise too_large
                chunks.append(out)
    except zlib.error as e:
        raise FetchError("response body could not be decompressed") from e
    return b"".join(chunks)


def _connect_message(error: httpcore.ConnectError, url: str) -> str:
    if isinstance(error, BlockedAddressError):
        return str(error)
    text = str(error).lower()
    host = httpx.URL(url).host
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return f"DNS lookup failed for {host}"
    if "no address associated" in text or "errno -5" in text or "errno -2" in text or "errno -3" in text:
        return f"DNS lookup failed for {host}"
    if "refused" in text:
        return f"connection refused by {host}"
    return f"cannot connect to {host}"

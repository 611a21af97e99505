"""HTTP fetch of one feed: conditional GET, a total deadline, a size cap counted after
decompression (with bounded memory), bounded redirects, the URL guard. Every failure becomes a
FetchError whose message a person understands."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpcore
import httpx

from worker import __version__
from worker.adapters.net import BlockedAddressError, GuardedBackend, deadline
from worker.core.errors import FeedGoneError, FetchError
from worker.core.units import format_duration, format_size

USER_AGENT = f"newswatch/{__version__} (+https://github.com/newswatch/newswatch)"
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
)
RAW_CHUNK = 16_384


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


class RetryLaterError(FetchError):
    """HTTP 429/503 with Retry-After: the server named when to come back."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client(max_redirects: int, allow_private: bool) -> httpx.Client:
    """One client per process: connections are pooled across polls of the same host. Its pool
    runs on GuardedBackend (deadlines, URL guard); httpx offers no public hook for that."""
    transport = httpx.HTTPTransport(trust_env=False)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=30.0,
        network_backend=GuardedBackend(allow_private),
    )
    return httpx.Client(transport=transport, max_redirects=max_redirects, trust_env=False)


def fetch(
    http: httpx.Client,
    url: str,
    limits: FetchLimits,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FetchResult:
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": "gzip, deflate"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    timed_out = f"timed out after {format_duration(timedelta(seconds=limits.timeout))}"
    try:
        with (
            deadline(limits.timeout),
            http.stream(
                "GET", url, headers=headers, timeout=httpx.Timeout(limits.timeout), follow_redirects=True
            ) as response,
        ):
            _check_status(response)
            # Reading the (empty) 304 body ends the message, so the connection goes back to the
            # pool; leaving it unread would close it and cost a new connection on every poll.
            body = _read_capped(response, limits.max_bytes)
    except httpx.TooManyRedirects as e:
        raise FetchError("too many redirects") from e
    except httpx.TimeoutException as e:
        raise FetchError(timed_out) from e
    except httpx.ConnectError as e:
        raise FetchError(_connect_message(e, url)) from e
    except httpx.RemoteProtocolError as e:
        raise FetchError("server broke the HTTP protocol or closed the connection early") from e
    except httpx.TransportError as e:
        raise FetchError(f"connection failed: {e.__class__.__name__}") from e
    except httpx.InvalidURL as e:
        raise FetchError("invalid URL") from e
    return FetchResult(
        status=response.status_code,
        url=str(response.url),
        body=body,
        content_type=response.headers.get("content-type", ""),
        etag=response.headers.get("etag"),
        last_modified=response.headers.get("last-modified"),
        permanent_redirect=_permanent_redirect(response),
        fresh_for=_fresh_for(response.headers),
    )


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status == 410:
        raise FeedGoneError("HTTP 410 Gone: feed disabled")
    if status in (429, 503):
        retry_after = http_retry_after(response.headers.get("retry-after"))
        raise RetryLaterError(f"HTTP {status}", retry_after)
    if status >= 400:
        raise FetchError(f"HTTP {status}")
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


def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """Read the body, decompressing ourselves with a bounded output per step, so a gzip bomb
    costs at most max_bytes of memory and is cut off there. Content-Length is not trusted."""
    too_large = FetchError(f"response larger than {format_size(max_bytes)}")
    decoder = _decoder(response.headers.get("content-encoding", ""))
    chunks: list[bytes] = []
    size = 0
    try:
        for raw in response.iter_raw(RAW_CHUNK):
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


def http_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def _fresh_for(headers: httpx.Headers) -> float | None:
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.lower() in ("no-cache", "no-store"):
            return None
        if name.lower() == "max-age" and value.strip('"').isdigit():
            return float(value.strip('"'))
    expires = headers.get("expires")
    if expires:
        try:
            moment = parsedate_to_datetime(expires)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is not None:
            return max(0.0, (moment - datetime.now(UTC)).total_seconds())
    return None


def _connect_message(error: httpx.ConnectError, url: str) -> str:
    if isinstance(error.__cause__, BlockedAddressError):
        return str(error.__cause__)
    text = str(error).lower()
    host = httpx.URL(url).host
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return f"DNS lookup failed for {host}"
    if "no address associated" in text or "errno -5" in text or "errno -2" in text or "errno -3" in text:
        return f"DNS lookup failed for {host}"
    if "refused" in text:
        return f"connection refused by {host}"
    return f"cannot connect to {host}"


def _permanent_redirect(response: httpx.Response) -> str | None:
    history = response.history
    if history and all(r.status_code in (301, 308) for r in history):
        return str(response.url)
    return None

"""HTTP fetch of one feed: conditional GET, a total deadline, a size cap after decompression,
bounded redirects. Every failure becomes a FetchError whose message a person understands."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx

from worker import __version__
from worker.core.errors import FeedGoneError, FetchError
from worker.core.units import format_duration, format_size

USER_AGENT = f"newswatch/{__version__} (+https://github.com/newswatch/newswatch)"
ACCEPT = "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"  # noqa: E501


@dataclass(frozen=True)
class FetchResult:
    status: int
    url: str  # final URL after redirects
    body: bytes  # empty for 304
    content_type: str
    etag: str | None
    last_modified: str | None
    permanent_redirect: str | None  # where a 301/308 chain ended, to remember the move

    @property
    def not_modified(self) -> bool:
        return self.status == 304


@dataclass(frozen=True)
class FetchLimits:
    timeout: float  # seconds, for the whole fetch
    max_bytes: int
    max_redirects: int


def fetch(
    client: httpx.Client,
    url: str,
    limits: FetchLimits,
    etag: str | None = None,
    last_modified: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FetchResult:
    headers = {"User-Agent": USER_AGENT, "Accept": ACCEPT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = clock() + limits.timeout
    try:
        with client.stream(
            "GET", url, headers=headers, timeout=httpx.Timeout(limits.timeout), follow_redirects=True
        ) as response:
            if response.status_code == 304:
                body = b""
            elif response.status_code >= 400:
                raise FetchError(_status_message(response))
            else:
                body = _read_capped(response, limits, deadline, clock)
    except httpx.TooManyRedirects as e:
        raise FetchError("too many redirects") from e
    except httpx.TimeoutException as e:
        raise FetchError(f"timed out after {format_duration_seconds(limits.timeout)}") from e
    except httpx.ConnectError as e:
        raise FetchError(_connect_message(e, url)) from e
    except httpx.DecodingError as e:
        raise FetchError("response body could not be decompressed") from e
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
    )


def client(max_redirects: int) -> httpx.Client:
    """One client per process: connection pooling across polls of the same host."""
    return httpx.Client(max_redirects=max_redirects, http2=False, trust_env=False)


def format_duration_seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _read_capped(
    response: httpx.Response, limits: FetchLimits, deadline: float, clock: Callable[[], float]
) -> bytes:
    chunks: list[bytes] = []
    size = 0
    # iter_bytes yields decompressed bytes, so a gzip bomb is cut off at max_bytes of output.
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > limits.max_bytes:
            raise FetchError(f"response larger than {format_size(limits.max_bytes)}")
        if clock() > deadline:
            raise FetchError(f"timed out after {format_duration_seconds(limits.timeout)}")
        chunks.append(chunk)
    return b"".join(chunks)


def _status_message(response: httpx.Response) -> str:
    if response.status_code == 410:
        raise FeedGoneError("HTTP 410 Gone: feed disabled")
    return f"HTTP {response.status_code}"


def _connect_message(error: httpx.ConnectError, url: str) -> str:
    text = str(error).lower()
    host = httpx.URL(url).host
    if "name or service not known" in text or "nodename nor servname" in text or "name resolution" in text:
        return f"DNS lookup failed for {host}"
    if "refused" in text:
        return f"connection refused by {host}"
    return f"cannot connect to {host}"


def _permanent_redirect(response: httpx.Response) -> str | None:
    history = response.history
    if history and all(r.status_code in (301, 308) for r in history):
        return str(response.url)
    return None

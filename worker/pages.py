"""Fetching web pages politely for sources that are not feeds (SPEC §8): the listing page of an
`html` source, a `json` source's API, and article pages. Every fetch goes through the one
guarded fetcher (deadline, size cap, URL guard), one per-host slot at a time, after robots.txt
said yes (unless the feed says `robots: ignore`), with the source's own headers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from worker.adapters import robots
from worker.adapters.hosts import HOSTS
from worker.adapters.http_fetch import (
    ACCEPT,
    ACCEPT_HTML,
    ACCEPT_JSON,
    FetchLimits,
    FetchResult,
    HostPools,
    HttpStatusError,
    RedirectCheck,
    RetryLaterError,
    fetch,
    host_key,
    request_url,
)
from worker.config import FeedConfig, Settings
from worker.core.errors import FetchError, TransientFetchError


class PageFetcher:
    """Fetches the pages of one feed: robots first, then the page, each in its host's slot."""

    def __init__(
        self,
        http: HostPools,
        settings: Settings,
        feed: FeedConfig,
        robots_storage: robots.RobotsStorage,
        clock: Callable[[], datetime],
    ) -> None:
        polling = settings.polling
        self.limits = FetchLimits(polling.timeout.total_seconds(), polling.max_bytes, polling.max_redirects)
        self.http, self.feed, self.per_host = http, feed, polling.per_host
        self.robots_storage, self.clock = robots_storage, clock

    def obey_robots(self, url: str, article: bool = False) -> None:
        """Raise RobotsDisallowedError when robots.txt keeps newswatch from `url` (html sources
        and article pages; `robots: ignore` is the operator's choice)."""
        if (article or self.feed.type == "html") and self.feed.robots == "obey":
            robots.check(url, self.robots_storage, self._robots_txt)

    def _robots_txt(self, url: str) -> FetchResult:
        limits = FetchLimits(self.limits.timeout, robots.MAX_ROBOTS_BYTES, self.limits.max_redirects)
        with HOSTS.slot(host_key(url), self.per_host):
            return fetch(self.http, url, limits, self.clock(), accept=b"text/plain, */*;q=0.5")

    def article(self, url: str) -> FetchResult:
        """An article page: robots, then the page, never following a redirect off the site."""
        self.obey_robots(url, article=True)
        with HOSTS.slot(host_key(url), self.per_host):
            return fetch(
                self.http,
                url,
                self.limits,
                self.clock(),
                accept=ACCEPT_HTML,
                redirect_check=same_site_as(url),
            )


def source_request(feed: FeedConfig) -> dict[str, Any]:
    """The keyword arguments of `fetch` for a feed's own URL: what to accept, its headers."""
    accept = {"feed": ACCEPT, "html": ACCEPT_HTML, "json": ACCEPT_JSON}[feed.type]
    return {"accept": accept, "extra_headers": feed.headers}


def same_site_as(url: str) -> RedirectCheck:
    """A redirect policy for article pages: hops within the site are fine, others are refused
    (a story's link that leads elsewhere is a tracker, an ad or a trap, not the story)."""
    from worker.sources.teasers import site_of

    home = site_of(request_url(url).host.decode("ascii", "replace"))

    def check(target: str) -> str | None:
        host = request_url(target).host.decode("ascii", "replace")
        return (
            None
            if site_of(host) == home
            else f"article page redirected off the site, to {host}: not followed"
        )

    return check


def is_transient(error: FetchError) -> bool:
    """A failure that may be gone on the next poll: the server's trouble, not the page's."""
    if isinstance(error, RetryLaterError | robots.RobotsUnavailableError | TransientFetchError):
        return True
    return isinstance(error, HttpStatusError) and error.status >= 500

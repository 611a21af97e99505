"""robots.txt rules as RFC 9309 reads them (worker.adapters.robots); the storage and the fetch
are stand-ins here, the integration tests fetch robots.txt from a real local server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from worker.adapters.http_fetch import FetchResult
from worker.adapters.robots import RobotsDisallowedError, check

ROBOTS = """User-agent: *
Allow: /
Disallow: /private/
Disallow: /*.pdf$
Allow: /private/press/
"""


class Stored:
    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def get(self, origin: str) -> str | None:
        return self.texts.get(origin)

    def put(self, origin: str, text: str, ttl: timedelta) -> None:
        self.texts[origin] = text


def fetch(url: str) -> FetchResult:
    assert url == "http://127.0.0.1:8080/robots.txt"
    return FetchResult(200, url, ROBOTS.encode(), "text/plain", None, None, None, None)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/news/deepseek-4711.html", True),
        ("/private/memo.html", False),  # the longer rule wins over `Allow: /`, whatever the order
        ("/private/press/deepseek.html", True),  # and the longer Allow over that Disallow
        ("/reports/q3.pdf", False),  # `*` and `$`
        ("/reports/q3.pdf.html", True),
    ],
)
def test_the_longest_matching_rule_decides(path: str, allowed: bool) -> None:
    storage = Stored()
    url = "http://127.0.0.1:8080" + path
    if allowed:
        check(url, storage, fetch)
    else:
        with pytest.raises(RobotsDisallowedError):
            check(url, storage, fetch)
    assert storage.texts == {"http://127.0.0.1:8080": ROBOTS}  # fetched once, kept

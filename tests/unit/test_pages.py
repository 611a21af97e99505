"""Which failures of an article page are worth another try (worker.pages.is_transient): decided
by the error's kind, which the fetcher sets, never by the wording of its message."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from worker.adapters.http_fetch import FetchLimits, client, fetch
from worker.core.errors import FetchError, TransientFetchError
from worker.pages import is_transient

LIMITS = FetchLimits(timeout=5, max_bytes=10_000, max_redirects=2)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_refused_connection_is_transient_and_the_url_guard_is_not() -> None:
    url = f"http://127.0.0.1:{closed_port()}/artikel"
    with pytest.raises(TransientFetchError) as refused:
        fetch(client(allow_private=True), url, LIMITS, datetime.now(UTC))
    assert is_transient(refused.value)
    with pytest.raises(FetchError) as blocked:
        fetch(client(allow_private=False), url, LIMITS, datetime.now(UTC))
    assert not isinstance(blocked.value, TransientFetchError) and not is_transient(blocked.value)


def test_the_message_decides_nothing() -> None:
    assert not is_transient(FetchError("timed out, says the page's own text"))
    assert is_transient(TransientFetchError("any wording at all"))

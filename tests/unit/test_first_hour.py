"""Pure pieces behind issue 17 (the first hour): GUID churn per feed, query hints, log levels."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.core.identity import guid_changed, seen_tag

DATE = datetime(2025, 8, 15, 13, 51, tzinfo=UTC)


def test_guid_churn_is_a_new_guid_for_a_known_link_in_the_same_feed_only() -> None:
    first = seen_tag("eulerpool", "g1", "https://e.example/1", "T", DATE)
    assert not guid_changed(first, seen_tag("eulerpool", "g1", "https://e.example/1", "T", DATE))
    assert guid_changed(first, seen_tag("eulerpool", "g2", "https://e.example/1", "T", DATE))
    # The same story under the same or another GUID in another feed (renamed, or syndicated)
    assert not guid_changed(first, seen_tag("eulerpool-renamed", "g1", "https://e.example/1", "T", DATE))
    assert not guid_changed(first, seen_tag("other", "g2", "https://e.example/1", "T", DATE))
    # A tag written before feeds were part of it (31 bits) never counts as churn
    assert not guid_changed(12345, first) and not guid_changed(first & (2**31 - 1), first)
    assert 2**31 <= first < 2**62  # an integer Redis stores without allocating

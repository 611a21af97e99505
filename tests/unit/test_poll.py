"""The poll decision (worker.core.poll) and item making (worker.core.items): pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.core.dates import first_date, parse_date
from worker.core.items import RawEntry, make_item
from worker.core.poll import (
    GUID_CHURN_WARNING,
    KEEP,
    Failure,
    FeedState,
    Fetched,
    StateUpdate,
    after_failure,
    after_success,
    guid_churn,
    plan_poll,
    rebaseline,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
URL = "https://news.example/feed"
FIVE = timedelta(minutes=5)


def test_a_poll_fetches_waits_or_stays_disabled() -> None:
    assert plan_poll(FeedState(), URL, "c1", NOW, force=False).action == "fetch"
    backoff = FeedState(not_before=NOW + FIVE, config="c1")
    assert plan_poll(backoff, URL, "c1", NOW, force=False).action == "wait"
    assert plan_poll(backoff, URL, "c1", NOW, force=True).action == "fetch"  # `newswatch poll`
    gone = FeedState(disabled=True, gone_url=URL, config="c1")
    assert plan_poll(gone, URL, "c1", NOW, force=True).action == "disabled"


def test_a_permanent_move_is_followed_while_the_config_names_the_old_address() -> None:
    moved = FeedState(url="https://new.example/feed", moved_from=URL, config="c1")
    assert plan_poll(moved, URL, "c1", NOW, False).url == "https://new.example/feed"
    other = plan_poll(moved, "https://third.example/", "c2", NOW, False)
    assert other.url == "https://third.example/"


def test_a_changed_config_entry_starts_the_feed_afresh() -> None:
    """Issue 17.5: a fixed URL must not wait out the old URL's backoff, nor stay disabled."""
    failing = FeedState(
        error="HTTP 500", error_count=6, not_before=NOW + timedelta(hours=6), etag="e", items_seen=9,
        last_success=NOW - timedelta(days=1), disabled=True, gone_url=URL, config="old", revision="r1",
    )  # fmt: skip
    plan = plan_poll(failing, URL, "new", NOW, force=False)
    assert plan.action == "fetch"
    assert plan.state.error_count == 0 and plan.state.etag is None and plan.state.not_before is None
    assert plan.state.items_seen == 9 and plan.state.last_success == failing.last_success
    assert plan.state.revision == "r1"  # the write stays conditional on what was read
    written = after_success(plan, Fetched(changed=False), NOW, FIVE).values()
    assert written["disabled"] is False and written["gone_url"] is None and written["config"] == "new"
    assert written["error_count"] == 0 and written["etag"] is None


def test_a_state_from_before_fingerprints_is_not_reset_but_a_new_url_re_enables_a_gone_feed() -> None:
    old = FeedState(error_count=3, not_before=NOW + FIVE)
    assert plan_poll(old, URL, "c1", NOW, False).action == "wait"
    gone = FeedState(disabled=True, gone_url=URL)
    assert plan_poll(gone, URL, "c1", NOW, False).action == "disabled"
    assert plan_poll(gone, "https://elsewhere.example/", "c1", NOW, False).action == "fetch"


def test_success_clears_errors_and_stores_validators_of_a_changed_body() -> None:
    plan = plan_poll(FeedState(error="x", error_count=2, config="c"), URL, "c", NOW, True)
    fetched = Fetched(changed=True, etag='"v2"', last_modified="lm", body_hash="h", fresh_for=3600)
    written = after_success(plan, fetched, NOW, FIVE, churn=True).values()
    assert written["error"] is None and written["error_count"] == 0
    assert written["etag"] == '"v2"' and written["body_hash"] == "h"
    assert written["not_before"] == NOW + timedelta(hours=1)  # the cache lifetime beyond the interval
    assert written["warning"] == GUID_CHURN_WARNING
    unchanged = after_success(plan, Fetched(changed=False, etag="ignored"), NOW, FIVE).values()
    assert "etag" not in unchanged and "warning" not in unchanged and unchanged["not_before"] is None


def test_success_remembers_where_a_permanent_redirect_ended() -> None:
    plan = plan_poll(FeedState(), URL, "c", NOW, False)
    moved = after_success(plan, Fetched(changed=False, permanent_redirect="https://n2.example/"), NOW, FIVE)
    assert moved.url == "https://n2.example/" and moved.moved_from == URL
    assert after_success(plan, Fetched(changed=False, permanent_redirect=URL), NOW, FIVE).url is KEEP


def test_failure_counts_backs_off_and_a_410_disables() -> None:
    plan = plan_poll(FeedState(error_count=2), URL, "c", NOW, False)
    update, wait = after_failure(plan, Failure("HTTP 500"), NOW, FIVE, 0.5)
    assert update.error_count == 3 and wait == timedelta(minutes=20) and update.not_before == NOW + wait
    assert update.disabled is KEEP
    gone, _ = after_failure(plan, Failure("HTTP 410 Gone: feed disabled", gone=True), NOW, FIVE, 0.5)
    assert gone.disabled is True and gone.gone_url == URL
    _, later = after_failure(plan, Failure("HTTP 503", retry_after=7200), NOW, FIVE, 0.5)
    assert later == timedelta(hours=2)


def test_state_updates_are_typed() -> None:
    with pytest.raises(TypeError):
        StateUpdate(eror="typo")  # type: ignore[call-arg]
    assert StateUpdate(error=None).values() == {"error": None}  # None clears; KEEP leaves alone
    assert StateUpdate(error="a", etag="e").then(StateUpdate(error="b")).values() == {
        "error": "b",
        "etag": "e",
    }


def test_rebaseline_and_churn() -> None:
    assert rebaseline(FeedState(), polled_here_before=True)
    assert not rebaseline(FeedState(), polled_here_before=False)  # a first poll is no wipe
    assert not rebaseline(FeedState(last_success=NOW), polled_here_before=True)
    assert guid_churn(5, 10) and not guid_churn(1, 2) and not guid_churn(4, 10)


def test_dates_read_european_zone_names_iso_and_refuse_the_future() -> None:
    assert parse_date("Fri, 15 Aug 2025 15:51:00 MESZ") == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    assert parse_date("Fri, 15 Aug 2025 15:51:00 CET") == datetime(2025, 8, 15, 14, 51, tzinfo=UTC)
    assert parse_date("2025-08-15T15:51:00+02:00") == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    assert parse_date("2025-08-15T13:51:00Z") == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    assert parse_date("2025-08-15T13:51:00") is None  # no zone: left to a reader that knows the source
    assert parse_date("gestern") is None
    later = datetime(2025, 8, 16, tzinfo=UTC)
    assert first_date(["kaputt", later], NOW) == later  # the first candidate that is a date
    assert first_date(["Thu, 01 Jan 2099 00:00:00 GMT", later], NOW) is None  # a lie is no date


def test_make_item_does_links_text_categories_dates_and_identity_for_any_source() -> None:
    raw = RawEntry(
        title="DeepSeek &amp; Huawei",
        link="/news/deepseek?utm_source=x#top",
        summary="<p>Text <b>fett</b></p>",
        content=("<p>Text <b>fett</b></p>", "<p>Mehr</p>"),
        categories=("Finanzen / KI / DeepSeek", "ki"),
        dates=("Fri, 15 Aug 2025 15:51:00 MESZ",),
    )
    item = make_item(raw, "eulerpool", "https://eulerpool.example/de/news", NOW)
    assert item.title == "DeepSeek & Huawei" and item.summary == "Text fett" and item.content == "Mehr"
    assert item.link == "https://eulerpool.example/news/deepseek?utm_source=x#top"
    assert item.canonical_link == "https://eulerpool.example/news/deepseek"
    assert item.categories == ("Finanzen", "KI", "DeepSeek")
    assert item.published == datetime(2025, 8, 15, 13, 51, tzinfo=UTC)
    same_story = make_item(RawEntry(title="x", link=item.canonical_link), "other", "https://o.example/", NOW)
    assert same_story.id == item.id  # one story across sources, by its canonical link
    assert make_item(RawEntry(link="javascript:alert(1)"), "f", URL, NOW).link is None


# --- sources that are not feeds (SPEC §8) ----------------------------------------------------


def test_a_poll_that_leaves_items_for_later_does_not_store_the_page_as_processed() -> None:
    from worker.core.poll import FeedState, Fetched, after_success, plan_poll

    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    state = FeedState(etag='"old"', body_hash="old", last_success=now, config="fp")
    plan = plan_poll(state, "https://news.example/", "fp", now, force=False)
    fetched = Fetched(changed=True, etag='"new"', last_modified="Sat", body_hash="new", complete=False)
    update = after_success(plan, fetched, now, timedelta(minutes=5))
    # Not the old validators either: the next poll must fetch and read the page again.
    assert (update.etag, update.last_modified, update.body_hash) == (None, None, None)
    done = after_success(
        plan, Fetched(changed=True, etag='"new"', body_hash="new"), now, timedelta(minutes=5)
    )
    assert (done.etag, done.body_hash) == ('"new"', "new")


def test_a_page_that_stops_yielding_items_is_warned_about_once_per_episode() -> None:
    from worker.core.poll import (
        LAYOUT_WARNING,
        FeedState,
        Fetched,
        after_success,
        layout_change_began,
        plan_poll,
    )

    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    interval = timedelta(minutes=5)

    def poll(state: FeedState, found: int) -> tuple[FeedState, bool]:
        plan = plan_poll(state, "https://news.example/", "fp", now, force=False)
        update = after_success(
            plan, Fetched(changed=True, body_hash=str(found), items_found=found), now, interval
        )
        began = layout_change_began(state, update)
        return FeedState(**{**vars(state), **update.values()}), began

    state = FeedState(config="fp")
    state, began = poll(state, 0)  # a page that never yielded items: nothing to compare with
    assert state.warning is None and not began
    state, _ = poll(state, 6)
    state, began = poll(state, 0)
    assert state.warning == LAYOUT_WARNING and began
    state, began = poll(state, 0)  # the episode goes on: still warned, not reported again
    assert state.warning == LAYOUT_WARNING and not began
    state, began = poll(state, 4)
    assert state.warning is None and not began

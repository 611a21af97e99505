"""Feed health (worker/core/ops.py): failing and silent episodes, told once, with their end;
the rhythm learned from a feed's own new items; how channels show the events."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from worker.config import ConfigError, FeedConfig, load_config
from worker.core.mail import alert_email
from worker.core.models import Delivery
from worker.core.ops import (
    FAILING,
    MIN_GAPS,
    RECOVERED,
    SILENT,
    Health,
    OpsPolicy,
    Outcome,
    after_poll,
    silence_threshold,
)
from worker.core.poll import FeedState, StateUpdate
from worker.core.render import log_lines

T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
POLICY = OpsPolicy(interval=timedelta(minutes=5), failing_after=timedelta(hours=1))


class Feed:
    """A feed's state carried from poll to poll as the poll's adapter writes it."""

    def __init__(self, policy: OpsPolicy = POLICY, state: FeedState | None = None) -> None:
        self.policy = policy
        self.state = state or FeedState()
        self.told: list[tuple[str, str]] = []  # (type, condition) of every event, in order

    def poll(self, at: datetime, outcome: Outcome) -> Health:
        if outcome == "failed":
            update = StateUpdate(error="HTTP 500", error_count=self.state.error_count + 1, last_poll=at)
        else:
            update = StateUpdate(error=None, error_count=0, last_poll=at, last_success=at)
        health = after_poll("f", self.state, update, outcome, at, self.policy)
        self.state = replace(self.state, **update.then(health.update).values())
        self.told += [(e.type, e.condition) for e in health.events]
        return health


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def test_a_failing_feed_is_told_once_after_failing_after_then_its_recovery() -> None:
    feed = Feed()
    feed.poll(T0, "unchanged")
    for n in range(1, 13):  # every 5 minutes from T0+5m: an hour of failures at T0+65m
        feed.poll(T0 + minutes(5 * n), "failed")
    assert feed.told == []
    (event,) = feed.poll(T0 + minutes(65), "failed").events
    assert (event.type, event.since, event.failures) == (FAILING, T0 + minutes(5), 13)
    assert event.payload() == {
        "type": "newswatch.feed_failing",
        "timestamp": "2026-11-29T09:05:00Z",
        "data": {"feed": "f", "since": "2026-11-29T08:05:00Z", "error": "HTTP 500", "failures": 13},
    }
    for n in range(14, 30):  # failing on: nothing more is told
        assert feed.poll(T0 + minutes(5 * n), "failed").events == ()
    (recovered,) = feed.poll(T0 + minutes(150), "unchanged").events
    assert recovered.payload()["data"] == {
        "feed": "f", "since": "2026-11-29T08:05:00Z", "condition": "failing", "until": "2026-11-29T10:30:00Z",
    }  # fmt: skip
    assert feed.told == [(FAILING, "failing"), (RECOVERED, "failing")]
    assert feed.state.failing_told is None and feed.state.error_since is None
    assert feed.poll(T0 + minutes(155), "unchanged").events == ()


def test_a_short_run_of_failures_is_no_episode_and_the_next_run_counts_afresh() -> None:
    feed = Feed()
    feed.poll(T0, "failed")
    feed.poll(T0 + minutes(50), "failed")
    feed.poll(T0 + minutes(55), "unchanged")  # recovered before an hour: nothing told
    feed.poll(T0 + minutes(70), "failed")  # a new run starts here, not at T0
    assert feed.poll(T0 + minutes(125), "failed").events == ()
    assert feed.poll(T0 + minutes(130), "failed").events[0].since == T0 + minutes(70)
    assert feed.told == [(FAILING, "failing")]


def test_a_feed_that_answered_410_gone_is_told_at_once() -> None:
    update = StateUpdate(error="HTTP 410 Gone", error_count=1, disabled=True)
    (event,) = after_poll("f", FeedState(), update, "failed", T0, POLICY).events
    assert event.type == FAILING and event.error == "HTTP 410 Gone"


def test_no_rhythm_yet_no_silence() -> None:
    """A feed with fewer than MIN_GAPS gaps between new items is never called silent."""
    feed = Feed()
    feed.poll(T0, "new")  # its first poll: the backlog, no gap
    for n in range(1, MIN_GAPS):
        feed.poll(T0 + minutes(10 * n), "new")
    assert feed.state.gaps_seen == MIN_GAPS - 1
    assert silence_threshold(feed.state, POLICY) is None
    assert feed.poll(T0 + timedelta(days=30), "unchanged").events == ()


def test_a_learned_rhythm_tells_a_silence_far_longer_than_usual_once_then_its_end() -> None:
    feed = Feed()
    for n in range(0, 40, 5):  # a new item every 5 minutes ... then a 2-hour night
        feed.poll(T0 + minutes(n), "new")
    feed.poll(T0 + minutes(35 + 120), "new")
    feed.poll(T0 + minutes(160), "new")
    threshold, learned = silence_threshold(feed.state, POLICY) or (None, None)
    assert learned and threshold is not None
    assert timedelta(hours=3.9) < threshold <= timedelta(hours=4)  # twice the (decayed) night
    last = feed.state.last_new
    assert last == T0 + minutes(160)
    assert feed.poll(last + timedelta(hours=3), "unchanged").events == ()  # a usual silence
    (silent,) = feed.poll(last + timedelta(hours=4), "unchanged").events
    assert silent.type == SILENT and silent.since == last and silent.learned
    assert silent.payload()["data"]["expected_every"] == "4h"
    for hours in (5, 6, 7):
        assert feed.poll(last + timedelta(hours=hours), "unchanged").events == ()
    feed.poll(last + timedelta(hours=8), "failed")  # failing does not end a silence
    (back,) = feed.poll(last + timedelta(hours=9), "new").events
    assert back.type == RECOVERED and back.condition == "silent" and back.since == last
    assert feed.told == [(SILENT, "silent"), (RECOVERED, "silent")]


def test_a_learned_silence_is_never_shorter_than_the_floor() -> None:
    feed = Feed()
    for n in range(6):  # an item every poll
        feed.poll(T0 + minutes(5 * n), "new")
    threshold = silence_threshold(feed.state, POLICY)
    assert threshold == (timedelta(hours=1), True)  # not 2 x 5 minutes
    policy = replace(POLICY, interval=timedelta(hours=1))
    assert silence_threshold(feed.state, policy) == (timedelta(hours=6), True)  # six intervals


def test_the_longest_gap_fades_with_a_half_life_of_a_week() -> None:
    state = FeedState(last_new=T0, gap_longest=timedelta(days=2).total_seconds(), gaps_seen=10)
    update = StateUpdate(error=None, error_count=0)
    week = T0 + timedelta(days=7)
    health = after_poll("f", state, update, "new", week, POLICY)
    assert health.update.gap_longest == timedelta(days=7).total_seconds()  # the week-long gap itself
    later = replace(state, **health.update.values())
    fast = after_poll("f", later, update, "new", week + minutes(5), POLICY)
    assert fast.update.gap_longest is not None and fast.update.gap_longest < timedelta(days=7).total_seconds()
    assert fast.update.gap_longest > timedelta(days=6.99).total_seconds()


def test_expect_every_tells_a_silence_without_a_rhythm() -> None:
    feed = Feed(replace(POLICY, expect_every=timedelta(hours=6)))
    feed.poll(T0, "unchanged")  # a feed that never had an item counts from its first answer
    assert feed.poll(T0 + timedelta(hours=5), "unchanged").events == ()
    (silent,) = feed.poll(T0 + timedelta(hours=6), "unchanged").events
    assert silent.payload()["data"] == {
        "feed": "f", "since": "2026-11-29T08:00:00Z", "last_new_item": "2026-11-29T08:00:00Z",
        "expected_every": "6h", "learned": False,
    }  # fmt: skip


def test_a_failing_feed_is_not_silent_and_both_end_in_one_poll() -> None:
    feed = Feed(replace(POLICY, expect_every=timedelta(hours=1)))
    feed.poll(T0, "new")
    for n in range(1, 30):  # failing for hours: only failing is told
        feed.poll(T0 + minutes(10 * n), "failed")
    assert feed.told == [(FAILING, "failing")]
    feed.poll(T0 + minutes(300), "unchanged")  # answers, and still nothing new: silent
    assert feed.told[1:] == [(RECOVERED, "failing"), (SILENT, "silent")]
    feed.poll(T0 + minutes(310), "new")
    assert feed.told[3:] == [(RECOVERED, "silent")]


def test_channels_show_an_ops_event() -> None:
    update = StateUpdate(error='HTTP 500 "boom"\nline two', error_count=3, disabled=True)
    (event,) = after_poll("börse", FeedState(), update, "failed", T0, POLICY).events
    delivery = Delivery("msg_x", "newswatch.ops", "ops-mail", event.payload())
    (line,) = log_lines(delivery)
    assert line == (
        'FEED event=feed_failing feed=börse since=2026-11-29T08:00:00Z failures=3 error="HTTP 500 \\"boom\\" line two"'
    )
    message = alert_email(delivery, "nw@example.org", ["ops@example.org"], T0)
    assert message["Subject"] == "[newswatch] ops: feed börse is failing since 2026-11-29T08:00:00Z"
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "3 polls in a row failed" in text and 'HTTP 500 "boom" line two' in text


# --- the config ------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "newswatch.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), {})


def test_ops_config_defaults_and_keys(tmp_path: Path) -> None:
    settings = _load(tmp_path, "feeds:\n  - {name: a, url: 'https://a.example/rss'}\n").settings
    assert settings.ops.channels == [] and settings.ops.failing_after == timedelta(hours=1)
    assert settings.ops.silent_factor == 2.0 and settings.feeds[0].expect_every is None
    settings = _load(
        tmp_path,
        """
feeds:
  - {name: a, url: "https://a.example/rss", expect_every: 6h}
channels:
  ops-hook: {type: webhook, url: "https://hooks.example/ops"}
ops: {channels: [ops-hook, console], failing_after: 30m, silent_factor: 3}
""",
    ).settings
    assert settings.feeds[0].expect_every == timedelta(hours=6)
    assert settings.ops.channels == ["ops-hook", "console"]
    assert settings.ops.failing_after == timedelta(minutes=30) and settings.ops.silent_factor == 3


def test_ops_config_problems_are_named_by_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _load(
            tmp_path,
            """
feeds:
  - {name: a, url: "https://a.example/rss", expect_every: soon}
channels:
  ops-hook: {type: webhook, url: "https://hooks.example/ops"}
ops: {channels: [ops-hook, ops-hok], failing_after: never, silent_factor: 0.5, quiet: true}
""",
        )
    found = "\n".join(error.value.problems)
    assert "ops.channels[1]: unknown channel 'ops-hok'" in found
    assert "feeds[0].expect_every: 'soon' is not a duration" in found
    assert "ops.failing_after: 'never' is not a duration" in found
    assert "ops.silent_factor:" in found and "ops.quiet: unknown key" in found
    assert "ops.channels[0]" not in found


def test_expect_every_leaves_a_feeds_fingerprint_alone() -> None:
    """Changing when silence is told must not start the feed afresh (validators, backoff)."""
    plain = FeedConfig(name="a", url="https://a.example/rss")
    expecting = FeedConfig(name="a", url="https://a.example/rss", expect_every="6h")  # type: ignore[arg-type]
    assert plain.fingerprint == expecting.fingerprint

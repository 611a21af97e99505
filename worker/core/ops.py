"""Feed health, told (SPEC §11): a feed that fails for `ops.failing_after`, and a feed that
answers but has had no new item for far longer than usual, each raise one event per episode on
`ops.channels`, and one more when the episode ends. Pure: the poll's adapter (worker.polling)
passes the feed's state before the poll and the poll's update, writes the fields this returns
with that update, and hands the events to worker.ops.

Episodes are remembered in the feed's state: `failing_told` / `silent_told` hold the start of
the episode whose event went out. They are written with the poll's own state write, which is
fenced by the feed's lease and revision, so of several schedulers one tells an episode; the
event's delivery id is derived from the feed and the episode's start, so an event decided twice
(a write refused and the poll made again) is still delivered once.

Silence. With `expect_every` it is that long without a new item. Otherwise it is learned from
the feed's rhythm: the longest gap between new items seen lately (`gap_longest`, decayed with a
half-life of a week, so a rhythm that changed is forgotten), times `ops.silent_factor`, and
never less than SILENT_FLOOR or SILENT_POLLS intervals. The longest gap rather than a mean or
median: a feed busy by day and quiet at night has nights, or weekends, as its usual silences;
a threshold from its daytime gaps would report every night. Before MIN_GAPS gaps are seen the
feed has no rhythm yet and is never called silent (unless `expect_every` is set).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from worker.core.models import utc_iso
from worker.core.poll import FeedState, StateUpdate
from worker.core.text import one_line

FAILING = "newswatch.feed_failing"
SILENT = "newswatch.feed_silent"
RECOVERED = "newswatch.feed_recovered"  # data.condition says which episode ended
OPS_ALERT = "newswatch.ops"  # the `alert` of ops deliveries (metrics labels, delivery ids)

MIN_GAPS = 3  # gaps between new items seen before a feed's own rhythm is trusted
GAP_HALF_LIFE = timedelta(days=7)
SILENT_FLOOR = timedelta(hours=1)
SILENT_POLLS = 6  # a learned silence is never shorter than this many poll intervals

Outcome = Literal["failed", "unchanged", "new"]
Condition = Literal["failing", "silent"]


@dataclass(frozen=True)
class OpsPolicy:
    """What a feed's health is judged by: its config entry and the ops section."""

    interval: timedelta
    failing_after: timedelta
    silent_factor: float = 2.0
    expect_every: timedelta | None = None


@dataclass(frozen=True)
class FeedEvent:
    """One thing to tell: an episode began (failing, silent) or ended (recovered)."""

    type: str  # FAILING, SILENT or RECOVERED
    feed: str
    condition: Condition
    since: datetime  # the episode's start: the first failure of the run, or the last new item
    at: datetime  # when it was decided
    error: str | None = None  # failing: the last error
    failures: int = 0  # failing: failed polls in a row
    expected: timedelta | None = None  # silent: the silence that counts as far longer than usual
    learned: bool = False  # silent: `expected` comes from the feed's rhythm, not expect_every

    @property
    def key(self) -> str:
        """Names the event among all others: the same episode gives the same key."""
        return f"{self.type}:{self.condition}:{self.feed}:{utc_iso(self.since)}"

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"feed": self.feed, "since": utc_iso(self.since)}
        if self.type == FAILING:
            data |= {"error": self.error, "failures": self.failures}
        elif self.type == SILENT:
            data |= {
                "last_new_item": utc_iso(self.since),
                "expected_every": spelled(self.expected or timedelta(0)),
                "learned": self.learned,
            }
        else:
            data |= {"condition": self.condition, "until": utc_iso(self.at)}
        return {"type": self.type, "timestamp": utc_iso(self.at), "data": data}


@dataclass(frozen=True)
class Health:
    update: StateUpdate  # written with the poll's own update
    events: tuple[FeedEvent, ...]


def after_poll(
    feed: str, before: FeedState, update: StateUpdate, outcome: Outcome, now: datetime, policy: OpsPolicy
) -> Health:
    """What this poll means for the feed's health: the fields to write and the events to tell."""
    after = replace(before, **update.values())
    if outcome == "failed":
        return _after_failure(feed, before, after, now, policy)
    events: list[FeedEvent] = []
    fields: dict[str, Any] = {"error_since": None}
    if after.failing_told is not None:
        events.append(FeedEvent(RECOVERED, feed, "failing", after.failing_told, now))
        fields["failing_told"] = None
    if after.last_new is None:  # the first poll that answered: the rhythm counts from here
        fields["last_new"] = now
    elif outcome == "new":
        fields |= _new_item(after, now)
        if after.silent_told is not None:
            events.append(FeedEvent(RECOVERED, feed, "silent", after.silent_told, now))
            fields["silent_told"] = None
    else:
        silent = _silence(feed, after, now, policy)
        if silent is not None:
            events.append(silent)
            fields["silent_told"] = silent.since
    return Health(StateUpdate(**fields), tuple(events))


def _after_failure(
    feed: str, before: FeedState, after: FeedState, now: datetime, policy: OpsPolicy
) -> Health:
    """A failed poll: the run of failures began at its first; told once it lasted failing_after
    (at once for a feed that answered 410 Gone: it is not polled again to reach it)."""
    since = before.error_since if before.error_count > 0 and before.error_since else now
    fields: dict[str, Any] = {"error_since": since}
    if after.failing_told is None and (after.disabled or now - since >= policy.failing_after):
        fields["failing_told"] = since
        event = FeedEvent(FAILING, feed, "failing", since, now, after.error, after.error_count)
        return Health(StateUpdate(**fields), (event,))
    return Health(StateUpdate(**fields), ())


def _new_item(state: FeedState, now: datetime) -> dict[str, Any]:
    """The rhythm after a poll that found new items: one more gap, the longest one decayed."""
    assert state.last_new is not None
    gap = max(0.0, (now - state.last_new).total_seconds())
    longest = gap
    if state.gap_longest is not None:
        faded = state.gap_longest * 0.5 ** (gap / GAP_HALF_LIFE.total_seconds())
        longest = max(gap, faded)
    return {"last_new": now, "gap_longest": round(longest, 1), "gaps_seen": state.gaps_seen + 1}


def silence_threshold(state: FeedState, policy: OpsPolicy) -> tuple[timedelta, bool] | None:
    """How long without a new item counts as silent, and whether that was learned; None while
    the feed's rhythm is not known yet (fewer than MIN_GAPS gaps) and expect_every is unset."""
    if policy.expect_every is not None:
        return policy.expect_every, False
    if state.gaps_seen < MIN_GAPS or state.gap_longest is None:
        return None
    learned = timedelta(seconds=state.gap_longest * policy.silent_factor)
    return max(learned, SILENT_FLOOR, policy.interval * SILENT_POLLS), True


def _silence(feed: str, state: FeedState, now: datetime, policy: OpsPolicy) -> FeedEvent | None:
    threshold = silence_threshold(state, policy)
    if threshold is None or state.last_new is None or state.silent_told is not None:
        return None
    expected, learned = threshold
    if now - state.last_new < expected:
        return None
    return FeedEvent(SILENT, feed, "silent", state.last_new, now, expected=expected, learned=learned)


def spelled(delta: timedelta) -> str:
    """A duration as config writes it ("6h", "3h58m"); a learned one, beyond ten minutes, to
    the minute."""
    seconds = round(delta.total_seconds())
    if seconds >= 600:
        seconds = round(seconds / 60) * 60
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


# --- how channels show an event -----------------------------------------------------------------


def is_ops_event(payload: dict[str, Any]) -> bool:
    return payload.get("type") in (FAILING, SILENT, RECOVERED)


def headline(payload: dict[str, Any]) -> str:
    """One line a person reads first (an email's subject, a chat message's title)."""
    data, kind = payload["data"], payload["type"]
    feed = one_line(str(data["feed"]))
    if kind == FAILING:
        return f"feed {feed} is failing since {data['since']}"
    if kind == SILENT:
        return f"feed {feed} is silent: no new item since {data['since']}"
    return f"feed {feed} recovered: no longer {data['condition']}"


def details(payload: dict[str, Any]) -> list[str]:
    """The event in a few lines of plain text, under its headline."""
    data, kind = payload["data"], payload["type"]
    if kind == FAILING:
        return [
            f"{data['failures']} polls in a row failed since {data['since']}.",
            f"Last error: {one_line(str(data['error'] or 'unknown'))}",
        ]
    if kind == SILENT:
        source = "its usual rhythm" if data["learned"] else "expect_every"
        return [
            f"The feed answers, but has had no new item since {data['since']}.",
            f"Expected at least one every {data['expected_every']} ({source}).",
        ]
    return [f"It was {data['condition']} from {data['since']} until {data['until']}."]


def log_fields(payload: dict[str, Any]) -> dict[str, str]:
    """The event as logfmt fields for the log channel (`FEED` lines)."""
    data = payload["data"]
    fields = {"event": str(payload["type"]).removeprefix("newswatch."), "feed": str(data["feed"])}
    for key in ("condition", "since", "until", "failures", "error", "expected_every", "learned"):
        if key in data:
            fields[key] = _text(data[key])
    return fields


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return one_line(str(value))

"""Quiet hours of an alert: the window (across midnight, across DST changes), how routing holds
alerts in it and moves digests out of it, what the archive says, and the config's checks."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from tests.unit.test_config import load, problems
from worker.core.archive import Outcome, outcomes
from worker.core.explain import FIRED, AlertReason
from worker.core.models import Delivery
from worker.core.outbox import AlertPolicy, Digested, postponed_flush, route
from worker.core.quiet import QuietHours, parse_quiet_hours, quiet_until, release_time
from worker.core.stories import place

BERLIN_NIGHT = parse_quiet_hours("22:00-07:00 Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_parse_quiet_hours() -> None:
    assert QuietHours(time(22), time(7), "Europe/Berlin") == BERLIN_NIGHT
    assert parse_quiet_hours(" 9:30 - 17:00 ") == QuietHours(time(9, 30), time(17), "UTC")
    assert str(parse_quiet_hours("9:30-17:00")) == "09:30-17:00 UTC"
    assert str(BERLIN_NIGHT) == "22:00-07:00 Europe/Berlin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("22:00-22:00 Europe/Berlin", "start and end at the same time (22:00)"),
        ("22:00-24:00", "'24:00' is not a time of day"),
        ("22:60-07:00", "'22:60' is not a time of day"),
        ("22:00-07:00 Europe/Berlinn", "unknown time zone 'Europe/Berlinn'"),
        ("22:00-07:00 Europe", "unknown time zone 'Europe'"),  # a directory of zones
        ("22:00-07:00 ../../etc/passwd", "unknown time zone '../../etc/passwd'"),
        ("nachts", "'nachts' is not quiet hours: write 'HH:MM-HH:MM'"),
        ("22-07", "is not quiet hours"),
        ("22:00-07:00 Europe/Berlin CET", "is not quiet hours"),
    ],
)
def test_parse_quiet_hours_refuses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_quiet_hours(text)


def test_a_window_within_a_day() -> None:
    office = parse_quiet_hours("09:00-17:30")
    assert quiet_until(utc(2026, 11, 30, 8, 59, 59), office) is None
    assert quiet_until(utc(2026, 11, 30, 9, 0), office) == utc(2026, 11, 30, 17, 30)  # start: in
    assert quiet_until(utc(2026, 11, 30, 17, 29, 59), office) == utc(2026, 11, 30, 17, 30)
    assert quiet_until(utc(2026, 11, 30, 17, 30), office) is None  # end: out


def test_a_window_across_midnight() -> None:
    # Winter: Berlin is UTC+1, the window is 21:00Z to 06:00Z.
    assert quiet_until(utc(2026, 11, 30, 20, 59), BERLIN_NIGHT) is None
    assert quiet_until(utc(2026, 11, 30, 21, 0), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)
    assert quiet_until(utc(2026, 11, 30, 23, 30), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)  # after midnight
    assert quiet_until(utc(2026, 12, 1, 5, 59), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)
    assert quiet_until(utc(2026, 12, 1, 6, 0), BERLIN_NIGHT) is None
    assert quiet_until(utc(2026, 12, 1, 12, 0), BERLIN_NIGHT) is None
    # Summer: UTC+2, the window is 20:00Z to 05:00Z.
    assert quiet_until(utc(2026, 7, 1, 20, 0), BERLIN_NIGHT) == utc(2026, 7, 2, 5, 0)
    assert quiet_until(utc(2026, 7, 1, 19, 59), BERLIN_NIGHT) is None
    # Across the end of a year and a month.
    assert quiet_until(utc(2026, 12, 31, 22, 0), BERLIN_NIGHT) == utc(2027, 1, 1, 6, 0)


def test_the_night_dst_starts_ends_at_seven_local_time() -> None:
    """Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; the night is an hour shorter."""
    start = utc(2026, 3, 28, 21, 0)  # 22:00 CET
    end = quiet_until(start, BERLIN_NIGHT)
    assert end == utc(2026, 3, 29, 5, 0)  # 07:00 CEST, not 06:00Z
    assert end - start == timedelta(hours=8)
    assert quiet_until(utc(2026, 3, 29, 4, 59), BERLIN_NIGHT) == end
    assert quiet_until(utc(2026, 3, 29, 5, 0), BERLIN_NIGHT) is None  # 07:00 CEST: over
    assert quiet_until(utc(2026, 3, 29, 20, 0), BERLIN_NIGHT) == utc(2026, 3, 30, 5, 0)  # 22:00 CEST


def test_the_night_dst_ends_ends_at_seven_local_time() -> None:
    """Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; the night is an hour longer."""
    start = utc(2026, 10, 24, 20, 0)  # 22:00 CEST
    end = quiet_until(start, BERLIN_NIGHT)
    assert end == utc(2026, 10, 25, 6, 0)  # 07:00 CET
    assert end - start == timedelta(hours=10)
    assert quiet_until(utc(2026, 10, 25, 1, 30), BERLIN_NIGHT) == end  # 02:30 CET, the second time


def test_an_end_the_clock_skips_or_shows_twice() -> None:
    # 02:30 does not exist on 2026-03-29 in Berlin: read as 03:30 CEST (PEP 495).
    early = parse_quiet_hours("01:00-02:30 Europe/Berlin")
    assert quiet_until(utc(2026, 3, 29, 0, 30), early) == utc(2026, 3, 29, 1, 30)
    assert quiet_until(utc(2026, 3, 29, 1, 0), early) is None  # 03:00 CEST, past the end
    # From before midnight, the same end: not 01:30 CET (02:30 read at the later offset).
    night = parse_quiet_hours("22:00-02:30 Europe/Berlin")
    assert quiet_until(utc(2026, 3, 28, 23, 0), night) == utc(2026, 3, 29, 1, 30)  # 00:00 CET
    assert quiet_until(utc(2026, 3, 29, 0, 45), night) == utc(2026, 3, 29, 1, 30)  # 01:45 CET
    # 02:30 happens twice on 2026-10-25: each pass of the window ends at the next one.
    late = parse_quiet_hours("22:00-02:30 Europe/Berlin")
    assert quiet_until(utc(2026, 10, 25, 0, 10), late) == utc(2026, 10, 25, 0, 30)  # 02:10 CEST
    assert quiet_until(utc(2026, 10, 25, 0, 45), late) is None  # 02:45 CEST
    assert quiet_until(utc(2026, 10, 25, 1, 10), late) == utc(2026, 10, 25, 1, 30)  # 02:10 CET


def test_release_time_moves_a_digest_out_of_quiet_hours() -> None:
    assert release_time(utc(2026, 11, 30, 23, 0), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)
    assert release_time(utc(2026, 11, 30, 21, 0), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)  # the start
    assert release_time(utc(2026, 12, 1, 6, 0), BERLIN_NIGHT) == utc(2026, 12, 1, 6, 0)  # the end
    assert release_time(utc(2026, 11, 30, 20, 0), BERLIN_NIGHT) == utc(2026, 11, 30, 20, 0)
    assert release_time(utc(2026, 11, 30, 23, 0), None) == utc(2026, 11, 30, 23, 0)


def delivery(alert: str, item: str, channel: str = "hook") -> Delivery:
    data = {"alert": alert, "matched": ["x"], "item": {"id": item, "title": f"t{item}"}}
    return Delivery(f"{alert}-{item}-{channel}", alert, channel, {"type": "newswatch.alert", "data": data})


NIGHT = utc(2026, 11, 30, 22, 15)  # 23:15 in Berlin
MORNING = utc(2026, 12, 1, 6, 0)  # 07:00 in Berlin


def test_route_holds_alerts_in_quiet_hours_until_their_end() -> None:
    policies = {"q": AlertPolicy(quiet=BERLIN_NIGHT), "plain": AlertPolicy()}
    routing = route(
        [delivery("q", "1"), delivery("q", "1", "mail"), delivery("plain", "1")], policies, {}, NIGHT
    )
    assert [d.alert for d in routing.immediate] == ["plain"]
    assert [(h.delivery.channel, h.window_end, h.held_by) for h in routing.digested] == [
        ("hook", MORNING, "quiet_hours"),
        ("mail", MORNING, "quiet_hours"),
    ]
    day = route([delivery("q", "2")], policies, {}, utc(2026, 12, 1, 9, 0))
    assert [d.alert for d in day.immediate] == ["q"] and day.digested == ()


def test_quiet_hours_win_over_a_cap_and_count_nothing_against_it() -> None:
    policies = {"c": AlertPolicy(max_per_hour=1, quiet=BERLIN_NIGHT)}
    routing = route([delivery("c", "1"), delivery("c", "2")], policies, {}, NIGHT)
    assert routing.immediate == () and routing.sent_this_hour == {}
    assert {(h.window_end, h.held_by) for h in routing.digested} == {(MORNING, "quiet_hours")}
    # Before the quiet hours: one goes out, the excess waits for the end of the hour, which is
    # the start of the quiet hours (21:00Z), so it waits for their end.
    evening = route([delivery("c", "1"), delivery("c", "2")], policies, {}, utc(2026, 11, 30, 20, 30))
    assert [d.delivery_id for d in evening.immediate] == ["c-1-hook"]
    (only,) = evening.digested
    assert (only.window_end, only.held_by) == (MORNING, "capped")


def test_a_digest_window_closing_in_quiet_hours_closes_at_their_end() -> None:
    policies = {"d": AlertPolicy(digest=timedelta(hours=2), quiet=BERLIN_NIGHT)}
    routing = route([delivery("d", "1")], policies, {}, utc(2026, 11, 30, 19, 30))  # window ends 20:00Z
    assert routing.digested[0].window_end == utc(2026, 11, 30, 20, 0)  # 21:00 Berlin: not quiet yet
    assert routing.digested[0].quiet is None  # not moved by the quiet hours
    routing = route([delivery("d", "1")], policies, {}, utc(2026, 11, 30, 20, 30))  # ends 22:00Z
    assert (routing.digested[0].window_end, routing.digested[0].held_by) == (MORNING, "digest")
    assert routing.digested[0].quiet == BERLIN_NIGHT


def test_a_digest_due_in_quiet_hours_waits_for_their_end() -> None:
    quiet = AlertPolicy(quiet=BERLIN_NIGHT)
    # Scheduled before the quiet hours were configured, or run late into the next night:
    assert postponed_flush(utc(2026, 11, 30, 22, 0), NIGHT, quiet) == MORNING
    # The digest the quiet hours held, run a moment before their end by a clock apart: it goes.
    assert postponed_flush(MORNING, MORNING - timedelta(seconds=1), quiet) is None
    assert postponed_flush(MORNING, MORNING, quiet) is None
    assert postponed_flush(utc(2026, 11, 30, 22, 0), NIGHT, AlertPolicy()) is None


def test_the_archive_says_held_for_quiet_hours_and_until_when() -> None:
    placed = place([("i", "s", ("q", "d"))], {})[0]
    digested = {
        "q": Digested(delivery("q", "i"), MORNING, "quiet_hours", BERLIN_NIGHT),
        "d": Digested(delivery("d", "i"), MORNING, "digest", BERLIN_NIGHT),
    }
    found = outcomes(["q", "d"], None, placed, set(), digested)
    assert found["q"] == Outcome(
        "quiet_hours", "until 07:00 Europe/Berlin; in the digest at 2026-12-01T06:00:00Z"
    )
    assert found["d"] == Outcome(
        "digest", "digest at 2026-12-01T06:00:00Z, after quiet hours 22:00-07:00 Europe/Berlin"
    )
    # "quiet" stays what it was: never alerted (a baseline, too old), quiet hours or not.
    assert outcomes(["q"], "too old", placed, set(), digested) == {"q": Outcome("quiet", "too old")}


ALERTS = """
alerts:
  - {name: night, query: DeepSeek, quiet: "22:00-07:00 Europe/Berlin", digest: 1h}
  - {name: office, query: DeepSeek, quiet: "09:00-17:00"}
  - {name: always, query: DeepSeek}
"""


def test_config_reads_quiet_hours(tmp_path: Path) -> None:
    alerts = load(tmp_path, ALERTS).settings.alerts
    assert [a.quiet for a in alerts] == [BERLIN_NIGHT, parse_quiet_hours("09:00-17:00 UTC"), None]
    # Shown as written (a config's dump compares and prints as text).
    assert alerts[0].model_dump()["quiet"] == "22:00-07:00 Europe/Berlin"
    assert alerts[2].model_dump()["quiet"] is None


def test_config_names_bad_quiet_hours_by_key_path(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
alerts:
  - {name: a, query: DeepSeek, quiet: "22:00-07:00 Europe/Berln"}
  - {name: b, query: DeepSeek, quiet: "07:00-07:00"}
  - {name: c, query: DeepSeek, quiet: "abends"}
  - {name: d, query: DeepSeek, quiet: 22}
""",
    )
    assert found[0] == (
        "alerts[0].quiet: unknown time zone 'Europe/Berln' (an IANA name such as Europe/Berlin, or UTC)"
    )
    assert found[1] == "alerts[1].quiet: quiet hours start and end at the same time (07:00): no window"
    assert found[2].startswith("alerts[2].quiet: 'abends' is not quiet hours: write 'HH:MM-HH:MM'")
    assert found[3].startswith("alerts[3].quiet: 22 is not quiet hours")
    assert len(found) == 4


def test_explain_says_held_for_quiet_hours() -> None:
    outcome = Outcome("quiet_hours", "until 07:00 Europe/Berlin; in the digest at 2026-12-01T06:00:00Z")
    reason = AlertReason("q", "DeepSeek", outcome.outcome in FIRED, outcome, True)
    assert reason.fired
    assert reason.reason == (
        "held for the alert's quiet hours (until 07:00 Europe/Berlin; in the digest at 2026-12-01T06:00:00Z)"
    )

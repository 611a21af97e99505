"""Which waiting delivery starts next: limits, fairness between channels and alerts, order."""

from __future__ import annotations

from collections import Counter

from worker.core.lanes import Lanes, Limits


def fill(lanes: Lanes[str], channel: str, alert: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        lanes.push(channel, alert, f"2025-08-15T13:{n:02d}:00Z", f"{channel}/{alert}/{n}")


def start_all(lanes: Lanes[str], in_flight: Counter[str]) -> list[str]:
    """Take entries until nothing more may start; count them as in flight."""
    started = []
    while (taken := lanes.take(in_flight)) is not None:
        channel, entry = taken
        in_flight[channel] += 1
        started.append(entry)
    return started


def test_a_lone_channel_uses_every_slot_and_no_more() -> None:
    lanes: Lanes[str] = Lanes(Limits(16), ["hook"])
    fill(lanes, "hook", "a", 40)
    in_flight: Counter[str] = Counter()
    assert len(start_all(lanes, in_flight)) == 16
    assert len(lanes) == 24


def test_a_channel_cap_holds_while_other_channels_use_the_rest() -> None:
    lanes: Lanes[str] = Lanes(Limits(16, {"fragile": 3}), ["fragile", "hook"])
    fill(lanes, "fragile", "a", 40)
    fill(lanes, "hook", "a", 40)
    in_flight: Counter[str] = Counter()
    start_all(lanes, in_flight)
    assert in_flight == {"fragile": 3, "hook": 13}


def test_a_busy_channel_leaves_a_slot_for_an_idle_one() -> None:
    """A dead receiver cannot take every slot: the last one stays for the other channel."""
    lanes: Lanes[str] = Lanes(Limits(16), ["dead", "live"])
    fill(lanes, "dead", "a", 100)
    in_flight: Counter[str] = Counter()
    start_all(lanes, in_flight)
    assert in_flight == {"dead": 15}
    fill(lanes, "live", "b", 5)  # the dead receiver's sends all hang; this alert must not wait
    assert lanes.take(in_flight) == ("live", "live/b/0")


def test_freed_slots_go_to_the_channel_with_the_fewest_in_flight() -> None:
    lanes: Lanes[str] = Lanes(Limits(16), ["dead", "live"])
    fill(lanes, "dead", "a", 100)
    fill(lanes, "live", "b", 100)
    in_flight = Counter({"dead": 15, "live": 1})
    for _ in range(7):  # seven of the dead receiver's sends time out, one after another
        in_flight["dead"] -= 1
        channel, _ = lanes.take(in_flight)  # type: ignore[misc]
        in_flight[channel] += 1
    assert in_flight == {"dead": 8, "live": 8}


def test_one_slot_in_all_still_goes_round() -> None:
    lanes: Lanes[str] = Lanes(Limits(1), ["a", "b"])
    fill(lanes, "a", "x", 2)
    fill(lanes, "b", "x", 2)
    order = []
    while (taken := lanes.take({})) is not None:
        order.append(taken[0])
    assert order == ["a", "b", "a", "b"]


def test_alerts_of_one_channel_take_turns() -> None:
    """An alert with 1,000 waiting items delays another alert's first item by one turn."""
    lanes: Lanes[str] = Lanes(Limits(4), ["hook"])
    fill(lanes, "hook", "broad", 1000)
    in_flight: Counter[str] = Counter()
    start_all(lanes, in_flight)
    fill(lanes, "hook", "narrow", 1)
    in_flight["hook"] -= 1
    assert lanes.take(in_flight) == ("hook", "hook/broad/4")  # the turn that was under way
    in_flight["hook"] -= 1
    assert lanes.take(in_flight) == ("hook", "hook/narrow/0")


def test_the_oldest_item_of_a_lane_goes_first_whatever_the_order_of_arrival() -> None:
    lanes: Lanes[str] = Lanes(Limits(1), ["hook"])
    for minute in (30, 10, 20):  # a newer batch arrived first
        lanes.push("hook", "a", f"2025-08-15T13:{minute}:00Z", str(minute))
    lanes.push("hook", "a", "2025-08-15T13:10:00Z", "10-again")  # same date: arrival order
    taken = [lanes.take({})[1] for _ in range(4)]  # type: ignore[index]
    assert taken == ["10", "10-again", "20", "30"]


def test_everything_waiting_can_be_handed_back() -> None:
    lanes: Lanes[str] = Lanes(Limits(2), ["a", "b"])
    fill(lanes, "a", "x", 3)
    fill(lanes, "b", "y", 2)
    assert sorted(lanes.pop_all()) == ["a/x/0", "a/x/1", "a/x/2", "b/y/0", "b/y/1"]
    assert len(lanes) == 0 and lanes.take({}) is None and lanes.entries() == []

"""When feeds are due and which a scheduler takes (worker.core.schedule): pure, no servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from worker.core.schedule import LATE, Due, KeepingUp, choose, diagnosis, first_due, next_due

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)


def test_first_polls_spread_over_a_window_that_fits_the_feeds() -> None:
    # A few feeds: within the jitter of the interval, at most ten seconds; at once without jitter.
    assert first_due(NOW, FIVE, 0.1, 3, 100, 0.999) <= NOW + timedelta(seconds=10)
    assert first_due(NOW, timedelta(seconds=30), 0.1, 3, 100, 0.999) <= NOW + timedelta(seconds=3)
    assert first_due(NOW, FIVE, 0.0, 3, 100, 0.999) < NOW + timedelta(seconds=1)
    # 10,000 feeds at 100 slots: spread wide enough to ask for half the capacity at most.
    assert first_due(NOW, FIVE, 0.1, 10_000, 100, 0.5) == NOW + timedelta(seconds=50)
    # Never beyond the feed's own interval.
    assert first_due(NOW, timedelta(seconds=30), 0.1, 10_000, 100, 0.999) < NOW + timedelta(seconds=30)


def test_next_poll_is_an_interval_after_the_start_give_or_take_jitter_and_never_before_a_backoff() -> None:
    assert next_due(NOW, FIVE, 0.1, 0.5) == NOW + FIVE
    assert next_due(NOW, FIVE, 0.1, 0.0) == NOW + FIVE * 0.9
    assert next_due(NOW, FIVE, 0.1, 1.0) == NOW + FIVE * 1.1
    assert next_due(NOW, FIVE, 0.0, 0.9) == NOW + FIVE
    backoff = NOW + timedelta(hours=1)
    assert next_due(NOW, FIVE, 0.1, 0.5, not_before=backoff) == backoff
    assert next_due(NOW, FIVE, 0.1, 0.5, not_before=NOW) == NOW + FIVE


def test_choose_fills_free_slots_in_order_and_keeps_to_each_hosts_limit() -> None:
    due = [Due(f"a{n}", NOW) for n in range(5)] + [Due("b0", NOW), Due("c0", NOW), Due("x", NOW)]
    host_of = {**{f"a{n}": "a:443" for n in range(5)}, "b0": "b:443", "c0": "c:443"}
    chosen = choose(due, free_slots=10, host_of=host_of, host_free={}, per_host=2)
    assert [d.feed for d in chosen] == ["a0", "a1", "b0", "c0"]  # "x" is not this config's feed
    busy = choose(due, free_slots=10, host_of=host_of, host_free={"a:443": 0, "b:443": 1}, per_host=2)
    assert [d.feed for d in busy] == ["b0", "c0"]  # a slow host holds back its own feeds only
    assert len(choose(due, free_slots=1, host_of=host_of, host_free={}, per_host=2)) == 1


def test_diagnosis_names_the_limit_that_made_polls_late() -> None:
    on_time = KeepingUp()
    on_time.record(timedelta(seconds=1))
    assert diagnosis(on_time, 100, 2) is None

    def late(**seen: object) -> KeepingUp:
        report = KeepingUp(**seen)  # type: ignore[arg-type]
        report.record(LATE + timedelta(seconds=10))
        return report

    assert "CPU-bound" in (diagnosis(late(cpu_share=0.97), 100, 2) or "")
    assert "all 100 poll slots were busy" in (diagnosis(late(slots_full=3), 100, 2) or "")
    message = diagnosis(late(host_limited={"a:443": 9, "b:443": 1}), 100, 2) or ""
    assert "a:443: 2 polls at a time" in message and "worst 15 s" in message

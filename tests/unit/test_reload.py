"""Live reload, the pure parts: config revisions, what a reload changes, and a reload waiting for
the job in progress (worker.reload.BetweenJobs)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import redis

from worker.config import Config, load_config
from worker.core.lanes import Lanes, Limits
from worker.core.revision import ConfigShape, config_revision, diff
from worker.reload import BetweenJobs, Reloader, revision, shape
from worker.runtime import Runtime

BASE = """
redis: {url: "redis://127.0.0.1:1/0"}
feeds:
  - {name: markets, url: "https://a.example/rss"}
  - {name: tech, url: "https://b.example/rss", interval: 5m}
alerts:
  - {name: deepseek, query: "DeepSeek"}
"""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "newswatch.yaml"
    path.write_text(text, encoding="utf-8")
    return load_config(str(path), env or {})


def test_a_revision_is_the_effective_content_not_the_text(tmp_path: Path) -> None:
    base = revision(load(tmp_path, BASE).settings)
    assert len(base) == 12 and int(base, 16) >= 0
    # Comments, order of keys, a ${VAR} that resolves to the same value: the same revision.
    same = "# the story of the week\n" + BASE.replace('query: "DeepSeek"', 'query: "${Q:-DeepSeek}"')
    assert revision(load(tmp_path, same).settings) == base
    reordered = BASE.replace('{name: deepseek, query: "DeepSeek"}', '{query: "DeepSeek", name: deepseek}')
    assert revision(load(tmp_path, reordered).settings) == base
    # A changed value, or a default spelled out differently: another revision.
    assert revision(load(tmp_path, BASE.replace("DeepSeek", "Nvidia")).settings) != base
    assert revision(load(tmp_path, BASE.replace("5m", "6m")).settings) != base


def test_config_revision_ignores_key_order() -> None:
    assert config_revision({"a": 1, "b": [1, 2]}) == config_revision({"b": [1, 2], "a": 1})
    assert config_revision({"a": 1}) != config_revision({"a": 2})


def test_the_diff_names_added_removed_and_changed_feeds_and_sections(tmp_path: Path) -> None:
    old = shape(load(tmp_path, BASE).settings)
    new_text = """
redis: {url: "redis://127.0.0.1:1/0"}
channels: {hook: {type: webhook, url: "https://h.example/"}}
feeds:
  - {name: tech, url: "https://b.example/rss", interval: 10m}
  - {name: chips, url: "https://c.example/rss"}
  - {name: cloud, url: "https://d.example/rss"}
alerts:
  - {name: deepseek, query: "DeepSeek", channels: [hook]}
"""
    change = diff(old, shape(load(tmp_path, new_text).settings))
    assert change.added == ("chips", "cloud")
    assert change.removed == ("markets",)
    assert change.changed == ("tech",)  # its interval: its fingerprint changed, its name stays
    assert change.sections == ("alerts", "channels")
    assert change.describe() == "+2 feeds, -1 feed, 1 feed changed, alerts changed, channels changed"


def test_no_change_says_so() -> None:
    shape_ = ConfigShape({"a": "f1"}, {"alerts": []})
    change = diff(shape_, shape_)
    assert change.empty and change.describe() == "nothing changed"
    only_sections = diff(shape_, ConfigShape({"a": "f1"}, {"alerts": [{"name": "x"}]}))
    assert only_sections.describe() == "alerts changed" and not only_sections.added


def test_a_reload_waits_for_the_job_in_progress_and_holds_the_next() -> None:
    between = BetweenJobs()
    events: list[str] = []
    job_running, job_may_end = threading.Event(), threading.Event()

    def job() -> None:
        with between.job():
            events.append("job start")
            job_running.set()
            job_may_end.wait(5)
            events.append("job end")

    def reload() -> None:
        with between.reload():
            events.append("reload")

    worker = threading.Thread(target=job)
    worker.start()
    job_running.wait(5)
    reloading = threading.Thread(target=reload)
    reloading.start()
    reloading.join(0.2)
    assert reloading.is_alive() and events == ["job start"]  # it waits for the job
    job_may_end.set()
    worker.join(5)
    reloading.join(5)
    assert events == ["job start", "job end", "reload"]


def test_the_next_job_waits_for_a_reload_under_way() -> None:
    between = BetweenJobs()
    events: list[str] = []
    in_reload, reload_may_end = threading.Event(), threading.Event()

    def reload() -> None:
        with between.reload():
            in_reload.set()
            reload_may_end.wait(5)
            events.append("reload")

    reloading = threading.Thread(target=reload)
    reloading.start()
    in_reload.wait(5)

    def job() -> None:
        with between.job():
            events.append("job")

    worker = threading.Thread(target=job)
    worker.start()
    time.sleep(0.1)  # give the job a chance to start too early (it must not)
    assert events == []
    reload_may_end.set()
    reloading.join(5)
    worker.join(5)
    assert events == ["reload", "job"]


def test_lanes_take_new_limits_and_keep_what_waits() -> None:
    lanes: Lanes[str] = Lanes(Limits(4, {"hook": 1}), ["hook"])
    for n in range(3):
        lanes.push("hook", "a", f"2025-01-0{n + 1}", f"d{n}")
    assert lanes.take({"hook": 1}) is None  # capped at 1 in flight
    lanes.reconfigure(Limits(4, {"hook": 2}), ["hook", "chat"])
    assert lanes.take({"hook": 1}) == ("hook", "d0")
    assert len(lanes) == 2


def test_a_runtime_rebuilds_only_what_was_built_from_settings_that_changed(tmp_path: Path) -> None:
    rt = Runtime(load(tmp_path, BASE), redis.Redis(port=1))  # nothing here talks to Redis
    outbox, archive, http = rt.outbox, rt.archive, rt.http
    new = load(tmp_path, BASE.replace('query: "DeepSeek"}', 'query: "Nvidia", max_per_hour: 3}'))
    rt.reconfigure(new)
    assert rt.config is new and rt.settings.alerts[0].query == "Nvidia"
    assert rt.outbox is not outbox and rt.outbox.policies["deepseek"].max_per_hour == 3  # alerts changed
    assert rt.archive is archive and rt.http is http  # their settings did not


def test_a_reloader_reads_the_file_once_more_when_it_starts(tmp_path: Path) -> None:
    """A process ignores SIGHUP from its start until its reloader listens; a reload asked for in
    between (the file changed after the process loaded it) is caught up at once."""
    config = load(tmp_path, BASE)
    (tmp_path / "newswatch.yaml").write_text(BASE.replace("DeepSeek", "Nvidia"), encoding="utf-8")
    applied: list[Config] = []
    previous = signal.getsignal(signal.SIGHUP)
    reloader = Reloader(config, applied.append, watch_file=False, who="test")
    try:
        reloader.start()
        deadline = time.monotonic() + 10
        while not applied and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        reloader.stop()
        signal.signal(signal.SIGHUP, previous)
    assert [c.settings.alerts[0].query for c in applied] == ["Nvidia"]
    assert reloader.revision == revision(applied[0].settings)

"""Live reload (SPEC §11, issue 15.2) with the daemon's real processes (`newswatch run`: a
scheduler and two workers), a real Redis, local feeds and a local webhook receiver: a config
adding a feed, removing one, changing one and changing a query while items keep arriving; a
broken config refused while the old one keeps running; `newswatch reload` and the revisions in
`status`."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    ROOT,
    LocalServer,
    Request,
    Response,
    alive,
    children_of,
    rss,
    stop_processes,
    wait_for,
)
from tests.integration.receivers import Answer, SlowReceiver


class Feeds(LocalServer):
    """Feeds whose items the test adds while the daemon polls them."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self.published: dict[str, float] = {}  # title -> when it was put in its feed (monotonic)
        self.counter = 0

    def serve(self, *names: str) -> None:
        for name in names:
            self.routes[f"/{name}.rss"] = lambda request, name=name: self._answer(name)  # type: ignore[misc]

    def _answer(self, name: str) -> Response:
        with self.lock:
            body = rss(list(reversed(self.items[name][-30:])), title=name)
        return Response(body, headers={"Content-Type": "application/rss+xml"})

    def publish(self, feed: str, words: str) -> str:
        with self.lock:
            self.counter += 1
            title = f"news {self.counter} {words}"
            self.items[feed].append({
                "title": title, "guid": f"{feed}-{self.counter}", "link": f"https://n.example/{feed}/{self.counter}",
                "pubDate": format_datetime(datetime.now(UTC)),
            })  # fmt: skip
            self.published[title] = time.monotonic()
        return title

    def polls(self, name: str) -> list[Request]:
        return self.received(f"/{name}.rss")


@pytest.fixture
def feeds() -> Iterator[Feeds]:
    server = Feeds()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    server = SlowReceiver(lambda path, payload, tries: Answer(delay=0.01))
    yield server
    server.close()


def config_text(
    redis_url: str,
    feeds: Feeds,
    hook: SlowReceiver,
    names: list[str],
    query: str,
    interval: str = "1s",
    extra: bool = False,
) -> str:
    lines = "\n".join(
        f'  - {{name: {name}, url: "{feeds.url(f"/{name}.rss")}"'
        + (f", interval: {interval}" if name == "a" else "") + "}"
        for name in names
    )  # fmt: skip
    return f"""
redis: {{url: "{redis_url}"}}
metrics: {{port: 0}}
polling: {{interval: 1s, jitter: 0%, timeout: 5s, max_age: off, allow_private_addresses: true}}
delivery: {{retries: [1s, 1s, 2s], timeout: 3s}}
feeds:
{lines}
alerts:
  - {{name: everything, query: news, channels: [all]}}
  - {{name: picked, query: "{query}", channels: [picked{", extra" if extra else ""}]}}
channels:
  all: {{type: webhook, url: "{hook.url("/all")}"}}
  picked: {{type: webhook, url: "{hook.url("/picked")}"}}
""" + (f'  extra: {{type: webhook, url: "{hook.url("/extra")}"}}\n' if extra else "")


def replace_file(path: Path, text: str) -> None:
    """As editors save: a new file renamed over the old one."""
    new = path.with_suffix(".tmp")
    new.write_text(text, encoding="utf-8")
    os.replace(new, path)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=90,
    )  # fmt: skip


def status(config: Path) -> dict[str, Any]:
    result = cli(config, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def revisions(config: Path) -> dict[str, str]:
    """Process id -> the revision it runs, from `status --json`."""
    return {p["id"]: p["revision"] for p in status(config)["processes"]}


def start_run(config: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "run.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", "--workers", "2", "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
    )  # fmt: skip


def running_everywhere(config: Path, processes: int = 3) -> str:
    """The one revision all processes run, once scheduler and workers report it."""
    seen = revisions(config)
    values = set(seen.values())
    return values.pop() if len(seen) == processes and len(values) == 1 else ""


def titles_by_id(receiver: SlowReceiver, path: str) -> dict[str, list[str]]:
    """webhook-id -> the titles delivered with it (one each, if nothing was doubled)."""
    delivered: dict[str, list[str]] = collections.defaultdict(list)
    for arrival in receiver.delivered(path):
        delivered[arrival.headers["webhook-id"]].append(arrival.payload["data"]["item"]["title"])
    return delivered


def assert_once_each(receiver: SlowReceiver, path: str) -> list[str]:
    by_id = titles_by_id(receiver, path)
    assert all(len(t) == 1 for t in by_id.values()), {i: t for i, t in by_id.items() if len(t) > 1}
    titles = [t for ts in by_id.values() for t in ts]
    doubled = [t for t, n in collections.Counter(titles).items() if n > 1]
    assert not doubled, doubled
    return titles


class Stream:
    """Items keep arriving in feed `a` while the test reloads: one every 0.2 s, alternately
    mentioning alpha and beta."""

    def __init__(self, feeds: Feeds) -> None:
        self.feeds = feeds
        self.titles: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stopped.wait(0.2):
            n += 1
            self.titles.append(self.feeds.publish("a", "alpha" if n % 2 else "beta"))

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def test_a_reload_adds_removes_and_changes_feeds_and_queries_mid_stream_with_no_alert_lost_or_doubled(
    tmp_path: Path, redis_url: str, feeds: Feeds, receiver: SlowReceiver
) -> None:
    feeds.serve("a", "b", "c")
    for name in ("a", "b", "c"):
        feeds.publish(name, f"alpha beta before in {name}")
    config = tmp_path / "newswatch.yaml"
    config.write_text(config_text(redis_url, feeds, receiver, ["a", "b"], "alpha"), encoding="utf-8")
    run = start_run(config, tmp_path)
    try:
        old = wait_for(lambda: running_everywhere(config), timeout=60)
        from_b = feeds.publish("b", "alpha from b")
        wait_for(lambda: from_b in receiver.titles("/all"), timeout=30)
        with Stream(feeds) as stream:
            wait_for(lambda: len(receiver.titles("/picked")) >= 3, timeout=30)  # alpha items alert
            before_reload = set(receiver.titles("/all"))  # processed on the old config for sure
            # b removed, c added, a changed (its interval: a new fingerprint), the query changed,
            # and its alerts go to a new channel too.
            new_config = config_text(
                redis_url, feeds, receiver, ["a", "c"], "beta", interval="2s", extra=True
            )
            replace_file(config, new_config)
            new = wait_for(lambda: (r := running_everywhere(config)) != old and r, timeout=60)
            applied = time.monotonic()
            b_polls = len(feeds.polls("b"))
            wait_for(lambda: feeds.polls("c"), timeout=30)  # the added feed is polled
            late_b = feeds.publish("b", "alpha beta from a removed feed")
            from_c = feeds.publish("c", "beta from c")
            wait_for(lambda: from_c in receiver.titles("/all"), timeout=30)
            a_polls = len(feeds.polls("a"))
            wait_for(lambda: len(feeds.polls("a")) >= a_polls + 3, timeout=30)  # a goes on
        last = stream.titles[-1]
        wait_for(lambda: last in receiver.titles("/all"), timeout=30)
        assert len(feeds.polls("b")) <= b_polls + 1  # at most a poll that had started: then none
        b_after = len(feeds.polls("b"))
        wait_for(lambda: len(feeds.polls("a")) >= a_polls + 5, timeout=30)
        assert len(feeds.polls("b")) == b_after
    finally:
        stop_processes(run)
    log = (tmp_path / "run.log").read_text()
    assert "reload: +1 feed, -1 feed, 1 feed changed, alerts changed, channels changed" in log, log
    assert "Traceback" not in log
    everything = assert_once_each(receiver, "/all")
    picked = assert_once_each(receiver, "/picked")
    # Nothing lost: every item reached /all once, except the one published to the removed feed.
    published = list(feeds.published)
    assert sorted(everything) == sorted(t for t in published if t != late_b)
    assert late_b not in everything
    # The query: processed before the reload -> alpha; published after it was applied -> beta.
    for title in before_reload:
        assert (title in picked) == ("alpha" in title), title
    after = [t for t in published if feeds.published[t] > applied and t != late_b]
    assert len(after) >= 5
    for title in after:
        assert (title in picked) == ("beta" in title), title
    extra = assert_once_each(receiver, "/extra")
    assert set(extra) <= set(picked) and {t for t in after if "beta" in t} <= set(extra)
    assert old != new and from_c in picked and stream.titles


def test_a_broken_config_is_refused_and_the_old_one_keeps_running(
    tmp_path: Path, redis_url: str, feeds: Feeds, receiver: SlowReceiver
) -> None:
    feeds.serve("a")
    first = feeds.publish("a", "alpha before")
    config = tmp_path / "newswatch.yaml"
    good = config_text(redis_url, feeds, receiver, ["a"], "alpha")
    config.write_text(good, encoding="utf-8")
    run = start_run(config, tmp_path)
    try:
        old = wait_for(lambda: running_everywhere(config), timeout=60)
        wait_for(lambda: first in receiver.titles("/picked"), timeout=30)
        # A query that does not parse, and a channel that does not exist: check-config's messages.
        broken = good.replace('query: "alpha"', 'query: "alpha AND"').replace(
            "channels: [picked]", "channels: [pickd]"
        )
        config.write_text(broken, encoding="utf-8")
        expected = cli(config, "check-config")
        assert expected.returncode == 2
        problems = [line.strip() for line in expected.stderr.splitlines()[1:]]
        assert any(p.startswith("alerts[1].channels[0]") for p in problems), problems
        log = tmp_path / "run.log"
        wait_for(lambda: "reload refused" in log.read_text(), timeout=30)
        wait_for(lambda: all(p in log.read_text() for p in problems), timeout=10)
        refused = cli(config, "reload")  # validated before any signal: refused here too
        assert (
            refused.returncode == 2 and problems[0] in refused.stderr and "sent SIGHUP" not in refused.stdout
        )
        title = feeds.publish("a", "alpha after the broken config")
        wait_for(lambda: title in receiver.titles("/picked"), timeout=30)  # the old config runs
        probe = tmp_path / "probe.yaml"  # `status` cannot read the broken file either: the good one
        probe.write_text(good, encoding="utf-8")
        assert running_everywhere(probe) == old
    finally:
        stop_processes(run)
    text = (tmp_path / "run.log").read_text()
    refusals = [line for line in text.splitlines() if "reload refused" in line]
    assert refusals and all(
        "supervisor still runs revision" in line for line in refusals
    )  # no child heard of it
    assert "Traceback" not in text
    assert_once_each(receiver, "/picked")


def test_a_worker_that_crashes_while_the_file_is_invalid_comes_back_on_the_last_valid_config(
    tmp_path: Path, redis_url: str, feeds: Feeds, receiver: SlowReceiver
) -> None:
    """Without the supervisor's copy of the last valid config, the restarted worker read the
    broken file, exited 2, and was restarted into the same failure until the file was fixed.
    The worker killed is the one that forked RQ's scheduler: before its forked children closed
    their copies of its Redis sockets, the item published after the kill was never processed;
    before they got SIGTERM when it died, the scheduler ran on unsupervised."""
    feeds.serve("a")
    config = tmp_path / "newswatch.yaml"
    good = config_text(redis_url, feeds, receiver, ["a"], "alpha")
    config.write_text(good, encoding="utf-8")
    probe = tmp_path / "probe.yaml"  # `status` cannot read the broken file: the good one
    probe.write_text(good, encoding="utf-8")
    run = start_run(config, tmp_path)
    log = tmp_path / "run.log"
    orphans: list[int] = []
    try:
        old = wait_for(lambda: running_everywhere(config), timeout=60)
        config.write_text(good.replace('query: "alpha"', 'query: "alpha AND"'), encoding="utf-8")
        wait_for(lambda: "reload refused" in log.read_text(), timeout=30)
        before = set(revisions(probe))
        # The worker that forked RQ's scheduler: its child kept the worker's Redis sockets open,
        # so a BLPOP it was killed in stayed open at Redis and swallowed the next job.
        victim = wait_for(
            lambda: next((w for w in children_of(run.pid, "worker") if children_of(w, "worker")), None),
            timeout=30,
        )
        orphans += children_of(victim, "worker")  # its RQ scheduler (killed below if it lingers)
        assert orphans
        os.kill(victim, signal.SIGKILL)  # the worker alone, as the OOM killer would
        wait_for(lambda: "exited with code -9" in log.read_text(), timeout=30)
        # The scheduler stops with it, its lock released for the new worker's scheduler.
        wait_for(lambda: not any(map(alive, orphans)), timeout=30)
        # A new worker registers, on the revision the others run (the killed one's record
        # lingers until it goes stale, so the count of processes would prove nothing).
        wait_for(lambda: any(r == old for p, r in revisions(probe).items() if p not in before), timeout=60)
        assert "exited with code 2" not in log.read_text()
        assert "running the last config `newswatch run` found valid" in log.read_text()
        title = feeds.publish("a", "alpha after the crash")
        wait_for(lambda: title in receiver.titles("/picked"), timeout=30)
        # Fixed: the reload reaches every process, the restarted worker too.
        config.write_text(good.replace('query: "alpha"', 'query: "beta"'), encoding="utf-8")
        wait_for(lambda: (r := set(revisions(probe).values()) - {old}) and len(r) == 1, timeout=60)
    finally:
        stop_processes(run)
        for orphan in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
    assert "Traceback" not in log.read_text()


def test_newswatch_reload_signals_the_daemon_and_status_shows_the_new_revision(
    tmp_path: Path, redis_url: str, feeds: Feeds, receiver: SlowReceiver
) -> None:
    feeds.serve("a")
    (tmp_path / "daemon").mkdir()
    (tmp_path / "editor").mkdir()
    config = tmp_path / "daemon" / "newswatch.yaml"
    config.write_text(config_text(redis_url, feeds, receiver, ["a"], "alpha"), encoding="utf-8")
    # The same file under another name in another directory (a hard link): written through that
    # name, its change reaches no watcher of the daemon's directory. Only the signal reloads it.
    edited = tmp_path / "editor" / "newswatch.yaml"
    os.link(config, edited)
    nothing = cli(config, "reload")
    assert nothing.returncode == 1 and "no running newswatch daemon" in nothing.stderr
    run = start_run(config, tmp_path)
    try:
        old = wait_for(lambda: running_everywhere(config), timeout=60)
        with edited.open("r+", encoding="utf-8") as file:  # in place: the inode both names share
            text = config_text(redis_url, feeds, receiver, ["a"], "beta")
            file.write(text)
            file.truncate()
        assert config.read_text(encoding="utf-8") == text
        result = cli(config, "reload")
        assert result.returncode == 0, result.stderr
        assert f"sent SIGHUP to newswatch run (pid {run.pid}: scheduler, worker, worker)" in result.stdout
        new = running_everywhere(config)
        assert new and new != old
        assert f"running revision {new} in 3 process(es)" in result.stdout
        data = status(config)
        assert data["revisions"] == [new]
        assert sorted(p["role"] for p in data["processes"]) == ["scheduler", "worker", "worker"]
        human = cli(config, "status")
        assert "Processes" in human.stdout and human.stdout.count(new) == 3, human.stdout
        assert "different config revisions" not in human.stdout
    finally:
        stop_processes(run)
    log = (tmp_path / "run.log").read_text()
    signalled = log.index("supervisor: SIGHUP, reloading")
    assert log.index(f"alerts changed (revision {old} -> {new}, supervisor)") > signalled
    assert log.count(f"-> {new}, ") == 4  # the supervisor, the scheduler and both workers


def test_a_feed_removed_stays_removed_for_a_scheduler_still_on_the_old_config(
    tmp_path: Path, redis_url: str, feeds: Feeds, receiver: SlowReceiver
) -> None:
    """Two schedulers share the schedule; one reloads a config without feed b, the other runs
    on from another file that still has it (a host not updated yet): b is polled by no one, and
    the new feed c by the scheduler that knows it. (The old one sees fewer feeds on the schedule
    than it has: were it not for the revision, it would take them for lost and put them back.)"""
    feeds.serve("a", "b", "c", "d")
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = tmp_path / "one" / "newswatch.yaml", tmp_path / "two" / "newswatch.yaml"
    for path in (first, second):
        path.write_text(config_text(redis_url, feeds, receiver, ["a", "b", "d"], "alpha"), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONUNBUFFERED": "1"}
    schedulers: list[subprocess.Popen[bytes]] = []
    try:
        for n, path in enumerate((first, second)):  # inside the try: a failed second start stops the first
            with (tmp_path / f"scheduler-{n}.log").open("ab") as log:
                schedulers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "worker.cli", "scheduler", "--config", str(path)],
                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                    )
                )  # fmt: skip
        old = wait_for(lambda: running_everywhere(first, processes=2), timeout=60)
        wait_for(lambda: len(feeds.polls("b")) >= 2, timeout=30)
        replace_file(first, config_text(redis_url, feeds, receiver, ["a", "c"], "alpha"))
        result = cli(first, "reload")  # the one on `first` only (its watcher may be first: no matter)
        assert result.returncode == 0, result.stderr
        assert "sent SIGHUP to scheduler" in result.stdout and "in 1 process(es)" in result.stdout
        assert set(revisions(second).values()) - {old}  # two revisions run
        wait_for(lambda: feeds.polls("c"), timeout=30)
        b_polls, d_polls, a_polls = len(feeds.polls("b")), len(feeds.polls("d")), len(feeds.polls("a"))
        # Several heartbeats of the old scheduler (every 5 s), which would put b back if it could.
        wait_for(lambda: len(feeds.polls("a")) >= a_polls + 12, timeout=60)
        assert len(feeds.polls("b")) <= b_polls + 1  # at most a poll that had started: then none
        assert len(feeds.polls("d")) <= d_polls + 1
        human = cli(second, "status")
        assert "different config revisions" in human.stdout, human.stdout
    finally:
        stop_processes(*schedulers)
    assert "Traceback" not in (tmp_path / "scheduler-1.log").read_text()

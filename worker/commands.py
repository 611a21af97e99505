"""What each `newswatch` sub-command does; `cli` parses arguments and handles exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from worker import channels, delivery, history, jobs, metrics, monitoring, ops, reload
from worker.adapters import garbage, keys, liveness, queues, rqcompat
from worker.adapters.schedule import Schedule, SchedulerRegistry
from worker.config import DEFAULT_CHANNEL, Config, FeedConfig
from worker.core.errors import DeliveryError
from worker.core.models import AlertMatch, Item, utc_iso
from worker.core.ops import silence_threshold, spelled
from worker.core.poll import REPAIR_SHOWN, FeedState
from worker.core.render import deliveries_for
from worker.core.rules import Classified
from worker.core.schedule import LATE
from worker.core.text import printable
from worker.core.units import format_duration
from worker.logs import rq_level
from worker.runtime import Runtime, connect
from worker.tables import print_table

if TYPE_CHECKING:
    from rq.worker import BaseWorker

    from worker.polling import PollOutcome

log = logging.getLogger("newswatch")
T = TypeVar("T")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def scheduler(config: Config, supervisor: int | None = None) -> int:
    from worker import scheduling

    scheduling.run(connect(config), supervisor)
    return EXIT_OK


def worker(
    config: Config,
    burst: bool,
    queue_names: list[str] | None,
    name: str | None,
    metrics_port: int | None = None,
    fork: bool = False,
    supervisor: int | None = None,
) -> int:
    rt = connect(config).warm()
    jobs.install(rt)
    rqcompat.close_connections_in_forked_children(rt.redis)
    rqcompat.forked_children_stop_with_the_worker()
    if metrics_port:
        metrics.serve(
            metrics_port, config.settings.metrics.bind, rt.redis, lambda: [f.name for f in rt.settings.feeds]
        )
    names = queue_names or list(keys.QUEUES)
    unknown = sorted(set(names) - set(keys.QUEUES))
    if unknown:
        print(
            f"newswatch: unknown queue(s) {', '.join(unknown)}; ours: {', '.join(keys.QUEUES)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    level = rq_level(logging.getLevelName(logging.getLogger().level))
    # Deliveries go out side by side on the process's sender; a forked work horse keeps none.
    after_job = None if fork else delivery.start_sender(rt)
    # A burst drains and exits: it takes no reload. Otherwise a reload waits between jobs.
    between = None if burst else reload.BetweenJobs()
    reloader = None if between is None else _worker_reloader(rt, between, supervisor).start()
    finish = False
    try:
        finish = _work(rt, names, lambda: queues.worker(
            rt.redis, names, name, monitoring.work_horse_killed, fork, after_job=after_job,
            job_guard=between.job if between else None,
        ), burst, level)  # fmt: skip
        return EXIT_OK
    finally:
        if reloader is not None:
            reloader.stop()
        delivery.stop_sender(rt, finish)  # a burst sends what waits; a stop hands it back to RQ


def _worker_reloader(rt: Runtime, between: reload.BetweenJobs, supervisor: int | None) -> reload.Reloader:
    """Jobs after a reload match, route and send on the new config; a job in progress ends on
    the one it started with; the sender takes the new channels and limits."""

    def apply(new: Config) -> None:
        rt.reconfigure(new)
        delivery.reconfigure_sender(rt)

    process_id = f"worker:{socket.gethostname()}:{os.getpid()}"
    record = reload.ProcessRecord(rt, "worker", process_id, supervisor)
    return reload.Reloader(
        rt.config, apply, watch_file=supervisor is None, between=between, record=record, who=process_id
    )


def _work(
    rt: Runtime, names: list[str], new_worker: Callable[[], BaseWorker], burst: bool, level: str
) -> bool:
    """Run RQ workers until asked to stop or, with `burst`, until the queues are dry (then True).
    RQ's loop ends on any error it did not expect (a queue key of another type, say): the
    worker replaces RQ keys that hold garbage and starts again, rather than exit."""
    wait = 1.0
    while True:
        started = time.monotonic()
        try:
            rqcompat.repair_queue_keys(rt.redis, [queues.queue(rt.redis, n) for n in names])
            # with_scheduler: RQ's scheduler moves retries back onto the queue when their time comes.
            rq_worker = new_worker()
            rq_worker.work(burst=burst, with_scheduler=True, logging_level=level)
            if burst or rqcompat.stop_requested(rq_worker):
                return burst and not rqcompat.stop_requested(rq_worker)
            log.error("worker stopped taking jobs after an error (above); starting again in %.0fs", wait)
        except redis.ConnectionError as e:
            # RQ rides out a lost connection while waiting for jobs, not everywhere else: start over.
            log.warning("worker lost Redis (%s); reconnecting in %.0fs", e.__class__.__name__, wait)
        time.sleep(wait)
        wait = 1.0 if time.monotonic() - started > 60 else min(wait * 2, 30.0)


def poll(config: Config, feed_names: list[str] | None) -> int:
    feeds = config.settings.feeds
    if feed_names:
        if unknown_names("feed", feed_names, [f.name for f in feeds]):
            return EXIT_USAGE
        feeds = [f for f in feeds if f.name in feed_names]
    return poll_feeds(connect(config).warm(), feeds)  # TLS context and stores built before the clock


def unknown_names(kind: str, given: Iterable[str | None], known: Iterable[str]) -> bool:
    """Say which of the names given (None: none given) are not configured, and which are; True
    if any is unknown: the command then exits 2 rather than doing nothing quietly."""
    known = sorted(set(known))
    unknown = sorted({name for name in given if name is not None} - set(known))
    if unknown:
        what = f"{kind}s" if len(unknown) > 1 else kind
        listed = ", ".join(repr(name) for name in unknown)
        print(
            f"newswatch: unknown {what} {listed} (configured: {', '.join(known) or 'none'})", file=sys.stderr
        )
    return bool(unknown)


def channel_names(config: Config) -> list[str]:
    """Configured channels, and the console channel alerts use by default."""
    return [*config.settings.channels, DEFAULT_CHANNEL, *config.unavailable]


def poll_feeds(rt: Runtime, feeds: Sequence[FeedConfig]) -> int:
    """Poll these feeds once, with the scheduler's threads; one line per feed, then the timing."""
    # Polling and every source's parser load only where polls run: a worker process starts
    # without them (a third of its start-up CPU).
    from worker.polling import poll_threads

    failed = 0
    # Feeds are fetched in parallel like the scheduler does; the lines come out in config order.
    polling = rt.settings.polling
    with ThreadPoolExecutor(max_workers=poll_threads(feeds, polling.concurrency, polling.per_host)) as pool:
        started, cpu_started = time.perf_counter(), time.process_time()
        outcomes = pool.map(lambda feed: _poll_one(rt, feed), feeds)
        for outcome in with_progress(
            list(outcomes) if sys.stderr.isatty() else outcomes, "polling", len(feeds)
        ):
            # An error can quote the server (a Content-Type, say): printable before a terminal sees it.
            if outcome.status == "error":
                failed += 1
                print(f"{outcome.feed}: error: {printable(outcome.error or '')}")
            elif outcome.status == "disabled":
                print(f"{outcome.feed}: disabled ({printable(outcome.error or '')})")
            else:
                print(f"{outcome.feed}: {outcome.status}, {outcome.items} items, {outcome.enqueued} new")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if len(feeds) > 1:
        print(
            f"polled {len(feeds)} feeds in {elapsed:.3f} s ({len(feeds) / elapsed:.0f} polls/s, "
            f"{cpu / len(feeds) * 1000:.2f} ms CPU per poll)"
        )
    return EXIT_FAILURE if failed else EXIT_OK


def _poll_one(rt: Runtime, feed: FeedConfig) -> PollOutcome:
    """One feed's poll; Redis refusing a command (garbage the poll did not expect) is that
    feed's error, not the end of every other feed's poll."""
    from worker.polling import PollOutcome, poll_feed

    try:
        return poll_feed(rt, feed, force=True)
    except redis.ResponseError as e:
        return PollOutcome(feed.name, "error", error=f"Redis refused a command: {e}")


def with_progress(items: Iterable[T], what: str, total: int) -> Iterator[T]:
    """Iterate, showing a progress bar on a terminal when there is enough to wait for."""
    if total < 5 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import track

    yield from track(items, description=what, total=total, console=Console(stderr=True), transient=True)


def status_data(rt: Runtime) -> dict[str, Any]:
    names = [feed.name for feed in rt.settings.feeds]
    scheduled = Schedule(rt.redis, "status").next_polls(names)
    feeds = []
    for feed in rt.settings.feeds:
        state = rt.feed_states.get(feed.name, repair=False)  # status looks, the next poll repairs
        error, warning = _problems(state, rt.clock())
        moved = state.url if state.url and state.moved_from == feed.url else None
        next_poll = max((t for t in (scheduled[feed.name], state.not_before) if t), default=None)
        feeds.append(
            {
                "name": feed.name,
                # url (a redirect's Location), error and warning can quote a server: printable.
                "url": printable(rt.config.redact(moved or feed.url)),
                "disabled": state.disabled,
                "last_poll": _iso(state.last_poll),
                "last_success": _iso(state.last_success),
                "next_poll": None if state.disabled else _iso(next_poll),
                "late": state.lateness,  # seconds the last scheduler poll started after its time
                "error": _printable_or_none(error),
                "error_count": state.error_count,
                "items_seen": state.items_seen,
                # Published before polling.max_age: recorded, never alerted (say so, not silence).
                "too_old": state.too_old,
                "warning": _printable_or_none(warning),
                "polled_by": state.polled_by,
                **_health(rt, feed, state),
            }
        )
    counts = queues.queue_counts(rt.redis)
    none: list[dict[str, Any]] = []
    return {
        "feeds": feeds,
        "queues": [
            {"name": c.name, "queued": c.queued, "started": c.started, "failed": c.failed} for c in counts
        ],
        # The newest failures, each with its reason: a count alone says nothing to act on.
        "failed_deliveries": _unless_garbage(lambda: history.failed_deliveries(rt, FAILED_SHOWN), none),
        "schedulers": _schedulers(rt, feeds),
        **_revisions(rt),
        # Keys of another type (garbage): each section above read them as empty.
        "redis_problems": _redis_problems(rt),
    }


def _health(rt: Runtime, feed: FeedConfig, state: FeedState) -> dict[str, Any]:
    """A feed's told episodes (worker.core.ops): failing since, silent since (the last new
    item), and how long without a new item counts as silent (null: its rhythm is not known yet)."""
    threshold = silence_threshold(state, ops.policy(rt, feed))
    return {
        "failing_since": _iso(state.failing_told),
        "silent_since": _iso(state.silent_told),
        "silent_after": spelled(threshold[0]) if threshold else None,
    }


def _problems(state: FeedState, now: datetime) -> tuple[str | None, str | None]:
    """A feed's error and warning for `status`: its own, or garbage in its state in Redis (a
    state of another type is an error, unreadable fields a warning), or for a while after a
    poll replaced garbage, a note saying so."""
    error, warning = state.error, state.warning
    if state.garbage and not state.unreadable:
        error = state.garbage
    elif state.garbage:
        warning = state.garbage
    elif state.repaired and state.repaired_at and now - state.repaired_at < REPAIR_SHOWN:
        warning = warning or f"{state.repaired} (at {utc_iso(state.repaired_at)})"
    return error, warning


def _unless_garbage(read: Callable[[], T], empty: T) -> T:
    """`read()`, or `empty` when a key it reads holds another type (see `_redis_problems`)."""
    try:
        return read()
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        return empty


def _redis_problems(rt: Runtime) -> list[str]:
    expected = keys.SHARED_KEY_TYPES | rqcompat.queue_key_types([rt.items_queue, rt.deliveries_queue])
    return [
        f"{key} {garbage.wrong_type(held, expected[key])}: read as empty; replaced where newswatch writes it"
        for key, held in garbage.wrong_types(rt.redis, expected).items()
    ]


def _schedulers(rt: Runtime, feeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scheduler processes alive now, each with the number of feeds it polled last."""
    polled = Counter(f["polled_by"] for f in feeds if f["polled_by"])
    live = SchedulerRegistry(rt.redis).live(rt.clock(), 3 * rt.settings.polling.lease)  # garbage: []
    return [
        {"id": s.id, "host": s.host, "feeds": polled.get(s.id, 0), "in_flight": s.in_flight,
         "concurrency": s.concurrency, "last_beat": utc_iso(s.last_beat)}
        for s in live
    ]  # fmt: skip


def _revisions(rt: Runtime) -> dict[str, Any]:
    """The scheduler and worker processes alive, each with the config revision it runs (see
    worker.reload), and which revisions run: more than one is worth a note."""
    running = liveness.processes(rt.redis, rt.clock(), reload.PROCESS_STALE)
    shown = ("role", "id", "host", "pid", "revision", "last_beat")
    return {
        "processes": [{key: getattr(p, key) for key in shown} for p in running],
        "revisions": sorted({p.revision for p in running}),
    }


FAILED_SHOWN = 20  # failed deliveries `status` lists; the queue's "failed" counts them all


def _iso(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment else None


def _printable_or_none(text: str | None) -> str | None:
    return printable(text) if text is not None else None


def status(config: Config, as_json: bool) -> int:
    data = status_data(connect(config))
    if as_json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.text import Text

    console = Console()
    rows = []
    for f in data["feeds"]:
        problem = Text(f["error"] or f["warning"] or "")
        problem = _told(f, problem)
        if f["disabled"]:
            problem = Text.assemble(("disabled: ", "red"), problem)
        rows.append([
            Text(f["name"]), Text(f["last_success"] or "never"), Text(f["next_poll"] or "-"),
            _late(f["late"]), Text(str(f["error_count"])), Text(_items_seen(f)),
            problem or Text("ok", style="green"),
        ])  # fmt: skip
    columns = ("feed", "last success", "next poll", "late", "errors", "items seen", "problem")
    print_table(console, "Feeds", columns, rows, fold={"problem"})
    if any(f["too_old"] for f in data["feeds"]):
        max_age = config.settings.polling.max_age
        age = format_duration(max_age) if max_age else "off"
        note = f"too old: published before polling.max_age ({age}); recorded, never alerted"
        console.print(Text(note), soft_wrap=True)
    queue_rows = [
        [Text(str(q[key])) for key in ("name", "queued", "started", "failed")] for q in data["queues"]
    ]
    print_table(console, "Queues", ("queue", "queued", "started", "failed"), queue_rows)
    _print_schedulers(console, data["schedulers"])
    _print_processes(console, data["processes"], data["revisions"])
    failed = sum(q["failed"] for q in data["queues"] if q["name"] == keys.DELIVERIES_QUEUE)
    _print_failed(console, data["failed_deliveries"], failed)
    for problem in data["redis_problems"]:
        console.print(Text(f"garbage in Redis: {problem}", style="red"), soft_wrap=True)
    return EXIT_OK


def _told(feed: dict[str, Any], problem: Any) -> Any:
    """The feed's problem, led by the episodes told on ops.channels."""
    from rich.text import Text

    if feed["failing_since"]:
        problem = Text.assemble((f"failing since {feed['failing_since']}: ", "red"), problem)
    if feed["silent_since"]:
        silent = f"silent: no new item since {feed['silent_since']} (expected every {feed['silent_after']})"
        problem = Text.assemble((silent, "yellow"), ("; " if problem else "", ""), problem)
    return problem


def _late(seconds: float | None) -> Any:
    from rich.text import Text

    if seconds is None:
        return Text("-")
    return Text(f"{seconds:.1f}s", style="yellow" if seconds > LATE.total_seconds() else "")


def _print_schedulers(console: Any, schedulers: list[dict[str, Any]]) -> None:
    from rich.text import Text

    if not schedulers:
        console.print(Text("Schedulers: none running", style="yellow"))
        return
    rows = [
        [Text(str(v)) for v in (s["id"], s["host"], s["feeds"], f"{s['in_flight']} of {s['concurrency']}",
                                s["last_beat"])]
        for s in schedulers
    ]  # fmt: skip
    print_table(console, "Schedulers", ("scheduler", "host", "feeds", "polls in flight", "last beat"), rows)


def _print_processes(console: Any, processes: list[dict[str, Any]], revisions: list[str]) -> None:
    from rich.text import Text

    if not processes:
        return
    rows = [[Text(p["role"]), Text(p["id"]), Text(str(p["pid"])), Text(p["revision"])] for p in processes]
    print_table(console, "Processes", ("process", "id", "pid", "config revision"), rows)
    if len(revisions) > 1:
        note = (
            f"processes run different config revisions ({', '.join(revisions)}): a reload is "
            "under way, or was refused by some (see their logs)"
        )
        console.print(Text(note, style="yellow"), soft_wrap=True)


def _print_failed(console: Any, failed: list[dict[str, Any]], total: int) -> None:
    from rich.text import Text

    if not failed:
        return
    rows = [
        [Text(d["failed_at"] or "-"), Text(d["alert"] or "?"), Text(d["channel"] or "?"),
         Text(d["title"] or ""), Text(d["reason"] or "no reason stored")]
        for d in failed
    ]  # fmt: skip
    title = (
        f"Failed deliveries ({len(failed)} newest of {total})" if total > len(failed) else "Failed deliveries"
    )
    print_table(
        console, title, ("failed at", "alert", "channel", "item", "reason"), rows, fold={"item", "reason"}
    )
    note = "newswatch replay-failed [--channel NAME] sends them again, with their original ids"
    console.print(Text(note), soft_wrap=True)


def _items_seen(feed: dict[str, Any]) -> str:
    return f"{feed['items_seen']} ({feed['too_old']} too old)" if feed["too_old"] else str(feed["items_seen"])


def sample_item() -> Item:
    """The Eulerpool DeepSeek story, as a sample for test-alert."""
    return Item(
        feed="newswatch-test",
        guid=None,
        link="https://eulerpool.com/news/deepseek-verschiebt-modellstart-nach-problemen-mit-huaweis-ki-chips",
        canonical_link=None,
        title="DeepSeek verschiebt Modellstart nach Problemen mit Huaweis KI-Chips",
        summary="DeepSeek hat die Einführung des KI-Modells R2 verschoben, da Trainingsläufe mit "
        "Huawei-Chips fehlschlugen. Das Unternehmen kehrt zu Nvidia zurück.",
        content="",
        categories=("Finanzen", "KI", "DeepSeek", "Huawei", "Nvidia"),
        published=datetime(2025, 8, 15, 13, 51, tzinfo=UTC),
        id="test-" + uuid.uuid4().hex[:12],
    )


def test_alert(config: Config, channel: str) -> int:
    if channel not in config.settings.channels and channel != "console":
        known = ", ".join(sorted(config.settings.channels)) or "none"
        print(f"newswatch: unknown channel {channel!r} (configured: {known})", file=sys.stderr)
        return EXIT_USAGE
    rt = Runtime(config, redis=None)  # type: ignore[arg-type]  # sending needs no Redis
    item = sample_item()
    match = AlertMatch("newswatch-test", ("DeepSeek",), (channel,))
    (delivery,) = deliveries_for(Classified(item, ("KI", "Halbleiter"), (match,)), rt.clock())
    started = time.monotonic()
    try:
        outcome = channels.send(rt, delivery)
    except DeliveryError as e:  # its text can quote the receiver (an SMTP reply): printable
        print(f"test-alert {channel}: FAILED after {time.monotonic() - started:.2f}s: {printable(str(e))}")
        return EXIT_FAILURE
    took = f"{outcome.seconds * 1000:.0f} ms"
    detail = printable(outcome.detail)
    print(f"test-alert {channel}: delivered ({detail}) in {took}, id {delivery.delivery_id}")
    return EXIT_OK


def replay_failed(config: Config, channel: str | None) -> int:
    if unknown_names("channel", [channel], channel_names(config)):
        return EXIT_USAGE
    rt = connect(config)
    queue = rt.deliveries_queue
    # A replay gets the configured tries again. Same job id = same delivery id = same
    # webhook-id / Message-ID, and the outbox still refuses to send what was once accepted.
    retries = [max(1, int(r.total_seconds())) for r in config.settings.delivery.retries]
    failed = [
        job
        for job in rqcompat.failed_jobs(queue)
        if not channel or (job.args and job.args[0].get("channel") == channel)
    ]
    for job in with_progress(failed, "replaying", len(failed)):
        rqcompat.requeue_failed(queue, job, retries)
    print(f"replayed {len(failed)} failed deliveries" + (f" to channel {channel}" if channel else ""))
    return EXIT_OK


def alerts(config: Config, since: timedelta, as_json: bool, alert: str | None, channel: str | None) -> int:
    """The alerts of the last `since`, each delivery with where it stands."""
    if unknown_names("alert", [alert], [a.name for a in config.settings.alerts]) or unknown_names(
        "channel", [channel], channel_names(config)
    ):
        return EXIT_USAGE
    data = history.recent_alerts(connect(config), since, alert, channel)
    if as_json:
        print(json.dumps({"alerts": data}, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not data:
        print(f"no alerts in the last {format_duration(since)}")
    for entry in data:
        print(f"{entry['time']}  {entry['alert']}  feed={entry['feed']}  {entry['title']}")
        for d in entry["deliveries"]:
            print(f"    {d['channel']}: {_delivery_words(d)}")
    return EXIT_OK


def _delivery_words(delivery: dict[str, Any]) -> str:
    state = delivery["state"]
    if state == "retrying":
        return f"retrying, next try {delivery['next_try'] or 'soon'}"
    if state == "waiting":
        return f"first try due {delivery['next_try'] or 'now'}"
    if state == "failed":
        return f"failed: {delivery['reason'] or 'no reason stored'} (newswatch replay-failed sends it again)"
    return str(state)


def health(config: Config) -> int:
    rt = connect(config)
    problems = []
    try:
        liveness.reachable(rt.redis)
    except Exception as e:  # any failure to reach Redis means unhealthy
        print(f"unhealthy: Redis unreachable ({e.__class__.__name__})")
        return EXIT_FAILURE
    if not liveness.alive(rt.redis, "scheduler"):
        problems.append("no scheduler heartbeat")
    if not liveness.live_workers(rt.redis):
        problems.append("no live worker")
    problems += liveness.blocking_garbage(rt.redis, [rt.items_queue, rt.deliveries_queue])
    if problems:
        print("unhealthy: " + "; ".join(problems))
        return EXIT_FAILURE
    print("healthy")
    return EXIT_OK


def dashboard(config: Config, bind: str, port: int) -> int:
    env = {**os.environ, "RQ_DASHBOARD_REDIS_URL": config.settings.redis.url}
    user, password = (
        os.environ.get("NEWSWATCH_DASHBOARD_USER"),
        os.environ.get("NEWSWATCH_DASHBOARD_PASSWORD"),
    )
    if user and password:
        env |= {"RQ_DASHBOARD_USERNAME": user, "RQ_DASHBOARD_PASSWORD": password}
    argv = [sys.executable, "-m", "rq_dashboard", "--bind", bind, "--port", str(port), "--json"]
    # The Redis URL travels in the environment, not argv, so `ps` does not show its password.
    return subprocess.call(argv, env=env)


def run(config: Config, workers: int, log_level: str, log_format: str) -> int:
    from worker.supervisor import Supervisor

    base = [sys.executable, "-m", "worker.cli"]
    flags = ["--config", config.path, "--log-level", log_level, "--log-format", log_format]
    # The children reload when the supervisor tells them (SIGHUP), only with a valid config.
    flags += ["--supervisor", str(os.getpid())]
    programs = {"scheduler": [*base, "scheduler", *flags]}
    for index in range(max(1, workers)):
        programs[f"worker-{index + 1}"] = [*base, "worker", *flags]
    return Supervisor(programs, config).run()


def reload_daemon(config: Config, wait: float = 30.0) -> int:
    """`newswatch reload`: the config was validated (as by check-config) before this runs; send
    SIGHUP to the newswatch processes on this host that run this config file (a `newswatch
    run`'s supervisor rather than its children), then wait until they say they run it."""
    rt = connect(config)
    wanted, host = os.path.realpath(config.path), socket.gethostname()
    running = liveness.processes(rt.redis, rt.clock(), reload.PROCESS_STALE)
    local = [p for p in running if p.host == host and os.path.realpath(p.config) == wanted]
    signalled = {}
    for pid in dict.fromkeys(p.supervisor or p.pid for p in local):
        try:
            os.kill(pid, signal.SIGHUP)
            signalled[pid] = [p.role for p in local if (p.supervisor or p.pid) == pid]
        except ProcessLookupError:
            continue  # gone since its last beat
        except PermissionError:
            print(f"newswatch: not allowed to signal pid {pid} (run reload as its user)", file=sys.stderr)
            return EXIT_FAILURE
    if not signalled:
        elsewhere = sorted({f"{p.host}:{p.config}" for p in running} - {f"{host}:{wanted}"})
        print(
            f"newswatch: no running newswatch daemon on this host with {config.path} "
            "(none has beaten in Redis lately)" + (f"; others: {', '.join(elsewhere)}" if elsewhere else ""),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    for pid, roles in signalled.items():
        what = "newswatch run" if any(p.supervisor == pid for p in local) else roles[0]
        print(f"sent SIGHUP to {what} (pid {pid}: {', '.join(sorted(roles))})")
    return _await_revision(rt, [p for p in local if (p.supervisor or p.pid) in signalled], wait)


def _await_revision(rt: Runtime, targets: list[liveness.ProcessInfo], wait: float) -> int:
    """Until each signalled process reports this config's revision (or `wait` seconds)."""
    revision = reload.revision(rt.settings)
    deadline = time.monotonic() + wait
    while True:
        now = {p.id: p for p in liveness.processes(rt.redis, rt.clock(), reload.PROCESS_STALE)}
        # A process that died after the signal has no record any more: it runs nothing new.
        behind = [now.get(p.id, p) for p in targets if p.id not in now or now[p.id].revision != revision]
        if not behind:
            print(f"running revision {revision} in {len(targets)} process(es)")
            return EXIT_OK
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    listed = ", ".join(f"{p.role} {p.id} on {p.revision}" for p in behind)
    print(
        f"newswatch: not every process runs revision {revision} yet ({listed}); "
        "their log says why (a different environment, or a reload still waiting for a job)",
        file=sys.stderr,
    )
    return EXIT_FAILURE

"""The `newswatch` command (SPEC §2). Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType, ModuleType
from typing import Any

import redis

from worker import __version__
from worker.config import (
    CONFIG_SNAPSHOT_ENV,
    READ_ONLY_COMMANDS,
    Config,
    address_warnings,
    load_config,
    query_warnings,
)
from worker.core.errors import ConfigError, DeliveryError
from worker.core.text import printable
from worker.core.units import parse_duration
from worker.logs import configure_logging

log = logging.getLogger("newswatch")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DAEMONS = frozenset({"run", "scheduler", "worker"})  # they reload on SIGHUP (worker.reload)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # usage errors exit 2, as argparse does, with our wording
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"newswatch: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--config", help="config file (default: $NEWSWATCH_CONFIG or config/newswatch.yaml)")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    common.add_argument("--log-format", default="text", choices=["text", "json"])
    parser = _Parser(prog="newswatch", description="News monitoring daemon: feeds in, alerts out.")
    parser.add_argument("--version", action="version", version=f"newswatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", parents=[common], help="scheduler + workers as one supervised process")
    run.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    scheduler = sub.add_parser("scheduler", parents=[common], help="the polling scheduler alone")
    worker = sub.add_parser("worker", parents=[common], help="an RQ worker on the pipeline queues")
    for child in (scheduler, worker):  # set by `newswatch run` for its children (worker.reload)
        child.add_argument("--supervisor", type=int, metavar="PID", help=argparse.SUPPRESS)
    worker.add_argument("--burst", action="store_true", help="drain the queues, then exit")
    worker.add_argument("--queues", nargs="+", metavar="Q", help="queues to work on (default: all)")
    worker.add_argument("--name", help="worker name (default: generated)")
    worker.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port too")
    worker.add_argument("--fork", action="store_true", help="run each job in a forked process (isolation)")
    poll = sub.add_parser("poll", parents=[common], help="poll feeds once now, enqueue what is new")
    poll.add_argument("--feed", action="append", metavar="NAME", help="only this feed (repeatable)")
    status = sub.add_parser("status", parents=[common], help="feeds and queues at a glance")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("check-config", parents=[common], help="validate the configuration")
    sub.add_parser(
        "reload", parents=[common], help="validate the config, then have the running daemon load it"
    )
    test_alert = sub.add_parser("test-alert", parents=[common], help="send a sample alert through a channel")
    test_alert.add_argument("channel")
    dashboard = sub.add_parser("dashboard", parents=[common], help="rq-dashboard on the same Redis")
    dashboard.add_argument("--bind", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=9181)
    replay = sub.add_parser("replay-failed", parents=[common], help="send failed deliveries again")
    replay.add_argument("--channel", help="only deliveries to this channel")
    sub.add_parser("health", parents=[common], help="exit 0 when Redis, scheduler and workers are alive")
    recent = sub.add_parser("alerts", parents=[common], help="recent alerts and where each delivery stands")
    recent.add_argument("--since", type=_duration, default="1d", help="how far back (default 1d)")
    recent.add_argument("--json", action="store_true", help="machine-readable output")
    recent.add_argument("--alert", help="only this alert")
    recent.add_argument("--channel", help="only deliveries to this channel")
    _add_archive_commands(sub, common)
    discover = sub.add_parser(
        "discover", parents=[common], help="the feeds a page offers, or what it yields as html"
    )
    discover.add_argument("url")
    discover.add_argument("--json", action="store_true", help="machine-readable output")
    preview = sub.add_parser("preview", parents=[common], help="a source's items as the pipeline sees them")
    preview.add_argument("feed", nargs="?", help="a configured feed")
    preview.add_argument("--url", help="a source that is not configured")
    preview.add_argument(
        "--type", choices=["feed", "html", "json"], help="its type (default: from the answer)"
    )
    preview.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as e:  # argparse says which option, then exits 2
        raise argparse.ArgumentTypeError(str(e)) from e


def _add_archive_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """`try` and `explain` (worker.backtest): the archive, read."""
    try_ = sub.add_parser("try", parents=[common], help="what a query would have matched in the archive")
    try_.add_argument("query", help="an alert query, e.g. 'DeepSeek OR \"künstliche Intelligenz\"'")
    try_.add_argument("--since", default="3d", help="how far back (default 3d)")
    try_.add_argument("--feed", help="only items of this feed")
    try_.add_argument("--json", action="store_true", help="machine-readable output")
    explain = sub.add_parser("explain", parents=[common], help="why each alert fired for an item, or not")
    explain.add_argument("item_id", metavar="ITEM_ID", help="an item id, as in alerts and `try`")
    explain.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in DAEMONS:  # until its reloader listens, a SIGHUP must not end the process
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    configure_logging(args.log_level, args.log_format)
    try:
        # Commands that send nothing do not need the channels' secrets (Config.unavailable).
        config = load_config(args.config, read_only=args.command in READ_ONLY_COMMANDS)
    except ConfigError as e:
        last_valid = _last_valid_config(args, e)
        if last_valid is None:
            print(f"newswatch: invalid configuration ({len(e.problems)} problem(s)):", file=sys.stderr)
            for problem in e.problems:
                print(f"  {problem}", file=sys.stderr)
            return EXIT_USAGE
        config = last_valid
    if args.command == "check-config":
        return _check_config(config)
    if args.command == "preview" and (args.feed is None) == (args.url is None):
        print("newswatch: preview takes a configured feed or --url URL (one of them)", file=sys.stderr)
        return EXIT_USAGE
    from worker.monitoring import init_sentry

    init_sentry(config)
    _stop_on_sigterm()
    try:
        return _dispatch(args, config)
    except KeyboardInterrupt:
        return EXIT_OK
    except redis.ConnectionError as e:
        print(_unreachable(config, e), file=sys.stderr)
        return EXIT_FAILURE


def _last_valid_config(args: argparse.Namespace, error: ConfigError) -> Config | None:
    """A child of `newswatch run` (re)started while the file is invalid: the last config the
    supervisor found valid, with the file's path (a reload reads the file again), or None."""
    snapshot = os.environ.get(CONFIG_SNAPSHOT_ENV)
    if args.command not in DAEMONS or not getattr(args, "supervisor", None) or not snapshot:
        return None
    try:
        config = load_config(snapshot)
    except ConfigError:
        return None
    log = logging.getLogger("newswatch")
    log.error(
        "the config file is invalid (%d problem(s)); running the last config `newswatch run` "
        "found valid until the file is fixed",
        len(error.problems),
    )
    for problem in error.problems:
        log.error("  %s", problem)
    return dataclasses.replace(config, path=args.config or config.path)


def _unreachable(config: Config, error: redis.ConnectionError) -> str:
    """Which Redis could not be reached, and where its URL came from: a newcomer's second shell
    must learn whether it looked at make run's Redis or at the config's default."""
    url = config.redact(config.settings.redis.url)
    where = {"redis.url": f"redis.url in {config.path}", "REDIS_URL": "REDIS_URL"}.get(
        config.redis_source, config.redis_source
    )
    message = f"newswatch: cannot reach Redis at {url} ({_redis_reason(error)}); the URL is from {where}"
    if config.redis_source not in ("redis.url", "REDIS_URL"):
        return message + " (is `make run` still running? It removes that file when it stops)"
    return message + "; set REDIS_URL or redis.url to a running Redis (`make run` starts one)"


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    from worker import commands

    handlers = {
        "run": lambda: commands.run(config, args.workers, args.log_level, args.log_format),
        "scheduler": lambda: commands.scheduler(config, args.supervisor),
        "worker": lambda: commands.worker(
            config, args.burst, args.queues, args.name, args.metrics_port, args.fork, args.supervisor
        ),
        "reload": lambda: commands.reload_daemon(config),
        "poll": lambda: commands.poll(config, args.feed),
        "status": lambda: commands.status(config, args.json),
        "test-alert": lambda: commands.test_alert(config, args.channel),
        "dashboard": lambda: commands.dashboard(config, args.bind, args.port),
        "replay-failed": lambda: commands.replay_failed(config, args.channel),
        "health": lambda: commands.health(config),
        "alerts": lambda: commands.alerts(config, args.since, args.json, args.alert, args.channel),
        "try": lambda: int(_backtest().try_query(config, args.query, args.since, args.feed, args.json)),
        "explain": lambda: int(_backtest().explain_item(config, args.item_id, args.json)),
        "discover": lambda: int(_preview().discover(config, args.url, args.json)),
        "preview": lambda: int(_preview().preview(config, args.feed, args.url, args.type, args.json)),
    }
    try:
        return handlers[args.command]()
    except DeliveryError as e:
        print(f"newswatch: {printable(str(e))}", file=sys.stderr)
        return EXIT_FAILURE


def _preview() -> ModuleType:
    from worker import preview  # the source parsers: a worker has no use for them

    return preview


def _backtest() -> ModuleType:
    from worker import backtest  # rich and the archive only for the commands that read it

    return backtest


def _check_config(config: Config) -> int:
    s = config.settings
    print(
        f"{config.path}: OK — {len(s.feeds)} feeds, {len(s.alerts)} alerts, "
        f"{len(s.topics)} topics, {len(s.channels)} channels"
    )
    for warning in address_warnings(s):  # valid, but it will not work as written: exit stays 0
        print(f"newswatch: warning: {warning}", file=sys.stderr)
    for warning in query_warnings(s):  # valid, but likely not what was meant: exit stays 0
        print(f"newswatch: warning: {warning}", file=sys.stderr)
    return EXIT_OK


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _redis_reason(error: redis.ConnectionError) -> str:
    text = str(error)
    return "connection refused" if "refused" in text.lower() else error.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())

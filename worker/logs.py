"""Logging set-up for entry points: readable text by default, JSON lines on request.

Alerts of the log channel go to standard output (they are the product); everything else
goes to standard error. Every line is made printable on its way out (see `printable_lines`):
log messages carry text from outside (response headers, server replies, exception texts), and
no feed server may steer the terminal that shows them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from types import TracebackType

from worker.core.text import printable

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def printable_lines(text: str) -> str:
    """Each line made printable; the line breaks themselves stay, since tracebacks (RQ logs
    them inside its messages) and multi-line library messages need them."""
    if "\n" not in text:
        return printable(text)
    return "\n".join(printable(line) for line in text.split("\n"))


class TextFormatter(logging.Formatter):
    """logging.Formatter that cleans the message (format string and arguments alike, after
    they are put together) and any traceback or stack before they are written."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable_lines(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: ExcInfo) -> str:
        return printable_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return printable_lines(super().formatStack(stack_info))


class JsonFormatter(TextFormatter):
    """One JSON object per line; JSON escapes C0 controls itself, not C1 or bidi controls."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": printable_lines(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def rq_level(level: str) -> str:
    """The level for RQ's own loggers: WARNING (or quieter, if ours is) unless ours is DEBUG.
    At INFO RQ says what it does every few seconds (pubsub subscriptions, registry cleaning
    each maintenance interval, three lines per job): most of `make run`'s output, and nothing
    an operator acts on. Its warnings and errors stay."""
    if level.upper() == "DEBUG":
        return "DEBUG"
    return level.upper() if logging.getLevelName(level.upper()) > logging.WARNING else "WARNING"


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # watchfiles: "1 change detected" on every save; worker.reload says what it did about it.
    for noisy in ("httpx", "httpcore", "apscheduler.executors", "apscheduler.scheduler", "watchfiles"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # RQ sets rq.worker, rq.job and rq.scheduler again from Worker.work(logging_level=...):
    # `newswatch worker` passes rq_level() there too.
    logging.getLogger("rq").setLevel(rq_level(level))

    alerts = logging.getLogger("newswatch.alerts")
    alerts.handlers.clear()
    alert_handler = logging.StreamHandler(sys.stdout)
    alert_handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(message)s"))
    alerts.addHandler(alert_handler)
    alerts.setLevel(logging.INFO)
    alerts.propagate = False

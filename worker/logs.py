"""Logging set-up for entry points: readable text by default, JSON lines on request.

Alerts of the log channel go to standard output (they are the product); everything else
goes to standard error.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler.executors", "apscheduler.scheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    alerts = logging.getLogger("newswatch.alerts")
    alerts.handlers.clear()
    alert_handler = logging.StreamHandler(sys.stdout)
    alert_handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(message)s"))
    alerts.addHandler(alert_handler)
    alerts.setLevel(logging.INFO)
    alerts.propagate = False

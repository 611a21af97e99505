"""What a process loads on its way to its first job: a worker (two per `newswatch run`, more
when scaled) has no use for the source parsers, which cost about a third of its start-up CPU,
nor, without a DSN, for Sentry's SDK (~40 ms)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, write_config

# Top-level packages and our own modules only the polling side (or a Sentry DSN) needs.
NOT_FOR_A_WORKER = ("feedparser", "lxml", "jmespath", "protego", "trafilatura", "sentry_sdk")
NOT_OURS_FOR_A_WORKER = ("worker.polling", "worker.preview", "worker.articles", "worker.sources")


def loaded_by(args: list[str]) -> set[str]:
    """The modules a real `newswatch` process imports, from Python's own import log."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "worker.cli", *args],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    return {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


def test_a_worker_process_runs_without_the_polling_side_or_sentry(tmp_path: Path, redis_url: str) -> None:
    config = write_config(
        tmp_path / "newswatch.yaml",
        f"""
redis: {{url: "{redis_url}"}}
feeds:
  - {{name: f, url: "http://127.0.0.1:9/feed"}}
alerts:
  - {{name: a, query: DeepSeek, channels: [hook]}}
channels:
  hook: {{type: webhook, url: "http://127.0.0.1:9/hook"}}
""",
    )
    loaded = loaded_by(["worker", "--burst", "--config", config])
    assert "worker.jobs" in loaded and "rq.worker" in loaded  # the log is read right
    unwanted = {
        m for m in loaded if m.split(".")[0] in NOT_FOR_A_WORKER or m.startswith(NOT_OURS_FOR_A_WORKER)
    }
    assert unwanted == set()

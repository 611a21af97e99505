"""`make run`: a Redis, then `newswatch run` in the foreground; Ctrl-C stops both, in order.

0. The config is checked first (`newswatch check-config`): its problems come before any Redis.
1. Redis: REDIS_URL if set (it must answer); else this checkout's own redis-server on
   127.0.0.1:6390 (scripts/ensure_redis.py: started here, or one an earlier run left reused).
2. Its URL is written to var/redis.url while the daemon runs, so `newswatch status`, `health`
   or `alerts` in a second shell of this checkout find the same Redis (worker/config.py reads
   it when neither REDIS_URL nor the config names another). A URL with a password is not
   written down: that shell needs REDIS_URL too.
3. `newswatch run` with $NEWSWATCH_CONFIG (default config/newswatch.yaml). Ctrl-C reaches it
   and this script alike (one process group): the daemon stops its workers, which still need
   Redis; only then is the Redis this run started or reused stopped and the URL file removed.
   SIGTERM and SIGHUP are passed on to the daemon the same way.

One `make run` per checkout at a time (var/make-run.lock): a second would poll every feed twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensure_redis import LocalRedis, RedisProblem, answers, fail, lock_checkout

from worker.config import LOCAL_REDIS_RECORD


def main() -> int:
    lock = lock_checkout()
    if lock is None:
        fail(
            "`make run` is already running in this checkout. See what it does from here: "
            ".venv/bin/newswatch status (or health, alerts); stop it with Ctrl-C in its terminal"
        )
    config = os.environ.get("NEWSWATCH_CONFIG") or "config/newswatch.yaml"
    checked = subprocess.run([sys.executable, "-m", "worker.cli", "check-config", "--config", config])
    if checked.returncode:  # its problems are printed: no Redis is started for a config that cannot run
        return checked.returncode
    url = os.environ.get("REDIS_URL")
    if url and not answers(url):
        fail("REDIS_URL is set but that Redis does not answer; start it or unset REDIS_URL")
    local = None if url else LocalRedis()
    record = Path(LOCAL_REDIS_RECORD)
    try:
        if local is not None:
            url = local.ensure()
        assert url is not None
        _say_where(url, record)
        return _run_daemon(url, config)
    except RedisProblem as e:
        fail(str(e))
        raise AssertionError from e  # unreachable
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        record.unlink(missing_ok=True)
        if local is not None and local.pid is not None:
            local.stop()
            print(f"newswatch: stopped the redis-server on {local.url}", file=sys.stderr)


def _say_where(url: str, record: Path) -> None:
    """Write the URL down for other shells (unless it holds a password), and say how to look."""
    parts = urlsplit(url)
    if parts.password:
        print(f"newswatch: Redis at {url.replace(f':{parts.password}@', ':***@')}", file=sys.stderr)
        print(
            "newswatch: to see what it does, run in another shell with the same REDIS_URL (it holds a "
            "password, so it is not written to var/): .venv/bin/newswatch status",
            file=sys.stderr,
        )
        return
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(url + "\n", encoding="utf-8")
    print(f"newswatch: Redis at {url}", file=sys.stderr)
    print(
        "newswatch: to see what it does, run in another shell of this checkout: "
        ".venv/bin/newswatch status   (also: health, alerts; Ctrl-C here stops it all)",
        file=sys.stderr,
    )


def _run_daemon(url: str, config: str) -> int:
    daemon = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "run", "--config", config], env={**os.environ, "REDIS_URL": url}
    )

    def pass_on(signum: int, frame: FrameType | None) -> None:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)  # `newswatch run` stops cleanly on SIGTERM

    # Ctrl-C reaches the daemon directly (one process group); here it only waits for the daemon
    # to stop its workers. (Ignored only now: a child would inherit an ignored SIGINT.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGHUP, pass_on)
    return daemon.wait()


if __name__ == "__main__":
    sys.exit(main())

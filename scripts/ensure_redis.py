"""Make sure a Redis is reachable and print its URL (used by `make run` and `make demo`).

REDIS_URL set: it must answer, else exit 1 saying so. Otherwise start (or reuse) a local
redis-server with AOF persistence and its data under ./var/redis. No redis-server binary:
install it with apt-get where we can, else exit 1 explaining how to get one.

    python scripts/ensure_redis.py            print a reachable URL
    python scripts/ensure_redis.py --binary   only make sure redis-server is installed
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

LOCAL_PORT = int(os.environ.get("NEWSWATCH_LOCAL_REDIS_PORT", "6390"))
DATA_DIR = Path("var/redis")


def fail(message: str) -> None:
    print(f"newswatch: {message}", file=sys.stderr)
    sys.exit(1)


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("newswatch: redis-server not found; installing it with apt-get ...", file=sys.stderr)
        quiet = {"stdout": subprocess.DEVNULL, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
        subprocess.run(["apt-get", "update", "-qq"], check=False, **quiet)  # type: ignore[call-overload]
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=False, **quiet)  # type: ignore[call-overload]
        found = shutil.which("redis-server")
        if found:
            return found
    fail(
        "no Redis available. Set REDIS_URL to a running Redis, or install redis-server "
        "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), "
        "or run `docker compose up redis`."
    )
    raise AssertionError  # unreachable


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def start_local() -> str:
    url = f"redis://127.0.0.1:{LOCAL_PORT}/0"
    if answers(url):
        return url
    binary = redis_server_binary()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    data = DATA_DIR.resolve()
    subprocess.run(
        [
            binary, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(LOCAL_PORT),
            "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
            "--pidfile", str(data / "redis.pid"), "--logfile", str(data / "redis.log"),
        ],
        check=True,
    )  # fmt: skip
    for _ in range(50):
        if answers(url):
            print(f"newswatch: started redis-server on {url} (data in {DATA_DIR})", file=sys.stderr)
            return url
        time.sleep(0.1)
    fail(f"redis-server did not start; see {DATA_DIR / 'redis.log'}")
    raise AssertionError


def main() -> None:
    if "--binary" in sys.argv:
        redis_server_binary()
        return
    url = os.environ.get("REDIS_URL")
    if url:
        if not answers(url):
            fail("REDIS_URL is set but that Redis does not answer; start it or unset REDIS_URL")
        print(url)
        return
    print(start_local())


if __name__ == "__main__":
    main()

"""The Redis of `make run`: find, start, reuse and stop the checkout's own redis-server.

`make run` (scripts/run.py) uses REDIS_URL when it is set; otherwise this checkout's own
redis-server on 127.0.0.1:$NEWSWATCH_LOCAL_REDIS_PORT (6390), with its data (AOF) under
./var/redis. A redis-server is "ours" when its pid file is ours (var/redis/redis.pid): that
setting survives `make clean` deleting the directory, unlike `dir`.

It is started so that it can always be stopped: no RDB save points (AOF alone keeps the data),
so SIGTERM never meets a "cannot save, will not exit"; and it is stopped with SHUTDOWN NOSAVE,
which also stops one an older `make run` started with save points and whose directory is gone.

    python scripts/ensure_redis.py --binary   only make sure redis-server is installed
    python scripts/ensure_redis.py --stop     stop this checkout's redis-server, if one runs
                                              (`make clean`, before it deletes var/)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import redis

LOCAL_PORT = int(os.environ.get("NEWSWATCH_LOCAL_REDIS_PORT", "6390"))
DATA_DIR = Path("var/redis")
# Held (flock) by a running `make run`; the kernel lets go of it however that process ends.
RUN_LOCK = Path("var/make-run.lock")


class RedisProblem(Exception):
    """Why `make run` cannot have its Redis, and what to do about it."""


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


class LocalRedis:
    """This checkout's redis-server: `ensure()` gives its URL (starting it, or reusing one a
    previous run left), `stop()` stops it, whichever started it."""

    def __init__(self, port: int = LOCAL_PORT, data_dir: Path = DATA_DIR) -> None:
        self.port = port
        self.data = data_dir.resolve()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def pidfile(self) -> Path:
        return self.data / "redis.pid"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)

    def probe(self) -> str:
        """'free', 'ours' (this checkout's, left running), 'redis' (another Redis) or 'busy'
        (something else listens there)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                pass
        except OSError:
            return "free"
        try:
            client = self.client()
            client.ping()
            pidfile = client.config_get("pidfile").get("pidfile")
        except redis.AuthenticationError:
            return "redis"  # one with a password: not ours
        except redis.ResponseError:
            return "redis"  # CONFIG refused or renamed: not ours either
        except redis.RedisError:
            return "busy"
        return "ours" if pidfile == str(self.pidfile) else "redis"

    def ensure(self) -> str:
        """The URL of this checkout's redis-server, running; RedisProblem says why not."""
        state = self.probe()
        if state == "ours" and self._healthy():
            self.pid = int(self.client().info("server")["process_id"])
            print(
                f"newswatch: reusing the redis-server an earlier `make run` left on {self.url} "
                f"(pid {self.pid}, data in {DATA_DIR}); it stops when this run ends",
                file=sys.stderr,
            )
            return self.url
        if state == "ours":  # left running, its directory deleted (`make clean`): start afresh
            gone = f"newswatch: stopping the redis-server left on {self.url}: its data directory is gone"
            print(gone, file=sys.stderr)
            self.pid = int(self.client().info("server")["process_id"])
            self.stop()
        elif state == "redis":
            raise RedisProblem(
                f"port {self.port} is taken by another Redis (not the one `make run` starts for this "
                f"checkout). Use that one: REDIS_URL={self.url} make run; or let make run start its own "
                f"on another port: NEWSWATCH_LOCAL_REDIS_PORT={self.port + 1} make run"
            )
        elif state == "busy":
            raise RedisProblem(
                f"port {self.port} on 127.0.0.1 is in use by a program that is not Redis. Free it, or "
                f"choose another port: NEWSWATCH_LOCAL_REDIS_PORT={self.port + 1} make run"
            )
        return self.start()

    def _healthy(self) -> bool:
        """Its data directory is still there and it can write its AOF."""
        try:
            client = self.client()
            directory = client.config_get("dir").get("dir")
            aof = client.info("persistence").get("aof_last_write_status")
        except redis.RedisError:
            return False
        return directory == str(self.data) and self.data.is_dir() and aof == "ok"

    def start(self) -> str:
        self.data.mkdir(parents=True, exist_ok=True)
        log = self.data / "redis.log"
        # Its own session: Ctrl-C in the terminal reaches `newswatch run`, which needs Redis to
        # stop its workers cleanly; this Redis is stopped after it, by stop().
        self.process = subprocess.Popen(
            [
                redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
                "--dir", str(self.data), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--pidfile", str(self.pidfile), "--logfile", str(log),
            ],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.pid = self.process.pid
        for _ in range(100):
            if answers(self.url):
                print(
                    f"newswatch: started redis-server on {self.url} (data in {DATA_DIR}); "
                    "it stops when this run ends",
                    file=sys.stderr,
                )
                return self.url
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RedisProblem(f"redis-server did not start: {_last_line(log)} (see {DATA_DIR / 'redis.log'})")

    def stop(self) -> None:
        """SHUTDOWN NOSAVE (the AOF is flushed all the same; an RDB is neither wanted nor, with
        its directory gone, possible), then wait for the process; SIGKILL if it will not go."""
        try:
            self.client().shutdown(nosave=True)
        except redis.RedisError:
            if self.pid is not None:
                _signal(self.pid, signal.SIGTERM)
        if not self._gone(timeout=15) and self.pid is not None:
            _signal(self.pid, signal.SIGKILL)
            self._gone(timeout=5)

    def _gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None:
                if self.process.poll() is not None:
                    return True
            elif self.pid is None or not _alive(self.pid):
                return True
            time.sleep(0.05)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] != "Z"  # a zombie has stopped


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log written"
    return lines[-1].split(" # ")[-1].strip() if lines else "no log written"


def lock_checkout() -> IO[str] | None:
    """The checkout's run lock, held until the returned file is closed (or the process ends);
    None when another `make run` holds it."""
    RUN_LOCK.parent.mkdir(parents=True, exist_ok=True)
    handle = RUN_LOCK.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def stop_ours() -> None:
    """`make clean`: stop this checkout's redis-server before its directory goes."""
    if not RUN_LOCK.parent.exists():
        return
    lock = lock_checkout()
    if lock is None:
        fail("`make run` is running in this checkout; stop it (Ctrl-C) before `make clean`")
    local = LocalRedis()
    if local.probe() == "ours":
        local.pid = int(local.client().info("server")["process_id"])
        local.stop()
        print(f"newswatch: stopped the redis-server on {local.url}", file=sys.stderr)


def main() -> None:
    if "--binary" in sys.argv:
        redis_server_binary()
    elif "--stop" in sys.argv:
        stop_ours()
    else:
        fail("usage: ensure_redis.py --binary | --stop (`make run` uses scripts/run.py)")


if __name__ == "__main__":
    main()

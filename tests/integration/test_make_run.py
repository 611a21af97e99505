"""`make run` as a newcomer meets it (issue 17.1, 17.2): a real `make run` in a copy of this
checkout, `newswatch status` and `health` from a second shell, then Ctrl-C, and not one process
left behind: not the daemon's, not the Redis it started, not one an earlier run left.

The copy shares this checkout's .venv (made by `make test` before pytest runs) and has its own
var/; its Redis listens on a free port (NEWSWATCH_LOCAL_REDIS_PORT), its feed on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import EULERPOOL_RSS, ROOT, LocalServer, Response, alive, free_port, wait_for

CONFIG = """
redis: {{url: "${{REDIS_URL:-redis://localhost:6379/0}}"}}
metrics: {{port: 0}}
polling: {{interval: 1m, max_age: off, allow_private_addresses: true}}
feeds:
  - {{name: eulerpool, url: "{feed}"}}
alerts:
  - {{name: deepseek, query: DeepSeek}}
"""


def installed_stamp() -> Path:
    """The Makefile's mark that .venv holds this pyproject.toml's install (see STAMP there)."""
    cksum = subprocess.run(["cksum"], input=(ROOT / "pyproject.toml").read_bytes(), capture_output=True)
    return ROOT / ".venv" / f".installed-{cksum.stdout.split()[0].decode()}"


@pytest.fixture
def checkout(tmp_path: Path, http_server: LocalServer) -> Iterator[Path]:
    """A copy of this checkout whose config/newswatch.yaml polls a local copy of the sample feed."""
    if not installed_stamp().exists():
        pytest.skip("needs the .venv `make test` installs (run the suite with `make test`)")
    copy = tmp_path / "checkout"
    copy.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, copy / name)  # copy2: older than the stamp, so make installs nothing
    for name in ("scripts", "worker", "config"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / ".venv").symlink_to(ROOT / ".venv")
    http_server.routes["/eulerpool.rss"] = Response(EULERPOOL_RSS.read_bytes())
    feed = http_server.url("/eulerpool.rss")
    (copy / "config" / "newswatch.yaml").write_text(CONFIG.format(feed=feed), encoding="utf-8")
    yield copy


def shell_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: no REDIS_URL, no NEWSWATCH_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NEWSWATCH_CONFIG")}
    return {**env, **extra}


def newswatch(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The second shell, in the same checkout."""
    return subprocess.run(
        [str(checkout / ".venv" / "bin" / "newswatch"), *args],
        capture_output=True, text=True, cwd=checkout, env=shell_env(), timeout=60,
    )  # fmt: skip


def start_make_run(checkout: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    # Its own process group, as a terminal's foreground job is: Ctrl-C is SIGINT to the group.
    return subprocess.Popen(
        ["make", "run"], cwd=checkout, env=shell_env(NEWSWATCH_LOCAL_REDIS_PORT=str(port)),
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def ctrl_c(make: subprocess.Popen[bytes]) -> None:
    os.killpg(make.pid, signal.SIGINT)
    make.wait(timeout=90)


def kill_all(pids: set[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_make_run_is_seen_from_a_second_shell_and_ctrl_c_leaves_nothing(checkout: Path) -> None:
    port = free_port()
    log = checkout / "make-run.log"
    make = start_make_run(checkout, port, log)
    seen: set[int] = set()
    try:
        # The second shell: same checkout, no REDIS_URL, the default config (which says
        # ${REDIS_URL:-redis://localhost:6379/0}): it must find make run's Redis, not 6379.
        def polled() -> dict | None:  # type: ignore[type-arg]
            seen.update(descendants(make.pid))
            result = newswatch(checkout, "status", "--json")
            feed = json.loads(result.stdout)["feeds"][0] if result.returncode == 0 else {}
            # Polled, and its items processed by a worker (which counts them after the poll).
            return feed if feed.get("last_success") and feed.get("items_seen") else None

        feed = wait_for(polled, timeout=90, interval=0.5)
        assert feed["items_seen"] == 7
        health = wait_for(lambda: (h := newswatch(checkout, "health")).returncode == 0 and h, timeout=60)
        assert health.stdout.strip() == "healthy"
        alerts = wait_for(lambda: "console: sent" in (a := newswatch(checkout, "alerts").stdout) and a)
        assert "deepseek  feed=eulerpool  DeepSeek verschiebt Modellstart" in alerts
        assert (checkout / "var" / "redis.url").read_text().strip() == f"redis://127.0.0.1:{port}/0"
        seen.update(descendants(make.pid))
        redis_pid = int((checkout / "var" / "redis" / "redis.pid").read_text())
        assert redis_pid in seen and len(seen) >= 6  # run.py, redis, newswatch run, scheduler, 2 workers
        ctrl_c(make)
    finally:
        leftover = {pid for pid in seen | descendants(make.pid) if alive(pid)}
        kill_all(leftover)
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    output = log.read_text()
    assert not leftover, (leftover, output)
    assert not answers(port)
    assert not (checkout / "var" / "redis.url").exists()
    assert "to see what it does, run in another shell of this checkout: .venv/bin/newswatch status" in output
    assert f"stopped the redis-server on redis://127.0.0.1:{port}/0" in output
    assert "Traceback" not in output
    # A record left by a make run that could not clean up (kill -9): the second shell says
    # which Redis it tried and where that URL came from.
    (checkout / "var" / "redis.url").write_text(f"redis://127.0.0.1:{port}/0\n")
    stale = newswatch(checkout, "status")
    assert stale.returncode == 1
    assert (
        f"cannot reach Redis at redis://127.0.0.1:{port}/0 (connection refused); the URL is from "
        "var/redis.url, written by `make run` (is `make run` still running?"
    ) in stale.stderr


def start_old_style_redis(checkout: Path, port: int) -> int:
    """A redis-server as `make run` used to leave one: daemonized, RDB save points on, its pid
    file under var/redis. Returns its pid."""
    data = checkout / "var" / "redis"
    data.mkdir(parents=True)
    subprocess.run(
        [
            shutil.which("redis-server") or "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1",
            "--port", str(port), "--dir", str(data.resolve()), "--appendonly", "yes",
            "--pidfile", str(data.resolve() / "redis.pid"), "--logfile", str(data.resolve() / "redis.log"),
        ],
        check=True,
    )  # fmt: skip
    wait_for(lambda: answers(port), timeout=10)
    client = redis.Redis(port=port)
    client.set("written", "1")  # something to save, so SIGTERM alone would be refused
    return int(client.info("server")["process_id"])


def test_a_left_over_redis_whose_directory_is_gone_is_stopped_and_replaced(checkout: Path) -> None:
    port = free_port()
    old = start_old_style_redis(checkout, port)
    make: subprocess.Popen[bytes] | None = None
    try:
        shutil.rmtree(checkout / "var")  # what `make clean` did under it
        make = start_make_run(checkout, port, checkout / "make-run.log")
        wait_for(lambda: newswatch(checkout, "health").returncode == 0, timeout=90, interval=0.5)
        assert not alive(old)
        new = int((checkout / "var" / "redis" / "redis.pid").read_text())
        ctrl_c(make)
        assert not alive(new) and not answers(port)
    finally:
        kill_all({old})
        if make is not None and make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
    output = (checkout / "make-run.log").read_text()
    assert (
        f"stopping the redis-server left on redis://127.0.0.1:{port}/0: its data directory is gone" in output
    )


def test_make_clean_stops_the_checkout_s_redis_first(checkout: Path) -> None:
    port = free_port()
    old = start_old_style_redis(checkout, port)
    try:
        result = subprocess.run(
            ["make", "clean"], cwd=checkout, env=shell_env(NEWSWATCH_LOCAL_REDIS_PORT=str(port)),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"stopped the redis-server on redis://127.0.0.1:{port}/0" in result.stderr
        wait_for(lambda: not alive(old), timeout=10)
        assert not (checkout / "var").exists()
    finally:
        kill_all({old})


def test_a_port_taken_by_something_else_is_named_with_what_to_do(
    checkout: Path, redis_server: object
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            ["make", "run"], cwd=checkout, env=shell_env(NEWSWATCH_LOCAL_REDIS_PORT=str(port)),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use by a program that is not Redis" in result.stderr
    assert f"NEWSWATCH_LOCAL_REDIS_PORT={port + 1} make run" in result.stderr

    other = redis_server.port  # type: ignore[attr-defined]  # the test session's: not this checkout's
    result = subprocess.run(
        ["make", "run"], cwd=checkout, env=shell_env(NEWSWATCH_LOCAL_REDIS_PORT=str(other)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"port {other} is taken by another Redis" in result.stderr
    assert f"REDIS_URL=redis://127.0.0.1:{other}/0 make run" in result.stderr
    assert answers(other)  # left alone

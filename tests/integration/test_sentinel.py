"""`redis+sentinel://` URLs (SPEC §9): newswatch finds the master through real Redis Sentinels and
follows a failover. A master, a replica and a Sentinel run on 127.0.0.1 for the test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, wait_for
from worker.runtime import redis_client


def start(binary: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL)


@pytest.fixture
def sentinel_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing (make test installs it)"
    master, replica, sentinel = free_port(), free_port(), free_port()
    common = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    processes = [
        start(binary, "--port", str(master), "--dir", str(tmp_path), *common),
        start(
            binary,
            "--port",
            str(replica),
            "--dir",
            str(tmp_path),
            "--replicaof",
            "127.0.0.1",
            str(master),
            *common,
        ),
    ]
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor news 127.0.0.1 {master} 1\n"
        "sentinel down-after-milliseconds news 1000\nsentinel failover-timeout news 5000\n",
        encoding="utf-8",
    )
    try:
        wait_for(lambda: _answers(master) and _answers(replica), timeout=20)
        wait_for(lambda: redis.Redis(port=replica).info("replication").get("master_link_status") == "up", 20)
        processes.append(start(binary, str(conf), "--sentinel"))
        wait_for(lambda: _answers(sentinel), timeout=20)
        # The Sentinel has found the replica (it needs that to fail over).
        wait_for(lambda: redis.Redis(port=sentinel).sentinel_slaves("news"), timeout=30, interval=0.5)
        yield f"redis+sentinel://127.0.0.1:{sentinel}/news/0"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def test_a_sentinel_url_finds_the_master_and_follows_a_failover(sentinel_url: str) -> None:
    client = redis_client(sentinel_url)
    client.set("before", "1")
    sentinel = redis.Redis(port=int(sentinel_url.split(":")[2].split("/")[0]))
    first = sentinel.sentinel_get_master_addr_by_name("news")

    def fail_over() -> bool:
        try:  # the Sentinel refuses until it has heard from the replica for a while
            return bool(sentinel.execute_command("SENTINEL", "FAILOVER", "news"))
        except redis.ResponseError:
            return False

    wait_for(fail_over, timeout=30, interval=0.5)
    wait_for(lambda: sentinel.sentinel_get_master_addr_by_name("news") != first, timeout=30, interval=0.5)

    def writes() -> bool:
        try:
            return bool(client.set("after", "2"))
        except redis.RedisError:
            return False

    wait_for(writes, timeout=30, interval=0.5)  # the same client, now on the new master
    assert client.get("before") == b"1" and client.get("after") == b"2"
    assert client.info("replication")["role"] == "master"

"""Heartbeats in Redis, and what else `newswatch health` needs to know: which newswatch processes
are alive, and whether garbage in Redis keeps them from working."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from rq import Queue

from worker.adapters import garbage, keys, rqcompat


def beat(connection: redis.Redis, role: str, ttl: timedelta) -> None:
    """This process of `role` is alive for the next `ttl`."""
    connection.set(keys.heartbeat(role), socket.gethostname(), ex=ttl)


def alive(connection: redis.Redis, role: str) -> bool:
    """A heartbeat of `role` that has not lapsed. One without a TTL (garbage: every beat sets
    one) would never lapse, so it counts for nothing."""
    return int(connection.pttl(keys.heartbeat(role))) > 0


@dataclass(frozen=True)
class ProcessInfo:
    """One scheduler or worker process, as `status` and `newswatch reload` see it."""

    id: str
    role: str  # "scheduler" or "worker"
    host: str
    pid: int
    supervisor: int | None  # the pid of its `newswatch run`, if it has one
    config: str  # the config file's absolute path
    revision: str  # of the config it runs (worker.reload.revision)
    last_beat: str  # ISO UTC


def announce(connection: redis.Redis, info: ProcessInfo) -> None:
    """This process is alive and runs `info.revision` (beaten every few seconds)."""
    try:
        _announce(connection, info)
    except redis.ResponseError as e:
        effect = "the processes fill it again as they beat"
        if not garbage.is_wrong_type(e) or not garbage.replace_wrong_type(
            connection, "processes", keys.PROCESSES, "hash", effect
        ):
            raise
        _announce(connection, info)


def _announce(connection: redis.Redis, info: ProcessInfo) -> None:
    with connection.pipeline(transaction=False) as pipe:
        pipe.hset(keys.PROCESSES, info.id, json.dumps(asdict(info)))
        pipe.expire(keys.PROCESSES, keys.PROCESS_RECORD_TTL)
        pipe.execute()


def leave(connection: redis.Redis, process_id: str) -> None:
    connection.hdel(keys.PROCESSES, process_id)


def processes(connection: redis.Redis, now: datetime, stale: timedelta) -> list[ProcessInfo]:
    """The processes that beat within `stale`, by role and id (the silent ones are pruned). A
    record of another type reads as empty (`status` only looks; the next beat replaces it)."""
    try:
        raw: dict[bytes, bytes] = connection.hgetall(keys.PROCESSES)  # type: ignore[assignment]
    except redis.ResponseError as e:
        if not garbage.is_wrong_type(e):
            raise
        return []
    live, dead = [], []
    for member, data in raw.items():
        info = _process(data)
        if info is None or now - datetime.fromisoformat(info.last_beat) > stale:
            dead.append(member)
        else:
            live.append(info)
    if dead:
        connection.hdel(keys.PROCESSES, *dead)
    return sorted(live, key=lambda p: (p.role, p.id))


def _process(raw: bytes) -> ProcessInfo | None:
    try:
        data: Any = json.loads(raw)
        info = ProcessInfo(**data)
        moment = datetime.fromisoformat(info.last_beat)
    except (ValueError, TypeError, RecursionError):
        return None  # garbage: pruned
    return info if moment.tzinfo is not None else None


def beat_time(now: datetime) -> str:
    return now.astimezone(UTC).isoformat()


def live_workers(connection: redis.Redis) -> int:
    return rqcompat.live_workers(connection)


def reachable(connection: redis.Redis) -> None:
    """Raises (a redis error) when Redis does not answer."""
    connection.ping()


# Keys that stop all work while they hold another type, and what stops: processes replace
# them as they meet them, but until then nothing is polled, or no job is taken.
_SCHEDULING = {keys.SCHEDULE: "zset", keys.LEASES: "hash"}


def blocking_garbage(connection: redis.Redis, queues: Sequence[Queue]) -> list[str]:
    """What garbage in Redis keeps newswatch from working right now, in words."""
    problems = [
        f"{key} {garbage.wrong_type(held, _SCHEDULING[key])}: no feed is polled until a scheduler replaces it"
        for key, held in garbage.wrong_types(connection, _SCHEDULING).items()
    ]
    expected = rqcompat.queue_key_types(queues)
    problems += [
        f"{key} {garbage.wrong_type(held, expected[key])}: workers take no jobs until one replaces it"
        for key, held in garbage.wrong_types(connection, expected).items()
    ]
    return problems

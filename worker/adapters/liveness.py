"""Heartbeats in Redis, and what else `newswatch health` needs to know: which newswatch processes
are alive, and whether garbage in Redis keeps them from working."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import timedelta

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

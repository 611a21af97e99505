"""Heartbeats in Redis: which newswatch processes are alive (`newswatch health`)."""

from __future__ import annotations

import socket
from datetime import timedelta

import redis

from worker.adapters import keys, rqcompat


def beat(connection: redis.Redis, role: str, ttl: timedelta) -> None:
    """This process of `role` is alive for the next `ttl`."""
    connection.set(keys.heartbeat(role), socket.gethostname(), ex=ttl)


def alive(connection: redis.Redis, role: str) -> bool:
    return bool(connection.exists(keys.heartbeat(role)))


def live_workers(connection: redis.Redis) -> int:
    return rqcompat.live_workers(connection)


def reachable(connection: redis.Redis) -> None:
    """Raises (a redis error) when Redis does not answer."""
    connection.ping()

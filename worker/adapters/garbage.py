"""Garbage in Redis: a key of the wrong type, or a value newswatch cannot read (written by hand,
by another program, by another version). newswatch never dies of it, and never stops a feed or
a delivery for good over it: whatever finds garbage says so here (one warning naming the key,
and a count for the metrics), reads it as absent and, where that is safe, replaces it.

"Safe" means: the key holds nothing newswatch could use anyway. A key of the wrong type holds
none of our data (a list where a feed's state hash belongs has no state in it); an unreadable
field or value is replaced by what a fresh start would write.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from prometheus_client import Counter

from worker.core.text import printable

log = logging.getLogger("newswatch.redis")

GARBAGE = Counter(
    "newswatch_redis_garbage_total",
    "Keys or values in Redis that newswatch could not read (a wrong type, garbage), by what they "
    "were; each was read as absent and, where safe, replaced",
    ["key"],
)

# Redis's names for its types, in words.
_WORDS = {"string": "a string", "list": "a list", "set": "a set", "zset": "a sorted set",
          "hash": "a hash", "stream": "a stream"}  # fmt: skip

# KEYS[1]; ARGV[1] the type it should hold. Deletes it if it holds another; returns that type.
_REPLACE_WRONG_TYPE = """
local found = redis.call('TYPE', KEYS[1])['ok']
if found == 'none' or found == ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return found
"""


def words(redis_type: str) -> str:
    return _WORDS.get(redis_type, repr(redis_type))


def is_wrong_type(error: BaseException) -> bool:
    """Redis refused a command because a key holds another type (also from inside a script)."""
    return isinstance(error, redis.ResponseError) and "WRONGTYPE" in str(error)


def shown(value: bytes | str, limit: int = 40) -> str:
    """A garbage value as a log line or `status` may quote it: quoted, printable and short."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return "'" + printable(text if len(text) <= limit else text[:limit] + "…") + "'"


def found(kind: str, key: str, what: str, action: str) -> None:
    """Say that `key` held garbage (`what`) and what was done about it; count it for the metrics.
    `kind` is the key's template (a bounded label), `key` the key itself."""
    GARBAGE.labels(kind).inc()
    log.warning("garbage in Redis: %s %s; %s", printable(key), what, action)


def wrong_type(found_type: str, expected: str) -> str:
    return f"holds {words(found_type)}, not {words(expected)}"


def replace_wrong_type(connection: redis.Redis, kind: str, key: str, expected: str, effect: str = "") -> bool:
    """Delete `key` if it holds another type than `expected` (checked and deleted atomically, so
    a key another process has just rewritten properly stays). True if it did."""
    held = connection.eval(_REPLACE_WRONG_TYPE, 1, key, expected)
    if not held:
        return False
    found(kind, key, wrong_type(_text(held), expected), "replaced" + (f": {effect}" if effect else ""))
    return True


# Scripts that meet garbage inside a transaction cannot log: they return MARK and what they met,
# '\0'-separated: kind, key, action, then 'type', the type expected, the type found; or
# 'field', its name, what it held. `report` says it after the transaction ran.
MARK = "newswatch-garbage"


def report(results: Iterable[Any]) -> None:
    """Say what garbage the scripts among these replies met (see MARK)."""
    for result in results:
        if isinstance(result, bytes) and result.startswith(MARK.encode()):
            kind, key, action, what, first, second = result.decode("utf-8", "replace").split("\x00", 6)[1:]
            if what == "type":
                found(kind, key, wrong_type(second, first), action)
            else:
                found(kind, key, f"field {first} held {shown(second)}", action)


def wrong_types(connection: redis.Redis, expected: Mapping[str, str]) -> dict[str, str]:
    """Of these keys (key -> the type it should hold), those that hold another: key -> its type.
    Read only, one round trip: for `status` and `health`."""
    if not expected:
        return {}
    with connection.pipeline(transaction=False) as pipe:
        for key in expected:
            pipe.type(key)
        types = [_text(t) for t in pipe.execute()]
    return {
        key: held
        for (key, want), held in zip(expected.items(), types, strict=True)
        if held not in ("none", want)
    }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""Bytes Redis holds per item for the archive and for the story index, measured on a real
redis-server (started here on 127.0.0.1, thrown away after) with the bench corpus's items.

    .venv/bin/python bench/archive_size.py [--items 5000]

Items go through the real commit (SeenStore.commit_new: seen-keys, story index, archive) in
batches of 50, as workers commit them; `used_memory` is read before and after, and again after
dropping each part, so each part's share is its own difference.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import feed_items, rss
from bench.run import parsed_items
from worker.adapters import keys
from worker.adapters.store import Candidate
from worker.config import Config, Settings, build_rules
from worker.core.rules import classify_many
from worker.core.stories import fingerprint
from worker.runtime import Runtime


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/ensure_redis.py --binary)")
    port = 6391
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process, client
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])  # type: ignore[index]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=5000)
    args = parser.parse_args()
    feeds = max(1, args.items // 50)
    items = [
        item
        for n in range(feeds)
        for item in parsed_items(
            f"f{n}", rss(feed_items(n, 50), f"Feed {n}"), f"http://127.0.0.1/feed/{n}.xml"
        )
    ]
    with tempfile.TemporaryDirectory() as directory:
        process, client = start_redis(directory)
        try:
            settings = Settings.model_validate({"redis": {"url": "redis://127.0.0.1:6391/0"}})
            rt = Runtime(Config(settings, build_rules(settings), (), "bench"), client)
            rules = rt.config.rules
            before = used(client)
            now = datetime.now(UTC)
            for start in range(0, len(items), 50):
                batch = classify_many(items[start : start + 50], rules)
                candidates = [
                    Candidate(c.item, (), c.topics, (), None, fingerprint(c.item, 0.8)) for c in batch
                ]
                rt.seen_store.commit_new("bench", candidates, rt.outbox, now)
            total = used(client) - before
            parts = {}
            for name, pattern in (
                ("story index", f"{keys.PREFIX}:s[bmrt]:*"),
                ("seen-keys", f"{keys.PREFIX}:s:*"),
            ):
                ahead = used(client)
                for key in client.scan_iter(pattern, count=1000):
                    client.delete(key)
                parts[name] = ahead - used(client)
            ahead = used(client)
            archived = client.hlen(keys.ARCHIVE_ITEMS)
            client.delete(keys.ARCHIVE_ITEMS, keys.ARCHIVE_INDEX)
            parts["archive"] = ahead - used(client)
        finally:
            process.terminate()
            process.wait()
    count = len(items)
    print(f"{count} items committed, {archived} archived; Redis bytes per item:")
    print(f"  all: {total / count:,.0f}")
    for name, size in parts.items():
        print(f"  {name}: {size / count:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

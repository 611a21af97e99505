"""How well items are grouped into stories, on the labelled corpus tests/fixtures/stories.json,
and what it costs: MinHash + LSH (what newswatch uses) against SimHash on the same word sets.

    .venv/bin/python bench/stories_quality.py [--threshold 0.8] [--json]

Precision and recall are over pairs of items: a pair is "the same story" in the labels or in the
grouping. The grouping is made as the pipeline makes it, one item after the other in corpus
order, each joining the closest earlier report it finds. The cost is CPU per item for the
features and the bytes Redis keeps per item (the compared word sets, the band keys).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.core import stories
from worker.core.models import Item

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stories.json"


def corpus_items(path: Path = CORPUS) -> list[tuple[str, Item]]:
    """(label, item) in corpus order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    now = datetime(2025, 8, 15, tzinfo=UTC)
    return [
        (
            entry["story"],
            Item(entry["feed"], None, None, None, entry["title"], entry["summary"], "", (), now, f"i{n:03d}"),
        )
        for n, entry in enumerate(data["items"])
    ]


def pair_scores(labels: Sequence[str], groups: Sequence[str]) -> dict[str, float]:
    truth = {(a, b) for a, b in itertools.combinations(range(len(labels)), 2) if labels[a] == labels[b]}
    found = {(a, b) for a, b in itertools.combinations(range(len(groups)), 2) if groups[a] == groups[b]}
    right = len(truth & found)
    precision = right / len(found) if found else 1.0
    recall = right / len(truth) if truth else 1.0
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "pairs": len(truth),
        "pairs_found": len(found),
        "stories": len(set(labels)),
        "stories_found": len(set(groups)),
    }


def minhash_groups(items: Sequence[Item], threshold: float) -> tuple[list[str], float, float]:
    """Stories as the pipeline decides them; CPU µs per item for features; bytes kept per item."""
    started = time.process_time()
    prints = [stories.fingerprint(item, threshold) for item in items]
    cost = (time.process_time() - started) / len(items) * 1e6
    members: dict[str, list[str]] = {}
    known: dict[str, stories.Report] = {}
    groups = []
    for item, fp in zip(items, prints, strict=True):
        (story,) = stories.assign([(item.id, fp)], members, known, threshold)
        groups.append(story)
        if fp is not None:
            known[item.id] = stories.Report(item.id, story, fp)
            for band in fp.bands:
                members.setdefault(band, []).append(item.id)
    kept = [fp for fp in prints if fp]
    # Per item: its packed word sets and story id, and per band key one id (keys counted as text).
    size = sum(len(fp.pack()) + 16 + sum(len(b) + 8 + 17 for b in fp.bands) for fp in kept) / len(kept)
    return groups, cost, size


def _simhash(words: Sequence[str]) -> int:
    counts = [0] * 64
    for word in set(words):
        value = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        for bit in range(64):
            counts[bit] += 1 if value >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if counts[bit] > 0)


def simhash_groups(items: Sequence[Item], max_distance: int) -> tuple[list[str], float]:
    """SimHash of the same two word sets; two items are alike when either pair of hashes differs
    in at most max_distance bits (compared with every earlier item: its best case)."""
    started = time.process_time()
    hashes = []
    for item in items:
        title = stories.headline_words(item.title)
        lead = stories.opening_words(item.summary)
        hashes.append(
            (
                _simhash(title) if len(set(title)) >= stories.MIN_TITLE_WORDS else None,
                _simhash(lead) if len(set(lead)) >= stories.MIN_LEAD_WORDS else None,
            )
        )
    cost = (time.process_time() - started) / len(items) * 1e6
    groups: list[str] = []
    for n, (title, lead) in enumerate(hashes):
        story = items[n].id
        best = max_distance + 1
        for m in range(n):
            other_title, other_lead = hashes[m]
            distances = [
                bin(a ^ b).count("1") for a, b in ((title, other_title), (lead, other_lead)) if a and b
            ]
            if distances and min(distances) < best:
                best, story = min(distances), groups[m]
        groups.append(story)
    return groups, cost


def evaluate(threshold: float) -> dict[str, object]:
    labelled = corpus_items()
    labels = [label for label, _ in labelled]
    items = [item for _, item in labelled]
    groups, cost, size = minhash_groups(items, threshold)
    shape = stories.lsh_shape(threshold)
    result: dict[str, object] = {
        "items": len(items),
        "minhash_lsh": {
            **pair_scores(labels, groups),
            "threshold": threshold,
            "bands": shape.bands,
            "rows": shape.rows,
            "cpu_us_per_item": round(cost, 1),
            "redis_bytes_per_item_in_window": round(size),
        },
        "simhash": {},
    }
    simhash: dict[str, object] = {}
    for distance in (3, 6, 10, 14):
        simhash_found, simhash_cost = simhash_groups(items, distance)
        simhash[f"max_distance_{distance}"] = {
            **pair_scores(labels, simhash_found),
            "cpu_us_per_item": round(simhash_cost, 1),
        }
    result["simhash"] = simhash
    result["misses"] = _misses(labelled, groups)
    return result


def _misses(labelled: Sequence[tuple[str, Item]], groups: Sequence[str]) -> list[str]:
    """Items grouped apart from their story's first item, or together with another story."""
    first: dict[str, str] = {}
    notes = []
    for (label, item), group in zip(labelled, groups, strict=True):
        first.setdefault(label, group)
        if group != first[label]:
            notes.append(f"split: {label}: {item.title}")
    owner: dict[str, str] = {}
    for (label, item), group in zip(labelled, groups, strict=True):
        if owner.setdefault(group, label) != label:
            notes.append(f"merged: {label} into {owner[group]}: {item.title}")
    return notes


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = evaluate(args.threshold)
    out(json.dumps(result, ensure_ascii=False, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

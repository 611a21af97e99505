"""`make bench`'s match stage alone, repeated: items/s through classify_many at 10 / 1k / 10k terms.

    .venv/bin/python bench/match_stage.py [--repeats 5]

Same items (the bench corpus, 40 feeds x 50 items, parsed as the scheduler parses them) and the
same rules as bench/run.py's match_stage; no Redis, no servers. To compare two versions of the
code on a noisy machine, run it from each checkout in turn, several times, and compare medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.corpus import feed_items, rss
from bench.run import match_stage, parsed_items


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5, help="runs of 3 rounds each per term count")
    args = parser.parse_args()
    sample = [
        item
        for n in range(40)
        for item in parsed_items(
            f"f{n}", rss(feed_items(n, 50), f"Feed {n}"), f"http://127.0.0.1/feed/{n}.xml"
        )
    ]
    rates: dict[int, list[float]] = {terms: [] for terms in (10, 1000, 10000)}
    for _ in range(args.repeats):
        for terms, runs in rates.items():
            runs.append(match_stage(terms, sample))
    for terms, runs in rates.items():
        print(
            f"{terms:>6} terms: median {statistics.median(runs):8,.0f} items/s  runs {[round(r) for r in runs]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

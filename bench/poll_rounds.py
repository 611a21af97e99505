"""Unchanged polls in steady state: `newswatch poll`'s own code (worker.commands.poll: the same
threads, Redis and HTTP as the scheduler), several rounds in one process. The daemon polls from
a long-running process, so the first round (interpreter warm-up, first connections) is reported
apart from the rest.

    python -m bench.poll_rounds CONFIG [ROUNDS]   prints one "polled ..." line per round
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

from worker import commands
from worker.config import load_config


def main() -> int:
    config = load_config(Path(sys.argv[1]))
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    logging.basicConfig(level=logging.ERROR)
    for _ in range(rounds):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            commands.poll(config, None)
        print(out.getvalue().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

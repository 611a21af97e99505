"""Unchanged polls in steady state: `newswatch poll`'s own code (worker.commands.poll_feeds: the
same threads, Redis and HTTP as the scheduler), several rounds in one process with one runtime,
as the scheduler keeps it. The daemon polls from a long-running process, so the first round
(interpreter warm-up, first connections, each feed's state read from Redis) is reported apart
from the rest.

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
from worker.runtime import connect


def main() -> int:
    config = load_config(Path(sys.argv[1]))
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    logging.basicConfig(level=logging.ERROR)
    rt = connect(config).warm()
    for _ in range(rounds):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            commands.poll_feeds(rt, config.settings.feeds)
        print(out.getvalue().splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

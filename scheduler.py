"""The polling scheduler process: `python scheduler.py` is `newswatch scheduler`.

The scheduler itself is worker.scheduling; this entry point only hands over to the CLI.
"""

from __future__ import annotations

import sys

from worker.scheduling import build_scheduler, run

__all__ = ["build_scheduler", "main", "run"]


def main() -> int:
    from worker.cli import main as cli_main

    return cli_main(["scheduler", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

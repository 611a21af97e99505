"""What a process loads before its first job: a worker (two per `newswatch run`, more when
scaled) has no use for the source parsers, which cost about a third of its start-up CPU."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_a_worker_process_starts_without_the_polling_side() -> None:
    probe = (
        "import sys, worker.cli, worker.commands, worker.jobs\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('feedparser', 'lxml', 'jmespath', 'protego', 'trafilatura') or m.startswith('worker.polling'))\n"
        "print(' '.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == ""

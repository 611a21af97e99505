"""`newswatch run`: scheduler and workers as child processes of one foreground process.

Children run in their own process group, so Ctrl-C reaches only the supervisor, which then
stops each child once with SIGTERM (RQ: finish the current job) and waits. A child that exits
on its own is restarted with a growing delay.

A live reload (SIGHUP, the config file changing) is validated here first: a bad config is
refused with check-config's messages and the children never hear of it; a valid one is passed
on as SIGHUP to each child, which loads it again and applies it (worker.reload).

A child that crashes while the file holds a refused config would fail to start again and
again: every valid config the supervisor accepts is kept as a private copy (ConfigSnapshot),
and a child that finds the file invalid when it starts runs that copy instead (worker.cli).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from worker.config import CONFIG_SNAPSHOT_ENV, Config, load_config
from worker.core.errors import ConfigError
from worker.reload import Reloader

log = logging.getLogger("newswatch.supervisor")
STOP_GRACE_SECONDS = 60.0
MAX_RESTART_DELAY = 30.0


@dataclass
class _Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restart_delay: float = 1.0
    restart_at: float = 0.0
    started_at: float = field(default=0.0)


class ConfigSnapshot:
    """The last valid config file's text, in a private directory (it may hold secrets written
    into the file): copied, validated as a copy, then renamed into place, so the copy is valid
    whatever the file turned into meanwhile."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.directory = Path(tempfile.mkdtemp(prefix="newswatch-config-"))
        self.path = self.directory / Path(source).name

    def take(self) -> bool:
        """A copy of the file as it is now, if it is valid; else the last copy stays."""
        candidate = self.path.with_name(self.path.name + ".new")
        try:
            candidate.write_bytes(Path(self.source).read_bytes())
            load_config(str(candidate))
        except (OSError, ConfigError) as e:
            candidate.unlink(missing_ok=True)
            log.warning("kept the last valid config for restarts (the file did not validate: %s)", e)
            return False
        os.replace(candidate, self.path)
        return True

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class Supervisor:
    def __init__(self, programs: dict[str, list[str]], config: Config | None = None) -> None:
        self.children = [_Child(name, argv) for name, argv in programs.items()]
        self.reloader = Reloader(config, self._forward_reload) if config is not None else None
        self.snapshot: ConfigSnapshot | None = None
        if config is not None:
            try:
                self.snapshot = ConfigSnapshot(config.path)
            except OSError as e:  # no writable temp directory: children then need the file
                log.warning("no copy of the config for restarts (%s): a child restarted while "
                            "the file is invalid will not start", e)  # fmt: skip

    def _forward_reload(self, config: Config) -> None:
        if self.snapshot is not None:
            self.snapshot.take()
        for child in list(self.children):
            process = child.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGHUP)
        log.info("reload: the config is valid; passed on to %d processes", len(self.children))

    def _start(self, child: _Child) -> None:
        # The child starts with SIGHUP ignored (kept across exec) until its reloader listens:
        # a reload passed on while it starts up must not end it (its reloader then reads the
        # file once more). Runs in the main thread, as signal handlers must be set there.
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        env = dict(os.environ)
        if self.snapshot is not None and self.snapshot.path.exists():
            env[CONFIG_SNAPSHOT_ENV] = str(self.snapshot.path)
        try:
            child.process = subprocess.Popen(child.argv, start_new_session=True, env=env)
        finally:
            signal.signal(signal.SIGHUP, previous)
        child.started_at = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.process.pid)

    def run(self) -> int:
        if self.snapshot is not None:
            self.snapshot.take()
        for child in self.children:
            self._start(child)
        if self.reloader is not None:
            self.reloader.start()
        try:
            while True:
                self._tend()
                time.sleep(0.5)
        except KeyboardInterrupt:
            log.info("stopping %d processes", len(self.children))
        finally:
            if self.reloader is not None:
                self.reloader.stop()
            self._stop_all()
            if self.snapshot is not None:
                self.snapshot.remove()
        return 0

    def _tend(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.process is None:
                if now >= child.restart_at:
                    self._start(child)
                continue
            code = child.process.poll()
            if code is None:
                if now - child.started_at > 60:
                    child.restart_delay = 1.0  # it ran a while: the next crash starts the backoff anew
                continue
            log.warning("%s exited with code %s; restarting in %.0fs", child.name, code, child.restart_delay)
            child.process = None
            child.restart_at = now + child.restart_delay
            child.restart_delay = min(child.restart_delay * 2, MAX_RESTART_DELAY)

    def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        try:
            self._wait(running, time.monotonic() + STOP_GRACE_SECONDS)
        except KeyboardInterrupt:  # a second Ctrl-C (or SIGTERM) while stopping: stop at once
            log.warning("asked again: killing the processes still running")
        # However this ends, no child outlives the supervisor (they run in their own sessions,
        # where no Ctrl-C reaches them), and no further signal may cut this short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in running:
            if process.poll() is None:
                process.kill()
            process.wait()

    def _wait(self, running: list[subprocess.Popen[bytes]], deadline: float) -> None:
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()

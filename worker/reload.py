"""Live reload of a running process (SPEC §11): on SIGHUP and when the config file changes, load
the file again with the loader `check-config` uses, refuse it with check-config's messages if
it is invalid (the running config stays), else hand it to the process's `apply`.

The scheduler, each worker and the `newswatch run` supervisor have a Reloader each; what
`apply` does is theirs (worker.scheduling, worker.commands, worker.supervisor). Children of a
supervisor watch no file: the supervisor does, and signals them only with a valid config.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import redis
import watchfiles

from worker import monitoring
from worker.adapters import liveness
from worker.config import Config, Settings, load_config
from worker.core.errors import ConfigError
from worker.core.revision import ConfigShape, config_revision, diff

if TYPE_CHECKING:
    from worker.runtime import Runtime

log = logging.getLogger("newswatch.reload")
# Read once at the start of a process (a connection, a listening port, the Sentry client): a
# change to these is logged and applies at the next restart.
RESTART_ONLY = ("redis", "sentry", "metrics")
# Changes of the file within this many milliseconds make one reload (an editor's save is often
# a truncate and a write, or a write and a rename).
DEBOUNCE_MS = 400
# Each process says which revision it runs this often (and at once after a reload); `status`
# and `newswatch reload` count a process as gone when it has been silent for PROCESS_STALE.
BEAT_EVERY = timedelta(seconds=5)
PROCESS_STALE = timedelta(seconds=30)


def revision(settings: Settings) -> str:
    return config_revision(settings.model_dump(mode="json"))


def shape(settings: Settings) -> ConfigShape:
    sections = settings.model_dump(mode="json", exclude={"feeds"})
    return ConfigShape({feed.name: feed.fingerprint for feed in settings.feeds}, sections)


class BetweenJobs:
    """A worker runs one job at a time; a reload waits for the job in progress to end, and the
    next job waits for the reload: a job runs on one config from its start to its end."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._job = False
        self._reloads = 0

    @contextlib.contextmanager
    def job(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._reloads)
            self._job = True
        try:
            yield
        finally:
            with self._cond:
                self._job = False
                self._cond.notify_all()

    @contextlib.contextmanager
    def reload(self) -> Iterator[None]:
        with self._cond:
            self._reloads += 1
            self._cond.wait_for(lambda: not self._job)
        try:
            yield
        finally:
            with self._cond:
                self._reloads -= 1
                self._cond.notify_all()


class ProcessRecord:
    """This process's entry in Redis (adapters.liveness.ProcessInfo): its role, pid, config
    file and the revision it runs."""

    def __init__(self, rt: Runtime, role: str, process_id: str, supervisor: int | None) -> None:
        self.rt, self.role, self.id, self.supervisor = rt, role, process_id, supervisor

    def beat(self, running: str) -> None:
        info = liveness.ProcessInfo(
            self.id, self.role, socket.gethostname(), os.getpid(), self.supervisor,
            os.path.abspath(self.rt.config.path), running, liveness.beat_time(self.rt.clock()),
        )  # fmt: skip
        try:
            liveness.announce(self.rt.redis, info)
        except redis.RedisError as e:  # Redis away: the next beat tries again
            log.debug("process record not written: %s", e.__class__.__name__)

    def leave(self) -> None:
        with contextlib.suppress(redis.RedisError):
            liveness.leave(self.rt.redis, self.id)


class Reloader:
    """Reloads `config.path` when asked (SIGHUP, `request`) or, with `watch_file`, when the file
    changes; `apply` gets each valid config whose revision differs from the running one."""

    def __init__(
        self,
        config: Config,
        apply: Callable[[Config], None],
        watch_file: bool = True,
        between: BetweenJobs | None = None,
        record: ProcessRecord | None = None,
        who: str = "supervisor",
    ) -> None:
        self.config = config
        self.who = who  # which process, for the log lines
        self.revision = revision(config.settings)
        self._apply = apply
        self._watch_file = watch_file
        self._between = between
        self._record = record
        self._requested = threading.Event()
        self._stopping = threading.Event()
        self._beat_now = threading.Event()
        self._catching_up = False  # the reload `start` asks for: quiet when nothing changed

    def start(self) -> Reloader:
        """Called in the main thread (signal handlers are installed there). The file is read once
        more at once: until now the process ignored SIGHUP, so a reload asked for while it
        started (its config already loaded) would otherwise be missed until the next one."""
        signal.signal(signal.SIGHUP, self._on_sighup)
        self._catching_up = True
        self._requested.set()
        threading.Thread(target=self._reload_when_asked, name="reload", daemon=True).start()
        if self._watch_file:
            threading.Thread(target=self._watch, name="config-watch", daemon=True).start()
        if self._record is not None:
            threading.Thread(target=self._beat, name="process-beat", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._requested.set()
        self._beat_now.set()
        if self._record is not None:
            self._record.leave()

    def _beat(self) -> None:
        assert self._record is not None
        while not self._stopping.is_set():
            self._record.beat(self.revision)
            self._beat_now.wait(BEAT_EVERY.total_seconds())
            self._beat_now.clear()

    def request(self) -> None:
        self._requested.set()

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        log.info("%s: SIGHUP, reloading %s", self.who, self.config.path)
        self._requested.set()

    def _reload_when_asked(self) -> None:
        while not self._stopping.is_set():
            self._requested.wait()
            self._requested.clear()
            if self._stopping.is_set():
                return
            try:
                self.reload()
            except Exception:  # a bug: reported; the running config stays, the next change tries again
                log.exception("reload failed unexpectedly; still running revision %s", self.revision)

    def _watch(self) -> None:
        target = Path(self.config.path).absolute()
        wanted = target.name
        try:
            for _ in watchfiles.watch(
                target.parent,
                watch_filter=lambda change, path: Path(path).name == wanted,
                stop_event=self._stopping,
                debounce=DEBOUNCE_MS,
                recursive=False,
                raise_interrupt=False,
            ):
                self._requested.set()
        except Exception as e:  # no inotify, a directory gone: SIGHUP still works
            log.warning("not watching %s for changes (%s); SIGHUP still reloads it", target, e)

    def reload(self) -> bool:
        """One try: True if a new config was applied."""
        try:
            new = load_config(self.config.path)
        except ConfigError as e:
            refused(e, self.revision, self.who)
            return False
        new_revision = revision(new.settings)
        catching_up, self._catching_up = self._catching_up, False
        if new_revision == self.revision:
            if not catching_up:
                log.info("reload: config unchanged (revision %s, %s)", self.revision, self.who)
            return False
        change = diff(shape(self.config.settings), shape(new.settings))
        monitoring.scrub_with(new)  # before anything runs on it
        with self._between.reload() if self._between else contextlib.nullcontext():
            self._apply(new)
        old_revision, self.config, self.revision = self.revision, new, new_revision
        self._beat_now.set()
        later = [s for s in change.sections if s in RESTART_ONLY]
        log.info(
            "reload: %s (revision %s -> %s, %s)", change.describe(), old_revision, new_revision, self.who
        )
        if later:
            log.warning("reload: %s changed; that applies at the next restart", ", ".join(later))
        return True


def refused(error: ConfigError, running: str, who: str) -> None:
    """check-config's messages, as log lines."""
    log.error(
        "reload refused: invalid configuration (%d problem(s)); %s still runs revision %s",
        len(error.problems),
        who,
        running,
    )
    for problem in error.problems:
        log.error("  %s", problem)

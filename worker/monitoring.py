"""Sentry: errors of every process, tagged with feed / alert / channel, secrets scrubbed before
anything leaves, and expected feed errors rate-limited so a dead feed does not storm."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from worker import __version__
from worker.adapters import rqcompat
from worker.config import Config
from worker.core.poll import FeedState, StateUpdate, layout_change_began
from worker.metrics import error_kind

log = logging.getLogger(__name__)

FEED_ERROR_EVERY = 3600.0  # seconds: at most one event per feed and kind of error
_last_feed_report: dict[tuple[str, str], float] = {}
_lock = threading.Lock()
# Every config this process has run (a live reload adds one): Sentry's events are scrubbed of
# the secrets of each, since a send begun before a reload may still carry an old channel's URL.
_configs: list[Config] = []


def _scrub(config: Config, event: Any) -> Any:
    """The event with every secret redacted in every string of it, keys included. Walked as the
    tree it is (Sentry has made it JSON-like by now), not as JSON text: in JSON a secret holding
    `\\` or `"` is spelled differently and slips past a search."""
    if isinstance(event, str):
        return _scrub_text(config, event)
    if isinstance(event, dict):
        return {_scrub(config, key): _scrub(config, value) for key, value in event.items()}
    if isinstance(event, list | tuple):
        return [_scrub(config, value) for value in event]
    return event


def _scrub_text(config: Config, text: str) -> str:
    text = config.redact(text)
    if text.endswith("..."):  # Sentry cut a long value here, perhaps in the middle of a secret
        body = text[:-3]
        for secret in config.secrets:
            for size in range(len(secret) - 1, 3, -1):
                if body.endswith(secret[:size]):
                    return body[:-size] + "***..."
    return text


def scrub_with(config: Config) -> None:
    """From now on, Sentry's events are scrubbed of this config's secrets too (worker.reload)."""
    with _lock:  # one entry per set of secrets: a reload that changes none adds nothing
        if all(known.secrets != config.secrets for known in _configs):
            _configs.append(config)


def _scrub_all(event: Any) -> Any:
    with _lock:
        configs = list(_configs)
    for config in configs:
        event = _scrub(config, event)
    return event


def _sentry() -> Any | None:
    """sentry_sdk, if this process loaded it: init_sentry does when a DSN is set. Without one
    it stays unloaded (~40 ms of every process's start), and there is nothing to report to: an
    SDK nobody loaded was never started."""
    return sys.modules.get("sentry_sdk")


def init_sentry(config: Config) -> bool:
    scrub_with(config)
    dsn = config.settings.sentry.dsn
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=config.settings.sentry.environment,
        release=f"newswatch@{__version__}",
        integrations=[RqIntegration()],
        send_default_pii=False,
        before_send=lambda event, hint: _scrub_all(event),
        before_send_transaction=lambda event, hint: _scrub_all(event),
    )
    return True


def report_feed_error(feed: str, error: Exception, now: float | None = None) -> bool:
    """An expected feed failure, as a warning event: once per feed and kind per hour."""
    kind = error_kind(str(error))
    moment = time.monotonic() if now is None else now
    with _lock:
        last = _last_feed_report.get((feed, kind))
        if last is not None and moment - last < FEED_ERROR_EVERY:
            return False
        _last_feed_report[(feed, kind)] = moment
    if (sentry_sdk := _sentry()) is None:
        return True
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("feed", feed)
        scope.set_tag("error_kind", kind)
        scope.fingerprint = ["feed-error", feed, kind]
        sentry_sdk.capture_message(f"feed {feed}: {error}", level="warning")
    return True


def report_job_failure(job: Any, error: BaseException) -> None:
    """Failures RQ's integration does not see: a job abandoned by a dead worker, a work horse
    killed. Ordinary exceptions inside jobs reach Sentry through the integration already."""
    if not rqcompat.died_with_its_worker(error):
        return
    name = error.__class__.__name__
    if (sentry_sdk := _sentry()) is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job", getattr(job, "func_name", "unknown"))
        scope.set_context("job", {"id": getattr(job, "id", None), "origin": getattr(job, "origin", None)})
        sentry_sdk.capture_message(f"job {getattr(job, 'id', '?')} {name}: its worker died while running it")


def work_horse_killed(job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
    """RQ calls this when a work horse dies of a signal (OOM killer, SIGKILL)."""
    if (sentry_sdk := _sentry()) is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job", getattr(job, "func_name", "unknown"))
        sentry_sdk.capture_message(
            f"work horse for job {job.id} was killed (status {ret_val})", level="error"
        )


def report_delivery_failure(alert: str, channel: str, error: BaseException) -> None:
    """A delivery that failed for good outside an RQ job (the worker's own first try)."""
    if (sentry_sdk := _sentry()) is None:
        return
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("alert", alert)
        scope.set_tag("channel", channel)
        sentry_sdk.capture_exception(error)


def tag(**tags: str) -> None:
    """Tag the current job's events (feed=..., alert=..., channel=...)."""
    if (sentry_sdk := _sentry()) is None:
        return
    for key, value in tags.items():
        sentry_sdk.set_tag(key, value)


def report_layout_change(feed: str, before: FeedState, update: StateUpdate) -> bool:
    """A page that yielded items now yields none (SPEC §8): a log line and a Sentry warning,
    once when the episode begins; status shows the warning for as long as it lasts."""
    if not layout_change_began(before, update):
        return False
    log.warning("feed=%s %s", feed, update.warning)
    if (sentry_sdk := _sentry()) is None:
        return True
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("feed", feed)
        scope.fingerprint = ["layout-change", feed]
        sentry_sdk.capture_message(f"feed {feed}: {update.warning}", level="warning")
    return True

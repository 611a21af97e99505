"""Sentry: errors of every process, with configured secrets scrubbed before anything leaves."""

from __future__ import annotations

import json
from typing import Any

from worker import __version__
from worker.config import Config


def _scrub(config: Config, event: Any) -> Any:
    """Round-trip the event through JSON and redact secrets wherever they hide."""
    text = json.dumps(event, default=str, ensure_ascii=False)
    return json.loads(config.redact(text))


def init_sentry(config: Config) -> bool:
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
        before_send=lambda event, hint: _scrub(config, event),
    )
    return True

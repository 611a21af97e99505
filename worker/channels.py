"""Deliver one alert through one configured channel (log or webhook)."""

from __future__ import annotations

import logging
import time

from worker.adapters.webhook import SendOutcome, send_webhook
from worker.config import EmailChannel, LogChannel, WebhookChannel
from worker.core.errors import PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.render import log_line
from worker.runtime import Runtime

# Entry points send this logger to standard output: it is the log channel's sink.
alert_log = logging.getLogger("newswatch.alerts")


def send(rt: Runtime, delivery: Delivery) -> SendOutcome:
    try:
        channel = rt.settings.channel(delivery.channel)
    except KeyError as e:
        raise PermanentDeliveryError(f"channel {delivery.channel!r} is no longer configured") from e
    if isinstance(channel, LogChannel):
        started = time.monotonic()
        alert_log.info(log_line(delivery))
        return SendOutcome(0, time.monotonic() - started)
    if isinstance(channel, WebhookChannel):
        return send_webhook(
            rt.http,
            channel.url,
            channel.secret,
            delivery,
            rt.settings.delivery.timeout.total_seconds(),
            channel.headers,
        )
    if isinstance(channel, EmailChannel):
        raise PermanentDeliveryError(f"channel {delivery.channel!r}: email delivery is not available yet")
    raise PermanentDeliveryError(f"channel {delivery.channel!r} has an unknown type")

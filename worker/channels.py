"""Deliver one alert (or digest) through one configured channel: log, webhook, email or apprise."""

from __future__ import annotations

import logging
import time

from worker.adapters.smtp import SmtpTarget
from worker.adapters.webhook import SendOutcome, send_webhook
from worker.config import AppriseChannel, EmailChannel, LogChannel, WebhookChannel
from worker.core.errors import PermanentDeliveryError
from worker.core.mail import alert_email
from worker.core.models import Delivery
from worker.core.render import log_lines
from worker.runtime import Runtime

# Entry points send this logger to standard output: it is the log channel's sink.
alert_log = logging.getLogger("newswatch.alerts")


def send(rt: Runtime, delivery: Delivery) -> SendOutcome:
    try:
        channel = rt.settings.channel(delivery.channel)
    except KeyError as e:
        raise PermanentDeliveryError(f"channel {delivery.channel!r} is no longer configured") from e
    timeout = rt.settings.delivery.timeout.total_seconds()
    if isinstance(channel, LogChannel):
        started = time.monotonic()
        for line in log_lines(delivery):
            alert_log.info(line)
        return SendOutcome(0, time.monotonic() - started, "written to standard output")
    if isinstance(channel, WebhookChannel):
        return send_webhook(
            rt.delivery_http, channel.url, channel.secret, delivery, timeout, rt.clock(), channel.headers
        )
    if isinstance(channel, AppriseChannel):
        from worker.adapters.apprise_send import send_apprise  # Apprise loads only where it is used

        allow_private = rt.settings.polling.allow_private_addresses
        return send_apprise(channel.url, delivery, timeout, allow_private)
    return _send_email(rt, channel, delivery, timeout)


def _send_email(rt: Runtime, channel: EmailChannel, delivery: Delivery, timeout: float) -> SendOutcome:
    smtp = channel.smtp
    target = SmtpTarget(
        host=smtp.host,
        port=smtp.port,
        starttls=smtp.starttls,
        implicit_tls=smtp.ssl,
        tls_verify=smtp.tls_verify,
        ca_file=smtp.ca_file,
        username=smtp.username,
        password=smtp.password,
        timeout=timeout,
        allow_private=rt.settings.polling.allow_private_addresses,
    )
    message = alert_email(delivery, channel.from_, channel.to, rt.clock())
    outcome = rt.smtp_sessions.send(target, message, channel.from_, channel.to)
    return SendOutcome(outcome.code, outcome.seconds, f"SMTP {outcome.code} {outcome.reply}")

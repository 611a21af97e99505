"""Webhook channel: POST the alert JSON, signed per Standard Webhooks when a secret is set."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpcore
import httpx

from worker.adapters.http_fetch import (
    TRANSPORT_ERRORS,
    USER_AGENT,
    HostPools,
    request_url,
    response_headers,
    timeouts,
)
from worker.adapters.net import BlockedAddressError, GuardedBackend, deadline
from worker.core.errors import DeliveryError, PermanentDeliveryError
from worker.core.models import Delivery
from worker.core.render import webhook_body, webhook_signature
from worker.core.timing import retry_after_seconds


@dataclass(frozen=True)
class SendOutcome:
    status: int
    seconds: float
    detail: str  # what the receiver answered, for people (test-alert, logs)


class PoolPerThread:
    """A worker's connections for webhook posts: an httpcore pool per sending thread, each
    keeping a connection alive to each of up to `hosts` receivers, so a burst to one receiver
    reuses one connection per sender thread (TLS handshakes included) instead of opening new
    ones. All pools share the TLS context and the guarded backend of feed fetches (deadlines,
    the URL guard).

    Not one pool for all threads: at every request and every release httpcore's pool checks
    each connection against each waiting request under its lock, and with 16 posts in flight
    on ~20 connections that was ~400 checks per post, as much CPU as the post itself (yappi,
    docs/performance.md). A thread sends one post at a time: its own pool has nothing to scan."""

    def __init__(self, allow_private: bool, hosts: int = 8) -> None:
        self._ssl = httpx.create_ssl_context(trust_env=False)
        self._backend = GuardedBackend(allow_private)
        self._hosts = hosts
        self._local = threading.local()

    def request(self, method: str, url: httpcore.URL, **kwargs: Any) -> httpcore.Response:
        pool: httpcore.ConnectionPool | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = httpcore.ConnectionPool(
                ssl_context=self._ssl,
                max_connections=self._hosts,  # one post at a time: the rest are kept alive
                max_keepalive_connections=self._hosts,
                keepalive_expiry=30.0,
                network_backend=self._backend,
            )
        return pool.request(method, url, **kwargs)


def send_webhook(
    http: HostPools | PoolPerThread,
    url: str,
    secret: str | None,
    delivery: Delivery,
    timeout: float,
    now: datetime,
    extra_headers: dict[str, str] | None = None,
) -> SendOutcome:
    body = webhook_body(delivery.payload)
    timestamp = int(now.timestamp())  # fresh per try, as Standard Webhooks expects
    headers = {
        **(extra_headers or {}),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT.decode(),
        "webhook-id": delivery.delivery_id,
        "webhook-timestamp": str(timestamp),
    }
    if secret:
        headers["webhook-signature"] = webhook_signature(secret, delivery.delivery_id, timestamp, body)
    started = time.monotonic()
    try:
        # The whole post, answer included, ends within the timeout: a receiver that drips its
        # answer cannot hold the worker.
        with deadline(timeout):
            response = http.request(
                "POST",
                request_url(url),
                headers=list(headers.items()),
                content=body,
                extensions=timeouts(timeout),
            )
    except httpcore.TimeoutException as e:
        raise DeliveryError(f"webhook {delivery.channel}: timed out after {timeout:g}s") from e
    except (*TRANSPORT_ERRORS, httpx.InvalidURL) as e:
        # The exception text can carry the URL (tokens live in webhook URLs), so name only its kind.
        raise DeliveryError(f"webhook {delivery.channel}: {_transport_reason(e)}") from e
    elapsed = time.monotonic() - started
    status = response.status
    if status == 410:
        raise PermanentDeliveryError(f"webhook {delivery.channel}: HTTP 410 Gone, receiver refuses alerts")
    if 300 <= status < 400:
        raise DeliveryError(
            f"webhook {delivery.channel}: HTTP {status} redirect not followed; fix the channel URL"
        )
    if not 200 <= status < 300:
        answer = response_headers(response)
        retry_after = retry_after_seconds(answer.get("retry-after"), now) if status in (429, 503) else None
        raise DeliveryError(f"webhook {delivery.channel}: HTTP {status}", retry_after=retry_after)
    return SendOutcome(status, elapsed, f"HTTP {status}")


def _transport_reason(error: Exception) -> str:
    if isinstance(error, BlockedAddressError):  # the URL guard's own words, as a feed gets them
        return str(error)
    if isinstance(error, httpcore.ConnectError):
        return "connection refused" if "refused" in str(error).lower() else "cannot connect"
    if isinstance(error, httpcore.RemoteProtocolError):
        return "connection closed by receiver"
    return error.__class__.__name__

"""Apprise channel: one alert to any Apprise URL (Slack, Microsoft Teams, ntfy, Discord, ...).

Apprise only says whether a message went out; why it did not is in what its plugin logs. So its
logger is taken over here: nothing it says is printed or reaches Sentry (its lines quote URLs,
and Apprise URLs carry tokens), and while a thread sends, the lines that thread causes are kept
for it to read the receiver's HTTP status from ("... error=404."). 401, 403, 404 and 410 mean
the URL's token or target is wrong or gone: permanent. Anything else is retried.

The URL guard: Apprise plugins connect with requests (urllib3). While a thread sends through
Apprise, every connection urllib3 opens in that thread resolves its host through the guard and
connects only to an address the guard checked, as the webhook channel does (redirects and DNS
rebinding included). A URL whose host is written in it (json://, ntfy://host, mattermost://)
is also checked before the send, which covers plugins that do not use requests (mailto://).
The same hook gives a send a total deadline, as a webhook's post has: `delivery.timeout` is
each connect's and read's timeout, and when it has passed for the whole send, the send's
connections are shut down.

Apprise is imported on first use: only processes with an apprise channel pay for it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from worker.adapters.net import BlockedAddressError, public_addresses
from worker.adapters.webhook import SendOutcome
from worker.core.chat import chat_message
from worker.core.errors import DeliveryError, PermanentDeliveryError
from worker.core.models import Delivery

# The receiver's answers that retrying cannot change: the token or the target is wrong or gone.
PERMANENT_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not found", 410: "gone"}
# Apprise's generic targets, whose receivers are ours to write: they get the delivery id as the
# webhook channel's receivers do, in a `webhook-id` header, the same on every try.
_GENERIC = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})
_STATUS = re.compile(r"\berror=(\d{3})\b")
_MIN_TOKEN_PATH = 16  # as for webhook URLs: a shorter path ("/hook") is no token

_local = threading.local()
_setup_lock = threading.Lock()
_ready = False


class _Refused(OSError):
    """The guard's refusal inside urllib3, which turns OSErrors into connection errors."""


class _Send:
    """One thread's Apprise send: its log lines, its guard, its sockets and their deadline."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.lines: list[str] = []
        self.refused: str | None = None  # the guard's words, when it refused a connection
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def opened(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            sock.close()
            raise _Refused("deadline exceeded")
        return sock

    def expire(self) -> None:
        """The deadline: every connection of the send is shut down, so a receiver that drips
        its answer (each read within the read timeout) cannot hold the thread."""
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Capture(logging.Handler):
    """Keeps Apprise's lines for the thread that caused them, while it sends; drops the rest."""

    def emit(self, record: logging.LogRecord) -> None:
        send = getattr(_local, "send", None)
        if send is not None:
            with contextlib.suppress(Exception):  # a line that does not format tells us nothing
                send.lines.append(record.getMessage())


def _apprise() -> Any:
    """The apprise module, set up once per process: its logger silenced, the guard installed."""
    global _ready
    with _setup_lock:
        if not _ready:
            _silence(logging.getLogger("apprise"))  # before the import, which logs already
            # urllib3 (under requests) logs each request line at DEBUG: the path, with tokens.
            logging.getLogger("urllib3").setLevel(logging.WARNING)
            _install_guard()
            _ready = True
    import apprise

    return apprise


def _silence(logger: logging.Logger) -> None:
    logger.handlers[:] = [_Capture()]
    logger.propagate = False
    logger.setLevel(logging.WARNING)  # its DEBUG lines dump payloads; none is wanted
    from sentry_sdk.integrations.logging import ignore_logger

    ignore_logger("apprise")


def _install_guard() -> None:
    import urllib3.util.connection as connection

    original = connection.create_connection

    def guarded(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        send: _Send | None = getattr(_local, "send", None)
        if send is None:  # not an Apprise send: another thread's or library's connection
            return original(address, *args, **kwargs)
        if send.expired:
            raise _Refused("deadline exceeded")
        if send.allow_private:
            return send.opened(original(address, *args, **kwargs))
        host, port = address
        try:
            addresses = public_addresses(host, port)
        except BlockedAddressError as e:
            send.refused = str(e)
            raise _Refused(str(e)) from e
        error: OSError | None = None
        for checked in addresses:
            try:
                return send.opened(original((checked, port), *args, **kwargs))
            except OSError as e:
                error = e
        raise error or OSError(f"cannot connect to {host}")

    connection.create_connection = guarded


@contextmanager
def _sending(allow_private: bool, deadline: float | None = None) -> Iterator[_Send]:
    """Inside the block this thread's Apprise lines are kept, its connections guarded and, with
    a deadline (seconds), shut down when it passes."""
    saved, send = getattr(_local, "send", None), _Send(allow_private)
    _local.send = send
    timer = threading.Timer(deadline, send.expire) if deadline is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield send
    finally:
        if timer is not None:
            timer.cancel()
        _local.send = saved


def instantiate(url: str) -> Any:
    """Apprise's plugin object for the URL, or None when Apprise cannot use it."""
    apprise = _apprise()
    with _sending(True):  # what it says about a bad URL (the URL itself) goes nowhere
        return apprise.Apprise.instantiate(url)


def url_problem(url: str) -> str | None:
    """Why Apprise cannot use this URL (for config validation), or None. Never quotes it."""
    if instantiate(url) is None:
        return (
            "not an Apprise URL newswatch can use: unknown service, or a token missing or malformed "
            "(see https://appriseit.com/services/ for each service's URL)"
        )
    return None


def url_host(url: str) -> str | None:
    """The host written in the URL when it is the host connected to (json://, ntfy://host),
    None when the URL's parts are tokens of a service at a fixed address (slack://, tgram://)."""
    plugin = instantiate(url)
    if plugin is None or "host" not in plugin.template_tokens:
        return None
    return str(plugin.host) if plugin.host else None


def url_secrets(url: str) -> list[str]:
    """The URL's secrets as they can appear in text: the URL as written and as Apprise writes
    it, every token Apprise marks private, the user's password, and a long path of a URL
    with its own host (json://host/<token>), which travels on its own."""
    found: list[str] = [url]
    plugin = instantiate(url)
    parts = urlsplit(url)
    found += [s for s in (parts.password,) if s]
    if plugin is None:
        return found
    found.append(str(plugin.url()))
    for key, spec in plugin.template_tokens.items():
        if not spec.get("private"):
            continue
        value = getattr(plugin, spec.get("map_to", key), None)
        values = value if isinstance(value, list | tuple | set) else [value]
        found += [v for v in values if isinstance(v, str)]
    if "host" in plugin.template_tokens:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        found += [path] if len(path) >= _MIN_TOKEN_PATH else []
    return [s for s in found if s]


def send_apprise(url: str, delivery: Delivery, timeout: float, allow_private: bool) -> SendOutcome:
    """The delivery through Apprise, all of it within `timeout`. Raises
    DeliveryError (PermanentDeliveryError for PERMANENT_STATUS); no message quotes the URL."""
    apprise = _apprise()
    channel = delivery.channel
    plugin = instantiate(url)
    if plugin is None:  # the config refuses such URLs; a reloaded or edited one may still come
        raise PermanentDeliveryError(f"apprise {channel}: Apprise cannot use the channel's URL")
    service = str(plugin.service_name)
    _check_host(plugin, channel, allow_private)
    plugin.socket_connect_timeout = plugin.socket_read_timeout = timeout
    generic = bool({*_names(plugin.protocol), *_names(plugin.secure_protocol)} & _GENERIC)
    if generic:
        plugin.headers = {**plugin.headers, "webhook-id": delivery.delivery_id}
    body_format = _body_format(apprise.NotifyFormat, plugin, generic)
    title, body = chat_message(delivery.payload, markdown=body_format == apprise.NotifyFormat.MARKDOWN)
    started = time.monotonic()
    # The whole send, answers included, ends within the timeout, as a webhook's post does.
    with _sending(allow_private, deadline=timeout) as send:
        try:
            sent = plugin.notify(body=body, title=title, body_format=body_format)
        except apprise.exception.AppriseException as e:
            raise PermanentDeliveryError(f"apprise {channel}: {service} refused the message") from e
    elapsed = time.monotonic() - started
    if send.expired and not sent:
        raise DeliveryError(f"apprise {channel}: timed out after {timeout:g}s")
    if not sent:
        raise _failure(channel, service, send.lines, send.refused)
    return SendOutcome(0, elapsed, f"accepted by {service}")


def _body_format(formats: Any, plugin: Any, generic: bool) -> Any:
    """Markdown where the target shows Markdown or HTML (Apprise converts it); plain text where
    it shows text, which would show Markdown's escapes as they are, and for the generic targets,
    whose receivers are programs."""
    if generic:
        return formats.TEXT
    resolve = getattr(plugin, "resolve_format", None)  # Apprise 2: a plugin may take several
    shown = resolve(formats.MARKDOWN) if resolve else plugin.notify_format
    return formats.MARKDOWN if shown in (formats.MARKDOWN, formats.HTML) else formats.TEXT


def _check_host(plugin: Any, channel: str, allow_private: bool) -> None:
    if allow_private or "host" not in plugin.template_tokens or not plugin.host:
        return
    try:
        public_addresses(str(plugin.host), int(plugin.port or 0))
    except BlockedAddressError as e:
        raise DeliveryError(f"apprise {channel}: {e}") from e
    except OSError as e:
        raise DeliveryError(f"apprise {channel}: cannot resolve the target host") from e


def _failure(channel: str, service: str, lines: list[str], refused: str | None) -> DeliveryError:
    if refused:  # the URL guard's own words, as a webhook gets them
        return DeliveryError(f"apprise {channel}: {refused}")
    statuses = [int(m.group(1)) for line in lines if (m := _STATUS.search(line))]
    if statuses:
        status = statuses[-1]
        if status in PERMANENT_STATUS:
            return PermanentDeliveryError(
                f"apprise {channel}: {service} answered HTTP {status} ({PERMANENT_STATUS[status]}); "
                "fix the channel's URL, then replay-failed"
            )
        return DeliveryError(f"apprise {channel}: {service} answered HTTP {status}")
    if any("connection error" in line.lower() for line in lines):
        return DeliveryError(f"apprise {channel}: cannot connect to {service}, or no answer in time")
    return DeliveryError(f"apprise {channel}: {service} did not take the message")


def _names(protocol: object) -> tuple[str, ...]:
    if isinstance(protocol, str):
        return (protocol,)
    return tuple(p for p in protocol if isinstance(p, str)) if isinstance(protocol, list | tuple) else ()

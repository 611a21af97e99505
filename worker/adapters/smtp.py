"""Email channel: SMTP with STARTTLS or implicit TLS, optional login, under the URL guard.
4xx is retried, 5xx is not.

Sessions are kept open and reused (`SmtpSessions`): an alert goes out as MAIL, RCPT, DATA on a
session that already said EHLO, did its TLS handshake and logged in, so a burst of alerts to one
channel costs one handshake per sending thread, not one per alert (docs/performance.md). Each
message has a total deadline of `timeout` seconds, whatever a slow server drips.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from functools import lru_cache
from typing import Any

from worker.adapters.net import BlockedAddressError, public_addresses
from worker.core.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)
# A session idle longer than this is closed instead of reused: servers drop idle clients (RFC
# 5321 asks them to wait 5 minutes; many wait less).
IDLE_SECONDS = 30.0


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    starttls: bool
    implicit_tls: bool
    tls_verify: bool
    ca_file: str | None
    username: str | None
    password: str | None
    timeout: float
    allow_private: bool = False  # polling.allow_private_addresses: else the URL guard applies


@dataclass(frozen=True)
class SmtpOutcome:
    code: int
    reply: str
    seconds: float


@lru_cache(maxsize=64)
def _tls_context(target: SmtpTarget) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_file)
    if not target.tls_verify:  # only when the config says so explicitly
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _fail(code: int, reply: bytes | str, what: str) -> DeliveryError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    message = f"SMTP {what} refused: {code} {text}".strip()
    return PermanentDeliveryError(message) if 500 <= code < 600 else DeliveryError(message)


class _Deadline:
    """Every read and write of the session ends by `deadline` (time.monotonic()): smtplib's own
    timeout applies to each socket operation, so a server that drips would hold a thread."""

    deadline: float | None = None
    sock: socket.socket | None
    file: Any

    def _bound(self) -> None:
        if self.deadline is None or self.sock is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)

    def send(self, s: Any) -> None:
        self._bound()
        super().send(s)  # type: ignore[misc]

    def getreply(self) -> tuple[int, bytes]:
        # A reply may have any number of lines, each read on its own: bound every one.
        if self.file is None and self.sock is not None:
            self.file = _BoundedLines(self.sock.makefile("rb"), self._bound)
        return super().getreply()  # type: ignore[misc,no-any-return]


class _BoundedLines:
    """smtplib's reply file, with the session's deadline applied before each line."""

    def __init__(self, inner: Any, bound: Any) -> None:
        self._inner, self._bound = inner, bound

    def readline(self, limit: int = -1) -> bytes:
        self._bound()
        return self._inner.readline(limit)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._inner.close()


class _Session(_Deadline, smtplib.SMTP):
    """smtplib.SMTP connecting through `_connect`; STARTTLS still verifies the host's name."""

    def __init__(self, target: SmtpTarget, timeout: float) -> None:
        self._allow_private = target.allow_private
        super().__init__(timeout=timeout)  # no host: `_open` connects, under the deadline
        self._host = target.host  # the name STARTTLS checks the certificate for

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return _connect(host, port, timeout, self._allow_private)


class _TlsSession(_Deadline, smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL connecting through `_connect`, TLS checked against the host's name."""

    def __init__(self, target: SmtpTarget, timeout: float) -> None:
        self._allow_private = target.allow_private
        self._server_name = target.host  # the name the certificate must carry, not the address used
        super().__init__(timeout=timeout, context=_tls_context(target))

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = _connect(host, port, timeout, self._allow_private)
        return self.context.wrap_socket(raw, server_hostname=self._server_name)


def _connect(host: str, port: int, timeout: float, allow_private: bool) -> socket.socket:
    """A connection to the SMTP host, under the URL guard that feeds and webhooks have: unless
    private addresses are allowed, only to an address checked as public (DNS rebinding included)."""
    if allow_private:
        return socket.create_connection((host, port), timeout)
    error: OSError | None = None
    for address in public_addresses(host, port):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as e:
            error = e
    raise error or OSError(f"cannot connect to {host}")


Session = _Session | _TlsSession


class SmtpSessions:
    """Open sessions per server; each is used by one thread at a time."""

    def __init__(self) -> None:
        self._idle: dict[SmtpTarget, list[tuple[float, Session]]] = {}
        self._lock = threading.Lock()

    def send(
        self, target: SmtpTarget, message: EmailMessage, sender: str, recipients: list[str]
    ) -> SmtpOutcome:
        envelope = (message, sender, recipients)
        try:
            session = self._take(target)
            if session is not None:
                try:
                    return self._transaction(target, session, *envelope, _deadline(target), reused=True)
                except _StaleSessionError:
                    pass  # the server dropped it while idle: nothing of this message went out
            deadline = _deadline(target)  # a fresh session gets the whole timeout
            return self._transaction(target, _open(target, deadline), *envelope, deadline, reused=False)
        except smtplib.SMTPResponseException as e:
            raise _fail(e.smtp_code, e.smtp_error, "server") from e
        except BlockedAddressError as e:
            raise DeliveryError(f"SMTP {target.host}:{target.port}: {e}") from e
        except socket.gaierror as e:
            raise DeliveryError(f"SMTP {target.host}:{target.port}: DNS lookup failed") from e
        except ssl.SSLCertVerificationError as e:
            raise DeliveryError(
                f"SMTP TLS certificate of {target.host} not trusted: {e.verify_message}"
            ) from e
        except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
            # smtplib reports a read that timed out as a disconnect; its text says which it was.
            timed_out = isinstance(e, socket.timeout | TimeoutError) or "timed out" in str(e)
            reason = "timed out" if timed_out else e.__class__.__name__
            raise DeliveryError(f"SMTP {target.host}:{target.port}: {reason}") from e

    def _take(self, target: SmtpTarget) -> Session | None:
        now = time.monotonic()
        with self._lock:
            idle = self._idle.get(target, [])
            while idle:
                since, session = idle.pop()
                if now - since < IDLE_SECONDS:
                    return session
                _close(session)
        return None

    def _keep(self, target: SmtpTarget, session: Session) -> None:
        with self._lock:
            self._idle.setdefault(target, []).append((time.monotonic(), session))

    def _transaction(
        self,
        target: SmtpTarget,
        session: Session,
        message: EmailMessage,
        sender: str,
        recipients: list[str],
        deadline: float,
        reused: bool,
    ) -> SmtpOutcome:
        started = time.monotonic()
        session.deadline = deadline
        try:
            code, reply = session.mail(sender)
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            _close(session)
            if reused:
                raise _StaleSessionError from e
            raise
        if reused and code == 421:  # "closing channel": a server that timed the idle session out
            _close(session)
            raise _StaleSessionError
        try:
            outcome = _envelope_and_data(target, session, message, recipients, code, reply, started)
        except (smtplib.SMTPResponseException, DeliveryError):
            self._reset(target, session)
            raise
        except BaseException:
            _close(session)
            raise
        self._keep(target, session)
        return outcome

    def _reset(self, target: SmtpTarget, session: Session) -> None:
        """After a refusal the session is fine; RSET makes it ready for the next message."""
        try:
            if session.rset()[0] == 250:
                self._keep(target, session)
                return
        except (smtplib.SMTPException, OSError):
            pass
        _close(session)


class _StaleSessionError(Exception):
    pass


def _deadline(target: SmtpTarget) -> float:
    return time.monotonic() + target.timeout


def _open(target: SmtpTarget, deadline: float) -> Session:
    timeout = max(0.1, min(target.timeout, deadline - time.monotonic()))
    session: Session = _TlsSession(target, timeout) if target.implicit_tls else _Session(target, timeout)
    session.deadline = deadline
    try:
        session.connect(target.host, target.port)
        session.ehlo()
        if target.starttls and not target.implicit_tls:
            session.starttls(context=_tls_context(target))
            session.ehlo()
        if target.username:
            session.login(target.username, target.password or "")
    except BaseException:
        _close(session)
        raise
    return session


def _envelope_and_data(
    target: SmtpTarget,
    session: smtplib.SMTP,
    message: EmailMessage,
    recipients: list[str],
    code: int,
    reply: bytes,
    started: float,
) -> SmtpOutcome:
    """RCPT and DATA, after MAIL FROM answered `code`."""
    if code != 250:
        raise _fail(code, reply, "sender")
    accepted = 0
    for recipient in recipients:
        code, reply = session.rcpt(recipient)
        if code in (250, 251):
            accepted += 1
        elif 400 <= code < 500:
            raise _fail(code, reply, f"recipient {recipient}")
        else:  # refused for good; the others still get the alert, and the log says who did not
            log.error("SMTP %s refused recipient %s for good: %s %r", target.host, recipient, code, reply)
    if not accepted:
        raise _fail(code, reply, "every recipient")
    code, reply = session.data(message.as_bytes())
    if code != 250:  # smtplib.data() returns the final reply without raising on it
        raise _fail(code, reply, "message")
    return SmtpOutcome(code, reply.decode("utf-8", "replace"), time.monotonic() - started)


def _close(session: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        session.close()

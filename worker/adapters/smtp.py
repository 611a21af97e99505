"""Email channel: SMTP with STARTTLS or implicit TLS, optional login, under the URL guard.
4xx is retried, 5xx is not."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage

from worker.adapters.net import BlockedAddressError, public_addresses
from worker.core.errors import DeliveryError, PermanentDeliveryError

log = logging.getLogger(__name__)


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


def send_email(target: SmtpTarget, message: EmailMessage, sender: str, recipients: list[str]) -> SmtpOutcome:
    started = time.monotonic()
    try:
        return _send(target, message, sender, recipients, started)
    except smtplib.SMTPResponseException as e:
        raise _fail(e.smtp_code, e.smtp_error, "server") from e
    except BlockedAddressError as e:
        raise DeliveryError(f"SMTP {target.host}:{target.port}: {e}") from e
    except socket.gaierror as e:
        raise DeliveryError(f"SMTP {target.host}:{target.port}: DNS lookup failed") from e
    except ssl.SSLCertVerificationError as e:
        raise DeliveryError(f"SMTP TLS certificate of {target.host} not trusted: {e.verify_message}") from e
    except (smtplib.SMTPException, ssl.SSLError, OSError) as e:
        reason = "timed out" if isinstance(e, socket.timeout | TimeoutError) else e.__class__.__name__
        raise DeliveryError(f"SMTP {target.host}:{target.port}: {reason}") from e


def _send(
    target: SmtpTarget, message: EmailMessage, sender: str, recipients: list[str], started: float
) -> SmtpOutcome:
    smtp = (
        _GuardedSMTPSSL(target.host, target.port, target.timeout, target.allow_private, _tls_context(target))
        if target.implicit_tls
        else _GuardedSMTP(target.host, target.port, target.timeout, target.allow_private)
    )
    with smtp:
        smtp.ehlo()
        if target.starttls and not target.implicit_tls:
            smtp.starttls(context=_tls_context(target))
            smtp.ehlo()
        if target.username:
            smtp.login(target.username, target.password or "")
        code, reply = smtp.mail(sender)
        if code != 250:
            raise _fail(code, reply, "sender")
        accepted = 0
        for recipient in recipients:
            code, reply = smtp.rcpt(recipient)
            if code in (250, 251):
                accepted += 1
            elif 400 <= code < 500:
                raise _fail(code, reply, f"recipient {recipient}")
            else:  # refused for good; the others still get the alert, and the log says who did not
                log.error("SMTP %s refused recipient %s for good: %s %r", target.host, recipient, code, reply)
        if not accepted:
            raise _fail(code, reply, "every recipient")
        code, reply = smtp.data(message.as_bytes())
        if code != 250:  # smtplib.data() returns the final reply without raising on it
            raise _fail(code, reply, "message")
        return SmtpOutcome(code, reply.decode("utf-8", "replace"), time.monotonic() - started)


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


class _GuardedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting through `_connect`; STARTTLS still verifies the host's name."""

    def __init__(self, host: str, port: int, timeout: float, allow_private: bool) -> None:
        self._allow_private = allow_private  # before super().__init__, which connects
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return _connect(host, port, timeout, self._allow_private)


class _GuardedSMTPSSL(smtplib.SMTP_SSL):
    """smtplib.SMTP_SSL connecting through `_connect`, TLS checked against the host's name."""

    def __init__(
        self, host: str, port: int, timeout: float, allow_private: bool, context: ssl.SSLContext
    ) -> None:
        self._allow_private = allow_private
        self._server_name = host  # the name the certificate must carry, not the address used
        super().__init__(host, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = _connect(host, port, timeout, self._allow_private)
        return self.context.wrap_socket(raw, server_hostname=self._server_name)

"""Real SMTP servers for tests (aiosmtpd on 127.0.0.1): plain, STARTTLS with a trustme CA and
login, implicit TLS, and servers that refuse (421 once, 550 always)."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.data)  # type: ignore[return-value]


@dataclass
class RecordingHandler:
    received: list[Received] = field(default_factory=list)
    refuse_data: list[str] = field(default_factory=list)  # replies to give, one per DATA, then 250
    refuse_rcpt: str | None = None
    delay: float = 0.0  # seconds before DATA is answered, other sessions going on meanwhile
    sessions: set[Any] = field(default_factory=set)  # the client ends (address, port) seen: connections
    in_data: int = 0
    peak_in_data: int = 0  # the most messages being answered at once

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sessions.add(session.peer)
        self.in_data += 1
        self.peak_in_data = max(self.peak_in_data, self.in_data)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_data -= 1
        if self.refuse_data:
            return self.refuse_data.pop(0)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted for delivery"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"alerts"
        and auth_data.password == b"s3cret"
    )
    return AuthResult(success=ok)


@dataclass
class MailServer:
    controller: Controller
    handler: RecordingHandler
    port: int
    ca_file: str | None = None

    def stop(self) -> None:
        self.controller.stop()


def start_mail_server(
    kind: str, tmp_path: Path, handler: RecordingHandler | None = None, port: int | None = None
) -> MailServer:
    handler = handler or RecordingHandler()
    port = port or free_port()
    if kind == "plain":
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        return MailServer(controller, handler, port)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    ca_file = tmp_path / f"ca-{port}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    if kind == "starttls":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, tls_context=server_context, require_starttls=True,
            authenticator=_authenticator, auth_require_tls=True,
        )  # fmt: skip
    elif kind == "implicit":
        controller = Controller(
            handler, hostname="127.0.0.1", port=port, ssl_context=server_context,
            authenticator=_authenticator, auth_require_tls=False,
        )  # fmt: skip
    else:
        raise ValueError(kind)
    controller.start()
    return MailServer(controller, handler, port, str(ca_file))

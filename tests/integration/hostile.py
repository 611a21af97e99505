"""A feed server that misbehaves at the socket level: drips, lies, bombs, loops. Each path is a
behaviour; the server answers on 127.0.0.1 only and stops with the test."""

from __future__ import annotations

import collections
import contextlib
import functools
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable

# A behaviour gets the connection and a tally to report each byte it got out before the client
# hung up (the drips: how long the client really listened).
Behaviour = Callable[[socket.socket, Callable[[int], None]], None]

GOOD_RSS = (
    "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>ok</title>"
    "<item><title>Grüße aus München: DeepSeek</title><guid>ok-1</guid></item></channel></rss>"
).encode()


def _headers(status: str = "200 OK", extra: str = "", content_length: int | None = None) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/rss+xml\r\nConnection: close\r\n{extra}"
    if content_length is not None:
        head += f"Content-Length: {content_length}\r\n"
    return (head + "\r\n").encode()


def drip_body(sock: socket.socket, sent: Callable[[int], None]) -> None:
    sock.sendall(_headers(content_length=10_000))
    for _ in range(60):
        sock.sendall(b"<")
        sent(1)
        time.sleep(1)


def drip_headers(sock: socket.socket, sent: Callable[[int], None]) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
        sock.sendall(bytes([byte]))
        sent(1)
        time.sleep(1)


def silent(sock: socket.socket, sent: Callable[[int], None]) -> None:
    time.sleep(60)


def huge_without_length(sock: socket.socket, sent: Callable[[int], None]) -> None:
    sock.sendall(_headers())
    chunk = b"<!-- " + b"x" * 65_000 + b" -->"
    for _ in range(200):  # ~13 MB, far past the cap
        sock.sendall(chunk)


def lying_length(sock: socket.socket, sent: Callable[[int], None]) -> None:
    sock.sendall(_headers(content_length=len(GOOD_RSS)))
    sock.sendall(GOOD_RSS + b"x" * 3_000_000)  # more than announced: must be ignored, not read


@functools.cache
def _bomb() -> bytes:
    """200 MB of gzip in ~200 KB, made once: compressing it takes the server a second of CPU."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(b"<rss>" + b" " * 200_000_000) + compressor.flush()


def gzip_bomb(sock: socket.socket, sent: Callable[[int], None]) -> None:
    body = _bomb()
    sock.sendall(_headers(extra="Content-Encoding: gzip\r\n", content_length=len(body)))
    sock.sendall(body)


def reset(sock: socket.socket, sent: Callable[[int], None]) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def garbage(sock: socket.socket, sent: Callable[[int], None]) -> None:
    sock.sendall(b"this is not HTTP at all\r\n\r\n")


BEHAVIOURS: dict[str, Behaviour] = {
    "/drip-body": drip_body,
    "/drip-headers": drip_headers,
    "/silent": silent,
    "/huge": huge_without_length,
    "/lying-length": lying_length,
    "/gzip-bomb": gzip_bomb,
    "/reset": reset,
    "/garbage": garbage,
}


class HostileServer:
    def __init__(self) -> None:
        behaviours = BEHAVIOURS
        self.dripped: collections.Counter[str] = collections.Counter()
        tally = self.dripped

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = self.request.recv(4096)
                    if not data:
                        return
                    request += data
                path = request.split(b" ", 2)[1].decode()
                with contextlib.suppress(OSError):  # the client gave up, as it should
                    behaviours[path](self.request, lambda n: tally.update({path: n}))

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

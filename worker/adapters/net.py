"""The network layer under httpx: a total deadline per request and the URL guard (SSRF).

httpx's timeouts apply to each socket operation, so a server that drips one byte a second can
hold a request forever. Here every read, write and connect gets at most what is left of the
deadline set by `deadline()` for this thread. The guard resolves the host itself and connects
only to an address it has checked, so DNS rebinding and redirects to internal addresses are
caught on the address actually connected to.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import httpcore

_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every network operation of this thread inside the block ends by now + seconds."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def _remaining(timeout: float | None, error: type[Exception]) -> float | None:
    at: float | None = getattr(_local, "deadline", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("deadline exceeded")
    return left if timeout is None else min(timeout, left)


class BlockedAddressError(httpcore.ConnectError):
    """The URL guard refused to connect (private, loopback, link-local, metadata address)."""


def blocked_reason(address: str) -> str | None:
    """Why an IP address may not be connected to, or None if it is a public address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public (e.g. CGNAT)"
    return None


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses a host resolves to, if every one of them is public; BlockedAddressError if
    any is not (one bad answer is enough: a name that also resolves inward is not trusted).
    Raises socket.gaierror when the name does not resolve."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = blocked_reason(address)
        if reason:
            raise BlockedAddressError(
                f"refused: {host} resolves to a {reason} address (polling.allow_private_addresses is off)"
            )
    return addresses


def literal_blocked_reason(host: str) -> str | None:
    """What public_addresses would refuse, told without a DNS lookup: a host written as an
    address, in any spelling the resolver reads as one (`127.0.0.1`, `127.1`, `0x7f000001`,
    `[::1]`), or `localhost`. None for every other name, which only DNS can tell."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    try:
        return blocked_reason(name)
    except ValueError:
        pass
    try:
        packed = socket.inet_aton(name)  # the lenient IPv4 spellings getaddrinfo accepts too
    except OSError:
        return None
    return blocked_reason(socket.inet_ntoa(packed))


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _remaining(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: typing.Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        remaining = _remaining(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, remaining))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend with deadlines and, unless allowed, no private destinations."""

    def __init__(self, allow_private: bool) -> None:
        self._sync = httpcore.SyncBackend()
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _remaining(timeout, httpcore.ConnectTimeout)
        addresses = [host] if self._allow_private else self._public_addresses(host, port)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._sync.connect_tcp(address, port, timeout, local_address, socket_options)
                return _DeadlineStream(stream)
            except httpcore.ConnectError as e:
                error = e
        raise error or httpcore.ConnectError(f"cannot connect to {host}")

    def _public_addresses(self, host: str, port: int) -> list[str]:
        try:
            return public_addresses(host, port)
        except socket.gaierror as e:
            raise httpcore.ConnectError(f"[Errno {e.errno}] {e.strerror}") from e

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[typing.Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by newswatch")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

"""Outbound connections to hosts that organizations supply, pinned to the addresses that were checked.

:func:`app.plugins.netguard.resolve_public_addresses` refuses private, loopback and link-local
addresses; connecting to the address it returned (instead of resolving the name a second time)
keeps a DNS answer that changes in between (DNS rebinding) from reaching our own network.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from app.plugins.netguard import resolve_public_addresses


async def open_checked_socket(host: str, port: int, allow_private: bool, connect_timeout: float) -> socket.socket:
    """A connected, non-blocking TCP socket to a checked address of ``host``.

    Raises :class:`~app.plugins.base.CredentialsError` for a refused or unresolvable host, and
    :class:`OSError` / :class:`TimeoutError` when no address accepts the connection.
    """
    addresses = await resolve_public_addresses(host, port, allow_private)
    loop = asyncio.get_running_loop()
    last: BaseException | None = None
    for family, ip in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout=connect_timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc
            continue
        return sock
    if isinstance(last, TimeoutError):
        raise TimeoutError(f"Timed out connecting to {host} on port {port}.")
    raise OSError(f"Cannot connect to {host} on port {port}: {getattr(last, 'strerror', None) or last}")


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses (TLS still uses the host name)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await resolve_public_addresses(host, port, self._allow_private)
        last: Exception | None = None
        for _family, ip in addresses:
            try:
                return await self._inner.connect_tcp(
                    ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not allowed.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(allow_private: bool) -> httpx.AsyncHTTPTransport:
    """An httpx transport whose connections go only to checked addresses."""
    transport = httpx.AsyncHTTPTransport(retries=0)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("this httpx version does not keep an httpcore pool; the network guard cannot attach")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=10,
        network_backend=_GuardedBackend(allow_private),
    )
    return transport

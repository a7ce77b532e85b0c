"""Organizations supply hosts and URLs; they must not reach our own network unless allowed."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from app.plugins.base import CredentialsError

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _is_private(addr: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv6 address that embeds an IPv4 one is judged by the IPv4 address it reaches
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return (
        not ip.is_global  # also catches shared address space (100.64/10) and documentation ranges
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


async def resolve_public_addresses(host: str, port: int, allow_private: bool) -> list[tuple[int, str]]:
    """``(family, ip)`` of every address ``host`` resolves to; :class:`CredentialsError` if any is private.

    Connect to one of these addresses (not to ``host`` again) so that a second DNS answer cannot
    point the connection somewhere else (DNS rebinding).
    """
    if not host or len(host) > 253:
        raise CredentialsError("A host name is required.")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise CredentialsError(f"Cannot resolve host {host!r}.") from exc
    if not allow_private:
        for info in infos:
            if _is_private(str(info[4][0])):
                raise CredentialsError(f"{host!r} is a private, loopback or link-local address; it is not allowed.")
    return list(dict.fromkeys((int(info[0]), str(info[4][0])) for info in infos))


async def ensure_public_host(host: str, port: int, allow_private: bool) -> None:
    """Raise :class:`CredentialsError` unless every address ``host`` resolves to is public."""
    await resolve_public_addresses(host, port, allow_private)


async def ensure_public_url(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CredentialsError("The URL must be an absolute http:// or https:// URL.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await ensure_public_host(parts.hostname, port, allow_private)

"""Which network addresses a user-given URL may reach (SSRF protection), for every layer.

A host is resolved once; every address it resolves to must be public (not loopback, private,
link-local, multicast, reserved, unspecified or a cloud-metadata endpoint), with IPv4 addresses
embedded in IPv6 (IPv4-mapped, NAT64, 6to4) judged by the IPv4 address they carry. The caller
then connects to the returned address, never to the name again, so a second DNS answer
(rebinding) cannot move the connection to an internal address. Operators exempt their own
receivers by exact `host:port` (that is how tests reach a server on 127.0.0.1).

Errors carry a category, never the host or the address: callers put them in responses and
delivery logs, and URLs stay out of logs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud and platform endpoints that the standard ranges miss. 169.254.169.254 (AWS, GCP, Azure,
# ...) is link-local, fd00:ec2::254 (AWS IPv6) unique-local and 100.100.100.200 (Alibaba) shared
# address space, all already refused; these two sit in ranges Python 3.11 calls global.
_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "reserved"),  # IETF protocol assignments; Oracle IMDS
    (ipaddress.ip_network("168.63.129.16/32"), "cloud metadata"),  # Azure WireServer
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the low 32 bits are IPv4


class AddressNotAllowed(Exception):
    """The host resolves to an address a user-given URL may not reach."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HostUnresolvable(Exception):
    """The host does not resolve (or is not a valid host name)."""


def parse_allow_hosts(text: str) -> frozenset[str]:
    """`"a.example:443, 127.0.0.1:8080"` → the set of exempt `host:port` entries."""
    return frozenset(entry.strip().lower() for entry in text.split(",") if entry.strip())


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not be reached (a category), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return refusal(address.ipv4_mapped)
        if address in _NAT64:
            return refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and (reason := refusal(address.sixtofour)):
            return reason
        if address.is_site_local:
            return "private"
    for network, reason in _BLOCKED:
        if address.version == network.version and address in network:
            return reason
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"  # includes 169.254.169.254, the usual metadata address
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"  # e.g. 100.64.0.0/10, shared address space
    return None


def is_public(address: IPAddress) -> bool:
    return refusal(address) is None


def exempt(host: str, port: int, allow_hosts: frozenset[str]) -> bool:
    """Whether the operator allow-listed `host:port` (IPv6 hosts with or without brackets)."""
    host = host.lower()
    return f"{host}:{port}" in allow_hosts or (":" in host and f"[{host}]:{port}" in allow_hosts)


async def checked_address(
    host: str,
    port: int,
    *,
    allow_hosts: frozenset[str] = frozenset(),
    allow_private: bool = False,
) -> str:
    """The address to connect to for `host:port`, after checking every address it resolves to.

    Raises HostUnresolvable, or AddressNotAllowed unless `allow_private` is set or `host:port`
    is allow-listed.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # UnicodeError: a label IDNA cannot encode (too long, ...)
        raise HostUnresolvable("the host does not resolve") from None
    # A zone index ("fe80::1%eth0") is not part of the address.
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise AddressNotAllowed("the host has no address")
    if not (allow_private or exempt(host, port, allow_hosts)):
        for address in addresses:
            if reason := refusal(address):
                raise AddressNotAllowed(f"the host resolves to a non-public address ({reason})")
    return str(addresses[0])

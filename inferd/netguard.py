"""Which network addresses a user-given URL may reach (SSRF protection), for every layer.

A host is resolved once; every address it resolves to must be public (not loopback, private,
link-local, multicast, reserved, unspecified or a cloud-metadata endpoint), with IPv4 addresses
embedded in IPv6 (IPv4-mapped, NAT64, 6to4) judged by the IPv4 address they carry. The caller
then connects to the returned address, never to the name again, so a second DNS answer
(rebinding) cannot move the connection to an internal address. Operators exempt their own
receivers by exact `host:port` (that is how tests reach a server on 127.0.0.1).

Names resolve through the system (getaddrinfo) or, when the operator names DNS servers
(`dns_nameservers`), through those servers only (dnspython: A and AAAA, no /etc/hosts). Either
way, IP literals are parsed here and never sent to a resolver, including the legacy IPv4 forms
(`127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1`) that URL parsers and inet_aton accept, and
`localhost` and `*.localhost` are loopback (RFC 6761) without asking anyone.

Errors carry a category, never the host or the address: callers put them in responses and
delivery logs, and URLs stay out of logs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud and platform endpoints that the standard ranges miss. 169.254.169.254 (AWS, GCP, Azure,
# ...) is link-local, fd00:ec2::254 (AWS IPv6) unique-local and 100.100.100.200 (Alibaba) shared
# address space, all already refused; these sit in ranges Python 3.11 calls global.
_BLOCKED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("192.0.0.0/24"), "reserved"),  # IETF protocol assignments; Oracle IMDS
    (ipaddress.ip_network("168.63.129.16/32"), "cloud metadata"),  # Azure WireServer
    (ipaddress.ip_network("3fff::/20"), "reserved"),  # IPv6 documentation (RFC 9637, 2024)
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


# A host whose last label is a number is an IPv4 address in the URL standard's (and
# inet_aton's) legacy syntax: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x).
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)
_LOCALHOST = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))


def literal_address(host: str) -> IPAddress | None:
    """The address `host` spells (IPv6 with or without brackets and zone, IPv4 in any legacy
    form), None when it is a name; HostUnresolvable when it looks numeric but is no address."""
    bare = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    labels = host.removesuffix(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None  # a name (its last label is not a number)
    if len(labels) > 4 or not all(_NUMERIC_LABEL.fullmatch(label) for label in labels):
        raise HostUnresolvable("the host is not a valid address")
    try:
        parts = [_legacy_number(label) for label in labels]
    except ValueError:
        raise HostUnresolvable("the host is not a valid address") from None
    *head, last = parts
    if any(part > 255 for part in head) or last >= 256 ** (5 - len(parts)):
        raise HostUnresolvable("the host is not a valid address")
    value = last
    for index, part in enumerate(head):
        value += part << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _legacy_number(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label[1:], 8)  # ValueError on 8 or 9
    return int(label)


def is_localhost(host: str) -> bool:
    name = host.removesuffix(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def parse_nameservers(text: str) -> list[tuple[str, int]]:
    """`"127.0.0.1:5353, [::1]:53, 10.0.0.2"` → (address, port) pairs; the port defaults to 53.

    DNS servers are addresses, not names (a name would need a resolver to find the resolver).
    """
    servers = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        match = re.fullmatch(r"\[([^\]]+)\](?::([0-9]+))?|([^:\[\]]+)(?::([0-9]+))?", entry)
        if match is None:
            raise ValueError(f"dns_nameservers: {entry!r} is not host:port (IPv6: [addr]:port)")
        address, port = (match[1], match[2]) if match[1] else (match[3], match[4])
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ValueError(f"dns_nameservers: {address!r} is not an IP address") from None
        number = int(port) if port else 53
        if not 0 < number < 65536:
            raise ValueError(f"dns_nameservers: port {number} is out of range")
        servers.append((address, number))
    return servers


class Resolver:
    """Host names to addresses: the system's resolver, or the operator's DNS servers.

    With no servers, getaddrinfo (the event loop's: /etc/hosts, nsswitch, resolv.conf). With
    servers, dnspython asks them for A and AAAA (in parallel, IPv4 answers first) and nothing
    else: no /etc/hosts, no search domains.
    """

    def __init__(
        self, nameservers: Sequence[tuple[str, int]] = (), *, timeout_s: float = 5.0
    ) -> None:
        self.nameservers = tuple(nameservers)
        self._dns: dns.asyncresolver.Resolver | None = None
        if self.nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port) for address, port in self.nameservers
            ]
            resolver.timeout = min(2.0, timeout_s)  # one server, one try
            resolver.lifetime = timeout_s  # the whole query, every server and retry
            resolver.cache = None  # every check asks afresh; a cached answer is no safer
            self._dns = resolver

    @classmethod
    def from_setting(cls, text: str) -> Resolver:
        return cls(parse_nameservers(text))

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of the name `host` (not a literal); HostUnresolvable when none."""
        if self._dns is None:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM
                )
            except (OSError, UnicodeError):  # UnicodeError: a label IDNA cannot encode
                raise HostUnresolvable("the host does not resolve") from None
            # A zone index ("fe80::1%eth0") is not part of the address.
            return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        answers = await asyncio.gather(
            self._query(self._dns, host, "A"),
            self._query(self._dns, host, "AAAA"),
            return_exceptions=True,
        )
        addresses: list[IPAddress] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                if not isinstance(answer, HostUnresolvable):
                    raise answer
            else:
                addresses += answer
        if not addresses:
            raise HostUnresolvable("the host does not resolve")
        return addresses

    @staticmethod
    async def _query(
        resolver: dns.asyncresolver.Resolver, host: str, rdtype: str
    ) -> list[IPAddress]:
        try:
            answer = await resolver.resolve(host, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, UnicodeError, ValueError):
            # No server answered (timeout, SERVFAIL, refused) or the name is not valid DNS.
            raise HostUnresolvable("the host does not resolve") from None
        return [ipaddress.ip_address(rdata.address) for rdata in answer]


SYSTEM_RESOLVER = Resolver()


async def addresses_of(host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
    """Every address `host` stands for: the literal, loopback for localhost, or the resolver's."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    if is_localhost(host):
        return list(_LOCALHOST)
    return await (resolver or SYSTEM_RESOLVER).resolve(host, port)


async def checked_address(
    host: str,
    port: int,
    *,
    allow_hosts: frozenset[str] = frozenset(),
    allow_private: bool = False,
    resolver: Resolver | None = None,
) -> str:
    """The address to connect to for `host:port`, after checking every address it resolves to.

    Resolves once (with `resolver`, else the process default). Raises HostUnresolvable, or
    AddressNotAllowed unless `allow_private` is set or `host:port` is allow-listed.
    """
    addresses = await addresses_of(host, port, resolver)
    if not addresses:
        raise AddressNotAllowed("the host has no address")
    if not (allow_private or exempt(host, port, allow_hosts)):
        for address in addresses:
            if reason := refusal(address):
                raise AddressNotAllowed(f"the host resolves to a non-public address ({reason})")
    return str(addresses[0])

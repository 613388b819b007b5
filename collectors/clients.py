"""The client behind a request: its address (X-Forwarded-For only from trusted proxies) and the
network it is rate limited by (an IPv4 address, or an IPv6 /64)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDRs; raises ValueError naming the bad one."""
    nets = []
    for raw in values:
        value = raw.strip()
        if value:
            try:
                nets.append(ipaddress.ip_network(value, strict=False))
            except ValueError as err:
                raise ValueError(f"{value!r} is not an IP address or CIDR") from err
    return tuple(nets)


# An address as (version, integer, canonical text): what trust checks and the answer need,
# without building ipaddress objects for the common IPv4 case (each costs microseconds, and a
# beacon parses up to three addresses: peer, hop, rate network).
Parsed = tuple[int, int, str]


@lru_cache(maxsize=16384)  # the same few proxies and returning clients come again and again
def _address(value: str) -> Parsed | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:  # fast path, IPv4: C parser, as strict as ipaddress's (no leading zeros, four octets)
        packed = socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError):  # ValueError: a NUL in the text
        pass
    else:  # what inet_pton takes (four decimal octets, no leading zeros) is already canonical
        return 4, int.from_bytes(packed, "big"), value
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return addr.version, int(addr), str(addr)


class ClientResolver:
    def __init__(self, trusted: tuple[Network, ...] = ()) -> None:
        # (version, network address, mask) as integers: a membership test is one AND
        self._ranges = tuple(
            (net.version, int(net.network_address), int(net.netmask)) for net in trusted
        )

    def is_trusted(self, addr: Parsed) -> bool:
        version, value, _ = addr
        # a loop, not any(...): no generator made for every address checked
        for v, net, mask in self._ranges:  # noqa: SIM110
            if v == version and value & mask == net:
                return True
        return False

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: the peer, or when the peer is a trusted proxy, the right-most
        X-Forwarded-For address that is not itself trusted."""
        addr = _address(peer or "")
        if addr is None:
            return peer or "unknown"
        if not self._ranges or not forwarded_for or not self.is_trusted(addr):
            return addr[2]
        for hop in reversed(forwarded_for.split(",")):
            hop_addr = _address(hop)
            if hop_addr is None:
                break  # garbage in the chain: trust nothing left of it
            addr = hop_addr
            if not self.is_trusted(hop_addr):
                break
        return addr[2]


@lru_cache(maxsize=16384)
def rate_network(address: str) -> str:
    """What a client is rate limited by: its IPv4 address or its IPv6 /64."""
    if ":" not in address:
        return address  # IPv4 (already canonical: parsing would give it back) or not an address
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)

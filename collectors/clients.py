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


# Parsing an address costs ~2 us and a beacon parses up to three (peer, hop, rate network);
# the same few proxies and returning clients come again and again.
@lru_cache(maxsize=16384)
def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.split(":", 1)[0]
    try:  # fast path, IPv4: C parser, as strict as ipaddress's (no leading zeros, four octets)
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value))
    except OSError:
        pass
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


class ClientResolver:
    def __init__(self, trusted: tuple[Network, ...] = ()) -> None:
        self.trusted = trusted

    def is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in self.trusted)

    def client(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client's address: the peer, or when the peer is a trusted proxy, the right-most
        X-Forwarded-For address that is not itself trusted."""
        addr = _address(peer or "")
        if addr is None:
            return peer or "unknown"
        if not self.trusted or not forwarded_for or not self.is_trusted(addr):
            return str(addr)
        for hop in reversed(forwarded_for.split(",")):
            hop_addr = _address(hop)
            if hop_addr is None:
                break  # garbage in the chain: trust nothing left of it
            addr = hop_addr
            if not self.is_trusted(hop_addr):
                break
        return str(addr)


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

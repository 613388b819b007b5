"""The client behind a request: X-Forwarded-For only from trusted proxies, the right-most address
that is not itself trusted, and the network a client is rate limited by."""

from __future__ import annotations

import re

import pytest

from collectors.clients import ClientResolver, parse_networks, rate_network
from tests.abuse_helpers import counters
from tests.conftest import send

PROXIES = ClientResolver(parse_networks(["10.0.0.0/8", "192.0.2.10", "2001:db8:ffff::/48"]))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # an untrusted peer: whatever it claims, the client is the peer
        ("203.0.113.5", "198.51.100.1", "203.0.113.5"),
        ("203.0.113.5", "10.0.0.1, 198.51.100.1", "203.0.113.5"),
        # a trusted proxy: the right-most address it did not add itself
        ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
        # a client that forges the left of the chain is still its own right-most address
        ("10.0.0.1", "1.1.1.1, 8.8.8.8, 198.51.100.1", "198.51.100.1"),
        # proxies in a chain are skipped, right to left, while they are trusted
        ("10.0.0.1", "198.51.100.1, 192.0.2.10, 10.9.9.9", "198.51.100.1"),
        ("192.0.2.10", "2001:db8:1::7, 2001:db8:ffff::1", "2001:db8:1::7"),
        # a trusted peer without a header is the client (a health check, a server-side beacon)
        ("10.0.0.1", None, "10.0.0.1"),
        ("10.0.0.1", "", "10.0.0.1"),
        # every hop trusted: the left-most one
        ("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),
        # garbage in the chain: trust nothing left of it
        ("10.0.0.1", "198.51.100.1, not-an-address", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.1, unknown, 10.0.0.3", "10.0.0.3"),
        ("10.0.0.1", "198.51.100.1\x00", "10.0.0.1"),  # a NUL: not an address, not a crash
        # ports, brackets and IPv4-mapped IPv6 are read as the address they are
        ("10.0.0.1", "198.51.100.1:4711", "198.51.100.1"),
        ("10.0.0.1", "[2001:db8:1::7]:443", "2001:db8:1::7"),
        ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("10.0.0.1", "::ffff:198.51.100.1", "198.51.100.1"),
    ],
)
def test_client_address(peer, forwarded_for, client):
    assert PROXIES.client(peer, forwarded_for) == client


def test_without_trusted_proxies_the_header_is_ignored():
    assert ClientResolver().client("10.0.0.1", "198.51.100.1") == "10.0.0.1"


def test_rate_network():
    assert rate_network("198.51.100.1") == "198.51.100.1"
    assert rate_network("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert rate_network("2001:db8:1:2::9") == rate_network("2001:db8:1:2:ffff::1")
    assert rate_network("2001:db8:1:3::1") != rate_network("2001:db8:1:2::1")


def test_trusted_proxies_must_be_addresses_or_cidrs():
    assert len(parse_networks(["10.0.0.0/8", " ", "::1"])) == 2
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33'")):
        parse_networks(["10.0.0.0/33"])


async def test_behind_a_trusted_proxy_a_forged_left_part_does_not_make_new_visitors(client):
    """The test server's peer is the loopback proxy (trusted): a client that prepends random
    addresses is still one visitor, and a second real client is a second one."""
    for i in range(5):
        resp = await send(client, ip=f"192.0.2.{i}, 203.0.113.7")
        assert resp.status == 204
    assert (await counters(client))["today"] == {"pageviews": 5, "visits": 1, "visitors": 1}
    assert (await send(client, ip="203.0.113.8")).status == 204
    assert (await counters(client))["today"] == {"pageviews": 6, "visits": 2, "visitors": 2}

"""Rate limits: a token bucket per client network (IPv4 address, IPv6 /64) and per site, kept in
Redis by the counting script and timed by the app's clock. A loop from one address is capped
while everyone else still counts; a refused beacon counts nowhere but in metrics."""

from __future__ import annotations

import dataclasses

import pytest

from aggregations.counters import RateLimit
from analytics.lifecycle import rollup_pass
from analytics.settings import Settings, SettingsError
from tests.abuse_helpers import counters, metric
from tests.conftest import BROWSER, add_site, send


async def limited_client(make_client, settings, **limits):
    client = await make_client(settings=dataclasses.replace(settings, **limits))
    await add_site(client)
    return client


async def test_a_thousand_beacons_a_minute_from_one_address_are_capped(client, clock):
    """Defaults (600 a minute, bursts of 60): a script sending 1 000 a minute gets the burst and
    then 10 a second; twenty people sending one beacon each meanwhile all count."""
    start = clock.now()
    accepted: list[float] = []
    refused = 0
    for i in range(1000):
        clock.set(start + i * 0.06)
        resp = await send(client, ip="203.0.113.66", article="7")
        if resp.status == 204:
            accepted.append(i * 0.06)
        else:
            assert resp.status == 429, await resp.text()
            body = await resp.json()
            assert body["error"] == "rate_limited"
            refused += 1
        if i % 50 == 25:
            person = await send(client, ip=f"198.51.100.{i // 50}", article="7")
            assert person.status == 204
    # the burst, then the refill: 60 + 10/s over the 59.94 s the loop lasted
    assert 60 + 599 - 2 <= len(accepted) <= 60 + 600
    assert refused == 1000 - len(accepted)
    # after the burst is spent, the pace is the limit: 300 in the second half-minute
    assert 298 <= sum(1 for t in accepted if t >= 30) <= 301
    body = await counters(client)
    assert body["today"] == {"pageviews": len(accepted) + 20, "visits": 21, "visitors": 21}
    # the article counted once per visit: the loop's one visit and each person's
    views = await (await client.get("/api/v1/sites/caobang/articles/7")).json()
    assert views["views"] == 21
    assert await metric(client, "rate_limited") == refused
    assert await metric(client, "none", "counted") == len(accepted) + 20


async def test_the_bucket_refills_with_time(make_client, settings, clock):
    client = await limited_client(
        make_client, settings, rate_limit_per_minute=60, rate_limit_burst=6
    )
    statuses = [(await send(client)).status for _ in range(7)]
    assert statuses == [204] * 6 + [429]
    clock.advance(0.9)
    assert (await send(client)).status == 429
    clock.advance(0.2)  # a second since the last one counted: one more token
    assert (await send(client)).status == 204
    assert (await send(client)).status == 429
    clock.advance(60)
    statuses = [(await send(client)).status for _ in range(7)]
    assert statuses == [204] * 6 + [429]
    assert (await counters(client))["today"]["pageviews"] == 13


async def test_a_refill_a_hair_short_of_a_token_rounds_to_it(make_client, settings, clock):
    """The bucket keeps its tokens to four decimals, rounded to the nearest: 11 a minute, spent,
    then 10.909 s later 1.99998 tokens - two more beacons, as two whole tokens would allow."""
    client = await limited_client(
        make_client, settings, rate_limit_per_minute=11, rate_limit_burst=2
    )
    assert [(await send(client)).status for _ in range(3)] == [204, 204, 429]
    clock.advance(10.909)
    assert [(await send(client)).status for _ in range(3)] == [204, 204, 429]


async def test_ipv6_clients_are_limited_by_their_64(make_client, settings):
    client = await limited_client(
        make_client, settings, rate_limit_per_minute=60, rate_limit_burst=4
    )
    same_64 = [f"2001:db8:ca0:b4e9::{i:x}" for i in range(1, 9)]
    statuses = [(await send(client, ip=ip)).status for ip in same_64]
    assert statuses == [204] * 4 + [429] * 4
    # another /64 of the same /48, and IPv4 neighbours, have their own buckets
    assert (await send(client, ip="2001:db8:ca0:b4ea::1")).status == 204
    assert (await send(client, ip="203.0.113.1")).status == 204
    assert (await send(client, ip="203.0.113.2")).status == 204
    assert (await counters(client))["today"]["pageviews"] == 7


async def test_the_site_limit_caps_a_flood_from_many_addresses(make_client, settings, clock):
    client = await limited_client(
        make_client, settings, site_rate_limit_per_minute=60, site_rate_limit_burst=5
    )
    await add_site(client, "backan", domains=[])
    statuses = [(await send(client, ip=f"198.51.100.{i}")).status for i in range(8)]
    assert statuses == [204] * 5 + [429] * 3
    resp = await send(client, ip="198.51.100.200")
    assert (await resp.json())["detail"] == "too many page views from this site"
    # another site is not held back by the flood on this one
    other = await send(client, "backan", url="https://backan.gov.vn/")
    assert other.status == 204
    clock.advance(1)
    assert (await send(client, ip="198.51.100.201")).status == 204
    assert (await counters(client))["today"]["pageviews"] == 6
    assert (await counters(client, "backan"))["today"]["pageviews"] == 1


async def test_forged_forwarded_for_from_an_untrusted_peer_shares_the_peers_bucket(
    make_client, settings, clock
):
    """Rotating X-Forwarded-For from an untrusted peer neither makes new visitors nor escapes
    the peer's rate limit."""
    client = await limited_client(
        make_client, settings, trusted_proxies=(), rate_limit_per_minute=60, rate_limit_burst=5
    )
    statuses = [(await send(client, ip=f"198.51.100.{i}")).status for i in range(20)]
    assert statuses == [204] * 5 + [429] * 15
    assert (await counters(client))["today"] == {"pageviews": 5, "visits": 1, "visitors": 1}
    clock.advance(1)
    assert (await send(client, ip="192.0.2.1")).status == 204


async def test_a_refused_beacon_counts_nowhere(make_client, settings, db):
    client = await limited_client(
        make_client, settings, rate_limit_per_minute=60, rate_limit_burst=1
    )
    assert (await send(client, article="9", title="Tin 9")).status == 204
    for _ in range(5):
        resp = await send(client, article="10", title="Tin 10", query="?counters=1")
        assert resp.status == 429
    assert await rollup_pass(client.server.app, wait=True)
    rows = await db.fetch("SELECT article, views FROM articles ORDER BY article")
    assert [(r["article"], r["views"]) for r in rows] == [("9", 1)]
    days = await db.fetch("SELECT pageviews, visits FROM site_days")
    assert [(r["pageviews"], r["visits"]) for r in days] == [(1, 1)]
    assert await metric(client, "rate_limited") == 5


async def test_the_pixel_is_limited_too_and_still_answers_the_gif(make_client, settings):
    client = await limited_client(
        make_client, settings, rate_limit_per_minute=60, rate_limit_burst=2
    )
    query = "/collect.gif?site=caobang&url=https%3A%2F%2Fcaobang.gov.vn%2F"
    headers = {"User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.9"}
    statuses = []
    for _ in range(3):
        resp = await client.get(query, headers=headers)
        assert (await resp.read()).startswith(b"GIF89a")
        statuses.append((resp.status, resp.headers.get("X-Analytics-Error")))
    assert statuses == [(200, None), (200, None), (429, "rate_limited")]


async def test_limits_can_be_turned_off(make_client, settings):
    client = await limited_client(make_client, settings, rate_limit_per_minute=0)
    for _ in range(100):
        assert (await send(client)).status == 204
    assert (await counters(client))["today"]["pageviews"] == 100


def test_limits_come_from_the_environment():
    s = Settings.from_env(
        {
            "ANALYTICS_RATE_LIMIT_PER_MINUTE": "1200",
            "ANALYTICS_RATE_LIMIT_BURST": "100",
            "ANALYTICS_SITE_RATE_LIMIT_PER_MINUTE": "60000",
        }
    )
    assert (s.rate_limit_per_minute, s.rate_limit_burst) == (1200, 100)
    assert (s.site_rate_limit_per_minute, s.site_rate_limit_burst) == (60000, 0)
    with pytest.raises(SettingsError, match="ANALYTICS_RATE_LIMIT_BURST"):
        Settings.from_env({"ANALYTICS_RATE_LIMIT_BURST": "-1"})
    with pytest.raises(SettingsError, match="ANALYTICS_SITE_RATE_LIMIT_PER_MINUTE"):
        Settings.from_env({"ANALYTICS_SITE_RATE_LIMIT_PER_MINUTE": "many"})


def test_a_limit_without_a_burst_gets_six_seconds_worth():
    """Setting only the per-minute figure must not leave a bucket of 0 (refusing everything)."""
    assert RateLimit(60000, 0).burst == 6000
    assert RateLimit(5, 0).burst == 1
    assert RateLimit(600, 60).burst == 60
    assert RateLimit(0, 0).burst == 0


async def test_a_site_limit_set_without_its_burst_still_counts(make_client, settings):
    client = await limited_client(make_client, settings, site_rate_limit_per_minute=600)
    for i in range(60):
        assert (await send(client, ip=f"198.51.100.{i}")).status == 204
    assert (await send(client, ip="198.51.100.99")).status == 429

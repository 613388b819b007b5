"""Counting semantics end to end: beacon -> Redis -> counters API, with an injected clock."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from datetime import date
from zoneinfo import ZoneInfo

import pytest

from aggregations.counters import MAX_BATCH, ROUTED_BATCH, ArticleCount, Hasher, Hit, Recorded
from aggregations.errors import RateLimited, StorageUnavailable
from aggregations.keys import SiteKeys
from analytics import appkeys as K
from analytics.storage import open_redis
from tests.conftest import add_site, at, send

pytestmark = pytest.mark.cluster


async def counters(client):
    resp = await client.get("/api/v1/sites/caobang/counters")
    assert resp.status == 200
    return await resp.json()


async def views(client, article, site="caobang"):
    resp = await client.get(f"/api/v1/sites/{site}/articles/{article}")
    assert resp.status == 200
    return await resp.json()


async def test_counters_shape(client, clock):
    assert (await send(client)).status == 204
    body = await counters(client)
    assert set(body) == {
        "site", "timezone", "as_of", "online", "today", "yesterday", "this_week",
        "last_week", "this_month", "last_month", "this_year", "total",
    }  # fmt: skip
    assert body["site"] == "caobang"
    assert body["timezone"] == "Asia/Ho_Chi_Minh"
    assert body["as_of"] == "2026-11-27T10:00:00+07:00"
    one = {"pageviews": 1, "visits": 1, "visitors": 1}
    for period in ("today", "this_week", "this_month", "this_year", "total"):
        assert body[period] == one, period
    for period in ("yesterday", "last_week", "last_month"):
        assert body[period] == {"pageviews": 0, "visits": 0, "visitors": 0}


async def test_visit_timeout_29_vs_31_minutes(client, clock):
    await send(client)
    clock.advance(29 * 60)
    await send(client)
    assert (await counters(client))["today"] == {"pageviews": 2, "visits": 1, "visitors": 1}
    clock.advance(31 * 60)
    await send(client)
    assert (await counters(client))["today"] == {"pageviews": 3, "visits": 2, "visitors": 1}


async def test_online_window_299_vs_301_seconds(client, clock):
    await send(client, ip="203.0.113.1")
    clock.advance(2)
    await send(client, ip="203.0.113.2")
    clock.advance(297)  # the first was seen 299 s ago, the second 297 s ago
    assert (await counters(client))["online"] == 2
    clock.advance(2)  # 301 s and 299 s
    assert (await counters(client))["online"] == 1
    clock.advance(2)
    assert (await counters(client))["online"] == 0


async def test_same_visitor_on_two_sites_is_two_visitors(client):
    await add_site(client, "backan", domains=[])
    await send(client, "caobang")
    await send(client, "backan", url="https://backan.gov.vn/")
    for site in ("caobang", "backan"):
        body = await (await client.get(f"/api/v1/sites/{site}/counters")).json()
        assert body["today"] == {"pageviews": 1, "visits": 1, "visitors": 1}


async def test_different_user_agents_at_one_address_are_different_visitors(client):
    await send(client, ua="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
    await send(client)
    assert (await counters(client))["today"]["visitors"] == 2


async def test_midnight_starts_new_visit_and_new_visitor(client, clock):
    clock.set(at("2026-11-27 23:59:00"))
    await send(client)
    clock.set(at("2026-11-28 00:00:30"))  # 90 s later, but a new day
    await send(client)
    body = await counters(client)
    assert body["today"] == {"pageviews": 1, "visits": 1, "visitors": 1}
    assert body["yesterday"] == {"pageviews": 1, "visits": 1, "visitors": 1}
    assert body["this_week"] == {"pageviews": 2, "visits": 2, "visitors": 2}
    assert body["total"]["pageviews"] == 2


async def test_day_salt_is_random_and_gone_after_48_hours(client, clock, settings):
    await send(client)
    redis = open_redis(settings.redis_url)
    keys = SiteKeys(settings.redis_prefix, "caobang")
    day = clock.now()
    try:
        salt_key = keys.salt(date(2026, 11, 27))
        salt = await redis.get(salt_key)
        assert salt is not None
        assert len(salt) == 32
        # 48 h after the day began (at 00:00 on the 27th): 38 h from 10:00 on the 27th
        ttl = await redis.ttl(salt_key)
        assert 38 * 3600 - 5 <= ttl <= 38 * 3600
        assert ttl <= at("2026-11-29 00:00:00") - day
        clock.set(at("2026-11-28 09:00:00"))
        await send(client)
        other = await redis.get(keys.salt(date(2026, 11, 28)))
        assert other is not None
        assert other != salt
    finally:
        await redis.aclose()


def test_visitor_ids_are_the_identity_hashed_under_the_days_salt():
    """`blake2b(identity, key=salt)`, 8 bytes: the scheme the privacy notes describe, whatever
    shortcut the hashing takes (the keyed state is copied, not rebuilt, per id)."""
    salt, other = bytes(range(16)), bytes(range(1, 17))
    ids = Hasher(salt)
    for identity in (b"", b"caobang\x00198.51.100.7\x00Mozilla/5.0", b"x" * 300):
        expected = hashlib.blake2b(identity, key=salt, digest_size=8).hexdigest().encode()
        assert ids(identity) == expected
        assert ids(identity) == expected  # the keyed state is not used up by a copy
        assert Hasher(other)(identity) != expected


async def test_period_boundaries_end_to_end(client, clock):
    clock.set(at("2026-11-29 23:59:59"))  # Sunday, last second of W48 and of the day
    await send(client)
    clock.set(at("2026-11-30 00:00:00"))  # Monday: new day, new week, same month
    await send(client, ip="198.51.100.9")
    body = await counters(client)
    assert body["today"]["pageviews"] == 1
    assert body["yesterday"]["pageviews"] == 1
    assert body["this_week"]["pageviews"] == 1
    assert body["last_week"]["pageviews"] == 1
    assert body["this_month"]["pageviews"] == 2
    clock.set(at("2026-12-01 00:00:00"))
    await send(client, ip="198.51.100.10")
    body = await counters(client)
    assert body["this_month"]["pageviews"] == 1
    assert body["last_month"]["pageviews"] == 2
    assert body["this_week"]["pageviews"] == 2
    clock.set(at("2027-01-01 00:00:00"))
    await send(client, ip="198.51.100.11")
    body = await counters(client)
    assert body["this_year"]["pageviews"] == 1
    assert body["last_month"]["pageviews"] == 1
    assert body["total"]["pageviews"] == 4


async def test_site_time_zone_decides_the_day(client, clock):
    await add_site(client, "berlin", domains=[], timezone="Europe/Berlin")
    clock.set(at("2026-11-27 23:30:00", tz=ZoneInfo("Europe/Berlin")))
    await send(client, "berlin", url="https://example.de/")
    clock.advance(3600)  # 00:30 in Berlin: a new day there
    await send(client, "berlin", url="https://example.de/")
    body = await (await client.get("/api/v1/sites/berlin/counters")).json()
    assert body["timezone"] == "Europe/Berlin"
    assert body["today"]["pageviews"] == 1
    assert body["yesterday"]["pageviews"] == 1


async def test_concurrent_beacons_count_exactly(client):
    """2,000 concurrent beacons from 200 visitors: 2,000 page views, 200 visits, 200 visitors."""
    ips = [f"10.{i // 250}.{i % 250}.1" for i in range(200)]

    async def visitor(ip):
        for _ in range(10):
            resp = await send(client, ip=ip)
            assert resp.status == 204

    await asyncio.gather(*(visitor(ip) for ip in ips))
    body = await counters(client)
    assert body["today"]["pageviews"] == 2000
    assert body["today"]["visits"] == 200
    # unique visitors are a HyperLogLog estimate (0.81 % standard error)
    assert abs(body["today"]["visitors"] - 200) <= 6
    assert body["online"] == 200  # exact: a sorted set of who was seen when


def runs_of(recorder):
    """The sizes of the batches of hits the recorder sends, a run of the counting script each
    (a batch sent again after Redis lost the script counts once)."""
    sent = []
    send_batch = recorder._send

    def counting(batch):
        if not batch.reloaded:
            sent.append(len(batch.hits))
        send_batch(batch)

    recorder._send = counting
    return sent


def hit_at(site, ts, who, article=None, network=None):
    return Hit(
        site=site,
        identity=who.encode(),
        network=(network or who).encode(),
        ts=ts,
        article=article,
        title=f"Bài {article}" if article else None,
    )


async def test_hits_of_one_tick_share_a_run_and_count_as_if_each_ran_alone(
    make_client, settings, clock
):
    """Hits that arrive together go out as one run of the counting script, which judges each in
    arrival order as a run of its own would: visits, per-visit article dedup, the day's article
    cap, rate limits. Only their sum is written at once."""
    limited = dataclasses.replace(
        settings, max_articles_per_day=3, rate_limit_per_minute=60, rate_limit_burst=5
    )
    client = await make_client(settings=limited)
    await add_site(client)
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    runs = runs_of(recorder)
    now = clock.now()
    hits = [hit_at(site, now, "a", "x") for _ in range(3)]  # a reload: x counted once
    hits += [hit_at(site, now, "b", a) for a in ("y", "z", "w", "x")]  # w is the 4th id: capped
    hits += [hit_at(site, now, "c", network="crowded") for _ in range(7)]  # burst 5
    outcomes = await asyncio.gather(*(recorder.record(h) for h in hits), return_exceptions=True)
    assert runs == [len(hits)]
    articles = [o.article if isinstance(o, Recorded) else type(o) for o in outcomes]
    assert articles == [
        *(ArticleCount.COUNTED, ArticleCount.NONE, ArticleCount.NONE),
        *(ArticleCount.COUNTED, ArticleCount.COUNTED, ArticleCount.CAPPED, ArticleCount.COUNTED),
        *[ArticleCount.NONE] * 5,
        *[RateLimited] * 2,
    ]
    assert [o.new_visit for o in outcomes if isinstance(o, Recorded)] == [
        *(True, False, False, True, False, False, False, True),
        *[False] * 4,
    ]
    body = await counters(client)
    assert body["today"] == {"pageviews": 12, "visits": 3, "visitors": 3}
    assert body["total"] == body["today"]
    assert body["online"] == 3
    read = await client.get("/api/v1/sites/caobang/articles?ids=x,y,z,w")
    assert [a["views"] for a in (await read.json())["articles"]] == [2, 1, 1, 0]
    titles = await open_redis(settings.redis_url).hgetall(
        SiteKeys(settings.redis_prefix, "caobang").pending_titles
    )
    assert titles == {b"x": "Bài x".encode(), b"y": "Bài y".encode(), b"z": "Bài z".encode()}


async def test_a_full_tick_is_split_into_runs_of_at_most_max_batch(client, clock):
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    runs = runs_of(recorder)
    size = recorder.max_batch  # MAX_BATCH, or on a Redis Cluster ROUTED_BATCH
    assert size == (MAX_BATCH if client.app[K.PIPE] is not None else ROUTED_BATCH)
    rest = size // 2 + 1
    n = 2 * size + rest
    hits = [hit_at(site, clock.now(), f"v{i}", f"a{i % 7}") for i in range(n)]
    outcomes = await asyncio.gather(*(recorder.record(h) for h in hits))
    assert runs == [size, size, rest]
    assert all(o.new_visit and o.article is ArticleCount.COUNTED for o in outcomes)
    assert (await counters(client))["today"]["pageviews"] == n
    assert (await views(client, "a0"))["views"] == len(range(0, n, 7))


async def salt_made_elsewhere(client, clock):
    """Another process made today's salt in Redis (`"ab" * 16`) while this one holds its own
    (`"cd" * 16`): the recorder, the site and the day."""
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    day = recorder.calendar.at(clock.now(), site.tz).day
    keys = SiteKeys(client.app[K.SETTINGS].redis_prefix, "caobang")
    await open_redis(client.app[K.SETTINGS].redis_url).set(keys.salt(day), "ab" * 16)
    recorder.salts.learn("caobang", day, "cd" * 16)
    return recorder, site, day


async def test_a_run_hashed_with_another_salt_is_hashed_again_and_counted_once(client, clock):
    """Another process made the day's salt first: the whole run is refused unchanged, and every
    hit in it is hashed with the salt Redis holds and sent again, together."""
    recorder, site, day = await salt_made_elsewhere(client, clock)
    runs = runs_of(recorder)
    hits = [hit_at(site, clock.now(), f"v{i}", "1") for i in range(5)]
    outcomes = await asyncio.gather(*(recorder.record(h) for h in hits))
    assert runs == [5, 5]
    assert all(o.new_visit for o in outcomes)
    assert recorder.salts.get("caobang", day) == "ab" * 16
    assert (await counters(client))["today"] == {"pageviews": 5, "visits": 5, "visitors": 5}
    assert (await views(client, "1"))["views"] == 5


async def test_a_run_that_fails_in_this_process_fails_its_hits_not_leaves_them_waiting(
    client, clock, caplog
):
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")

    def broken(batch):
        raise RuntimeError("a bug")

    recorder._pack = broken  # the group commit's path
    recorder._arguments = broken  # a Redis Cluster's
    hits = [hit_at(site, clock.now(), f"b{i}") for i in range(3)]
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(recorder.record(h) for h in hits), return_exceptions=True), 10
    )
    assert all(isinstance(o, StorageUnavailable) for o in outcomes)
    assert "recording a run of 3 hits failed" in caplog.text


async def test_article_counts_once_per_visit(client, clock):
    for _ in range(3):
        await send(client, article="123")
    assert (await views(client, "123")) == {"article": "123", "views": 1, "today": 1}
    await send(client, article="456")
    await send(client, article="123")
    assert (await views(client, "123"))["views"] == 1
    clock.advance(31 * 60)  # a new visit
    await send(client, article="123")
    assert (await views(client, "123"))["views"] == 2
    assert (await counters(client))["today"]["pageviews"] == 6


async def test_article_dedup_none_counts_every_load(make_client, settings):
    client = await make_client(settings=dataclasses.replace(settings, article_dedup=False))
    await add_site(client)
    for _ in range(3):
        await send(client, article="123")
    assert (await views(client, "123"))["views"] == 3


async def test_article_cap_drops_new_ids_but_keeps_counting_old_ones(make_client, settings):
    client = await make_client(settings=dataclasses.replace(settings, max_articles_per_day=2))
    await add_site(client)
    await send(client, article="a1", ip="10.0.0.1")
    await send(client, article="a2", ip="10.0.0.1")
    await send(client, article="a3", ip="10.0.0.1")  # third distinct id today: dropped
    await send(client, article="a1", ip="10.0.0.2")
    assert (await views(client, "a1"))["views"] == 2
    assert (await views(client, "a3"))["views"] == 0
    # the page views themselves still count
    assert (await counters(client))["today"]["pageviews"] == 4
    metrics = await (await client.get("/metrics")).text()
    assert 'analytics_beacons_total{reason="id_cap",result="counted"} 1.0' in metrics


async def test_batched_article_read(client):
    await send(client, article="1", ip="10.0.0.1")
    await send(client, article="2", ip="10.0.0.1")
    await send(client, article="2", ip="10.0.0.2")
    resp = await client.get("/api/v1/sites/caobang/articles?ids=1,2,3")
    assert (await resp.json()) == {
        "articles": [
            {"article": "1", "views": 1, "today": 1},
            {"article": "2", "views": 2, "today": 2},
            {"article": "3", "views": 0, "today": 0},
        ]
    }


async def test_collect_with_counters_returns_numbers_including_this_view(client):
    resp = await send(client, article="123", query="?counters=1")
    assert resp.status == 200
    body = await resp.json()
    assert body["today"]["pageviews"] == 1
    assert body["article"] == {"article": "123", "views": 1, "today": 1}
    assert resp.headers["Cache-Control"] == "no-store"


async def test_period_keys_expire_and_totals_do_not(client, settings):
    await send(client, article="9")
    redis = open_redis(settings.redis_url)
    keys = SiteKeys(settings.redis_prefix, "caobang")
    try:
        found = [k async for k in redis.scan_iter(match=keys.base + "*")]
        assert found
        lifetime = {keys.total, keys.total_visitors, keys.articles_total, keys.pending,
                    keys.pending_titles}  # fmt: skip
        for key in found:
            ttl = await redis.ttl(key)
            name = key.decode()
            if name in lifetime:
                assert ttl == -1, name
            else:
                # -2: gone already (a rate bucket lives seconds of Redis's own clock, and a
                # loaded machine can take that long between the scan and this read)
                assert ttl > 0 or ttl == -2, name
    finally:
        await redis.aclose()

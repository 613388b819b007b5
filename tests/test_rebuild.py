"""Redis loss is survivable: the live counters come back from PostgreSQL, with no double count."""

from __future__ import annotations

import pytest

from analytics import appkeys as K
from tests.conftest import ADMIN_TOKEN, at, send
from tests.rollup_helpers import pending, rollup, stored
from tests.stores import flush_prefix

pytestmark = pytest.mark.cluster

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def beacons(client, n, start=0):
    for i in range(start, start + n):
        assert (await send(client, ip=f"10.2.0.{i}", article=str(i % 3))).status == 204


async def counters(client):
    return await (await client.get("/api/v1/sites/caobang/counters")).json()


async def article(client, a):
    return await (await client.get(f"/api/v1/sites/caobang/articles/{a}")).json()


async def test_counters_come_back_after_redis_loses_everything(client, db, clock, settings):
    clock.set(at("2026-11-20 12:00:00"))  # last week
    await beacons(client, 5)
    await rollup(client.app)
    clock.set(at("2026-11-27 09:00:00"))  # this week
    await beacons(client, 6, start=5)
    await rollup(client.app)
    resp = await client.post(
        "/api/v1/sites/caobang/baseline",
        json={"total": {"pageviews": 1000, "visits": 500}, "articles": {"0": 703}},
        headers=AUTH,
    )
    assert resp.status == 200, await resp.text()
    clock.set(at("2026-11-27 10:00:00"))
    await beacons(client, 4, start=11)  # acknowledged, never rolled up: lost with Redis
    before = await counters(client)
    assert before["total"]["pageviews"] == 1015

    flush_prefix(settings.redis_url, settings.redis_prefix)  # Redis comes back empty
    clock.set(at("2026-11-27 10:05:00"))
    await beacons(client, 2, start=20)
    lost = await counters(client)
    assert lost["total"]["pageviews"] == 2  # until the rebuild

    report = await rollup(client.app)  # rebuilds, then rolls up the two new views
    assert report.rebuilt_sites == 1
    after = await counters(client)
    assert after["total"]["pageviews"] == 1000 + 5 + 6 + 2
    assert after["total"]["visits"] == 500 + 5 + 6 + 2
    assert after["today"]["pageviews"] == 6 + 2
    assert after["this_week"]["pageviews"] == 6 + 2
    assert after["last_week"]["pageviews"] == 5
    assert after["this_month"]["pageviews"] == 13
    assert after["this_year"]["pageviews"] == 13
    # unique visitors merge back from the stored HyperLogLogs (a visitor seen before and after
    # the loss counts twice that day: the loss took the day's salt with it)
    assert 7 <= after["today"]["visitors"] <= 8
    assert 12 <= after["this_month"]["visitors"] <= 13
    # article views: 0 had 4 rolled up (0, 3, 6, 9), + 703 baseline, + 1 after the loss (21)
    assert (await article(client, "0"))["views"] == 4 + 703 + 1
    assert (await article(client, "2"))["views"] == 3 + 1  # 2, 5, 8; then 20
    s = await stored(db)
    assert s["pageviews"] == 13
    assert await pending(client.app) == {}

    # later rollups neither re-add PostgreSQL nor lose the live counts
    await beacons(client, 1, start=30)
    await rollup(client.app)
    final = await counters(client)
    assert final["total"]["pageviews"] == 1014
    assert (await stored(db))["pageviews"] == 14
    top = await (await client.get("/api/v1/sites/caobang/top?period=all&limit=1")).json()
    assert top["articles"][0]["article"] == "0"
    assert top["articles"][0]["views"] == 709  # and 30 viewed it once more


async def test_a_beacon_on_an_unbuilt_site_wakes_the_rollup(client, settings):
    await send(client)
    assert client.app[K.ROLLUP_WAKE].is_set()
    client.app[K.ROLLUP_WAKE].clear()
    await rollup(client.app)
    await send(client)
    assert not client.app[K.ROLLUP_WAKE].is_set()
    flush_prefix(settings.redis_url, settings.redis_prefix)
    await send(client)
    assert client.app[K.ROLLUP_WAKE].is_set()


async def test_rebuild_runs_once_even_if_asked_twice(client, db):
    await beacons(client, 3)
    await rollup(client.app)
    from aggregations.keys import SiteKeys
    from aggregations.rebuild import rebuild_site

    app = client.app
    keys = SiteKeys(app[K.SETTINGS].redis_prefix, "caobang")
    async with app[K.POOL].acquire() as conn:
        again = await rebuild_site(
            app[K.REDIS],
            app[K.SCRIPTS],
            conn,
            keys,
            app[K.SITES].get("caobang"),
            app[K.CLOCK].now(),
            app[K.ROLLUP].calendar,
        )
    assert again is False  # the site was built: nothing added
    assert (await counters(client))["total"]["pageviews"] == 3
    assert not [k async for k in app[K.REDIS].scan_iter(match=keys.base + "rb:*")]

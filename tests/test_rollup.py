"""The exactly-once rollup into PostgreSQL, crashes at every step, and reads across it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date

import pytest

from aggregations.rollup import STEPS, Rollup
from analytics import appkeys as K
from tests.conftest import at, send
from tests.rollup_helpers import Crash, crash_at, pending, rollup, stored

pytestmark = pytest.mark.cluster


async def beacons(client, n, *, start=0, article_every=1):
    for i in range(start, start + n):
        art = str(i % 7) if i % article_every == 0 else None
        resp = await send(client, ip=f"10.1.{i // 200}.{i % 200}", article=art)
        assert resp.status == 204


async def test_rollup_moves_pending_counts_into_postgres(client, db, clock):
    await beacons(client, 20)
    await send(client, ip="10.9.9.9", article="0", title="Tin nóng: lũ quét ở Cao Bằng")
    before = await (await client.get("/api/v1/sites/caobang/counters")).json()
    report = await rollup(client.app)
    assert report.batches == 1
    assert report.rows == 8  # 7 article-days and 1 site-day
    s = await stored(db)
    assert s["pageviews"] == 21
    assert s["visits"] == 21
    assert sum(s["articles"].values()) == 21
    assert s["article_days"][("2026-11-27", "0")] == 4
    assert await pending(client.app) == {}
    title = await db.fetchval("SELECT title FROM articles WHERE article = '0'")
    assert title == "Tin nóng: lũ quét ở Cao Bằng"
    day = await db.fetchrow("SELECT visitors, hll FROM site_days WHERE site_id = 'caobang'")
    # what Redis's HyperLogLog said at the rollup (an estimate of the 21 visitors)
    assert day["visitors"] == before["today"]["visitors"]
    assert abs(day["visitors"] - 21) <= 1
    assert day["hll"].startswith(b"HYLL")
    # reads show the same numbers after the rollup: nothing counted twice
    after = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert after == before
    views = await (await client.get("/api/v1/sites/caobang/articles/0")).json()
    assert views["views"] == 4
    # a second rollup with nothing new applies nothing
    report = await rollup(client.app)
    assert report.batches == 0
    assert (await stored(db))["pageviews"] == 21


async def test_rollup_is_additive_across_batches(client, db):
    await beacons(client, 10)
    await rollup(client.app)
    await beacons(client, 10, start=10)
    await rollup(client.app)
    s = await stored(db)
    assert s["pageviews"] == 20
    assert sum(s["articles"].values()) == 20


@pytest.mark.parametrize("step", STEPS)
async def test_crash_at_each_step_neither_loses_nor_double_counts(client, db, step):
    await beacons(client, 30)
    app = client.app
    app[K.ROLLUP].failpoint = crash_at(step)
    with pytest.raises(Crash):
        await rollup(app)
    # views keep coming while the rollup is down
    await beacons(client, 5, start=30)
    app[K.ROLLUP].failpoint = lambda _: None
    await rollup(app)
    s = await stored(db)
    assert s["pageviews"] == 35
    assert sum(s["articles"].values()) == 35
    assert await pending(app) == {}
    reads = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert reads["total"]["pageviews"] == 35


@pytest.mark.parametrize("step", STEPS)
async def test_crash_then_two_concurrent_rollups_apply_once(client, db, step):
    await beacons(client, 40)
    app = client.app
    app[K.ROLLUP].failpoint = crash_at(step)
    with pytest.raises(Crash):
        await rollup(app)
    await beacons(client, 3, start=40)
    app[K.ROLLUP].failpoint = lambda _: None
    other = Rollup(
        app[K.REDIS], app[K.SCRIPTS], app[K.POOL], app[K.SETTINGS].redis_prefix, app[K.CLOCK]
    )
    sites = app[K.SITES].all()
    await asyncio.gather(app[K.ROLLUP].run(sites, wait=10), other.run(sites, wait=10))
    s = await stored(db)
    assert s["pageviews"] == 43
    assert sum(s["articles"].values()) == 43
    assert await pending(app) == {}


async def test_the_ledger_alone_stops_a_double_apply(client, db):
    """Even without the site lock, two rollups applying one batch apply it once."""
    await beacons(client, 12)
    app = client.app
    app[K.ROLLUP].failpoint = crash_at("moved")
    with pytest.raises(Crash):
        await rollup(app)
    keys = app[K.ROLLUP]
    from aggregations.keys import SiteKeys

    sk = SiteKeys(app[K.SETTINGS].redis_prefix, "caobang")
    (batch_id,) = [b.decode() for b in await app[K.REDIS].smembers(sk.batches)]
    site = app[K.SITES].get("caobang")
    keys.failpoint = lambda _: None
    async with app[K.POOL].acquire() as c1, app[K.POOL].acquire() as c2:
        results = await asyncio.gather(
            keys._apply(c1, sk, site, batch_id), keys._apply(c2, sk, site, batch_id)
        )
    assert sorted(results, key=lambda r: r is None) == [results[0] or results[1], None]
    assert (await stored(db))["pageviews"] == 12


async def test_a_move_aside_sent_twice_moves_nothing_the_second_time(client, db):
    """A client that resends the move-aside after losing its reply (redis-py retries a command
    after a connection error) must not RENAME new pending counts over the batch it moved."""
    from aggregations.keys import SiteKeys

    app = client.app
    await rollup(app)  # builds the site's counters
    await beacons(client, 3)
    sk = SiteKeys(app[K.SETTINGS].redis_prefix, "caobang")
    keys = [
        sk.marker, sk.pending, sk.pending_titles, sk.batches, sk.batch("b1"),
        sk.batch_titles("b1"),
    ]  # fmt: skip
    assert await app[K.SCRIPTS].move_aside(keys=keys, args=["b1"]) == [b"b1"]
    await beacons(client, 2, start=3)  # counted after the move, before the resend
    assert await app[K.SCRIPTS].move_aside(keys=keys, args=["b1"]) == [b"b1"]
    moved = await app[K.REDIS].hgetall(sk.batch("b1"))
    assert sum(int(v) for k, v in moved.items() if k.endswith(b"|#pv")) == 3
    assert (await pending(app))["#pv"] == 5  # the batch's 3 and the 2 still pending
    await rollup(app)
    assert (await stored(db))["pageviews"] == 5
    assert await pending(app) == {}


async def test_a_busy_site_is_skipped_not_waited_for(client, db):
    await beacons(client, 5)
    app = client.app
    from aggregations.locks import SiteLock

    async with app[K.POOL].acquire() as conn, SiteLock(conn, "caobang", wait=5):
        report = await rollup(app)
        assert report.skipped_sites == 1
        # waiting is bounded too: a lock held elsewhere never hangs a shutdown's final pass
        report = await rollup(app, wait=0.3)
        assert report.skipped_sites == 1
    assert (await stored(db))["pageviews"] == 0
    assert (await rollup(app)).batches == 1


async def test_yesterdays_pending_counts_land_on_yesterday(client, db, clock):
    clock.set(at("2026-11-27 23:59:00"))
    await beacons(client, 3)
    clock.set(at("2026-11-28 00:01:00"))
    await beacons(client, 2, start=3)
    await rollup(client.app)
    rows = dict(await db.fetch("SELECT day, pageviews FROM site_days"))
    assert rows == {date(2026, 11, 27): 3, date(2026, 11, 28): 2}


async def test_daily_and_top_read_postgres_and_redis_together(client, db, clock):
    clock.set(at("2026-11-20 12:00:00"))
    await beacons(client, 4, article_every=1)
    await rollup(client.app)
    clock.set(at("2026-11-27 12:00:00"))
    await beacons(client, 9, start=4, article_every=1)
    resp = await client.get("/api/v1/sites/caobang/daily?from=2026-11-19&to=2026-11-27")
    days = {d["date"]: d for d in (await resp.json())["days"]}
    assert len(days) == 9
    assert days["2026-11-19"] == {"date": "2026-11-19", "pageviews": 0, "visits": 0, "visitors": 0}
    assert days["2026-11-20"]["pageviews"] == 4  # from PostgreSQL only
    assert days["2026-11-27"]["pageviews"] == 9  # still pending in Redis
    await rollup(client.app)
    resp = await client.get("/api/v1/sites/caobang/daily?from=2026-11-19&to=2026-11-27")
    days = {d["date"]: d for d in (await resp.json())["days"]}
    assert days["2026-11-27"]["pageviews"] == 9  # once, not twice, after the rollup
    top = await (await client.get("/api/v1/sites/caobang/top?period=all&limit=3")).json()
    assert top["period"] == "all"
    assert [a["views"] for a in top["articles"]] == [2, 2, 2]
    month = await (await client.get("/api/v1/sites/caobang/top?period=month")).json()
    assert sum(a["views"] for a in month["articles"]) == 13
    today = await (await client.get("/api/v1/sites/caobang/top?period=today")).json()
    assert sum(a["views"] for a in today["articles"]) == 9


async def test_postgres_unreachable_beacons_go_on_and_nothing_is_lost(
    make_client, settings, stores, db
):
    from tests.conftest import add_site
    from tests.proxy import postgres_proxy

    proxy, dsn = await postgres_proxy(stores.database_url)
    client = await make_client(settings=dataclasses.replace(settings, database_url=dsn))
    await add_site(client)
    await beacons(client, 10)
    await proxy.stop()
    try:
        from analytics.lifecycle import rollup_pass

        assert await rollup_pass(client.app) is False
        await beacons(client, 10, start=10)  # counting goes on
        ready = await client.get("/readyz")
        assert ready.status == 200
        assert await ready.json() == {"status": "degraded", "redis": "ok", "postgres": "down"}
        reads = await (await client.get("/api/v1/sites/caobang/counters")).json()
        assert reads["today"]["pageviews"] == 20
        daily = await client.get("/api/v1/sites/caobang/daily")
        assert daily.status == 503
        metrics = await (await client.get("/metrics")).text()
        assert 'analytics_rollup_runs_total{result="error"} 1.0' in metrics
    finally:
        await proxy.start()
    assert await rollup_pass(client.app) is True
    assert (await client.get("/readyz")).status == 200
    s = await stored(db)
    assert s["pageviews"] == 20
    assert sum(s["articles"].values()) == 20


async def test_a_large_batch_goes_through_copy_and_adds_to_what_is_stored(client, db):
    """Past COPY_THRESHOLD article-days the rollup stages them with COPY and MERGEs them: same
    result, rows outside the batch's days untouched, titles kept."""
    from aggregations.keys import SiteKeys
    from aggregations.rollup import COPY_THRESHOLD
    from analytics import appkeys as K
    from analytics.lifecycle import rollup_pass
    from tests.rollup_helpers import stored

    app = client.app
    assert await rollup_pass(app)  # builds the site's counters
    keys = SiteKeys(app[K.SETTINGS].redis_prefix, "caobang")
    await app[K.REDIS].hset(keys.pending, mapping={"2026-11-10|a0": 5, "2026-11-10|old": 3})
    assert await rollup_pass(app)  # a small batch, on a day before the large ones
    n = COPY_THRESHOLD + 500
    fields = {f"2026-11-{20 + i % 3}|a{i}": 1 + i % 7 for i in range(n)}
    await app[K.REDIS].hset(keys.pending_titles, mapping={"a1": "Tin số 1", "a2": "Tin số 2"})
    for _ in range(2):  # the second pass updates every row the first inserted
        await app[K.REDIS].hset(keys.pending, mapping=fields)
        assert await rollup_pass(app)
    found = await stored(db)
    expected = {tuple(k.split("|")): 2 * v for k, v in fields.items()}
    expected |= {("2026-11-10", "a0"): 5, ("2026-11-10", "old"): 3}
    assert found["article_days"] == expected
    assert sum(found["articles"].values()) == 2 * sum(fields.values()) + 8
    assert found["articles"]["a0"] == 5 + 2 * fields["2026-11-20|a0"]
    titles = dict(await db.fetch("SELECT article, title FROM articles WHERE title IS NOT NULL"))
    assert titles == {"a1": "Tin số 1", "a2": "Tin số 2"}  # the second pass had none: kept


async def test_two_large_batches_applied_at_once_without_the_lock_count_once_each(client, db):
    """The MERGE of a large batch is not safe against a concurrent insert of the same rows: two
    rollups that bypass the site lock make the second fail (rolled back, its batch left in
    flight) or wait and update. Either way the next pass leaves every view counted once."""
    import asyncpg

    from aggregations.keys import SiteKeys
    from aggregations.rollup import COPY_THRESHOLD

    app = client.app
    await rollup(app)  # builds the site's counters
    sk = SiteKeys(app[K.SETTINGS].redis_prefix, "caobang")
    fields = {f"2026-11-27|n{i}": 1 + i % 5 for i in range(COPY_THRESHOLD + 200)}
    app[K.ROLLUP].failpoint = crash_at("moved")
    for _ in range(2):  # two batches in flight, of the same new article-days
        await app[K.REDIS].hset(sk.pending, mapping=fields)
        with pytest.raises(Crash):
            await rollup(app)
    app[K.ROLLUP].failpoint = lambda _: None
    batch_ids = [b.decode() for b in await app[K.REDIS].smembers(sk.batches)]
    assert len(batch_ids) == 2
    site = app[K.SITES].get("caobang")
    async with app[K.POOL].acquire() as c1, app[K.POOL].acquire() as c2:
        results = await asyncio.gather(
            app[K.ROLLUP]._apply(c1, sk, site, batch_ids[0]),
            app[K.ROLLUP]._apply(c2, sk, site, batch_ids[1]),
            return_exceptions=True,
        )
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, asyncpg.UniqueViolationError) for r in failed), results
    await rollup(app)
    assert await pending(app) == {}
    found = await stored(db)
    assert found["article_days"] == {tuple(k.split("|")): 2 * v for k, v in fields.items()}
    assert sum(found["articles"].values()) == 2 * sum(fields.values())


async def test_nothing_is_applied_before_the_replicas_have_the_move_aside(client, db):
    """A batch is applied only once its move-aside is on the replicas: asked for more replicas
    than exist, the rollup leaves it in Redis; the next pass applies it with the new one."""
    await beacons(client, 6)
    app = client.app
    strict = Rollup(
        app[K.REDIS], app[K.SCRIPTS], app[K.POOL], app[K.SETTINGS].redis_prefix, app[K.CLOCK],
        min_replicas=5, replica_wait_ms=50,
    )  # fmt: skip
    report = await strict.run(app[K.SITES].all())
    assert report.unreplicated_sites == 1
    assert report.batches == 0
    assert (await stored(db))["pageviews"] == 0
    assert (await pending(app))["#pv"] == 6  # moved aside, still in Redis
    await beacons(client, 2, start=6)
    report = await rollup(app)  # every connected replica (none, or the cluster's one)
    assert report.unreplicated_sites == 0
    assert report.batches == 2  # the batch left in flight, and the new one
    assert (await stored(db))["pageviews"] == 8
    assert await pending(app) == {}

"""Health, readiness, and what happens when Redis is down or full."""

from __future__ import annotations

import dataclasses

import pytest
from redis import Redis
from redis.exceptions import ResponseError

from tests.conftest import add_site, send
from tests.processes import free_port, own_redis
from tests.rollup_helpers import pending, rollup, stored


async def test_healthz_and_readyz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ready", "redis": "ok", "postgres": "ok"}


async def test_redis_down_is_unready_and_beacons_answer_503(make_client, settings):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = await make_client(settings=dataclasses.replace(settings, redis_url=dead))
    await add_site(client)
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert await resp.json() == {"status": "unready", "redis": "down", "postgres": "ok"}
    resp = await send(client)
    assert resp.status == 503
    assert (await resp.json())["error"] == "storage_unavailable"
    resp = await client.get("/api/v1/sites/caobang/counters")
    assert resp.status == 503
    metrics = await (await client.get("/metrics")).text()
    assert 'analytics_beacons_total{reason="storage_error",result="dropped"} 1.0' in metrics


@pytest.fixture
def small_redis(tmp_path):
    """A Redis of our own that fills up at 3 MB and then refuses writes (noeviction)."""
    with own_redis(tmp_path, "3mb") as url:
        yield url


async def test_full_redis_answers_503_and_keeps_pending_counts(
    make_client, settings, db, small_redis
):
    client = await make_client(settings=dataclasses.replace(settings, redis_url=small_redis))
    await add_site(client)
    for i in range(5):
        assert (await send(client, ip=f"10.4.0.{i}", article="a")).status == 204
    # fill the rest of Redis with someone else's data
    filler = Redis.from_url(small_redis)

    def fill() -> None:
        for i in range(10_000):
            filler.set(f"filler:{i}", "x" * 1024)

    with pytest.raises(ResponseError, match="maxmemory"):
        fill()
    resp = await send(client, ip="10.4.0.99", article="a")
    assert resp.status == 503
    assert (await resp.json())["error"] == "storage_unavailable"
    # nothing acknowledged was lost: the pending counts are all there and roll up
    assert (await pending(client.app))["#pv"] == 5
    for key in filler.scan_iter("filler:*", count=1000):
        filler.delete(key)
    await rollup(client.app)
    s = await stored(db)
    assert s["pageviews"] == 5
    assert s["articles"] == {"a": 5}
    assert (await send(client, ip="10.4.0.100")).status == 204
    filler.close()

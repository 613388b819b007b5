"""Rollup leadership: one holder of the leader lock at a time, taken over when the holder goes;
a process that does not lead still flushes what it accepted when it stops."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry

from analytics.app import create_app
from analytics.leader import Leadership
from analytics.lifecycle import leads
from tests.conftest import add_site, send
from tests.processes import free_port
from tests.rollup_helpers import stored


async def test_one_leader_at_a_time_and_a_takeover(stores, db):
    first, second = Leadership(stores.database_url), Leadership(stores.database_url)
    try:
        assert await first.ensure() is True
        assert await first.ensure() is True  # still held: same session
        assert await second.ensure() is False
        await first.release()
        assert await second.ensure() is True
        assert await first.ensure() is False
    finally:
        await first.release()
        await second.release()


async def test_unreachable_postgres_means_not_leading_and_is_counted(settings, db):
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    assert await leads(app, Leadership(dead)) is False
    assert (
        registry.get_sample_value("analytics_postgres_errors_total", {"operation": "leader"}) == 1
    )


async def test_a_process_that_does_not_lead_flushes_its_beacons_when_it_stops(
    aiohttp_client, settings, clock, stores, db
):
    holder = Leadership(stores.database_url)
    assert await holder.ensure() is True  # another instance leads
    try:
        settings = dataclasses.replace(settings, rollup_enabled=True, rollup_interval=3600)
        app = create_app(settings, clock=clock, registry=CollectorRegistry())
        client = await aiohttp_client(app)
        await add_site(client)
        for i in range(5):
            assert (await send(client, ip=f"203.0.113.{i + 1}", article="a")).status == 204
        await client.close()  # the app's shutdown: the final rollup, leader or not
    finally:
        await holder.release()
    s = await stored(db)
    assert s["pageviews"] == 5
    assert s["articles"] == {"a": 5}


async def test_a_process_that_does_not_lead_rebuilds_a_site_it_finds_unbuilt(
    aiohttp_client, settings, clock, stores, db
):
    """After Redis loses a site's data, the first beacon anywhere brings the rebuild at once,
    not at the leader's next tick."""
    import asyncio

    from tests.rollup_helpers import rollup
    from tests.stores import flush_prefix

    holder = Leadership(stores.database_url)
    assert await holder.ensure() is True  # another instance leads, with an hourly tick
    try:
        settings = dataclasses.replace(settings, rollup_enabled=True, rollup_interval=3600)
        client = await aiohttp_client(
            create_app(settings, clock=clock, registry=CollectorRegistry())
        )
        await add_site(client)
        for i in range(3):
            assert (await send(client, ip=f"203.0.113.{i + 1}")).status == 204
        await rollup(client.app, wait=10)  # the process's own loop may be rolling up too
        assert (await stored(db))["pageviews"] == 3
        flush_prefix(settings.redis_url, settings.redis_prefix)
        assert (await send(client, ip="203.0.113.9")).status == 204
        total = 0
        for _ in range(200):
            body = await (await client.get("/api/v1/sites/caobang/counters")).json()
            total = body["total"]["pageviews"]
            if total == 4:
                break
            await asyncio.sleep(0.05)
        assert total == 4
        await client.close()
    finally:
        await holder.release()

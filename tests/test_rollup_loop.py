"""The rollup inside the service: on a timer, surviving failures, and once more at shutdown."""

from __future__ import annotations

import asyncio
import dataclasses

from tests.conftest import add_site, send
from tests.proxy import postgres_proxy
from tests.rollup_helpers import stored


async def wait_for(predicate, tries=400):
    """Poll `predicate` every 50 ms; a condition never met fails the test (after 20 s)."""
    for _ in range(tries):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never met")


async def runs(client, result):
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f'analytics_rollup_runs_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_the_loop_survives_postgres_outages_and_catches_up(make_client, settings, stores, db):
    proxy, dsn = await postgres_proxy(stores.database_url)
    client = await make_client(
        settings=dataclasses.replace(
            settings, database_url=dsn, rollup_enabled=True, rollup_interval=0.1
        )
    )
    await add_site(client)
    for i in range(5):
        assert (await send(client, ip=f"10.5.0.{i}", article="x")).status == 204

    async def applied(n):
        return (await stored(db))["pageviews"] == n

    await wait_for(lambda: applied(5))
    await proxy.stop()
    for i in range(5, 9):
        assert (await send(client, ip=f"10.5.0.{i}", article="x")).status == 204
    errors_before = await runs(client, "error")

    async def failed_twice():
        return await runs(client, "error") >= errors_before + 2

    await wait_for(failed_twice)
    assert (await stored(db))["pageviews"] == 5
    await proxy.start()
    await wait_for(lambda: applied(9))
    assert (await stored(db))["articles"] == {"x": 9}


async def test_shutdown_runs_a_final_rollup(make_client, settings, db):
    client = await make_client(
        settings=dataclasses.replace(settings, rollup_enabled=True, rollup_interval=3600)
    )
    await add_site(client)

    for i in range(3):
        assert (await send(client, ip=f"10.6.0.{i}")).status == 204
    await client.close()  # runs the app's cleanup: the loop stops, then one last pass
    assert (await stored(db))["pageviews"] == 3

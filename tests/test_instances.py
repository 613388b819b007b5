"""Several service instances (separate `analytics serve` processes, each on its own port, as on
separate machines) against one real Redis Cluster and one PostgreSQL: counts exact, online-now
shared, each rollup batch applied exactly once (by the leader's timed rollup, `rollup --once`
beside it, or each instance's last rollup on shutdown), rate limits shared."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.load import Beacon, Tally, add_sites, ip_of, noon_zone, send, services_env
from tests.processes import Service, run_cli
from tests.stores import Stores

# their hash tags fall on all three primaries of the test cluster (slots 8576, 15154, 4710, 12902)
SITES = ("caobang", "backan", "hanoi", "langson")


@pytest.fixture
def instances(
    request: pytest.FixtureRequest, stores: Stores, redis_url: str, prefix: str, db: Any,
    tmp_path: Path,
) -> Iterator[list[Service]]:  # fmt: skip
    extra = getattr(request, "param", {})
    env = services_env(stores, redis_url, prefix, **extra)
    started: list[Service] = []
    try:
        for n in range(2):
            service = Service(env, tmp_path / f"instance-{n}.log")
            service.start()
            started.append(service)
        yield started
    finally:
        for service in started:
            if service.process is not None and service.process.poll() is None:
                service.stop()


def counters(service: Service, site: str) -> dict[str, Any]:
    status, body = service.request("GET", f"/api/v1/sites/{site}/counters")
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    data.pop("as_of")
    return data


def batches_logged(log: str) -> int:
    return sum(int(n) for n in re.findall(r"rollup: (\d+) batch\(es\)", log))


@pytest.mark.parametrize("redis_url", ["cluster"], indirect=True)
async def test_two_instances_count_10000_beacons_exactly(instances, db):
    add_sites(instances, SITES, noon_zone())
    # 500 visitors (one address each), each on one site, 20 page views each; every third
    # view is of one of 13 articles
    beacons = [
        Beacon(SITES[i % 4], ip_of(i % 500), str(i % 13) if i % 3 == 0 else None)
        for i in range(10_000)
    ]
    # the leader's timed rollup (every second) and two `analytics rollup --once` besides it,
    # all while the beacons arrive
    rollups = [
        asyncio.create_task(asyncio.to_thread(run_cli, "rollup", "--once", env=instances[0].env))
        for _ in range(2)
    ]
    tally = await send([s.url for s in instances], beacons, concurrency=48)
    rollups_done = await asyncio.gather(*rollups)
    for done in rollups_done:
        assert done.returncode == 0, done.stderr
    assert tally.refused == {}, tally.refused
    assert tally.total == 10_000
    assert tally.by_instance == {0: 5000, 1: 5000}

    for site in SITES:
        seen = [counters(s, site) for s in instances]
        assert seen[0] == seen[1]  # one set of counters, whichever instance answers
        body = seen[0]
        assert body["today"]["pageviews"] == body["total"]["pageviews"] == 2500
        assert body["today"]["visits"] == 125  # 125 visitors, each one visit
        assert body["online"] == 125  # exact: a sorted set shared by both instances
        assert abs(body["today"]["visitors"] - 125) <= 4  # HyperLogLog, 0.81 % error

    for service in instances:
        assert service.stop() == 0, service.output()  # each ends with a final rollup
    rows = await db.fetch(
        "SELECT site_id, sum(pageviews)::bigint AS pv FROM site_days GROUP BY site_id"
    )
    assert {r["site_id"]: r["pv"] for r in rows} == dict.fromkeys(SITES, 2500)
    articles = await db.fetch("SELECT site_id, article, views FROM articles")
    assert {(r["site_id"], r["article"]): r["views"] for r in articles} == dict(tally.articles)
    # no batch was applied twice or lost: PostgreSQL holds exactly what was acknowledged, and
    # the ledger's key admits each batch id once. The batches each process reports having
    # applied add up to at most the ledger (a pass cut short by shutdown may apply some without
    # logging them)
    ledger = await db.fetchval("SELECT count(*) FROM rollup_batches")
    logged = [batches_logged(s.output()) for s in instances]
    logged += [batches_logged(done.stderr) for done in rollups_done]
    assert 0 < sum(logged) <= ledger, logged


@pytest.mark.parametrize(
    ("redis_url", "instances"),
    [("cluster", {"ANALYTICS_RATE_LIMIT_PER_MINUTE": "60", "ANALYTICS_RATE_LIMIT_BURST": "30"})],
    indirect=True,
)
async def test_rate_limits_are_shared_between_instances(instances):
    """One address, 80 beacons alternating between the two instances: the bucket (30, refilled
    one a second) is the cluster's, not each instance's, so about 30 pass, not 60."""
    add_sites(instances, SITES[:1], noon_zone())
    tally = Tally()
    started = time.monotonic()
    for i in range(80):
        await send([instances[i % 2].url], [Beacon(SITES[0], "198.51.100.7")], tally=tally)
    elapsed = time.monotonic() - started
    refused = {status: n for (_, status), n in tally.refused.items()}
    assert set(refused) == {429}
    assert tally.total + refused[429] == 80
    # the bucket starts full (30) and gains one a second: per-instance buckets would pass 60
    assert 30 <= tally.total <= 30 + int(elapsed) + 1
    assert tally.total < 60, f"{tally.total} passed in {elapsed:.1f} s"

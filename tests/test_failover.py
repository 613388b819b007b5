"""A Redis Cluster primary killed (SIGKILL) under load, its replica promoted, and then the same
shard losing everything: what is lost, and that the totals stay sane throughout.

Redis replicates asynchronously: a primary acknowledges a write before its replica has it, so a
failover can lose the last acknowledged writes. Per site, at every checkpoint:

    PostgreSQL's applied record  <=  live total in Redis  <=  acknowledged + unanswered

(unanswered: beacons whose request failed in flight, which may or may not have been counted).
A site on a shard that never failed loses nothing. After the shard loses all its data, the rebuild
adds PostgreSQL's record back, and once the last rollup has run, Redis and PostgreSQL agree.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from aggregations.keys import SiteKeys
from tests.cluster import LocalCluster, Node, wait_until
from tests.load import Beacon, Tally, add_sites, ip_of, noon_zone, send, services_env
from tests.processes import Service
from tests.stores import Stores, sync_redis

# one site on each primary of the cluster: the middle one's shard fails
SITES = ("hanoi", "caobang", "backan")
VICTIM = "caobang"
CONCURRENCY = 16


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own: it kills nodes."""
    cluster = LocalCluster(tmp_path / "cluster").start()
    try:
        yield cluster
    finally:
        cluster.stop()


def beacon_stream() -> Iterator[Beacon]:
    i = 0
    while True:
        yield Beacon(SITES[i % 3], ip_of(i % 900), str(i % 7) if i % 2 == 0 else None)
        i += 1


async def until(what: str, check: Callable[[], bool], limit: float = 120) -> None:
    """Wait for `check` (a liveness guard, not a timing assertion)."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {limit:.0f} s")
        await asyncio.sleep(0.05)


async def applied(db: Any) -> dict[str, int]:
    rows = await db.fetch("SELECT site_id, sum(pageviews)::bigint AS pv FROM site_days GROUP BY 1")
    return {s: 0 for s in SITES} | {r["site_id"]: r["pv"] for r in rows}


def live_totals(url: str, prefix: str) -> dict[str, int]:
    """Each site's lifetime page views as Redis holds them now (read straight from the cluster)."""
    client = sync_redis(url)
    try:
        return {s: int(client.hget(SiteKeys(prefix, s).total, "pv") or 0) for s in SITES}
    finally:
        client.close()


def unanswered(tally: Tally, site: str) -> int:
    return sum(n for (s, status), n in tally.refused.items() if s == site)


def check_sane(stage: str, tally: Tally, live: dict[str, int], pg: dict[str, int]) -> None:
    for site in SITES:
        assert pg[site] <= live[site], f"{stage}: {site} PostgreSQL {pg[site]} > live {live[site]}"
        ceiling = tally.accepted[site] + unanswered(tally, site)
        assert live[site] <= ceiling, f"{stage}: {site} live {live[site]} > {ceiling}"
        if site != VICTIM:  # its shard never failed: nothing acknowledged is lost
            assert live[site] >= tally.accepted[site], f"{stage}: {site} lost counts"


def rebuilds(service: Service) -> int:
    _, body = service.request("GET", "/metrics")
    found = re.search(rb"^analytics_rollup_rebuilds_total (\S+)$", body, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def pause(node: Node) -> None:
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGSTOP)


def resume(node: Node) -> None:
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGCONT)


class Load:
    """Beacons streaming to the service in the background until stopped."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.stopping = False
        self.task = asyncio.create_task(
            send([url], beacon_stream(), concurrency=CONCURRENCY, tally=tally,
                 stop=lambda: self.stopping)
        )  # fmt: skip

    async def stop(self) -> None:
        self.stopping = True
        await self.task


async def test_primary_killed_under_load_then_shard_lost(own_cluster, stores: Stores, db, tmp_path):
    prefix = f"t{stores.run_id}failover"  # the cluster goes with the test
    env = services_env(
        stores, own_cluster.url, prefix,
        ANALYTICS_RATE_LIMIT_PER_MINUTE="0",
        ANALYTICS_ROLLUP_MIN_REPLICAS="1",  # one replica per primary here
    )  # fmt: skip
    service = Service(env, tmp_path / "service.log")
    service.start()
    report: dict[str, Any] = {}
    tally = Tally()
    try:
        add_sites([service], SITES, noon_zone())
        victim = own_cluster.primary_for(SiteKeys(prefix, VICTIM).total)
        (replica,) = own_cluster.replicas_of(victim)
        assert all(own_cluster.primary_for(SiteKeys(prefix, s).total) != victim
                   for s in SITES if s != VICTIM)  # fmt: skip

        # 1. under load, the victim's replica falls behind (stopped, its link cut), the primary
        # goes on acknowledging alone, then dies (SIGKILL); the stale replica takes over
        load = Load(service.url, tally)
        await until("1000 beacons on the victim", lambda: tally.accepted[VICTIM] >= 1000)
        pause(replica)
        acked_at_pause = tally.accepted[VICTIM]
        victim.call("CLIENT", "KILL", "TYPE", "replica")
        await until(
            "300 more on the primary alone", lambda: tally.accepted[VICTIM] >= acked_at_pause + 300
        )
        own_cluster.kill(victim)
        acked_at_kill = tally.accepted[VICTIM]
        resume(replica)
        promoted = await asyncio.to_thread(own_cluster.wait_for_takeover, [replica])
        # the dead machine comes back (empty) and rejoins as the new primary's replica
        own_cluster.restart(victim)
        await asyncio.to_thread(wait_until, "the old primary replicating", own_cluster.healthy)
        resumed = tally.accepted[VICTIM]
        await until(
            "counting on the promoted replica", lambda: tally.accepted[VICTIM] >= resumed + 1000
        )
        await load.stop()
        live, pg = live_totals(own_cluster.url, prefix), await applied(db)
        check_sane("after the failover", tally, live, pg)
        lost = tally.accepted[VICTIM] - live[VICTIM]
        # what was lost is at most what the primary acknowledged while its replica lagged
        # (plus requests in flight around the kill)
        assert lost <= acked_at_kill - acked_at_pause + CONCURRENCY
        report["failover"] = {
            "acknowledged": dict(tally.accepted),
            "unanswered": {s: unanswered(tally, s) for s in SITES},
            "live": live,
            "postgres": pg,
            "lost": {s: tally.accepted[s] - live[s] for s in SITES},
            "acknowledged_while_replica_lagged": acked_at_kill - acked_at_pause,
        }

        # 2. the shard loses everything: both its nodes die and come back empty. Rebuilds are
        # counted from before the loss: the timed rollup may rebuild the site (it finds the
        # marker gone) before the shard looks healthy to this test's poll
        rebuilt_before = rebuilds(service)
        for node in (promoted, victim):
            own_cluster.kill(node)
        for node in (promoted, victim):
            own_cluster.restart(node)
        await asyncio.to_thread(wait_until, "the shard serving again", own_cluster.healthy)
        pg_before_rebuild = await applied(db)
        load = Load(service.url, tally)
        await until("a rebuild from PostgreSQL", lambda: rebuilds(service) > rebuilt_before)
        resumed = tally.accepted[VICTIM]
        await until("counting after the rebuild", lambda: tally.accepted[VICTIM] >= resumed + 500)
        await load.stop()
        live, pg = live_totals(own_cluster.url, prefix), await applied(db)
        check_sane("after the rebuild", tally, live, pg)
        # the rebuild brought back at least PostgreSQL's record from before the loss
        assert live[VICTIM] >= pg_before_rebuild[VICTIM]
        report["shard_lost"] = {
            "postgres_before_rebuild": pg_before_rebuild[VICTIM],
            "live_after_rebuild": live[VICTIM],
            "acknowledged": tally.accepted[VICTIM],
        }
    finally:
        assert service.stop() == 0, service.output()  # with a final rollup

    # 3. at rest: every pending count rolled up, Redis and PostgreSQL agree, site by site
    live, pg = live_totals(own_cluster.url, prefix), await applied(db)
    check_sane("at rest", tally, live, pg)
    assert pg == live
    report["at_rest"] = {
        "acknowledged": dict(tally.accepted),
        "unanswered": {s: unanswered(tally, s) for s in SITES},
        "postgres": pg,
        "lost": {s: tally.accepted[s] - pg[s] for s in SITES},
    }
    print("failover report:", json.dumps(report))


async def test_a_sites_slot_migrates_to_another_primary_under_load(
    own_cluster, stores: Stores, db, tmp_path
):
    """Resharding while beacons arrive: the slot of a site moves, key batch by key batch, to
    another primary (the client meanwhile gets ASK and TRYAGAIN, and the site some 503s). Nothing
    acknowledged is lost, nothing counts twice, sites on other slots see no error, and afterwards
    Redis and PostgreSQL agree."""
    prefix = f"t{stores.run_id}migrate"
    env = services_env(
        stores, own_cluster.url, prefix,
        ANALYTICS_RATE_LIMIT_PER_MINUTE="0", ANALYTICS_ROLLUP_MIN_REPLICAS="1",
    )  # fmt: skip
    service = Service(env, tmp_path / "service.log")
    service.start()
    tally = Tally()
    try:
        add_sites([service], SITES, noon_zone())
        key = SiteKeys(prefix, VICTIM).total
        source = own_cluster.primary_for(key)
        target = own_cluster.primary_for(SiteKeys(prefix, "hanoi").total)
        assert source != target
        load = Load(service.url, tally)
        await until("500 beacons on the site", lambda: tally.accepted[VICTIM] >= 500)
        # a few keys at a time, a pause between: beacons meet the slot half-moved
        moved = await asyncio.to_thread(
            own_cluster.migrate_slot, key_slot(key.encode()), source, target, 2, 0.1
        )
        resumed = tally.accepted[VICTIM]
        await until("counting on the new primary", lambda: tally.accepted[VICTIM] >= resumed + 500)
        await load.stop()
        assert moved > 0
        assert own_cluster.primary_for(key) == target
        live, pg = live_totals(own_cluster.url, prefix), await applied(db)
        for site in SITES:
            assert pg[site] <= live[site]
            ceiling = tally.accepted[site] + unanswered(tally, site)
            assert tally.accepted[site] <= live[site] <= ceiling, site
            if site != VICTIM:  # a slot moving elsewhere costs these sites nothing
                assert unanswered(tally, site) == 0, site
    finally:
        assert service.stop() == 0, service.output()
    live, pg = live_totals(own_cluster.url, prefix), await applied(db)
    assert pg == live
    print(
        "migration report:",
        json.dumps({"keys_moved": moved, "acknowledged": dict(tally.accepted), "postgres": pg,
                    "unanswered": {s: unanswered(tally, s) for s in SITES}}),
    )  # fmt: skip

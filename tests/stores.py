"""Where the tests' Redis and PostgreSQL come from: the environment, the machine's own servers
when their ports answer, or the embedded ones started for the run. Each run gets its own database
and its own Redis key prefix, and removes them when it ends.

Redis Cluster: `ANALYTICS_TEST_REDIS_URL` may be a `redis+cluster://` URL, and
`ANALYTICS_TEST_REDIS_CLUSTER=1` starts a local cluster (`tests.cluster`) for the whole run. Either
way every test then runs on the cluster; without them, the modules marked `cluster` run on both
(see `conftest`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis
from redis.cluster import ClusterNode, RedisCluster

from analytics.db import migrate
from analytics.embedded import EmbeddedPostgres, EmbeddedRedis, runtime_dir
from analytics.storage import is_cluster_url, parse_cluster_url
from tests.cluster import LocalCluster


def port_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Stores:
    redis_url: str
    database_url: str  # the run's own database
    admin_url: str  # the server's maintenance database, to create and drop it
    run_id: str
    cluster: LocalCluster | None = None  # when this run started one for all its tests


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority, _, _ = rest.partition("/")
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


@contextmanager
def test_stores() -> Iterator[Stores]:
    run_id = uuid.uuid4().hex[:10]
    started: list[EmbeddedRedis | EmbeddedPostgres | LocalCluster] = []
    tmp = Path(tempfile.mkdtemp(prefix="analytics-test-"))
    cluster = None
    try:
        redis_url = os.environ.get("ANALYTICS_TEST_REDIS_URL")
        if not redis_url and cluster_wanted():
            cluster = LocalCluster(tmp / "cluster").start()
            started.append(cluster)
            redis_url = cluster.url
        embedded = embedded_wanted()
        if not redis_url:
            if port_answers("127.0.0.1", 6379) and not embedded:
                redis_url = "redis://127.0.0.1:6379/0"
            else:
                server = EmbeddedRedis(tmp)
                redis_url = server.start()
                started.append(server)
        admin_url = os.environ.get("ANALYTICS_TEST_DATABASE_URL")
        if not admin_url:
            if port_answers("127.0.0.1", 5432) and not embedded:
                admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
            else:
                runtime_dir()
                pg = EmbeddedPostgres(tmp)
                admin_url = pg.start()
                started.append(pg)
        database = f"analytics_test_{run_id}"
        asyncio.run(_create_database(admin_url, database))
        stores = Stores(redis_url, with_database(admin_url, database), admin_url, run_id, cluster)
        try:
            yield stores
        finally:
            asyncio.run(_drop_database(admin_url, database))
            flush_prefix(redis_url, f"t{run_id}")
    finally:
        for server in reversed(started):
            server.stop()
        shutil.rmtree(tmp / "cluster", ignore_errors=True)


def embedded_wanted() -> bool:
    """ANALYTICS_TEST_EMBEDDED=1: the embedded stores even where the machine has its own (to
    check, on this machine, what a machine with neither would run)."""
    return os.environ.get("ANALYTICS_TEST_EMBEDDED", "").lower() in ("1", "true", "yes")


def cluster_wanted() -> bool:
    return os.environ.get("ANALYTICS_TEST_REDIS_CLUSTER", "").lower() in ("1", "true", "yes")


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(admin_url, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def sync_redis(url: str) -> redis.Redis | RedisCluster:
    """A blocking client for `url`, a single server or a cluster, for set-up and clean-up."""
    if is_cluster_url(url):
        seeds = [ClusterNode(h, p) for h, p in parse_cluster_url(url).seeds]
        return RedisCluster(startup_nodes=seeds)
    return redis.Redis.from_url(url)


def flush_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under `prefix` (this run's, never anyone else's), on every primary."""
    client = sync_redis(redis_url)
    try:
        deleted = 0
        batch = []
        # a cluster client scans every primary and splits DEL by slot
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.delete(*batch)
                batch.clear()
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()

"""The bench's own database and Redis key prefix on the machine's servers, removed afterwards."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import asyncpg
import redis

from analytics.db import migrate

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Stores:
    redis_url: str
    database_url: str
    prefix: str


def with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.partition("/")[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


async def _create(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(with_database(ADMIN_URL, name))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def flush_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under `prefix:` (the bench's own, never anyone else's)."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=5000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


def names(tag: str) -> tuple[str, str]:
    """A fresh database name and Redis key prefix."""
    run = uuid.uuid4().hex[:8]
    return f"analytics_{tag}_{run}", f"{tag}{run}"


@contextmanager
def bench_stores(tag: str = "bench") -> Iterator[Stores]:
    name, prefix = names(tag)
    asyncio.run(_create(name))
    try:
        yield Stores(REDIS_URL, with_database(ADMIN_URL, name), prefix)
    finally:
        asyncio.run(_drop(name))
        flush_prefix(REDIS_URL, prefix)


@asynccontextmanager
async def async_bench_stores(tag: str = "bench") -> AsyncIterator[Stores]:
    name, prefix = names(tag)
    await _create(name)
    try:
        yield Stores(REDIS_URL, with_database(ADMIN_URL, name), prefix)
    finally:
        await _drop(name)
        await asyncio.to_thread(flush_prefix, REDIS_URL, prefix)

"""`python -m bench.rollup`: time one rollup of N pending article-day counts (default 1 000 000).

Fills a site's pending hash the way `lua/record.lua` does ("YYYY-MM-DD|<article>" -> count,
"YYYY-MM-DD|#pv" / "#visits"; titles in the pending titles hash), spread over a few days, then
times one `Rollup.run` and prints rows a second, the share of that time spent waiting on
PostgreSQL (every call on the rollup's connection, commit included), and the Redis memory a
pending article-day takes. Checks that PostgreSQL got every view. The baseline, measured in the
same run: PostgreSQL alone writing the same article-days into an empty table of the same shape.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import asyncpg
from redis.asyncio import Redis

from aggregations.clock import SystemClock
from aggregations.keys import SiteKeys
from aggregations.rollup import Rollup
from aggregations.scripts import Scripts
from aggregations.sites import make_site, save_site
from bench.stores import async_bench_stores

SITE = "rollup"
CHUNK = 20_000


class Stopwatch:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.parts: dict[str, float] = {}

    async def timed(self, call: Awaitable[Any], label: str = "other") -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            spent = time.perf_counter() - started
            self.seconds += spent
            self.parts[label] = self.parts.get(label, 0.0) + spent


def label_of(name: str, args: tuple[Any, ...]) -> str:
    """What a call did, for the breakdown: the method, or the statement's target table."""
    if name == "copy_records_to_table":
        return "COPY " + str(args[0])
    if args and isinstance(args[0], str):
        words = args[0].split()
        if words[:2] == ["INSERT", "INTO"]:
            return "upsert " + words[2]
        if words[:2] == ["MERGE", "INTO"]:
            return "merge " + words[2]
        return " ".join(words[:2])
    return name


class TimedTransaction:
    def __init__(self, inner: Any, watch: Stopwatch) -> None:
        self.inner = inner
        self.watch = watch

    async def __aenter__(self) -> Any:
        return await self.watch.timed(self.inner.__aenter__(), "BEGIN")

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.watch.timed(self.inner.__aexit__(*exc), "COMMIT")


class TimedConnection:
    """A connection whose every awaited call is added to the stopwatch."""

    def __init__(self, conn: Any, watch: Stopwatch) -> None:
        self.conn = conn
        self.watch = watch

    def transaction(self) -> TimedTransaction:
        return TimedTransaction(self.conn.transaction(), self.watch)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.conn, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return self.watch.timed(result, label_of(name, args))
            return result

        return call


class TimedPool:
    def __init__(self, pool: asyncpg.Pool, watch: Stopwatch) -> None:
        self.pool = pool
        self.watch = watch

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[TimedConnection]:
        async with self.pool.acquire() as conn:
            yield TimedConnection(conn, self.watch)


def pending_fields(rows: int, days: int, today: date) -> tuple[dict[str, int], int]:
    """`rows` article-day counts over `days` days, plus each day's #pv/#visits; total views."""
    per_day = max(1, rows // days)
    fields: dict[str, int] = {}
    views = 0
    for d in range(days):
        label = (today - timedelta(days=d)).isoformat()
        day_views = 0
        for a in range(per_day):
            if len(fields) >= rows + 2 * d:
                break
            count = 1 + (a * 7919 + d) % 50
            fields[f"{label}|{a}"] = count
            day_views += count
        fields[f"{label}|#pv"] = day_views + 1000
        fields[f"{label}|#visits"] = day_views // 2
        views += day_views
    return fields, views


async def fill(redis: Redis, keys: SiteKeys, fields: dict[str, int], articles: int) -> None:
    items = list(fields.items())
    for i in range(0, len(items), CHUNK):
        await redis.hset(keys.pending, mapping=dict(items[i : i + CHUNK]))
    titles = [(str(a), f"Tin tức số {a}: tiêu đề bài viết") for a in range(articles)]
    for i in range(0, len(titles), CHUNK):
        await redis.hset(keys.pending_titles, mapping=dict(titles[i : i + CHUNK]))


async def floor(conn: asyncpg.Connection) -> float:
    """The same-run baseline: seconds PostgreSQL alone takes to write the rolled-up article-days
    again, in key order, into an empty table of the same shape (no client, no Redis, no join)."""
    await conn.execute("CREATE TABLE bench_floor (LIKE article_days INCLUDING ALL)")
    await conn.execute("SET work_mem = '128MB'")  # as the rollup's MERGE has
    started = time.perf_counter()
    await conn.execute(
        "INSERT INTO bench_floor SELECT * FROM article_days ORDER BY site_id, day, article"
    )
    return time.perf_counter() - started


async def run(rows: int, days: int) -> None:
    async with async_bench_stores("rollup") as stores:
        pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=2)
        redis = Redis.from_url(stores.redis_url)
        try:
            async with pool.acquire() as conn:
                await save_site(conn, make_site(SITE, "Rollup bench", ()))
            site = make_site(SITE, "Rollup bench", ())
            watch = Stopwatch()
            rollup = Rollup(
                redis, Scripts(redis), TimedPool(pool, watch), stores.prefix, SystemClock()
            )
            keys = SiteKeys(stores.prefix, SITE)
            await rollup.run([site], wait=True)  # builds the site's counters (empty database)
            today = date.today()
            fields, views = pending_fields(rows, days, today)
            articles = max(1, rows // days)
            await fill(redis, keys, fields, articles)
            used = int(await redis.memory_usage(keys.pending, samples=0) or 0)
            titles_used = int(await redis.memory_usage(keys.pending_titles, samples=0) or 0)
            watch.seconds = 0.0
            started = time.perf_counter()
            report = await rollup.run([site], wait=True)
            seconds = time.perf_counter() - started
            async with pool.acquire() as conn:
                stored_rows, stored_views = await conn.fetchrow(
                    "SELECT count(*), coalesce(sum(views), 0)::bigint FROM article_days"
                    " WHERE site_id = $1",
                    SITE,
                )
                article_rows, article_views, titled = await conn.fetchrow(
                    "SELECT count(*), coalesce(sum(views), 0)::bigint, count(title) FROM articles"
                    " WHERE site_id = $1",
                    SITE,
                )
                floor_seconds = await floor(conn)
        finally:
            await redis.aclose()
            await pool.close()
    ok = stored_rows == len(fields) - 2 * days and stored_views == views
    articles_ok = article_rows == titled == articles and article_views == views
    print(f"rollup of {rows} pending article-day counts ({days} days x {articles} articles):")
    print(
        f"  {report.rows} rows in {seconds:.2f} s: {report.rows / seconds:,.0f} rows/s"
        f" (target >= 100,000); PostgreSQL {100 * watch.seconds / seconds:.0f}% of the time"
        f" ({watch.seconds:.2f} s)"
    )
    print(
        f"  baseline, same run: PostgreSQL copies those article-days into an empty table in"
        f" {floor_seconds:.2f} s ({stored_rows / floor_seconds:,.0f} rows/s); rollup / that:"
        f" {floor_seconds / seconds:.2f}"
    )
    parts = sorted(watch.parts.items(), key=lambda kv: -kv[1])
    print("  PostgreSQL time: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts if v >= 0.005))
    print(
        f"  PostgreSQL holds {stored_rows} article-days, {stored_views} views:"
        f" {'MATCH' if ok else 'MISMATCH'}; {article_rows} articles ({titled} with a title),"
        f" {article_views} views: {'MATCH' if articles_ok else 'MISMATCH'}"
    )
    print(
        f"  Redis memory per pending article-day: {used / len(fields):.0f} B"
        f" (a {len(fields)}-field hash); pending titles {titles_used / articles:.0f} B per article"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.rollup", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="pending article-days (1000000)")
    p.add_argument("--days", type=int, default=10, help="days they spread over (10)")
    args = p.parse_args(argv)
    asyncio.run(run(args.rows, args.days))


if __name__ == "__main__":
    main()

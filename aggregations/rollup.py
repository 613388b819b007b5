"""Rollup: pending counts move from Redis into PostgreSQL, exactly once.

Per site, under a PostgreSQL advisory lock (so two instances take turns; the ledger below would
keep them correct even without it):

1. move aside  - `lua/move_aside.lua` renames the pending hash (and titles) to `batch:<id>` and adds
                 the id to the site's set of batches in flight. Atomic in Redis.
2. read        - each batch in flight is read whole (HGETALL), with HyperLogLog snapshots.
3. apply       - one PostgreSQL transaction inserts the batch id into `rollup_batches` (primary
                 key) and adds the counts, set-based (`unnest` and INSERT ... ON CONFLICT; for
                 large batches COPY and MERGE), in key order: article_days, articles,
                 site_days; HyperLogLogs are replaced by the newer snapshot (a union,
                 idempotent).
                 If the id is already there, the batch was applied before: nothing is written.
4. finish      - `lua/finish_batch.lua` deletes the batch and its id from the set. Atomic.

A crash (or a failpoint) between any two steps:

- before 1: nothing moved; the pending hash keeps growing and is taken next time.
- after 1, before 3 commits: the batch sits in Redis, listed in flight; the next rollup reads and
  applies it. A transaction cut short is rolled back by PostgreSQL: nothing half-applied.
- after 3 commits, before 4: the next rollup finds the batch again, its id is in the ledger, so
  step 3 writes nothing and step 4 removes it. No double count.
- during 4: the script is atomic; either both the batch and its id go, or neither.
- two rollups at once: the lock serializes them per site; without it, the second insert of the
  same id waits for the first transaction and then conflicts, so the batch is applied once.

Loss bound: what Redis acknowledged but lost (not yet on disk, or not yet replicated at a
failover) before step 3 committed it. The live counters lose exactly the same increments.

Before step 1 the site's live counters must be "built" (see `rebuild`): after Redis loses its
data, the rebuild reads PostgreSQL first, and only then may new pending counts reach it.

Between steps 1 and 3, the move-aside must have reached the replicas (`replication`): otherwise a
failover to a replica that never saw it would bring the batch's counts back as pending, to be
applied again. Until they acknowledge, the site's batches wait in Redis for the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from aggregations.clock import Clock
from aggregations.keys import SiteKeys
from aggregations.locks import SiteLock
from aggregations.periods import Calendar, month_label, week_label
from aggregations.readcache import ReadCache
from aggregations.rebuild import rebuild_site
from aggregations.redis_client import RedisClient
from aggregations.replication import WAIT_MS, run_replicated
from aggregations.scripts import Scripts, as_text
from aggregations.sites import Site

log = logging.getLogger("analytics.rollup")

Failpoint = Callable[[str], None]
STEPS = ("moved", "read", "applied", "committed", "finished")


def no_failpoint(step: str) -> None:
    return None


class NotReplicated(Exception):
    """The move-aside did not reach the replicas in time (see `replication`)."""


@dataclass
class Batch:
    """A batch in flight, parsed: (day, article, views) rows, per day [pageviews, visits]."""

    id: str
    article_days: list[tuple[date, str, int]] = field(default_factory=list)
    site_days: dict[date, list[int]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    span: tuple[date, date] | None = None  # the first and last day of any of its counts

    @property
    def rows(self) -> int:
        return len(self.article_days) + len(self.site_days)


@dataclass
class Snapshots:
    """HyperLogLog (count, bytes) per day, and per week / month / year / "total" label."""

    days: dict[date, tuple[int, bytes | None]] = field(default_factory=dict)
    periods: dict[str, tuple[int, bytes]] = field(default_factory=dict)


@dataclass
class RollupReport:
    sites: int = 0
    batches: int = 0
    rows: int = 0
    skipped_sites: int = 0
    rebuilt_sites: int = 0
    duplicate_batches: int = 0
    unreplicated_sites: int = 0  # the move-aside did not reach the replicas: applied later
    seconds: float = 0.0


def parse_batch(batch_id: str, fields: dict[bytes, bytes], titles: dict[bytes, bytes]) -> Batch:
    """The pending hash's fields ("YYYY-MM-DD|<article>", "YYYY-MM-DD|#pv", "…|#visits"), parsed.
    A hash's fields are distinct, so each (day, article) comes once."""
    batch = Batch(batch_id)
    days: dict[bytes, date] = {}
    rows = batch.article_days
    for raw_name, raw_count in fields.items():
        day_text, _, name = raw_name.partition(b"|")
        day = days.get(day_text)
        if day is None:
            day = days[day_text] = date.fromisoformat(day_text.decode())
        if name == b"#pv":
            batch.site_days.setdefault(day, [0, 0])[0] += int(raw_count)
        elif name == b"#visits":
            batch.site_days.setdefault(day, [0, 0])[1] += int(raw_count)
        else:
            rows.append((day, name.decode(), int(raw_count)))
    batch.titles = {k.decode(): v.decode() for k, v in titles.items()}
    if days:
        batch.span = (min(days.values()), max(days.values()))
    return batch


def article_totals(batch: Batch) -> tuple[list[str], list[int], list[str | None], list[date]]:
    """Per article: views summed over the batch's days, its title, the first day it was seen."""
    totals: dict[str, list[Any]] = {}
    for day, article, views in batch.article_days:
        entry = totals.get(article)
        if entry is None:
            totals[article] = [views, day]
        else:
            entry[0] += views
            entry[1] = min(entry[1], day)
    names = list(totals)
    return (
        names,
        [totals[a][0] for a in names],
        [batch.titles.get(a) for a in names],
        [totals[a][1] for a in names],
    )


APPLY_ARTICLE_DAYS = """
INSERT INTO article_days (site_id, day, article, views)
SELECT $1, d, a, v FROM unnest($2::date[], $3::text[], $4::bigint[]) AS u(d, a, v)
ORDER BY d, a COLLATE "C"
ON CONFLICT (site_id, day, article) DO UPDATE SET views = article_days.views + excluded.views
"""
# Large batches: COPY into a temporary table, then one MERGE from it, in key order.
# Measured with bench/rollup.py (1M article-days over 10 days): unnest arrays 36 000 rows/s;
# COPY + INSERT ... ON CONFLICT 47 000; the same in primary-key order 98 000 (the index is then
# written sequentially instead of at random). On a slower machine, the ON CONFLICT upsert took
# 21.5 s of 30 s; MERGE, whose join finds the existing rows in one ordered pass instead of a
# speculative insertion per row, with the sort kept in memory: see the README's figures.
# MERGE is not safe against a concurrent insert of the same key (the statement fails with a
# unique violation); the site's advisory lock keeps rollups of one site apart, and if it did not,
# the failed transaction is rolled back and its batch applied by the next pass, still once.
STAGE_ARTICLE_DAYS = """
CREATE TEMPORARY TABLE IF NOT EXISTS rollup_article_days (
    day date NOT NULL, article text COLLATE "C" NOT NULL, views bigint NOT NULL
) ON COMMIT DELETE ROWS
"""
# the sort of a large batch in memory rather than on disk (only in the rollup's transaction)
STAGE_WORK_MEM = "SET LOCAL work_mem = '128MB'"
# The existing rows are looked for only among the batch's days ($2..$3): the join then reads
# that part of the primary key, however long the site's history.
APPLY_STAGED_ARTICLE_DAYS = """
MERGE INTO article_days AS t
USING (SELECT day, article, views FROM rollup_article_days ORDER BY day, article) AS s
ON t.site_id = $1 AND t.day BETWEEN $2 AND $3 AND t.day = s.day AND t.article = s.article
WHEN MATCHED THEN UPDATE SET views = t.views + s.views
WHEN NOT MATCHED THEN INSERT (site_id, day, article, views) VALUES ($1, s.day, s.article, s.views)
"""
COPY_THRESHOLD = 1000  # below it, one statement with arrays is quicker than three
APPLY_ARTICLES = """
INSERT INTO articles (site_id, article, views, title, first_seen)
SELECT $1, a, v, t, f FROM unnest($2::text[], $3::bigint[], $4::text[], $5::date[]) AS u(a, v, t, f)
ORDER BY a COLLATE "C"
ON CONFLICT (site_id, article) DO UPDATE SET views = articles.views + excluded.views,
    title = coalesce(excluded.title, articles.title)
"""
# the same for a large batch (100 000 new articles: 1.1 s with ON CONFLICT, 0.6 s with MERGE)
MERGE_ARTICLES = """
MERGE INTO articles AS t
USING (SELECT a, v, ti, f FROM unnest($2::text[], $3::bigint[], $4::text[], $5::date[])
       AS u(a, v, ti, f) ORDER BY a COLLATE "C") AS s
ON t.site_id = $1 AND t.article = s.a
WHEN MATCHED THEN UPDATE SET views = t.views + s.v, title = coalesce(s.ti, t.title)
WHEN NOT MATCHED THEN INSERT (site_id, article, views, title, first_seen)
    VALUES ($1, s.a, s.v, s.ti, s.f)
"""
APPLY_SITE_DAYS = """
INSERT INTO site_days (site_id, day, pageviews, visits, visitors, hll)
SELECT $1, d, p, v, u, h
FROM unnest($2::date[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bytea[]) AS x(d, p, v, u, h)
ON CONFLICT (site_id, day) DO UPDATE SET pageviews = site_days.pageviews + excluded.pageviews,
    visits = site_days.visits + excluded.visits,
    visitors = greatest(site_days.visitors, excluded.visitors),
    hll = coalesce(excluded.hll, site_days.hll)
"""
APPLY_PERIOD_VISITORS = """
INSERT INTO period_visitors (site_id, period, visitors, hll)
SELECT $1, p, v, h FROM unnest($2::text[], $3::bigint[], $4::bytea[]) AS x(p, v, h)
ON CONFLICT (site_id, period) DO UPDATE SET visitors = greatest(period_visitors.visitors,
    excluded.visitors), hll = excluded.hll, updated_at = now()
"""


class Rollup:
    """Moves every site's pending counts into PostgreSQL; see the module docstring."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        pool: Any,
        prefix: str,
        clock: Clock,
        *,
        calendar: Calendar | None = None,
        failpoint: Failpoint = no_failpoint,
        min_replicas: int = 0,
        replica_wait_ms: int = WAIT_MS,
        cache: ReadCache | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.pool = pool
        self.prefix = prefix
        self.clock = clock
        self.calendar = calendar or Calendar()
        self.failpoint = failpoint
        self.min_replicas = min_replicas
        self.replica_wait_ms = replica_wait_ms
        self.cache = cache

    async def run(self, sites: Iterable[Site], *, wait: float = 0.0) -> RollupReport:
        """One pass over `sites`. A site another rollup holds is waited for up to `wait`
        seconds, then skipped (its counts stay pending for the next pass)."""
        report = RollupReport()
        started = time.perf_counter()
        for site in sites:
            async with self.pool.acquire() as conn, SiteLock(conn, site.id, wait) as held:
                if not held:
                    report.skipped_sites += 1
                    continue
                await self._site(conn, site, report)
                report.sites += 1
        report.seconds = time.perf_counter() - started
        return report

    async def _site(self, conn: Any, site: Site, report: RollupReport) -> None:
        try:
            await self._site_batches(conn, site, report)
        except NotReplicated as err:
            report.unreplicated_sites += 1
            log.warning("rollup: %s: %s; its batches wait in Redis for the next pass", site.id, err)

    async def _site_batches(self, conn: Any, site: Site, report: RollupReport) -> None:
        keys = SiteKeys(self.prefix, site.id)
        batch_id = uuid.uuid4().hex
        in_flight = await self._move_aside(keys, batch_id)
        if in_flight is None:
            await rebuild_site(
                self.redis, self.scripts, conn, keys, site, self.clock.now(), self.calendar
            )
            report.rebuilt_sites += 1
            if self.cache is not None:
                self.cache.drop(site.id)  # the live counters now hold PostgreSQL's record
            in_flight = await self._move_aside(keys, batch_id)
            if in_flight is None:
                raise RuntimeError(f"site {site.id} is still not built after its rebuild")
        self.failpoint("moved")
        for bid in sorted(in_flight):
            rows = await self._apply(conn, keys, site, bid)
            if rows is None:
                report.duplicate_batches += 1
            else:
                report.batches += 1
                report.rows += rows

    async def _move_aside(self, keys: SiteKeys, batch_id: str) -> list[str] | None:
        """The ids of the batches in flight; None when the site is not built. NotReplicated
        when the move-aside has not reached the replicas (nothing may be applied yet)."""
        done = await run_replicated(
            self.redis,
            self.scripts.move_aside,
            [
                keys.marker,
                keys.pending,
                keys.pending_titles,
                keys.batches,
                keys.batch(batch_id),
                keys.batch_titles(batch_id),
            ],
            [batch_id],
            self.min_replicas,
            self.replica_wait_ms,
        )
        if done.reply is None:  # not built: the script wrote nothing
            return None
        if not done.ok:
            raise NotReplicated(
                f"{done.acknowledged} of {done.wanted} replica(s) acknowledged the move-aside"
                f" in {self.replica_wait_ms} ms"
            )
        return [as_text(x) for x in done.reply]

    async def _apply(self, conn: Any, keys: SiteKeys, site: Site, batch_id: str) -> int | None:
        """Apply one batch; the number of rows, or None when it had been applied already."""
        # One HGETALL: a batch of a million fields (days of a PostgreSQL outage at the article
        # cap) holds Redis for 0.3-0.5 s; HSCAN in pieces would not, but reads 25 % slower.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.batch(batch_id))
            pipe.hgetall(keys.batch_titles(batch_id))
            fields, titles = await pipe.execute()
        # in a thread: a batch of a million fields takes a second to parse, and this event loop
        # is also serving beacons
        batch = await asyncio.to_thread(parse_batch, batch_id, fields, titles)
        snapshots = await self._visitor_snapshots(keys, batch)
        self.failpoint("read")
        async with conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO rollup_batches (id, site_id, rows) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO NOTHING RETURNING true",
                batch_id,
                site.id,
                batch.rows,
            )
            if fresh:
                await self._write(conn, site, batch, snapshots)
            self.failpoint("applied")
        self.failpoint("committed")
        await self.scripts.finish_batch(
            keys=[keys.batches, keys.batch(batch_id), keys.batch_titles(batch_id)],
            args=[batch_id],
        )
        self.failpoint("finished")
        return batch.rows if fresh else None

    async def _visitor_snapshots(self, keys: SiteKeys, batch: Batch) -> Snapshots:
        """HyperLogLog (count, bytes) of each day of the batch and of their week, month, year."""
        days = {day: keys.day_visitors(day) for day in batch.site_days}
        periods: dict[str, str] = {}
        for day in batch.site_days:
            periods[week_label(day)] = keys.week_visitors(week_label(day))
            periods[month_label(day)] = keys.month_visitors(month_label(day))
            periods[str(day.year)] = keys.year_visitors(str(day.year))
        if periods:
            periods["total"] = keys.total_visitors
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in (*days.values(), *periods.values()):
                pipe.execute_command("PFCOUNT", key)  # see redis_client
                pipe.get(key)
            replies = iter(await pipe.execute())
        snapshots = Snapshots()
        for day in days:
            snapshots.days[day] = (int(next(replies)), next(replies))
        for label in periods:
            count, hll = int(next(replies)), next(replies)
            if hll is not None:
                snapshots.periods[label] = (count, hll)
        return snapshots

    async def _write_article_days(self, conn: Any, site: Site, batch: Batch) -> None:
        rows = batch.article_days
        if len(rows) >= COPY_THRESHOLD:
            assert batch.span is not None
            await conn.execute(STAGE_ARTICLE_DAYS)
            await conn.execute(STAGE_WORK_MEM)
            await conn.copy_records_to_table(
                "rollup_article_days", records=rows, columns=("day", "article", "views")
            )
            await conn.execute(APPLY_STAGED_ARTICLE_DAYS, site.id, *batch.span)
        else:
            await conn.execute(
                APPLY_ARTICLE_DAYS,
                site.id,
                [d for d, _, _ in rows],
                [a for _, a, _ in rows],
                [v for _, _, v in rows],
            )

    async def _write(self, conn: Any, site: Site, batch: Batch, snapshots: Snapshots) -> None:
        if batch.article_days:
            # the per-article totals are summed in a thread while PostgreSQL takes the rows
            totals = asyncio.ensure_future(asyncio.to_thread(article_totals, batch))
            try:
                await self._write_article_days(conn, site, batch)
            finally:
                per_article = await totals
            large = len(per_article[0]) >= COPY_THRESHOLD
            await conn.execute(MERGE_ARTICLES if large else APPLY_ARTICLES, site.id, *per_article)
        if batch.site_days:
            days = sorted(batch.site_days)
            await conn.execute(
                APPLY_SITE_DAYS,
                site.id,
                days,
                [batch.site_days[d][0] for d in days],
                [batch.site_days[d][1] for d in days],
                [snapshots.days[d][0] for d in days],
                [snapshots.days[d][1] for d in days],
            )
        if snapshots.periods:
            labels = list(snapshots.periods)
            await conn.execute(
                APPLY_PERIOD_VISITORS,
                site.id,
                labels,
                [snapshots.periods[p][0] for p in labels],
                [snapshots.periods[p][1] for p in labels],
            )

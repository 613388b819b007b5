"""Rebuild: after Redis lost a site's data, add PostgreSQL's durable record back into it.

Redis is the buffer and PostgreSQL the truth. Each site's live counters carry a "built" marker
(no expiry): present, they already include everything PostgreSQL holds. When the marker is gone
(a restart without persistence, a failover to an empty replica, a flush), whatever Redis holds for
the site was counted after the loss and has not reached PostgreSQL: the rollup refuses to move it
until this rebuild has run (see `lua/move_aside.lua`). The rebuild, holding the site's lock so no
rollup or baseline import runs beside it:

1. reads from PostgreSQL the per-period sums (today ... this year, total with the baseline), the
   visitor HyperLogLog snapshots, and the article views of today, this week, this month, lifetime;
2. stages the article sets under scratch keys (in chunks: a site may have a million articles);
3. merges everything in one atomic script (`lua/merge_rebuild.lua`) that adds the staged values to
   what Redis counted since the loss and sets the marker, or does nothing if the marker is back.

Counts are added, not set, so beacons that arrive during the rebuild are kept; HyperLogLogs are
merged, which is idempotent. A crash before step 3 leaves no trace but scratch keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from aggregations.keys import SiteKeys
from aggregations.periods import Calendar, Periods, local_midnight, periods_at
from aggregations.redis_client import RedisClient
from aggregations.scripts import Scripts
from aggregations.sites import Site

CHUNK = 5000


def periods_of(day: date, site: Site) -> Periods:
    return periods_at(local_midnight(day, site.tz) + 1, site.tz)


def sums(rows: Sequence[Any], start: date, end: date) -> tuple[int, int]:
    """Page views and visits of the days in [start, end)."""
    pv = visits = 0
    for r in rows:
        if start <= r["day"] < end:
            pv += r["pageviews"]
            visits += r["visits"]
    return pv, visits


async def stage_zset(redis: RedisClient, key: str, rows: Sequence[Any]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(key)
        for i in range(0, len(rows), CHUNK):
            pipe.zadd(key, {r[0]: r[1] for r in rows[i : i + CHUNK]})
        await pipe.execute()


async def rebuild_site(
    redis: RedisClient,
    scripts: Scripts,
    conn: Any,
    keys: SiteKeys,
    site: Site,
    now: float,
    calendar: Calendar,
) -> bool:
    """Rebuild one site's live counters; True if this call did it. Caller holds the site lock."""
    p = calendar.at(now, site.tz)
    sid = site.id
    first = min(p.year_start, p.last_month_start, p.last_week_start, p.yesterday)
    rows = await conn.fetch(
        "SELECT day, pageviews, visits, hll FROM site_days WHERE site_id = $1 AND day >= $2",
        sid,
        first,
    )
    total = await conn.fetchrow(
        "SELECT coalesce(sum(pageviews), 0)::bigint AS pv,"
        " coalesce(sum(visits), 0)::bigint AS visits"
        " FROM site_days WHERE site_id = $1",
        sid,
    )
    base = await conn.fetchrow(
        "SELECT pageviews, visits FROM site_baselines WHERE site_id = $1", sid
    )
    base_pv, base_visits = (base["pageviews"], base["visits"]) if base else (0, 0)
    labels = [p.week, p.last_week, p.month, p.last_month, p.year, "total"]
    period_hll = {
        r["period"]: r["hll"]
        for r in await conn.fetch(
            "SELECT period, hll FROM period_visitors WHERE site_id = $1 AND period = ANY($2)",
            sid,
            labels,
        )
    }
    day_hll = {r["day"]: r["hll"] for r in rows if r["day"] >= p.yesterday}

    article_rows = {
        "ad": await conn.fetch(
            "SELECT article, views FROM article_days WHERE site_id = $1 AND day = $2", sid, p.day
        ),
        "aw": await conn.fetch(
            "SELECT article, sum(views)::bigint FROM article_days"
            " WHERE site_id = $1 AND day >= $2 GROUP BY article",
            sid,
            p.week_start,
        ),
        "am": await conn.fetch(
            "SELECT article, sum(views)::bigint FROM article_days"
            " WHERE site_id = $1 AND day >= $2 GROUP BY article",
            sid,
            p.month_start,
        ),
        "at": await conn.fetch(
            "SELECT article, coalesce(a.views, 0) + coalesce(b.views, 0)"
            " FROM (SELECT article, views FROM articles WHERE site_id = $1) a"
            " FULL JOIN (SELECT article, views FROM article_baselines WHERE site_id = $1) b"
            " USING (article)",
            sid,
        ),
    }
    article_base = await conn.fetch(
        "SELECT article, views FROM article_baselines WHERE site_id = $1", sid
    )
    for name, zrows in article_rows.items():
        await stage_zset(redis, keys.staging(name), zrows)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.delete(keys.staging("abase"))
        for i in range(0, len(article_base), CHUNK):
            pipe.hset(keys.staging("abase"), mapping=dict(article_base[i : i + CHUNK]))
        await pipe.execute()

    yesterday = periods_of(p.yesterday, site)
    last_week = periods_of(p.last_week_start, site)
    last_month = periods_of(p.last_month_start, site)
    tomorrow = p.day + timedelta(days=1)
    hashes = [
        (keys.day(p.day), *sums(rows, p.day, tomorrow), p.day_expires),
        (keys.day(p.yesterday), *sums(rows, p.yesterday, p.day), yesterday.day_expires),
        (keys.week(p.week), *sums(rows, p.week_start, tomorrow), p.week_expires),
        (
            keys.week(p.last_week),
            *sums(rows, p.last_week_start, p.week_start),
            last_week.week_expires,
        ),
        (keys.month(p.month), *sums(rows, p.month_start, tomorrow), p.month_expires),
        (
            keys.month(p.last_month),
            *sums(rows, p.last_month_start, p.month_start),
            last_month.month_expires,
        ),
        (keys.year(p.year), *sums(rows, p.year_start, tomorrow), p.year_expires),
        (keys.total, total["pv"] + base_pv, total["visits"] + base_visits, 0),
    ]
    hlls = [
        (keys.day_visitors(p.day), day_hll.get(p.day), p.day_expires),
        (keys.day_visitors(p.yesterday), day_hll.get(p.yesterday), yesterday.day_expires),
        (keys.week_visitors(p.week), period_hll.get(p.week), p.week_expires),
        (keys.week_visitors(p.last_week), period_hll.get(p.last_week), last_week.week_expires),
        (keys.month_visitors(p.month), period_hll.get(p.month), p.month_expires),
        (
            keys.month_visitors(p.last_month),
            period_hll.get(p.last_month),
            last_month.month_expires,
        ),
        (keys.year_visitors(p.year), period_hll.get(p.year), p.year_expires),
        (keys.total_visitors, period_hll.get("total"), 0),
    ]
    zsets = [
        (keys.articles_day(p.day), "ad", p.day_expires),
        (keys.articles_week(p.week), "aw", p.week_expires),
        (keys.articles_month(p.month), "am", p.month_expires),
        (keys.articles_total, "at", 0),
    ]
    script_keys = [
        keys.marker,
        keys.baseline,
        keys.article_baselines,
        keys.staging("abase"),
        keys.staging("hll"),
        *(h[0] for h in hashes),
        *(h[0] for h in hlls),
        *(z[0] for z in zsets),
        *(keys.staging(z[1]) for z in zsets),
    ]

    def ttl(expires: int) -> int:
        return 0 if expires == 0 else max(1, int(expires - now))

    args: list[Any] = [len(hashes), len(hlls), len(zsets), base_pv, base_visits]
    for _, pv, visits, expires in hashes:
        args += [pv, visits, ttl(expires)]
    for _, hll, expires in hlls:
        args += [hll or b"", ttl(expires)]
    args += [ttl(z[2]) for z in zsets]
    args.append(int(now))
    done = await scripts.merge_rebuild(keys=script_keys, args=args)
    return bool(done)

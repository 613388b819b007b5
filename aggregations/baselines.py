"""Baselines: counts carried over from an older counter, kept apart from live counts.

A baseline replaces the previous one for the same site or article; it is never added to. It is
written to PostgreSQL (durable, with its source) and then into the live totals in Redis, under the
site's lock so that a rollup or rebuild never sees half of it.

The Redis step waits for the replicas (`replication`), as the rollup's move-aside does: a failover
to a replica that never saw it would keep the old baseline in the live totals, off from
PostgreSQL's until a rebuild. When they do not acknowledge, the caller is told so (503): the
baseline is stored, and importing it again is safe, since a baseline replaces and never adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aggregations.errors import StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.locks import SiteLock
from aggregations.periods import Calendar
from aggregations.rebuild import rebuild_site
from aggregations.redis_client import RedisClient
from aggregations.replication import run_replicated
from aggregations.scripts import Scripts
from aggregations.sites import Site

CHUNK = 5000
LOCK_WAIT = 30.0  # seconds: a rollup of a huge batch may hold the site for a while


@dataclass(frozen=True)
class Baseline:
    pageviews: int | None = None
    visits: int | None = None
    articles: Mapping[str, int] = field(default_factory=dict)

    @property
    def has_total(self) -> bool:
        return self.pageviews is not None or self.visits is not None


async def set_baseline(
    redis: RedisClient,
    scripts: Scripts,
    conn: Any,
    prefix: str,
    site: Site,
    baseline: Baseline,
    source: str,
    now: float,
    min_replicas: int = 0,
) -> None:
    """Store `baseline` durably, then move the live totals by the difference. A site whose live
    counters are not built yet is rebuilt on the spot, baseline included. StorageUnavailable
    when the Redis replicas did not acknowledge the live totals (see the module docstring)."""
    site_id = site.id
    keys = SiteKeys(prefix, site_id)
    articles = dict(baseline.articles)
    async with SiteLock(conn, site_id, wait=LOCK_WAIT) as held:
        if not held:
            raise StorageUnavailable(f"site {site_id} is busy (a rollup holds it); try again")
        async with conn.transaction():
            if baseline.has_total:
                await conn.execute(
                    "INSERT INTO site_baselines (site_id, pageviews, visits, source)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (site_id) DO UPDATE SET"
                    " pageviews = excluded.pageviews, visits = excluded.visits,"
                    " source = excluded.source, imported_at = now()",
                    site_id,
                    baseline.pageviews or 0,
                    baseline.visits or 0,
                    source,
                )
            if articles:
                await conn.execute(
                    "INSERT INTO article_baselines (site_id, article, views, source)"
                    " SELECT $1, a, v, $4 FROM unnest($2::text[], $3::bigint[]) AS u(a, v)"
                    " ON CONFLICT (site_id, article) DO UPDATE SET views = excluded.views,"
                    " source = excluded.source, imported_at = now()",
                    site_id,
                    list(articles),
                    list(articles.values()),
                    source,
                )
        script_keys = [
            keys.marker,
            keys.baseline,
            keys.total,
            keys.article_baselines,
            keys.articles_total,
        ]
        head: list[Any] = [0, 0, 0]
        if baseline.has_total:
            head = [1, baseline.pageviews or 0, baseline.visits or 0]
        items = list(articles.items())
        unacknowledged = ""
        for i in range(0, max(len(items), 1), CHUNK):
            pairs = [x for item in items[i : i + CHUNK] for x in item]
            done = await run_replicated(
                redis, scripts.set_baseline, script_keys, [*head, *pairs], min_replicas
            )
            if done.reply and not done.ok:
                unacknowledged = f"{done.acknowledged} of {done.wanted} Redis replica(s)"
            if not done.reply:
                await rebuild_site(redis, scripts, conn, keys, site, now, Calendar())
                break
            head = [0, 0, 0]
    if unacknowledged:
        raise StorageUnavailable(
            f"the baseline of {site_id} is stored, but only {unacknowledged} acknowledged the"
            " live totals: import it again (a baseline replaces, it never adds)"
        )


async def baseline_of(conn: Any, site_id: str) -> dict[str, Any]:
    """The site's baseline as stored, with provenance, for the admin API."""
    row = await conn.fetchrow(
        "SELECT pageviews, visits, source, imported_at FROM site_baselines WHERE site_id = $1",
        site_id,
    )
    count = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(views), 0)::bigint AS views, max(imported_at) AS at"
        " FROM article_baselines WHERE site_id = $1",
        site_id,
    )
    return {
        "total": None
        if row is None
        else {
            "pageviews": row["pageviews"],
            "visits": row["visits"],
            "source": row["source"],
            "imported_at": row["imported_at"].isoformat(),
        },
        "articles": {
            "count": count["n"],
            "views": count["views"],
            "imported_at": count["at"].isoformat() if count["at"] else None,
        },
    }

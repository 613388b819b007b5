"""What the rollup tests read back: PostgreSQL's durable record and Redis's pending counts."""

from __future__ import annotations

from typing import Any

from aggregations.keys import SiteKeys
from aggregations.redis_client import RedisClient
from analytics import appkeys as K


class Crash(Exception):
    """Stands for the process dying at a failpoint."""


def crash_at(step: str):
    def failpoint(at: str) -> None:
        if at == step:
            raise Crash(step)

    return failpoint


async def stored(db: Any, site: str = "caobang") -> dict[str, Any]:
    """Everything PostgreSQL has for a site."""
    pv, visits = await db.fetchrow(
        "SELECT coalesce(sum(pageviews), 0)::bigint, coalesce(sum(visits), 0)::bigint"
        " FROM site_days"
        " WHERE site_id = $1",
        site,
    )
    articles = dict(await db.fetch("SELECT article, views FROM articles WHERE site_id = $1", site))
    article_days = {
        (r["day"].isoformat(), r["article"]): r["views"]
        for r in await db.fetch(
            "SELECT day, article, views FROM article_days WHERE site_id = $1", site
        )
    }
    return {"pageviews": pv, "visits": visits, "articles": articles, "article_days": article_days}


async def pending(app: Any, site: str = "caobang") -> dict[str, int]:
    """What Redis holds that PostgreSQL has not applied: the pending hash and the batches in
    flight whose id is not in the ledger (a crash after commit leaves an applied one behind)."""
    redis: RedisClient = app[K.REDIS]
    keys = SiteKeys(app[K.SETTINGS].redis_prefix, site)
    in_flight = [b.decode() for b in await redis.smembers(keys.batches)]
    applied = {
        r["id"]
        for r in await app[K.POOL].fetch(
            "SELECT id FROM rollup_batches WHERE id = ANY($1)", in_flight
        )
    }
    totals: dict[str, int] = {}
    for key in [keys.pending] + [keys.batch(b) for b in in_flight if b not in applied]:
        for field, count in (await redis.hgetall(key)).items():
            name = field.decode().partition("|")[2]
            totals[name] = totals.get(name, 0) + int(count)
    return totals


async def rollup(app: Any, **kwargs: Any) -> Any:
    return await app[K.ROLLUP].run(app[K.SITES].all(), **kwargs)

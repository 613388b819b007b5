"""What the counter store holds, read when Prometheus scrapes (never per beacon): the rollup
backlog (pending entries and batches in flight), how far PostgreSQL is behind (the rollup's
`drained_at` mark), visitors online per site, and Redis memory against its `maxmemory`.

Three round trips per scrape, whatever the number of sites: two pipelines and `INFO memory`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio.cluster import RedisCluster

from aggregations.keys import SiteKeys, rollup_state_key
from aggregations.redis_client import RedisClient
from aggregations.scripts import Scripts, as_text
from aggregations.sites import Site

# the mark outlives any sane pause of the rollup; the stalled alert fires long before it expires
DRAINED_TTL = 30 * 24 * 3600


@dataclass
class StoreStats:
    backlog_entries: int = 0
    backlog_batches: int = 0
    online: dict[str, int] = field(default_factory=dict)
    drained_at: float | None = None
    memory_used: int | None = None
    memory_max: int | None = None

    def lag(self, now: float) -> float | None:
        """Seconds PostgreSQL is behind Redis: 0 with nothing pending, None when unknown."""
        if self.backlog_entries == 0 and self.backlog_batches == 0:
            return 0.0
        if self.drained_at is None:
            return None
        return max(0.0, now - self.drained_at)


async def mark_drained(scripts: Scripts, prefix: str, started: float) -> None:
    """Every count recorded before `started` is in PostgreSQL (a pass that began then drained
    every site). Only ever moves forward, whichever process writes it."""
    await scripts.mark_drained(keys=[rollup_state_key(prefix)], args=[repr(started), DRAINED_TTL])


async def store_stats(
    redis: RedisClient, prefix: str, sites: Sequence[Site], now: float, online_window: float
) -> StoreStats:
    """Backlog, lag mark, online visitors of each of `sites`, and Redis memory."""
    stats = StoreStats()
    since = int((now - online_window) * 1000)
    keys = [SiteKeys(prefix, s.id) for s in sites]
    async with redis.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hlen(k.pending)
            pipe.smembers(k.batches)
            pipe.zcount(k.seen, since, "+inf")
        pipe.hget(rollup_state_key(prefix), "drained_at")
        replies = await pipe.execute()
    batches: list[str] = []
    for i, (site, k) in enumerate(zip(sites, keys, strict=True)):
        pending, in_flight, online = replies[3 * i : 3 * i + 3]
        stats.backlog_entries += int(pending)
        stats.backlog_batches += len(in_flight)
        stats.online[site.id] = int(online)
        batches.extend(k.batch(as_text(b)) for b in in_flight)
    if replies[-1] is not None:
        stats.drained_at = float(replies[-1])
    async with redis.pipeline(transaction=False) as pipe:
        for key in batches:
            pipe.hlen(key)
        sizes = await pipe.execute() if batches else []
    stats.backlog_entries += sum(int(n) for n in sizes)
    stats.memory_used, stats.memory_max = await memory_of(redis)
    return stats


async def memory_of(redis: RedisClient) -> tuple[int | None, int | None]:
    """(used, max) bytes of Redis; on a cluster, of the primary nearest its `maxmemory` (the
    one whose sites will fail first), asked of every primary."""
    if not isinstance(redis, RedisCluster):
        return memory(await redis.info("memory"))
    replies = await redis.info("memory", target_nodes=RedisCluster.PRIMARIES)
    infos = [replies] if "used_memory" in replies else list(replies.values())
    return max((memory(info) for info in infos), key=fullness, default=(None, None))


def fullness(used_max: tuple[int | None, int | None]) -> float:
    used, limit = used_max
    return (used or 0) / limit if limit else (used or 0) / 2**60


def memory(info: dict[str, Any]) -> tuple[int | None, int | None]:
    """(used, max) bytes from INFO memory; max None when Redis has no `maxmemory`."""
    used = info.get("used_memory")
    limit = info.get("maxmemory")
    return (
        int(used) if used is not None else None,
        int(limit) if limit else None,
    )

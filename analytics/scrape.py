"""`GET /metrics`: the Prometheus exposition.

Two parts. The instruments every process updates as it works (`aggregations.metrics`): this
process's registry, or - under a supervisor with several workers - every worker's values summed
from prometheus-client's multiprocess directory. Then the gauges that only Redis knows, read now,
by whichever process answers the scrape (`aggregations.stats`): rollup backlog and lag, visitors
online per site, Redis memory. Those cost a scrape three Redis round trips and a beacon nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from aggregations.metrics import NAMESPACE
from aggregations.sites import Site
from aggregations.stats import StoreStats, store_stats
from analytics import appkeys as K

log = logging.getLogger("analytics.metrics")

# sites are configured by the operator, so the per-site series are bounded; past this many the
# rest are summed under one label value that no site id can take (ids start with a-z or 0-9)
ONLINE_SITES_MAX = 100
OTHER_SITES = "_other"
SCRAPE_TIMEOUT = 5.0


class Families(Collector):
    """Metric families computed before the scrape, exposed as they are."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value)


def online_family(online: dict[str, int], sites: Sequence[Site]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        f"{NAMESPACE}_online_visitors",
        f"Visitors seen within the online window, per site: the first {ONLINE_SITES_MAX} sites"
        f' by id, the others summed as site="{OTHER_SITES}".',
        labels=["site"],
    )
    ids = sorted(s.id for s in sites)
    for site_id in ids[:ONLINE_SITES_MAX]:
        family.add_metric([site_id], online.get(site_id, 0))
    if len(ids) > ONLINE_SITES_MAX:
        family.add_metric([OTHER_SITES], sum(online.get(i, 0) for i in ids[ONLINE_SITES_MAX:]))
    return family


def store_families(
    stats: StoreStats | None, sites: Sequence[Site], now: float
) -> list[GaugeMetricFamily]:
    """The scrape-time gauges; without `stats` (Redis did not answer) only the site count."""
    families = [gauge("sites", "Sites configured, as this process knows them.", len(sites))]
    if stats is None:
        return families
    families.append(
        gauge(
            "rollup_backlog_entries",
            "Counts held in Redis and not yet in PostgreSQL: entries of the pending hashes"
            " and of the batches in flight, all sites.",
            stats.backlog_entries,
        )
    )
    families.append(
        gauge(
            "rollup_backlog_batches",
            "Batches moved aside by a rollup and not yet applied and removed, all sites.",
            stats.backlog_batches,
        )
    )
    lag = stats.lag(now)
    if lag is not None:
        families.append(
            gauge(
                "rollup_lag_seconds",
                "How far PostgreSQL is behind Redis: seconds since the start of the last rollup"
                " pass that applied every site, or 0 when nothing is pending.",
                lag,
            )
        )
    families.append(online_family(stats.online, sites))
    if stats.memory_used is not None:
        families.append(
            gauge(
                "redis_memory_used_bytes",
                "Memory Redis uses (INFO used_memory).",
                stats.memory_used,
            )
        )
    if stats.memory_max is not None:
        families.append(
            gauge(
                "redis_memory_max_bytes",
                "Redis maxmemory: past it Redis refuses writes (noeviction) and beacons fail.",
                stats.memory_max,
            )
        )
    return families


def instruments(registry: CollectorRegistry, multiprocess_dir: Path | None) -> CollectorRegistry:
    """This process's instruments, or every worker's summed from the multiprocess directory."""
    if multiprocess_dir is None:
        return registry
    merged = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(merged, path=str(multiprocess_dir))  # type: ignore[no-untyped-call]
    return merged


def exposition(
    registry: CollectorRegistry,
    multiprocess_dir: Path | None,
    stats: StoreStats | None,
    sites: Sequence[Site],
    now: float,
) -> bytes:
    live = CollectorRegistry(auto_describe=False)
    live.register(Families(store_families(stats, sites, now)))
    return generate_latest(instruments(registry, multiprocess_dir)) + generate_latest(live)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    settings = app[K.SETTINGS]
    sites = app[K.SITES].all()
    now = app[K.CLOCK].now()
    stats: StoreStats | None = None
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            stats = await store_stats(
                app[K.REDIS], settings.redis_prefix, sites, now, settings.online_window
            )
    except (RedisError, OSError, TimeoutError) as err:
        # counted (and so shown by this very scrape); the Redis gauges are left out, not faked
        app[K.METRICS].redis_errors.labels("metrics").inc()
        log.debug("metrics: Redis did not answer: %s", err)
    body = exposition(app[K.METRICS].registry, app.get(K.MULTIPROCESS_DIR), stats, sites, now)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

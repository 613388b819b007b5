"""Liveness and readiness probes (the Prometheus exposition is `analytics.scrape`)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from aggregations.errors import POSTGRES_ERRORS
from analytics import appkeys as K
from analytics.responses import private_json

PROBE_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    return private_json({"status": "ok"})


async def redis_ok(app: web.Application) -> bool:
    try:
        return bool(await asyncio.wait_for(app[K.REDIS].ping(), PROBE_TIMEOUT))
    except (RedisError, OSError, TimeoutError):
        app[K.METRICS].redis_errors.labels("health").inc()
        return False


async def postgres_ok(app: web.Application) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            return bool(await app[K.POOL].fetchval("SELECT 1"))
    except POSTGRES_ERRORS:
        app[K.METRICS].postgres_errors.labels("health").inc()
        return False


async def readyz(request: web.Request) -> web.Response:
    """503 only when Redis is down: with PostgreSQL down, beacons still count (degraded)."""
    redis, postgres = await asyncio.gather(redis_ok(request.app), postgres_ok(request.app))
    status = "ready" if redis and postgres else "degraded" if redis else "unready"
    body = {
        "status": status,
        "redis": "ok" if redis else "down",
        "postgres": "ok" if postgres else "down",
    }
    return private_json(body, status=200 if redis else 503)

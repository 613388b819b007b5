"""Opening the stores: a Redis client (single node, or Redis Cluster) and a PostgreSQL pool."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

REDIS_TIMEOUT = 5.0


def open_redis(url: str) -> Redis:
    """A Redis client for `url`; bytes in, bytes out (HyperLogLogs are binary)."""
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        health_check_interval=30,
        max_connections=256,
    )


async def close_redis(redis: Any) -> None:
    await redis.aclose()

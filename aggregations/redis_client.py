"""The Redis client the counter model runs on: one server, or a Redis Cluster.

Every per-site operation names keys of one site only, all under its hash tag, so it maps to one
cluster slot and runs unchanged on either client: a script by SHA, or a non-transactional
pipeline (which a cluster client sends to the slot's node, following `MOVED`/`ASK`).

A cluster pipeline refuses the commands that may name keys of several slots (`pfcount`, `mget`,
`evalsha`...) even with one key; pipelines send those through `execute_command`, which is the same
command on one node.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

RedisClient: TypeAlias = Redis | RedisCluster


def is_cluster(redis: RedisClient) -> bool:
    return isinstance(redis, RedisCluster)

"""Replicas first: a Redis step whose outcome PostgreSQL will remember must be on the replicas
before PostgreSQL is told.

Redis replicates asynchronously. If the rollup's move-aside were applied to PostgreSQL and the
primary then died before its replica had the move-aside, the promoted replica would still hold the
batch's counts as pending, and a later rollup would apply them a second time under a new batch id.
So the move-aside runs with `WAIT` on the same connection (one pipeline to the node that serves the
site's slot), and the rollup applies nothing of the site until every replica connected to that
node, and at least `minimum` replicas, have acknowledged it.

What `WAIT` cannot do: make Redis itself lose nothing. Beacons acknowledged by a primary that dies
before replicating them are lost from the live counters and from the rollup alike (see
`deploy/cluster/README.md`); this only keeps PostgreSQL from counting anything twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from aggregations.redis_client import RedisClient

WAIT_MS = 2000  # a replica this far behind is not healthy; the next pass tries again


@dataclass(frozen=True)
class Replicated:
    reply: Any
    wanted: int  # replicas the step had to reach
    acknowledged: int

    @property
    def ok(self) -> bool:
        return self.acknowledged >= self.wanted


def _node(redis: RedisClient, key: str) -> ClusterNode | None:
    return redis.get_node_from_key(key) if isinstance(redis, RedisCluster) else None


def _on(node: ClusterNode | None) -> dict[str, Any]:
    return {} if node is None else {"target_nodes": node}


async def connected_replicas(redis: RedisClient, key: str) -> int:
    """How many replicas are connected to the primary that serves `key` (`ROLE`); 0 where a
    managed Redis does not offer `ROLE` (then only the configured minimum is waited for)."""
    try:
        role = await redis.execute_command("ROLE", **_on(_node(redis, key)))
    except ResponseError:
        return 0
    return len(role[2]) if role and role[0] in (b"master", "master") else 0


async def run_replicated(
    redis: RedisClient,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[Any],
    minimum: int = 0,
    wait_ms: int = WAIT_MS,
) -> Replicated:
    """Run `script` (all `keys` in one slot), then `WAIT` for the replicas on the same connection.

    With no replica connected and `minimum` 0 this is the plain script call; with fewer connected
    than `minimum`, the script runs unacknowledged at once. When the slot moved
    while the pipeline ran, the `WAIT` may have gone to another connection: not acknowledged.
    """
    connected = await connected_replicas(redis, keys[0])
    wanted = max(minimum, connected)
    if wanted == 0:
        return Replicated(await script(keys=keys, args=args), 0, 0)
    if connected < minimum:
        # too few replicas to wait for (a shard after a failover): no `WAIT` that would only
        # time out, site after site; the step runs and nothing may rely on it yet
        return Replicated(await script(keys=keys, args=args), wanted, 0)
    node = _node(redis, keys[0])
    for _ in range(2):
        # a cluster pipeline refuses `evalsha` by name; `execute_command` sends the same command
        async with redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", wanted, wait_ms, **_on(node))
            try:
                reply, acknowledged = await pipe.execute()
            except NoScriptError:
                await redis.script_load(script.script)  # a cluster client loads it everywhere
                continue
        if node is not None and _node(redis, keys[0]) != node:
            acknowledged = 0
        return Replicated(reply, wanted, int(acknowledged))
    raise NoScriptError(f"Redis keeps forgetting script {script.sha}")

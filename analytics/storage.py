"""Opening the stores: a Redis client (single node, or Redis Cluster) and a PostgreSQL pool.

`ANALYTICS_REDIS_URL` names a Redis Cluster with the scheme `redis+cluster://` (`rediss+cluster://`
for TLS) and one or more seed nodes separated by commas:

    redis+cluster://[user:password@]host1:port1[,host2:port2,...][/?option=value...]

The client asks a seed for the slot map and then talks to every primary directly; `MOVED` and
`ASK` redirections (slot migrations, failovers) are followed by redis-py's cluster client.

It does not retry a command after a connection error. On a topology change (a node down, a slot
not covered) redis-py drops its connections, in-flight commands to healthy nodes included; a
counting script whose reply was lost that way may have run, and running it again would count the
page view twice. Without the retry the beacon answers 503 (the tracker does not resend), the next
command reads the new slot map, and Redis never holds more than was sent.

Nor does it drop all its connections after every few `MOVED` replies (redis-py's default, meant to
refresh the slot map): each `MOVED` names the slot's new node, which the client notes. After a slot
migration a burst of concurrent commands all meet `MOVED`, and the wholesale reconnect that this
triggered cut commands in flight to every other node (measured: hundreds of beacons of sites on
untouched shards failing during one slot's move).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aggregations.redis_client import RedisClient

REDIS_TIMEOUT = 5.0
MAX_CONNECTIONS = 256  # per Redis server: a cluster client keeps a pool per node
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True)
class ClusterUrl:
    """A cluster URL taken apart: its seed nodes, and a plain URL carrying everything else
    (credentials, TLS, options) for redis-py."""

    seeds: tuple[tuple[str, int], ...]
    plain_url: str


def is_cluster_url(url: str) -> bool:
    return url.partition("://")[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterUrl:
    """Split `redis+cluster://user:pw@h1:p1,h2:p2/?opts`; ValueError names what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"a cluster URL starts with {' or '.join(CLUSTER_SCHEMES)}://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    userinfo, at, hosts = netloc.rpartition("@")
    path = tail.partition("?")[0].strip("/")
    if path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    seeds = tuple(_host_port(h) for h in hosts.split(",") if h.strip())
    if not seeds:
        raise ValueError("a cluster URL names at least one seed node, host:port")
    host, port = seeds[0]
    shown = f"[{host}]" if ":" in host else host
    plain = f"{CLUSTER_SCHEMES[scheme]}://{userinfo}{at}{shown}:{port}{tail}"
    return ClusterUrl(seeds, plain)


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"seed node {text!r} has no host")
    try:
        number = int(port) if port else 6379
    except ValueError:
        raise ValueError(f"seed node {text!r} has no valid port") from None
    if not 0 < number < 65536:
        raise ValueError(f"seed node {text!r} has no valid port")
    return host, number


def open_redis(url: str) -> RedisClient:
    """A Redis client for `url`; bytes in, bytes out (HyperLogLogs are binary)."""
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "health_check_interval": 30,
        "max_connections": MAX_CONNECTIONS,
    }
    if is_cluster_url(url):
        parsed = parse_cluster_url(url)
        seeds = [ClusterNode(host, port) for host, port in parsed.seeds]
        return RedisCluster.from_url(
            parsed.plain_url,
            startup_nodes=seeds,
            retry=Retry(NoBackoff(), 0),
            reinitialize_steps=0,
            **options,
        )
    return Redis.from_url(url, **options)


async def close_redis(redis: Any) -> None:
    await redis.aclose()

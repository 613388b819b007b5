"""Redis URLs: one server, or a Redis Cluster by its seed nodes (pure parsing, no I/O), and the
cluster client's view of the test cluster."""

from __future__ import annotations

import pytest
from redis.asyncio.cluster import RedisCluster

from aggregations.stats import memory_of
from analytics.settings import Settings, SettingsError
from analytics.storage import is_cluster_url, open_redis, parse_cluster_url


def test_cluster_url_with_several_seeds_and_options():
    parsed = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001/?x=1")
    assert parsed.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert parsed.plain_url == "redis://app:s%40cret@10.0.0.1:7000/?x=1"


def test_cluster_url_forms():
    assert parse_cluster_url("rediss+cluster://h").plain_url == "rediss://h:6379"
    assert parse_cluster_url("redis+cluster://[::1]:7000,h:7001/0").seeds == (
        ("::1", 7000),
        ("h", 7001),
    )
    assert is_cluster_url("redis+cluster://h:1")
    assert not is_cluster_url("redis://h:1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "at least one seed"),
        ("redis+cluster://h:1/2", "only database 0"),
        ("redis+cluster://h:port", "no valid port"),
        ("redis+cluster://h:70000", "no valid port"),
        ("redis+cluster://:7000", "no host"),
    ],
)
def test_bad_cluster_urls_say_what_is_wrong(url, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster_url(url)
    with pytest.raises(SettingsError, match="ANALYTICS_REDIS_URL"):
        Settings.from_env({"ANALYTICS_REDIS_URL": url})


def test_settings_take_a_cluster_url_and_a_replica_minimum():
    env = {
        "ANALYTICS_REDIS_URL": "redis+cluster://a:7000,b:7001",
        "ANALYTICS_ROLLUP_MIN_REPLICAS": "1",
    }
    settings = Settings.from_env(env)
    assert settings.redis_url == "redis+cluster://a:7000,b:7001"
    assert settings.rollup_min_replicas == 1
    with pytest.raises(SettingsError, match="ANALYTICS_ROLLUP_MIN_REPLICAS"):
        Settings.from_env({"ANALYTICS_ROLLUP_MIN_REPLICAS": "-1"})


async def test_the_cluster_client_finds_every_primary(redis_cluster):
    redis = open_redis(redis_cluster)
    try:
        assert isinstance(redis, RedisCluster)
        assert await redis.ping()
        await redis.initialize()
        assert len(redis.get_primaries()) == 3
    finally:
        await redis.aclose()


async def test_memory_on_a_cluster_is_the_fullest_primarys(redis_cluster):
    """`/metrics` shows Redis memory against maxmemory: on a cluster, of the primary nearest its
    limit (its sites fail first), not of whichever node the client asks by default."""
    redis = open_redis(redis_cluster)
    try:
        assert isinstance(redis, RedisCluster)
        await redis.initialize()
        one = redis.get_primaries()[1]
        await redis.config_set("maxmemory", str(1 << 30), target_nodes=one)
        try:
            used, limit = await memory_of(redis)
            assert limit == 1 << 30
            assert used is not None
            assert used > 0
        finally:
            await redis.config_set("maxmemory", "0", target_nodes=one)
    finally:
        await redis.aclose()

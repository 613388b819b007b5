"""The Lua scripts, loaded once per process and run by SHA (EVALSHA, falling back to EVAL)."""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript

from aggregations.redis_client import RedisClient


def lua(name: str) -> str:
    return resources.files("aggregations.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """Every script of the service registered on one Redis client."""

    def __init__(self, redis: RedisClient) -> None:
        self.record: AsyncScript = redis.register_script(lua("record"))
        self.read_counters: AsyncScript = redis.register_script(lua("read_counters"))
        self.move_aside: AsyncScript = redis.register_script(lua("move_aside"))
        self.finish_batch: AsyncScript = redis.register_script(lua("finish_batch"))
        self.merge_rebuild: AsyncScript = redis.register_script(lua("merge_rebuild"))
        self.set_baseline: AsyncScript = redis.register_script(lua("set_baseline"))
        self.mark_drained: AsyncScript = redis.register_script(lua("mark_drained"))


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

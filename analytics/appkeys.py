"""Every piece of state the app shares, as typed `web.AppKey`s (no module globals)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from aiohttp import web

from aggregations.clock import Clock
from aggregations.counters import Recorder
from aggregations.metrics import Metrics
from aggregations.pipeline import GroupCommit
from aggregations.readcache import ReadCache
from aggregations.reads import Reader
from aggregations.redis_client import RedisClient
from aggregations.rollup import Rollup
from aggregations.scripts import Scripts
from aggregations.sites import SiteCache
from analytics.settings import Settings
from collectors.handlers import BeaconViews
from collectors.intake import Intake

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
REDIS_URL = web.AppKey("redis_url", str)
DATABASE_URL = web.AppKey("database_url", str)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
SCRIPTS = web.AppKey("scripts", Scripts)
PIPE: web.AppKey[GroupCommit | None] = web.AppKey("pipe")  # None on a Redis Cluster
READ_CACHE = web.AppKey("read_cache", ReadCache)
SITES = web.AppKey("sites", SiteCache)
RECORDER = web.AppKey("recorder", Recorder)
READER = web.AppKey("reader", Reader)
INTAKE = web.AppKey("intake", Intake)
ROLLUP = web.AppKey("rollup", Rollup)
ROLLUP_WAKE = web.AppKey("rollup_wake", asyncio.Event)
BEACONS = web.AppKey("beacons", BeaconViews)
# set only in a worker under the supervisor: the stores it started, and the metrics directory
STORES: web.AppKey[tuple[str, str]] = web.AppKey("stores")
MULTIPROCESS_DIR = web.AppKey("multiprocess_dir", Path)

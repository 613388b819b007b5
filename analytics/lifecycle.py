"""The app's resources, each opened and closed by a `cleanup_ctx`, in dependency order:
embedded servers -> PostgreSQL pool (migrated) -> Redis client -> sites -> counting -> rollup.

Background loops never die quietly: each failure is logged and counted, and the loop goes on.
The timed rollup runs only in the process that leads (`analytics.leader`); on shutdown every
process runs one final pass, bounded by its share of the shutdown timeout, so that what it
accepted is in PostgreSQL when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from aggregations import stats
from aggregations.counters import CountingPolicy, RateLimit, Recorder
from aggregations.errors import POSTGRES_ERRORS, POSTGRES_FAILURES
from aggregations.periods import Calendar
from aggregations.pipeline import GroupCommit
from aggregations.reads import Reader
from aggregations.redis_client import is_cluster
from aggregations.rollup import Rollup
from aggregations.scripts import Scripts
from aggregations.sites import NOTIFY_CHANNEL, load_sites, make_site, save_site
from analytics import appkeys as K
from analytics.db import create_pool, migrate
from analytics.leader import Leadership
from analytics.serving import resolved_stores
from analytics.settings import Settings
from analytics.storage import REDIS_TIMEOUT, close_redis, open_redis
from collectors.clients import ClientResolver
from collectors.intake import Intake

log = logging.getLogger("analytics")

DEMO_SITE = "demo"


def request_grace(settings: Settings) -> float:
    """Of the shutdown timeout: how long requests in flight may take to finish."""
    return settings.shutdown_timeout * 0.4


def final_rollup_budget(settings: Settings) -> float:
    """Of the shutdown timeout: how long the final rollup may take (the rest is margin)."""
    return settings.shutdown_timeout * 0.5


async def embedded_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[K.SETTINGS]
    if K.STORES in app:
        # a worker under the supervisor: the stores are the supervisor's (embedded or not)
        app[K.REDIS_URL], app[K.DATABASE_URL] = app[K.STORES]
        yield
        return
    # the configured stores, or embedded ones started (and at the end stopped) in a thread
    stores = resolved_stores(settings)
    app[K.REDIS_URL], app[K.DATABASE_URL] = await asyncio.to_thread(stores.__enter__)
    try:
        yield
    finally:
        await asyncio.to_thread(stores.__exit__, None, None, None)


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[K.DATABASE_URL])
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            if app[K.SETTINGS].embedded and not await conn.fetchval(
                "SELECT 1 FROM sites WHERE id = $1", DEMO_SITE
            ):
                await save_site(conn, make_site(DEMO_SITE, "Demo", ()))
                log.info("created the %r site for the demo page", DEMO_SITE)
        app[K.POOL] = pool
        yield
    finally:
        await pool.close()


async def check_eviction(redis: Any) -> None:
    """Warn when Redis may evict keys: pending counts would vanish instead of beacons failing."""
    try:
        policy = (await redis.config_get("maxmemory-policy")).get(b"maxmemory-policy")
    except RedisError as err:  # CONFIG is often disabled on managed Redis
        log.info("redis: cannot read maxmemory-policy (%s); make sure it is noeviction", err)
        return
    if policy not in (None, b"noeviction"):
        log.warning(
            "redis: maxmemory-policy is %s; use noeviction, or pending counts may be evicted",
            policy.decode(),
        )


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    redis = open_redis(app[K.REDIS_URL])
    app[K.REDIS] = redis
    app[K.SCRIPTS] = Scripts(redis)
    await check_eviction(redis)
    # the group commit speaks to one server; a cluster client routes each site's commands
    pipe = None if is_cluster(redis) else GroupCommit(app[K.REDIS_URL], timeout=REDIS_TIMEOUT)
    app[K.PIPE] = pipe
    try:
        yield
    finally:
        if pipe is not None:
            await pipe.aclose()
        await close_redis(redis)


async def refresh_sites(app: web.Application) -> None:
    cache = app[K.SITES]
    read_from = cache.generation
    async with app[K.POOL].acquire() as conn:
        cache.replace(await load_sites(conn), read_from)


async def sites_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the sites, then keep them fresh: on NOTIFY from any process, and periodically.

    The listener is up before the first load, so a change made while this process starts is
    either in that load or announced to it.
    """
    changed = asyncio.Event()
    listener = await listen_for_sites(app, changed)
    await refresh_sites(app)
    log.info("%d site(s) configured", len(app[K.SITES]))
    task = asyncio.create_task(sites_loop(app, changed, listener), name="sites-refresh")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def listen_for_sites(app: web.Application, changed: asyncio.Event) -> Any:
    """A connection that sets `changed` on every site change, or None if PostgreSQL is away."""
    try:
        listener = await asyncpg.connect(app[K.DATABASE_URL], timeout=5)
        await listener.add_listener(NOTIFY_CHANNEL, lambda *_: changed.set())
    except POSTGRES_ERRORS as err:
        log.warning("sites: cannot listen for changes: %s", err)
        return None
    return listener


async def wait_for_event(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` have passed. Not `asyncio.wait_for`: in Python
    3.11, a cancel that lands just after the event fired is swallowed there (it returns the
    event's result), and a loop stopped by cancelling it goes on for good."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def sites_loop(app: web.Application, changed: asyncio.Event, listener: Any) -> None:
    interval = app[K.SETTINGS].sites_refresh
    try:
        while True:
            if listener is None or listener.is_closed():
                listener = await listen_for_sites(app, changed)
                if listener is not None:
                    changed.set()  # changes while we were not listening: reload at once
            await wait_for_event(changed, interval)
            changed.clear()
            try:
                await refresh_sites(app)
            except POSTGRES_ERRORS as err:
                app[K.METRICS].postgres_errors.labels("sites").inc()
                log.warning("sites: refresh failed, keeping %d cached: %s", len(app[K.SITES]), err)
    finally:
        if listener is not None and not listener.is_closed():
            await listener.close()


def counting_policy(settings: Settings) -> CountingPolicy:
    return CountingPolicy(
        visit_timeout=settings.visit_timeout,
        online_window=settings.online_window,
        article_dedup=settings.article_dedup,
        max_articles_per_day=settings.max_articles_per_day,
        client_limit=RateLimit(settings.rate_limit_per_minute, settings.rate_limit_burst),
        site_limit=RateLimit(settings.site_rate_limit_per_minute, settings.site_rate_limit_burst),
    )


async def counting_ctx(app: web.Application) -> AsyncIterator[None]:
    """Wire the counting objects; they hold no resources of their own."""
    settings = app[K.SETTINGS]
    calendar = Calendar()
    wake = app[K.ROLLUP_WAKE] = asyncio.Event()
    redis, scripts, prefix = app[K.REDIS], app[K.SCRIPTS], settings.redis_prefix
    cache = app[K.READ_CACHE]
    app[K.RECORDER] = Recorder(
        redis, scripts, prefix, counting_policy(settings), calendar, pipe=app[K.PIPE], cache=cache
    )
    app[K.READER] = Reader(
        redis, scripts, prefix, settings.online_window, calendar, pipe=app[K.PIPE], cache=cache
    )
    app[K.INTAKE] = Intake(
        app[K.SITES],
        app[K.RECORDER],
        ClientResolver(settings.trusted_proxies),
        app[K.CLOCK],
        app[K.METRICS],
        on_unbuilt=wake.set,
    )
    app[K.ROLLUP] = Rollup(
        redis,
        scripts,
        app[K.POOL],
        prefix,
        app[K.CLOCK],
        calendar=calendar,
        min_replicas=settings.rollup_min_replicas,
        cache=cache,
    )
    app[K.BEACONS].attach(app[K.INTAKE], app[K.READER])
    yield


async def announce(app: web.Application) -> None:
    settings = app[K.SETTINGS]
    log.info("ready: serving on http://%s:%d", settings.host, settings.port)


async def rollup_pass(app: web.Application, *, wait: float = 0.0) -> bool:
    """One rollup over the sites table; logs and counts failures instead of raising."""
    metrics = app[K.METRICS]
    started = app[K.CLOCK].now()
    try:
        await refresh_sites(app)
    except POSTGRES_ERRORS as err:
        metrics.rollup_runs.labels("error").inc()
        metrics.postgres_errors.labels("rollup").inc()
        log.warning("rollup: PostgreSQL unavailable, pending counts stay in Redis: %s", err)
        return False
    try:
        report = await app[K.ROLLUP].run(app[K.SITES].all(), wait=wait)
    except RedisError as err:
        metrics.rollup_runs.labels("error").inc()
        metrics.redis_errors.labels("rollup").inc()
        log.warning("rollup: Redis unavailable: %s", err)
        return False
    except POSTGRES_FAILURES as err:
        metrics.rollup_runs.labels("error").inc()
        metrics.postgres_errors.labels("rollup").inc()
        log.warning("rollup: PostgreSQL failed, the batch stays in Redis: %s", err)
        return False
    except Exception:
        metrics.rollup_runs.labels("error").inc()
        log.exception("rollup: failed; pending counts stay in Redis for the next pass")
        return False
    metrics.rollup_runs.labels("ok").inc()
    metrics.rollup_duration.observe(report.seconds)
    metrics.rollup_rows.inc(report.rows)
    metrics.rollup_rebuilds.inc(report.rebuilt_sites)
    metrics.rollup_last_success.set(app[K.CLOCK].now())
    if not report.skipped_sites:
        await mark_drained(app, started)
    if report.batches or report.rebuilt_sites or report.duplicate_batches:
        log.info(
            "rollup: %d batch(es), %d row(s), %d site(s) rebuilt, %d duplicate(s) skipped,"
            " %d site(s) busy elsewhere, %d site(s) waiting for replicas, %.3f s",
            report.batches,
            report.rows,
            report.rebuilt_sites,
            report.duplicate_batches,
            report.skipped_sites,
            report.unreplicated_sites,
            report.seconds,
        )
    return True


async def mark_drained(app: web.Application, started: float) -> None:
    """Tell every process (through Redis) that PostgreSQL holds all counts before `started`."""
    try:
        await stats.mark_drained(app[K.SCRIPTS], app[K.SETTINGS].redis_prefix, started)
    except RedisError as err:
        app[K.METRICS].redis_errors.labels("rollup").inc()
        log.warning("rollup: applied, but could not record how far in Redis: %s", err)


async def leads(app: web.Application, leadership: Leadership) -> bool:
    """Whether this process should run the timed rollup now. When PostgreSQL cannot be asked,
    the process that led last goes on trying, so the outage shows as failed rollups (and ends in
    a rollup as soon as PostgreSQL is back); the others stay idle."""
    was_held = leadership.held
    try:
        held = await leadership.ensure()
        run = held
    except POSTGRES_FAILURES as err:
        app[K.METRICS].postgres_errors.labels("leader").inc()
        log.warning("rollup: cannot reach PostgreSQL for the leader lock: %s", err)
        held, run = False, leadership.last_known
    if held != was_held:
        app[K.METRICS].rollup_leader.set(1 if held else 0)
    return run


async def rollup_loop(app: web.Application, leadership: Leadership, stop: asyncio.Event) -> None:
    """Drift-free: passes start at t0 + k * interval (skipping missed ticks) in the leading
    process, or at once in any process when a beacon finds a site's counters unbuilt. Stops
    between passes once `stop` is set."""
    loop = asyncio.get_running_loop()
    interval = app[K.SETTINGS].rollup_interval
    wake = app[K.ROLLUP_WAKE]
    next_at = loop.time()
    while not stop.is_set():
        await wait_for_event(wake, max(0.0, next_at - loop.time()))
        woken = wake.is_set()
        wake.clear()
        if stop.is_set():
            break
        # a site found unbuilt (Redis lost its data) is rebuilt by whichever process saw it,
        # leader or not: waiting for the leader's next tick would show wrong totals meanwhile
        if await leads(app, leadership) or woken:
            await rollup_pass(app)
        now = loop.time()
        while next_at <= now:
            next_at += interval


async def final_rollup(app: web.Application, budget: float) -> None:
    """Every process, leader or not: what it accepted goes to PostgreSQL before it exits."""
    log.info("final rollup before exit")
    try:
        async with asyncio.timeout(budget):
            await rollup_pass(app, wait=budget)
    except TimeoutError:
        app[K.METRICS].rollup_runs.labels("error").inc()
        log.warning(
            "final rollup cut short after %.0f s; pending counts stay in Redis for the next start",
            budget,
        )


async def rollup_ctx(app: web.Application) -> AsyncIterator[None]:
    leadership = Leadership(app[K.DATABASE_URL])
    stop = asyncio.Event()
    task = asyncio.create_task(rollup_loop(app, leadership, stop), name="rollup")
    yield
    # let a pass in progress finish (cancelling it mid-transaction helps no one), within the
    # final rollup's share of the shutdown timeout, and spend the rest on the final pass
    loop = asyncio.get_running_loop()
    deadline = loop.time() + final_rollup_budget(app[K.SETTINGS])
    stop.set()
    app[K.ROLLUP_WAKE].set()
    try:
        await asyncio.wait_for(asyncio.shield(task), deadline - loop.time())
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        await final_rollup(app, max(1.0, deadline - loop.time()))
    finally:
        await leadership.release()
        app[K.METRICS].rollup_leader.set(0)

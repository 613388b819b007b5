"""The app factory: one `create_app(settings)`; every resource a `cleanup_ctx`, in order."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from aggregations.clock import Clock, SystemClock
from aggregations.metrics import Metrics
from aggregations.readcache import ReadCache
from aggregations.sites import SiteCache
from analytics import appkeys as K
from analytics.lifecycle import (
    announce,
    counting_ctx,
    embedded_ctx,
    postgres_ctx,
    redis_ctx,
    rollup_ctx,
    sites_ctx,
)
from analytics.routes import ROUTE_NAMES, setup_routes
from analytics.settings import Settings
from analytics.widget import WidgetViews
from collectors.beacons import MAX_BODY
from collectors.handlers import BeaconViews


def version() -> str:
    try:
        return metadata.version("visitor-analytics")
    except metadata.PackageNotFoundError:
        return "unknown"


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    stores: tuple[str, str] | None = None,
    multiprocess_dir: Path | None = None,
) -> web.Application:
    """The app. A worker under the supervisor passes the `stores` (Redis and PostgreSQL URLs)
    that the supervisor resolved or started, and the `multiprocess_dir` of the metrics."""
    app = web.Application(
        client_max_size=max(MAX_BODY, 16 * 1024 * 1024),
    )
    app[K.SETTINGS] = settings
    app[K.CLOCK] = clock or SystemClock()
    app[K.METRICS] = Metrics(registry, ROUTE_NAMES, version())
    if stores is not None:
        app[K.STORES] = stores
    if multiprocess_dir is not None:
        app[K.MULTIPROCESS_DIR] = multiprocess_dir
    app[K.SITES] = SiteCache()
    app[K.READ_CACHE] = ReadCache()
    app[K.BEACONS] = BeaconViews()
    setup_routes(app, app[K.BEACONS], WidgetViews(settings.online_window))
    app.cleanup_ctx.extend([embedded_ctx, postgres_ctx, redis_ctx, sites_ctx, counting_ctx])
    if settings.rollup_enabled:
        app.cleanup_ctx.append(rollup_ctx)
    app.on_startup.append(announce)
    return app

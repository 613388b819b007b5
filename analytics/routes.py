"""The URL table. Route names label the HTTP metrics, so they are a small fixed set."""

from __future__ import annotations

from aiohttp import web

from aggregations.metrics import Metrics
from analytics import admin, api, health, pages, scrape
from analytics import appkeys as K
from analytics.middleware import edge, unmatched
from analytics.openapi import OpenApiView
from analytics.widget import WidgetViews
from collectors.handlers import BeaconViews

SITE = "/api/v1/sites/{site}"
READS = "/{read:counters|top|daily|articles(?:/[^/]+)?}"
ROUTE_NAMES = (
    "index",
    "tracker",
    "collect",
    "collect_preflight",
    "pixel",
    "counters",
    "article",
    "articles",
    "top",
    "daily",
    "read_preflight",
    "widget_js",
    "widget_page",
    "badge",
    "sites",
    "site",
    "baseline",
    "healthz",
    "readyz",
    "metrics",
    "openapi",
    "unmatched",
)


def setup_routes(app: web.Application, beacons: BeaconViews, widget: WidgetViews) -> None:
    routes = [
        web.get("/", pages.index, name="index"),
        web.get("/t.js", beacons.tracker, name="tracker"),
        web.post("/collect", beacons.collect, name="collect"),
        web.options("/collect", beacons.preflight, name="collect_preflight"),
        web.get("/collect.gif", beacons.pixel, name="pixel"),
        # the widget's two reads first: routes under /api/v1/sites are tried in this order
        web.get(SITE + "/counters", api.counters, name="counters"),
        web.get(SITE + "/articles", api.articles, name="articles"),
        web.get(SITE + "/articles/{article}", api.article, name="article"),
        web.get(SITE + "/top", api.top, name="top"),
        web.get(SITE + "/daily", api.daily, name="daily"),
        web.options(SITE + READS, api.preflight, name="read_preflight"),
        web.get("/widget.js", widget.script_js, name="widget_js"),
        web.get("/widget/{site}", widget.page, name="widget_page"),
        web.get("/badge/{site}/{article}.svg", widget.badge, name="badge"),
        web.get("/api/v1/sites", admin.list_sites, name="sites"),
        web.put(SITE, admin.put_site, name="site"),
        web.post(SITE + "/baseline", admin.post_baseline, name="baseline"),
        web.get("/healthz", health.healthz, name="healthz"),
        web.get("/readyz", health.readyz, name="readyz"),
        web.get("/metrics", scrape.metrics, name="metrics"),
        web.get("/api/v1/openapi.json", OpenApiView().get, name="openapi"),
        web.route("*", "/{path:.*}", unmatched, name="unmatched"),  # last: what no other took
    ]
    metrics = app[K.METRICS]
    app.router.add_routes([with_edge(route, metrics) for route in routes])


def with_edge(route: web.RouteDef, metrics: Metrics) -> web.RouteDef:
    """The route with its handler wrapped in the edges (JSON errors, metrics by route name;
    tests check every name is one of `ROUTE_NAMES`)."""
    handler = edge(route.kwargs["name"], route.handler, metrics)
    return web.RouteDef(route.method, route.path, handler, route.kwargs)

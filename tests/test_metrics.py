"""`/metrics`: a scrape passes `promtool check metrics`, every label value is there from the
start, no label takes a value a client sent, and under load every metric the operators' alerts
and dashboard read moves. Redis and PostgreSQL are real, behind proxies the test cuts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from prometheus_client import generate_latest

from aggregations.metrics import (
    POSTGRES_OPERATIONS,
    REDIS_OPERATIONS,
    STATUS_CLASSES,
    Drop,
    Metrics,
)
from aggregations.sites import make_site
from aggregations.stats import StoreStats
from analytics.lifecycle import rollup_pass
from analytics.routes import ROUTE_NAMES
from analytics.scrape import ONLINE_SITES_MAX, OTHER_SITES, online_family
from tests.conftest import BROWSER, add_site, send
from tests.processes import own_redis
from tests.promtool import check_metrics, samples
from tests.proxy import postgres_proxy, redis_proxy


async def scrape(client: Any) -> tuple[bytes, dict[str, float]]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    body = await resp.read()
    return body, samples(body.decode())


async def test_a_fresh_scrape_passes_promtool_with_every_label_value_there(client):
    body, found = await scrape(client)
    check_metrics(body)
    for reason in Drop:
        result = "counted" if reason is Drop.ID_CAP else "dropped"
        assert found[f'analytics_beacons_total{{reason="{reason}",result="{result}"}}'] == 0
    assert found['analytics_beacons_total{reason="none",result="counted"}'] == 0
    for route in ROUTE_NAMES:
        assert f'analytics_http_request_duration_seconds_count{{route="{route}"}}' in found
        for status in STATUS_CLASSES:
            assert f'analytics_http_requests_total{{route="{route}",status="{status}"}}' in found
    for op in REDIS_OPERATIONS:
        assert found[f'analytics_redis_errors_total{{operation="{op}"}}'] == 0
    for op in POSTGRES_OPERATIONS:
        assert found[f'analytics_postgres_errors_total{{operation="{op}"}}'] == 0
    for result in ("ok", "error", "skipped"):
        assert found[f'analytics_rollup_runs_total{{result="{result}"}}'] == 0
    assert found['analytics_online_visitors{site="caobang"}'] == 0
    assert found["analytics_sites"] == 1
    assert found["analytics_rollup_backlog_entries"] == 0
    assert found["analytics_rollup_lag_seconds"] == 0
    assert found["analytics_rollup_leader"] == 0
    # sub-millisecond buckets, for beacons answered from one Redis round trip
    assert 'analytics_http_request_duration_seconds_bucket{le="0.0001",route="collect"}' in found


def exposition(metrics: Metrics) -> list[str]:
    """The text a scrape gives, but the `_created` times (two registries differ there)."""
    text = generate_latest(metrics.registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


# on a bucket's bound (it counts there: le is inclusive), between bounds, past the last (+Inf)
DURATIONS = (0.0001, 0.00005, 0.0003, 0.001, 0.0049, 0.0049, 0.02, 3.0, 100.0, 0.0001)


async def test_a_ticks_requests_add_up_to_what_observing_each_gives():
    """The per-request instruments are kept in plain numbers through a tick and added to the
    children's bucket values after it (`TickBuffer`): the scrape must read exactly what
    prometheus-client's own `observe` and `inc` give for the same requests."""
    direct, ticked = Metrics(routes=("collect",)), Metrics(routes=("collect",))
    for seconds in DURATIONS:
        direct.http_requests.labels("collect", "2xx").inc()
        direct.http_duration.labels("collect").observe(seconds)
        ticked.observe_http("collect", 204, seconds)
    direct.http_requests.labels("collect", "4xx").inc()
    direct.http_duration.labels("collect").observe(0.002)
    ticked.observe_http("collect", 413, 0.002)
    direct.beacons.labels("counted", "none").inc(2)
    ticked.tick.inc(ticked.beacons.labels("counted", "none"))
    ticked.tick.inc(ticked.beacons.labels("counted", "none"))
    assert exposition(ticked) != exposition(direct)  # within the tick: not added yet
    await asyncio.sleep(0)  # the tick ends
    assert exposition(ticked) == exposition(direct)


def test_outside_an_event_loop_requests_are_added_at_once():
    direct, ticked = Metrics(routes=("collect",)), Metrics(routes=("collect",))
    for seconds in DURATIONS:
        direct.http_requests.labels("collect", "2xx").inc()
        direct.http_duration.labels("collect").observe(seconds)
        ticked.observe_http("collect", 204, seconds)
        assert exposition(ticked) == exposition(direct)


@pytest.fixture
async def proxies(tmp_path, stores):
    """A proxy to a Redis of this test's own (with a maxmemory, so that its memory gauges show)
    and one to the run's PostgreSQL; with the URLs that go through them."""
    with own_redis(tmp_path, "64mb") as url:
        redis, redis_url = await redis_proxy(url)
        pg, pg_url = await postgres_proxy(stores.database_url)
        yield redis, redis_url, pg, pg_url
        await redis.stop()
        await pg.stop()


BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# what clients send that must never become a label value
CLIENT_STRINGS = ("203.0.113.", "Googlebot", "evil.example", "wp-login", "secret-article", "nosuch")


async def test_a_scrape_under_load_shows_every_metric_moving(
    make_client, settings, clock, db, proxies
):
    redis_proxy, redis_url, pg_proxy, dsn = proxies
    settings = dataclasses.replace(
        settings,
        redis_url=redis_url,
        database_url=dsn,
        rate_limit_per_minute=60,
        rate_limit_burst=5,
        max_articles_per_day=3,
    )
    client = await make_client(settings=settings)
    await add_site(client)
    _, before = await scrape(client)

    # counted, each from its own address; the fourth article of the day is past the cap
    for i in range(4):
        resp = await send(client, ip=f"203.0.113.{i + 1}", article=f"secret-article-{i}")
        assert resp.status == 204
    for i in range(20):
        assert (await send(client, ip=f"203.0.113.{i + 1}", article="secret-article-0")).status
    assert (await send(client, ua=BOT)).status == 204
    assert (await send(client, headers={"Sec-Purpose": "prefetch"})).status == 204
    resp = await client.post("/collect", data=b"{not json", headers={"User-Agent": "x"})
    assert resp.status == 400
    assert (await send(client, site="nosuch")).status == 404
    assert (await send(client, headers={"Origin": "https://evil.example"})).status == 403
    statuses = [(await send(client, ip="203.0.113.99")).status for _ in range(8)]
    assert 429 in statuses
    assert (await client.get("/wp-login.php?user=admin")).status == 404
    assert (await client.get("/api/v1/sites/caobang/counters")).status == 200
    assert (await client.get("/api/v1/sites/caobang/articles/secret-article-0")).status == 200

    _, loaded = await scrape(client)
    assert loaded['analytics_online_visitors{site="caobang"}'] >= 4
    assert loaded["analytics_rollup_backlog_entries"] > 0
    assert loaded["analytics_redis_memory_max_bytes"] == 64 * 1024 * 1024
    assert 0 < loaded["analytics_redis_memory_used_bytes"] < 64 * 1024 * 1024

    # Redis unreachable: the beacon, the pixel, a read and the scrape each count their error
    await redis_proxy.stop()
    try:
        assert (await send(client, ip="203.0.113.50")).status == 503
        pixel = await client.get(
            "/collect.gif?site=caobang&url=https://caobang.gov.vn/",
            headers={"User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.51"},
        )
        assert pixel.status == 503
        assert (await client.get("/api/v1/sites/caobang/counters")).status == 503
        body, down = await scrape(client)
        check_metrics(body)
        assert "analytics_rollup_backlog_entries" not in down  # unknown, so not made up
    finally:
        await redis_proxy.start()

    # PostgreSQL unreachable: a history read and a rollup each count theirs
    await pg_proxy.stop()
    try:
        assert (await client.get("/api/v1/sites/caobang/daily")).status == 503
        assert await rollup_pass(client.app) is False
    finally:
        await pg_proxy.start()

    drained = clock.now()
    assert await rollup_pass(client.app) is True
    clock.advance(30)
    assert (await send(client, ip="203.0.113.60")).status == 204

    body, after = await scrape(client)
    check_metrics(body)

    def moved(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert moved('analytics_beacons_total{reason="none",result="counted"}') >= 4
    for reason in (
        "bot",
        "prefetch",
        "invalid",
        "unknown_site",
        "origin",
        "rate_limited",
        "storage_error",
    ):
        assert moved(f'analytics_beacons_total{{reason="{reason}",result="dropped"}}') >= 1, reason
    assert moved('analytics_beacons_total{reason="id_cap",result="counted"}') == 1
    for key in (
        'analytics_http_requests_total{route="collect",status="2xx"}',
        'analytics_http_requests_total{route="collect",status="4xx"}',
        'analytics_http_requests_total{route="collect",status="5xx"}',
        'analytics_http_requests_total{route="pixel",status="5xx"}',
        'analytics_http_requests_total{route="counters",status="2xx"}',
        'analytics_http_requests_total{route="unmatched",status="4xx"}',
        'analytics_http_requests_total{route="metrics",status="2xx"}',
        'analytics_http_request_duration_seconds_count{route="collect"}',
        'analytics_http_request_duration_seconds_bucket{le="+Inf",route="collect"}',
        'analytics_redis_errors_total{operation="record"}',
        'analytics_redis_errors_total{operation="read"}',
        'analytics_redis_errors_total{operation="metrics"}',
        'analytics_postgres_errors_total{operation="read"}',
        'analytics_postgres_errors_total{operation="rollup"}',
        'analytics_rollup_runs_total{result="ok"}',
        'analytics_rollup_runs_total{result="error"}',
        "analytics_rollup_duration_seconds_count",
        "analytics_rollup_rows_total",
    ):
        assert moved(key) > 0, key
    assert moved('analytics_redis_errors_total{operation="record"}') == 2  # beacon and pixel
    assert after["analytics_rollup_last_success_timestamp_seconds"] == drained
    assert after["analytics_rollup_lag_seconds"] == 30  # one beacon since a pass 30 s ago
    assert after["analytics_rollup_backlog_entries"] > 0

    text = body.decode()
    for value in CLIENT_STRINGS:
        assert value not in text
    assert label_values(text) <= allowed_label_values()


def label_values(exposition: str) -> set[tuple[str, str]]:
    found = set()
    for line in exposition.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        labels = line[line.index("{") + 1 : line.rindex("}")]
        found |= set(re.findall(r'(\w+)="([^"]*)"', labels))
    return found


def allowed_label_values() -> set[tuple[str, str]]:
    """Every label value the service may show: fixed sets, and configured site ids."""
    allowed = {("route", r) for r in ROUTE_NAMES}
    allowed |= {("status", s) for s in STATUS_CLASSES}
    allowed |= {("reason", d.value) for d in Drop} | {("reason", "none")}
    allowed |= {("result", r) for r in ("counted", "dropped", "ok", "error", "skipped")}
    allowed |= {("operation", o) for o in (*REDIS_OPERATIONS, *POSTGRES_OPERATIONS)}
    allowed |= {("site", "caobang"), ("site", OTHER_SITES), ("version", "0.1.0")}
    allowed |= {
        ("le", le)
        for le in (
            *("0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025"),
            *("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0"),
            *("120.0", "+Inf"),
        )
    }
    return allowed


def test_online_visitors_per_site_are_capped():
    sites = [make_site(f"site{i:03d}", None, ()) for i in range(ONLINE_SITES_MAX + 5)]
    online = {s.id: 1 for s in sites}
    family = online_family(online, sites)
    labels = [s.labels["site"] for s in family.samples]
    assert len(labels) == ONLINE_SITES_MAX + 1
    assert labels[:2] == ["site000", "site001"]
    assert labels[-1] == OTHER_SITES
    assert family.samples[-1].value == 5  # the five past the cap, summed


def test_lag_is_zero_without_a_backlog_and_unknown_without_a_mark():
    assert StoreStats(backlog_entries=0, drained_at=None).lag(100.0) == 0
    assert StoreStats(backlog_entries=3, drained_at=None).lag(100.0) is None
    assert StoreStats(backlog_entries=3, drained_at=70.0).lag(100.0) == 30
    assert StoreStats(backlog_batches=1, drained_at=70.0).lag(100.0) == 30

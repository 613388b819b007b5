"""Fixtures: real Redis and PostgreSQL (see `tests.stores`), an injected clock, the app.

A module marked `pytestmark = pytest.mark.cluster` runs each of its tests twice, on the single
Redis (`[redis]`) and on a real local Redis Cluster (`[cluster]`), started once for the run when
first needed. When the whole run is on a cluster already (see `tests.stores`), once is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import os
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner
from prometheus_client import CollectorRegistry

from aggregations.clock import ManualClock
from analytics.app import create_app
from analytics.protocol import ServiceRunner, ServiceServer
from analytics.settings import Settings
from collectors.clients import parse_networks
from tests.cluster import LocalCluster
from tests.stores import Stores, cluster_wanted, flush_prefix, test_stores

ADMIN_TOKEN = "test-admin-token-0123456789"
VN = ZoneInfo("Asia/Ho_Chi_Minh")
TABLES = (
    "rollup_batches, period_visitors, article_baselines, site_baselines, articles,"
    " article_days, site_days, sites"
)
_counter = itertools.count()


def at(text: str, tz: ZoneInfo = VN) -> float:
    """Unix time of a local wall-clock time, e.g. at('2026-11-27 10:00:00')."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


@pytest.fixture(scope="session")
def stores() -> Iterator[Stores]:
    with test_stores() as found:
        yield found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker("cluster") is not None
    on_cluster_already = bool(os.environ.get("ANALYTICS_TEST_REDIS_URL")) or cluster_wanted()
    if marked and "redis_url" in metafunc.fixturenames and not on_cluster_already:
        metafunc.parametrize("redis_url", ["redis", "cluster"], indirect=True)


@pytest.fixture(scope="session")
def redis_cluster(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Redis Cluster shared by the run: the run's own, or one started now."""
    if stores.cluster is not None:
        yield stores.cluster.url
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster.url
    finally:
        flush_prefix(cluster.url, f"t{stores.run_id}")
        cluster.stop()


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, stores: Stores) -> str:
    """The Redis this test counts into: the run's, or (parametrized `cluster`) the cluster."""
    if getattr(request, "param", "redis") == "cluster":
        url: str = request.getfixturevalue("redis_cluster")
        return url
    return stores.redis_url


@pytest.fixture
async def db(stores: Stores) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the run's database, emptied for this test."""
    conn = await asyncpg.connect(stores.database_url)
    await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def prefix(stores: Stores, redis_url: str) -> Iterator[str]:
    """This test's own Redis key space."""
    value = f"t{stores.run_id}n{next(_counter)}"
    yield value
    flush_prefix(redis_url, value)


@pytest.fixture
def settings(stores: Stores, redis_url: str, prefix: str, db: asyncpg.Connection) -> Settings:
    return Settings(
        redis_url=redis_url,
        database_url=stores.database_url,
        redis_prefix=prefix,
        admin_token=ADMIN_TOKEN,
        rollup_enabled=False,
        trusted_proxies=parse_networks(["127.0.0.0/8", "::1"]),
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at("2026-11-27 10:00:00"))


MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class ServiceTestServer(TestServer):
    """aiohttp's test server on the runner `analytics serve` uses (`ServiceRunner`), so that
    beacons take the path they take in production."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return ServiceRunner(self.app, **kwargs)


def answered(client: TestClient[Any, Any]) -> int:
    """How many beacons the connection's own path (`analytics.protocol`) has answered."""
    server = client.server.runner.server
    assert isinstance(server, ServiceServer)
    assert server.answers is not None
    return server.answers.answered


@pytest.fixture
def make_client(aiohttp_client: Any, settings: Settings, clock: ManualClock) -> MakeClient:
    async def make(
        settings: Settings = settings,
        clock: ManualClock = clock,
        registry: CollectorRegistry | None = None,
    ) -> TestClient[Any, Any]:
        app = create_app(settings, clock=clock, registry=registry or CollectorRegistry())
        client: TestClient[Any, Any] = await aiohttp_client(ServiceTestServer(app))
        return client

    return make


async def add_site(client: TestClient[Any, Any], site: str = "caobang", **body: Any) -> None:
    body.setdefault("domains", ["caobang.gov.vn"])
    resp = await client.put(
        f"/api/v1/sites/{site}", json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert resp.status in (200, 201), await resp.text()


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    """The app with one site, `caobang`, on caobang.gov.vn, in Asia/Ho_Chi_Minh."""
    c = await make_client()
    await add_site(c)
    return c


BROWSER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/131.0.0.0 Safari/537.36"
)


async def send(
    client: TestClient[Any, Any],
    site: str = "caobang",
    *,
    ip: str = "203.0.113.7",
    ua: str = BROWSER,
    article: str | None = None,
    url: str = "https://caobang.gov.vn/tin-tuc/1",
    headers: dict[str, str] | None = None,
    query: str = "",
    **extra: Any,
) -> Any:
    """POST one beacon as a browser at `ip` would (the test server trusts the loopback proxy)."""
    body: dict[str, Any] = {"site": site, "url": url, **extra}
    if article is not None:
        body["article"] = article
    return await client.post(
        "/collect" + query,
        json=body,
        headers={
            "User-Agent": ua,
            "X-Forwarded-For": ip,
            "Origin": "https://caobang.gov.vn",
            **(headers or {}),
        },
    )


# A test whose teardown hangs (a task that ignores its cancellation keeps the event loop from
# closing) says which task it is, instead of hanging the suite in silence.
TEARDOWN_WATCHDOG = float(os.environ.get("ANALYTICS_TEST_TEARDOWN_WATCHDOG", "120"))
_loops: dict[str, asyncio.AbstractEventLoop] = {}


@pytest.fixture(autouse=True)
async def _remember_loop(request: pytest.FixtureRequest) -> None:
    _loops[request.node.nodeid] = asyncio.get_running_loop()


def _dump_tasks(config: pytest.Config, nodeid: str) -> None:
    loop = _loops.get(nodeid)
    capman = config.pluginmanager.getplugin("capturemanager")

    def say(text: str) -> None:
        # past pytest's output capture, which would keep it until the teardown ends (or never)
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            print(text, file=sys.stderr, flush=True)

    say(f"\n!!! teardown of {nodeid} still running after {TEARDOWN_WATCHDOG:.0f} s")
    if loop is None or loop.is_closed():
        return

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            stack = io.StringIO()
            task.print_stack(file=stack)
            say(f"--- pending: {task!r}\n{stack.getvalue()}")

    loop.call_soon_threadsafe(dump)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Any:
    timer = threading.Timer(TEARDOWN_WATCHDOG, _dump_tasks, (item.config, item.nodeid))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()
        _loops.pop(item.nodeid, None)

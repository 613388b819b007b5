"""Fuzzing: no input makes a 500, and no refused input counts.

1. Schemathesis drives the running app (a real server on a loopback port, real Redis and
   PostgreSQL) from its own OpenAPI document: every operation, with data that fits the document
   and data that breaks it. Each answer must not be a 5xx, must have a documented status, media
   type and body; data that breaks the document must be refused; and a refused beacon must not
   move any site's page views.
2. Hypothesis builds beacons field by field, each field valid or broken in a known way, so the
   test knows the answer before it asks: 204 and one page view exactly when every field is
   valid, the site known and the url on its domains; otherwise the right refusal and nothing
   counted.

Examples per operation: ANALYTICS_FUZZ_EXAMPLES (default 12; the machine is shared, so a longer
run is for when you mean it, e.g. ANALYTICS_FUZZ_EXAMPLES=500 scripts/test tests/test_fuzz.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from prometheus_client import CollectorRegistry
from redis.cluster import RedisCluster
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from aggregations.clock import ManualClock
from analytics import appkeys as K
from analytics.app import create_app
from analytics.openapi import document
from analytics.protocol import ServiceRunner
from analytics.settings import Settings
from collectors.beacons import MAX_BODY, MAX_TITLE, MAX_URL
from collectors.clients import parse_networks
from tests.abuse_helpers import pageviews
from tests.conftest import ADMIN_TOKEN, BROWSER, add_site, at
from tests.stores import sync_redis

EXAMPLES = int(os.environ.get("ANALYTICS_FUZZ_EXAMPLES", "12"))
HEADERS = {"User-Agent": BROWSER, "Authorization": f"Bearer {ADMIN_TOKEN}"}
BEACON_OPERATIONS = {"POST /collect", "GET /collect.gif"}


class LiveApp:
    """The app served on a loopback port by an event loop of its own, in a thread, so that a
    synchronous client (schemathesis's) can talk to it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveApp:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        app = create_app(
            self.settings,
            clock=ManualClock(at("2026-11-27 10:00:00")),
            registry=CollectorRegistry(),
        )
        self.runner = ServiceRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]


@pytest.fixture
def live(stores, prefix) -> Iterator[LiveApp]:
    settings = Settings(
        redis_url=stores.redis_url,
        database_url=stores.database_url,
        redis_prefix=prefix,
        admin_token=ADMIN_TOKEN,
        rollup_enabled=False,
        trusted_proxies=parse_networks(["127.0.0.0/8"]),
        rate_limit_per_minute=0,  # the fuzzer is one client: let it reach the counting
    )
    with LiveApp(settings) as app:
        for site, domains in (("caobang", ["caobang.gov.vn"]), ("open", [])):
            resp = requests.put(
                f"{app.url}/api/v1/sites/{site}", json={"domains": domains}, headers=HEADERS
            )
            assert resp.status_code in (200, 201), resp.text
        yield app


def named_site(case: Any) -> str | None:
    """The site a beacon names: a beacon can only ever count under that site's keys."""
    if case.operation.label == "GET /collect.gif":
        site = (case.query or {}).get("site")
    else:
        body = case.body
        if isinstance(body, (str, bytes)):
            try:
                body = json.loads(body)
            except ValueError:
                return None
        site = body.get("site") if isinstance(body, dict) else None
    return site if isinstance(site, str) and "{" not in site and "}" not in site else None


def pageviews_of(client: redis.Redis | RedisCluster, prefix: str, sites: set[str]) -> int:
    """The sites' lifetime page views, straight from Redis."""
    return sum(int(client.hget(f"{prefix}:{{{s}}}:t", "pv") or 0) for s in sites)


def fuzz(operation: Any, mode: GenerationMode, live: LiveApp, stores: Any, prefix: str) -> None:
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    beacon = operation.label in BEACON_OPERATIONS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        sites = {"caobang", "open", named_site(case) or "caobang"}
        before = pageviews_of(store, prefix, sites) if beacon else 0
        response = case.call(base_url=live.url, headers=HEADERS, timeout=30)
        case.validate_response(response, checks=checks)
        if beacon:
            counted = pageviews_of(store, prefix, sites) - before
            if 200 <= response.status_code < 300:
                assert counted in (0, 1)
            else:
                assert counted == 0, f"a {response.status_code} counted a page view"

    store = sync_redis(stores.redis_url)
    try:
        run()
    finally:
        store.close()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_makes_a_500_or_counts_when_refused(live, stores, prefix, mode):
    schema = schemathesis.openapi.from_dict(document())
    # a body too large to read is refused before anything in it is looked at
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    ran, unbreakable = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz(operation, mode, live, stores, prefix)
        except Unsatisfiable:
            # nothing in the document to break (no parameters, or free-form strings only)
            assert mode is GenerationMode.NEGATIVE, operation.label
            unbreakable.append(operation.label)
        else:
            ran.append(operation.label)
    assert len(ran) + len(unbreakable) == sum(len(item) for item in document()["paths"].values())
    assert "POST /collect" in ran
    if mode is GenerationMode.NEGATIVE:
        assert {"PUT /api/v1/sites/{site}", "GET /api/v1/sites/{site}/top"} <= set(ran)


# 2. beacons whose validity the test knows before it asks

SITE_IDS = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)
ARTICLE_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


NON_STRINGS = st.one_of(st.integers(), st.booleans(), st.lists(st.integers(), max_size=2))
OWN_PAGES = st.builds(
    lambda host, path: f"https://{host}caobang.gov.vn/{path}",
    st.sampled_from(["", "www.", "sogd."]),
    st.from_regex(r"[a-z0-9/_-]{0,40}", fullmatch=True),
)
FOREIGN_PAGES = st.sampled_from(["https://evil.example/", "https://caobang.gov.vn.evil.example/"])
UNKNOWN_SITES = SITE_IDS.filter(lambda s: s not in ("caobang", "open"))
VALID = {
    "article": ARTICLE_IDS,
    "title": st.text(max_size=MAX_TITLE),
    # a referrer the service cannot read is dropped, not refused
    "referrer": st.one_of(st.just("https://www.google.com/"), TEXT),
}
BROKEN = {
    "site": st.one_of(
        # not an id: empty, not starting with [a-z0-9], upper case, spaces, too long
        TEXT.filter(lambda s: not s or not s[0].isalnum() or s != s.lower() or " " in s),
        st.just("x" * 65),
        NON_STRINGS,
    ),
    "url": st.one_of(
        st.sampled_from(
            ["", "caobang.gov.vn/tin-tuc", "javascript:alert(1)", "ftp://caobang.gov.vn/"]
        ),
        st.just("https://caobang.gov.vn/" + "a" * MAX_URL),
        TEXT.filter(lambda s: "://" not in s),
        NON_STRINGS,
    ),
    "article": st.one_of(
        st.sampled_from(["", "x" * 129, "1'; DROP TABLE articles; --", "a b", "tin/1"]),
        NON_STRINGS,
    ),
    "title": st.one_of(st.text(min_size=MAX_TITLE + 1, max_size=MAX_TITLE + 5), NON_STRINGS),
    "referrer": st.one_of(st.just("https://r.example/" + "a" * MAX_URL), NON_STRINGS),
}
MISSING = object()


@st.composite
def beacons(draw: Any) -> tuple[dict[str, Any], int, set[str]]:
    """A beacon, what the service must answer - 204 (counted) or the status that refuses it -
    and the fields it breaks. Each outcome is drawn as often as the others."""
    expected = draw(st.sampled_from([204, 400, 403, 404]))
    names: set[str] = set()
    site = {204: draw(st.sampled_from(["caobang", "open"])), 403: "caobang", 400: "caobang"}
    body: dict[str, Any] = {
        "site": site.get(expected) or draw(UNKNOWN_SITES),
        "url": draw(FOREIGN_PAGES if expected == 403 else OWN_PAGES),
    }
    if expected == 204 and body["site"] == "open":  # a site without domains takes any page
        body["url"] = draw(st.one_of(OWN_PAGES, FOREIGN_PAGES))
    for name, valid in VALID.items():
        if draw(st.booleans()):
            body[name] = draw(valid)
    if expected == 400:
        names = draw(st.sets(st.sampled_from(sorted(BROKEN)), min_size=1))
        for name in names:
            body[name] = MISSING if name in ("site", "url") and draw(st.booleans()) else None
            if body[name] is None:
                body[name] = draw(BROKEN[name])
        body = {k: v for k, v in body.items() if v is not MISSING}
    if draw(st.booleans()):
        body["extra"] = draw(st.one_of(TEXT, NON_STRINGS))  # unknown fields are ignored
    return body, expected, names


addresses = itertools.count()


@settings(
    max_examples=EXAMPLES * 8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=beacons())
async def test_a_beacon_counts_exactly_when_it_is_valid(client, case):
    body, expected, broken = case
    if client.server.app[K.SITES].get("open") is None:
        await add_site(client, "open", domains=[])
    n = next(addresses)
    before = await pageviews(client) + await pageviews(client, "open")
    raw = json.dumps(body).encode()
    if len(raw) > MAX_BODY:  # several long broken fields: too large before it is read
        expected = 413
    resp = await client.post(
        "/collect",
        data=raw,
        headers={
            "User-Agent": BROWSER,
            "Origin": "https://caobang.gov.vn",
            "X-Forwarded-For": f"10.{n // 250 % 250}.{n % 250}.1",
        },
    )
    assert resp.status == expected, (body, await resp.text())
    if expected == 400:
        assert (await resp.json())["field"] in broken, body
    after = await pageviews(client) + await pageviews(client, "open")
    assert after - before == (1 if expected == 204 else 0), body

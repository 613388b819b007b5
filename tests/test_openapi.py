"""The OpenAPI document stays true: every route is described and every described path is routed,
and real answers - honest and refused, from every operation - have a documented status, a
documented media type and a body that validates against the documented schema."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jsonschema_rs
import pytest
import requests
import schemathesis

from analytics.openapi import SCHEMAS, document
from tests.conftest import ADMIN_TOKEN, BROWSER, send

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# CORS preflights are the browser's machinery, not operations of the API; HEAD mirrors GET
UNDESCRIBED_METHODS = {"HEAD", "OPTIONS"}
PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def routed(app: Any) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        if route.method in UNDESCRIBED_METHODS or route.name == "unmatched":
            continue  # "unmatched" is the catch-all that answers 404 and 405 as JSON
        path = PLACEHOLDER.sub(r"{\1}", route.resource.canonical)
        found.add((route.method, path))
    return found


def described(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in doc["paths"].items() for m in item}


async def test_every_route_is_described_and_every_described_path_is_routed(client):
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc == document()
    assert routed(client.server.app) == described(doc)


def test_every_schema_is_valid_json_schema():
    for name, schema in SCHEMAS.items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_every_operation_documents_its_answers():
    doc = document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op.get("summary"), (method, path)
            assert op["responses"], (method, path)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == set(PLACEHOLDER.findall(path)), (method, path)
            if "{site}" in path:
                assert "404" in op["responses"], (method, path)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)


class Conformance:
    """Checks real answers against the document, operation by operation."""

    def __init__(self) -> None:
        self.doc = document()
        self.schema = schemathesis.openapi.from_dict(self.doc)
        self.seen: set[tuple[str, str, int]] = set()

    async def check(self, method: str, template: str, resp: Any) -> None:
        body = await resp.read()
        op = self.doc["paths"][template][method.lower()]
        status = str(resp.status)
        assert status in op["responses"], f"{method} {template}: {status} is not documented"
        documented = op["responses"][status].get("content", {})
        if body and resp.status != 304:
            assert resp.content_type in documented, (method, template, resp.content_type)
        prepared = requests.Request(method, str(resp.url)).prepare()
        answer = schemathesis.Response(
            resp.status,
            {k: resp.headers.getall(k) for k in resp.headers},
            body,
            prepared,
            0.0,
            True,
        )
        self.schema[template][method.upper()].validate_response(answer)
        self.seen.add((method.upper(), template, resp.status))


@pytest.fixture
def conformance() -> Conformance:
    return Conformance()


async def test_real_answers_validate(client, conformance, make_client, settings):
    c = conformance
    site = "/api/v1/sites/{site}"
    await send(client, article="123", title="Tin 123")

    async def get(template: str, path: str, **kw: Any) -> Any:
        resp = await client.get(path, **kw)
        await c.check("GET", template, resp)
        return resp

    # operations and documents
    for path in ("/", "/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"):
        await get(path, path)
    for path in ("/t.js", "/widget.js"):
        resp = await get(path, path)
        await get(path, path, headers={"If-None-Match": resp.headers["ETag"]})

    # beacons
    async def collect(resp_coro: Any) -> None:
        await c.check("POST", "/collect", await resp_coro)

    await collect(send(client))
    await collect(send(client, article="123", query="?counters=1"))
    await collect(send(client, ua="Googlebot/2.1", query="?counters=1"))
    await collect(send(client, article="a b"))
    await collect(send(client, headers={"Origin": "https://evil.example"}))
    await collect(send(client, "lamdong", url="https://lamdong.gov.vn/"))
    await collect(send(client, title="x" * 9000))
    pixel = "/collect.gif?site={}&url=https%3A%2F%2Fcaobang.gov.vn%2F"
    await get("/collect.gif", pixel.format("caobang"), headers={"User-Agent": BROWSER})
    await get("/collect.gif", pixel.format("Cao Bang"), headers={"User-Agent": BROWSER})
    await get("/collect.gif", pixel.format("lamdong"), headers={"User-Agent": BROWSER})
    await get(
        "/collect.gif",
        pixel.format("caobang"),
        headers={"User-Agent": BROWSER, "Referer": "https://evil.example/"},
    )
    limited = await make_client(
        settings=dataclasses.replace(settings, rate_limit_per_minute=1, rate_limit_burst=1)
    )
    for status in (204, 429):
        resp = await send(limited)
        assert resp.status == status
        await c.check("POST", "/collect", resp)

    # reads, honest and refused
    reads = {
        site + "/counters": "/api/v1/sites/{}/counters",
        site + "/articles/{article}": "/api/v1/sites/{}/articles/123",
        site + "/articles": "/api/v1/sites/{}/articles?ids=123,456",
        site + "/top": "/api/v1/sites/{}/top?period=all&limit=5",
        site + "/daily": "/api/v1/sites/{}/daily?from=2026-11-20&to=2026-11-27",
        "/widget/{site}": "/widget/{}?lang=en",
        "/badge/{site}/{article}.svg": "/badge/{}/123.svg",
    }
    for template, path in reads.items():
        resp = await get(template, path.format("caobang"))
        assert resp.status == 200, (path, await resp.text())
        await get(template, path.format("caobang"), headers={"If-None-Match": resp.headers["ETag"]})
        assert (await get(template, path.format("lamdong"))).status == 404
        assert (await get(template, path.format("Cao-Bang"))).status == 400
    for template, bad in [
        (site + "/articles/{article}", "/api/v1/sites/caobang/articles/a%20b"),
        (site + "/articles", "/api/v1/sites/caobang/articles"),
        (site + "/top", "/api/v1/sites/caobang/top?period=decade"),
        (site + "/daily", "/api/v1/sites/caobang/daily?from=2020-01-01&to=2026-01-01"),
        ("/widget/{site}", "/widget/caobang?lang=fr"),
        ("/badge/{site}/{article}.svg", "/badge/caobang/a%20b.svg"),
    ]:
        assert (await get(template, bad)).status == 400, bad

    # admin
    await get("/api/v1/sites", "/api/v1/sites", headers=ADMIN)
    await get("/api/v1/sites", "/api/v1/sites")
    for body, headers in [
        ({"domains": ["backan.gov.vn"]}, ADMIN),
        ({"domains": ["backan.gov.vn"], "name": "Bắc Kạn"}, ADMIN),
        ({"domains": ["not a host"]}, ADMIN),
        ({}, {}),
    ]:
        resp = await client.put("/api/v1/sites/backan", json=body, headers=headers)
        await c.check("PUT", site, resp)
    baseline = site + "/baseline"
    for path, body, headers in [
        ("caobang", {"total": {"pageviews": 10, "visits": 5}, "articles": {"123": 7}}, ADMIN),
        ("caobang", {"articles": {"123": 8}}, ADMIN),
        ("caobang", {"total": {"pageviews": -1}}, ADMIN),
        ("lamdong", {"articles": {"1": 1}}, ADMIN),
        ("caobang", {"articles": {"1": 1}}, {}),
    ]:
        resp = await client.post(f"/api/v1/sites/{path}/baseline", json=body, headers=headers)
        await c.check("POST", baseline, resp)

    # every described operation was exercised at least once
    exercised = {(m, t) for m, t, _ in c.seen}
    assert exercised == described(c.doc)
    statuses = {s for _, _, s in c.seen}
    assert {200, 201, 204, 304, 400, 401, 403, 404, 413, 429} <= statuses


async def test_a_wrong_answer_is_caught(client, conformance):
    """The check itself can fail: an answer that breaks the schema is reported."""
    resp = await client.get("/healthz")
    conformance.doc["paths"]["/healthz"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ] = {"type": "object", "required": ["uptime"]}
    conformance.schema = schemathesis.openapi.from_dict(conformance.doc)
    with pytest.raises(Exception, match="uptime"):
        await conformance.check("GET", "/healthz", resp)
    resp = await client.get("/nope")
    with pytest.raises(KeyError):
        await conformance.check("GET", "/nope", resp)
    resp = await client.get("/api/v1/sites/lamdong/counters")
    conformance.doc["paths"]["/api/v1/sites/{site}/counters"]["get"]["responses"].pop("404")
    with pytest.raises(AssertionError, match="404 is not documented"):
        await conformance.check("GET", "/api/v1/sites/{site}/counters", resp)

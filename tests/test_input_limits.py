"""Input limits: field lengths at and past their limit, bodies at and past 8 KiB, request lines
and headers of absurd size refused by the HTTP server (and the service serving on), SQL-shaped
identifiers refused with the tables intact, and the admin token only in `Authorization`. The
malformed-body cases are in tests/test_intake.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from analytics.lifecycle import rollup_pass
from collectors.beacons import MAX_BODY, MAX_TITLE, MAX_URL
from tests.abuse_helpers import article_views, pageviews
from tests.conftest import ADMIN_TOKEN, BROWSER, send

PAGE = "https://caobang.gov.vn/tin-tuc/"
REFERRER = "https://www.google.com/search?q="


def padded(prefix: str, length: int) -> str:
    return prefix + "a" * (length - len(prefix))


async def test_fields_at_their_limit_count_and_past_it_are_refused(client):
    at_limit = {
        "url": padded(PAGE, MAX_URL),
        "referrer": padded(REFERRER, MAX_URL),
        "title": "T" * MAX_TITLE,
        "article": "a" * 128,
    }
    assert (await send(client, **at_limit)).status == 204
    for field, value in at_limit.items():
        resp = await send(client, **{**at_limit, field: value + "a"})
        assert resp.status == 400, field
        assert (await resp.json())["field"] == field
    assert await pageviews(client) == 1


def beacon_of_size(size: int) -> bytes:
    """A valid beacon padded to exactly `size` bytes with a field the service ignores."""
    body = {"site": "caobang", "url": PAGE + "1", "padding": ""}
    base = len(json.dumps(body, separators=(",", ":")).encode())
    body["padding"] = "x" * (size - base)
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) == size
    return raw


async def test_a_body_of_8_kib_counts_and_one_byte_more_is_413(client):
    headers = {"Content-Type": "text/plain", "User-Agent": BROWSER}
    resp = await client.post("/collect", data=beacon_of_size(MAX_BODY), headers=headers)
    assert resp.status == 204
    resp = await client.post("/collect", data=beacon_of_size(MAX_BODY + 1), headers=headers)
    assert resp.status == 413
    assert (await resp.json())["error"] == "too_large"
    assert await pageviews(client) == 1


@pytest.mark.parametrize("field", ["title", "ignored"])
async def test_deeply_nested_json_is_a_400_not_a_crash(client, field):
    """3 000 nested arrays fit in 6 KB; the decoder's recursion limit must not become a 500."""
    raw = b'{"site": "caobang", "url": "https://caobang.gov.vn/", "%s": ' % field.encode()
    raw += b"[" * 3000 + b"]" * 3000 + b"}"
    assert len(raw) <= MAX_BODY
    resp = await client.post("/collect", data=raw, headers={"User-Agent": BROWSER})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid"
    assert await pageviews(client) == 0
    resp = await client.put("/api/v1/sites/x", data=b"[" * 100_000, headers=admin_auth())
    assert resp.status == 400
    assert (await send(client)).status == 204


async def raw_request(client, head: bytes) -> bytes:
    """Send `head` as the whole request and return the status line."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        # a request line of 100 KB (an absurd query string)
        b"GET /collect.gif?site=caobang&url=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        # one header of 100 KB
        b"POST /collect HTTP/1.1\r\nHost: t\r\nX-Junk: " + b"a" * 100_000 + b"\r\n\r\n",
        # a user agent past the server's 8 KiB header limit
        b"POST /collect HTTP/1.1\r\nHost: t\r\nUser-Agent: " + b"M" * 9000 + b"\r\n\r\n",
        # thousands of headers, and thousands of X-Forwarded-For lines
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
        + b"\r\n",
        b"POST /collect HTTP/1.1\r\nHost: t\r\n"
        + b"X-Forwarded-For: 192.0.2.1\r\n" * 2000
        + b"\r\n",
    ],
)
async def test_absurd_request_lines_and_headers_are_refused_by_the_server(client, head):
    status_line = await raw_request(client, head)
    assert status_line.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), status_line
    # the service goes on serving and counting
    assert (await client.get("/healthz")).status == 200
    assert (await send(client)).status == 204
    assert await pageviews(client) == 1


async def test_a_long_forwarded_for_chain_under_the_limit_is_read_not_refused(client):
    """A chain of 500 hops fits the header limit: read right to left, honestly."""
    chain = ", ".join(f"192.0.2.{i % 250}" for i in range(500)) + ", 203.0.113.7"
    assert (await send(client, ip=chain)).status == 204
    assert (await send(client)).status == 204  # 203.0.113.7 again: the same visitor
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["today"] == {"pageviews": 2, "visits": 1, "visitors": 1}


INJECTIONS = [
    "1'; DROP TABLE articles; --",
    "1 OR 1=1",
    "1%27%20OR%20%271%27=%271",
    "1\x00",
    "../../etc/passwd",
    "{caobang}",
    "a*",
]


async def test_sql_shaped_identifiers_are_refused_and_the_tables_stay_intact(client, db):
    assert (await send(client, article="123", title="Tin 123")).status == 204
    for bad in INJECTIONS:
        resp = await send(client, article=bad, ip="198.51.100.1")
        assert resp.status == 400, bad
        assert (await resp.json())["field"] == "article"
        pixel = await client.get(
            "/collect.gif",
            params={"site": "caobang", "url": PAGE + "1", "article": bad},
            headers={"User-Agent": BROWSER},
        )
        assert pixel.status == 400, bad
        resp = await client.get("/api/v1/sites/caobang/articles", params={"ids": f"123,{bad}"})
        assert resp.status == 400, bad
    for bad in ("caobang'; DROP TABLE sites; --", "caobang OR 1=1"):
        resp = await send(client, bad)
        assert resp.status == 400
        resp = await client.put("/api/v1/sites/x", json={"domains": [bad]}, headers=admin_auth())
        assert resp.status == 400
    resp = await client.post(
        "/api/v1/sites/caobang/baseline",
        json={"articles": {INJECTIONS[0]: 5}},
        headers=admin_auth(),
    )
    assert resp.status == 400
    assert await rollup_pass(client.server.app, wait=True)
    assert await db.fetchval("SELECT count(*) FROM sites") == 1
    rows = await db.fetch("SELECT article, views, title FROM articles")
    assert [tuple(r) for r in rows] == [("123", 1, "Tin 123")]
    assert await db.fetchval("SELECT sum(pageviews) FROM site_days") == 1
    assert await article_views(client, "123") == 1


def admin_auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"token": ADMIN_TOKEN}, {}),
        ({"access_token": ADMIN_TOKEN}, {}),
        ({"admin_token": ADMIN_TOKEN}, {}),
        ({}, {"X-Admin-Token": ADMIN_TOKEN}),
        ({}, {"Cookie": f"token={ADMIN_TOKEN}"}),
        ({}, {"Authorization": ADMIN_TOKEN}),
        ({}, {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}),
        ({}, {"Proxy-Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ],
)
async def test_the_admin_token_counts_only_in_the_authorization_header(client, params, headers):
    resp = await client.get("/api/v1/sites", params=params, headers=headers)
    assert resp.status == 401
    assert ADMIN_TOKEN not in await resp.text()
    resp = await client.get("/api/v1/sites", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert resp.status == 200

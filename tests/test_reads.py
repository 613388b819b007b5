"""The read API's parameters: validation that names the field, limits, caching headers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from analytics import appkeys as K
from tests.conftest import ADMIN_TOKEN, send


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/sites/Cao%20Bang/counters", "site"),
        ("/api/v1/sites/caobang/articles/a%20b", "article"),
        ("/api/v1/sites/caobang/articles", "ids"),
        ("/api/v1/sites/caobang/articles?ids=", "ids"),
        ("/api/v1/sites/caobang/articles?ids=1,a%20b", "ids"),
        ("/api/v1/sites/caobang/articles?ids=" + ",".join(map(str, range(101))), "ids"),
        ("/api/v1/sites/caobang/top?period=year", "period"),
        ("/api/v1/sites/caobang/top?limit=0", "limit"),
        ("/api/v1/sites/caobang/top?limit=101", "limit"),
        ("/api/v1/sites/caobang/top?limit=ten", "limit"),
        ("/api/v1/sites/caobang/daily?from=2026-13-01", "from"),
        ("/api/v1/sites/caobang/daily?from=27/11/2026", "from"),
        ("/api/v1/sites/caobang/daily?to=2026-1-1", "to"),
        ("/api/v1/sites/caobang/daily?from=2026-11-28&to=2026-11-27", "from"),
        ("/api/v1/sites/caobang/daily?from=2025-01-01&to=2026-01-02", "to"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(client, path, field):
    resp = await client.get(path)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "invalid"
    assert body["field"] == field


async def test_limits_at_the_edge_are_accepted(client):
    ids = ",".join(map(str, range(100)))
    resp = await client.get(f"/api/v1/sites/caobang/articles?ids={ids}")
    assert resp.status == 200
    assert len((await resp.json())["articles"]) == 100
    resp = await client.get("/api/v1/sites/caobang/daily?from=2025-01-02&to=2026-01-02")
    assert resp.status == 200
    assert len((await resp.json())["days"]) == 366
    resp = await client.get("/api/v1/sites/caobang/daily")
    days = (await resp.json())["days"]
    assert len(days) == 30
    assert days[-1]["date"] == "2026-11-27"


async def test_unknown_site_reads_are_404(client):
    resp = await client.get("/api/v1/sites/lamdong/counters")
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_site"


async def test_reads_are_public_briefly_cacheable_and_answer_304(client):
    await send(client)
    resp = await client.get(
        "/api/v1/sites/caobang/counters", headers={"Origin": "https://anywhere.example"}
    )
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["Cache-Control"] == "public, max-age=2"
    etag = resp.headers["ETag"]
    again = await client.get("/api/v1/sites/caobang/counters", headers={"If-None-Match": etag})
    assert again.status == 304
    await send(client, ip="198.51.100.77")
    changed = await client.get("/api/v1/sites/caobang/counters", headers={"If-None-Match": etag})
    assert changed.status == 200


async def test_a_site_added_by_another_instance_is_known_here_soon(make_client, settings):
    first = await make_client(settings=dataclasses.replace(settings, sites_refresh=3600))
    second = await make_client()
    resp = await second.put(
        "/api/v1/sites/backan",
        json={"domains": []},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert resp.status == 201
    # told by PostgreSQL's NOTIFY, long before the hourly refresh
    for _ in range(100):
        if first.app[K.SITES].get("backan") is not None:
            break
        await asyncio.sleep(0.05)
    assert first.app[K.SITES].get("backan") is not None
    assert (await send(first, "backan", url="https://backan.gov.vn/")).status == 204

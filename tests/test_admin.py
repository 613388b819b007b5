"""The admin API: sites and baselines, behind the bearer token."""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import ADMIN_TOKEN, add_site, send
from tests.rollup_helpers import rollup

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_sites_need_the_token(client):
    assert (await client.get("/api/v1/sites")).status == 401
    wrong = {"Authorization": "Bearer " + "x" * len(ADMIN_TOKEN)}
    resp = await client.get("/api/v1/sites", headers=wrong)
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    basic = {"Authorization": f"Basic {ADMIN_TOKEN}"}
    assert (await client.get("/api/v1/sites", headers=basic)).status == 401
    resp = await client.put("/api/v1/sites/x", json={}, headers=wrong)
    assert resp.status == 401


async def test_admin_api_is_off_without_a_token(make_client, settings):
    client = await make_client(settings=dataclasses.replace(settings, admin_token=None))
    resp = await client.get("/api/v1/sites", headers=AUTH)
    assert resp.status == 403
    body = await resp.json()
    assert body["error"] == "admin_disabled"
    assert "ANALYTICS_ADMIN_TOKEN" in body["detail"]


async def test_create_update_and_list_sites(client):
    resp = await client.put(
        "/api/v1/sites/backan",
        json={"name": "Bắc Kạn", "domains": ["https://www.BacKan.gov.vn/", "backan.vn"]},
        headers=AUTH,
    )
    assert resp.status == 201
    assert await resp.json() == {
        "site": "backan",
        "name": "Bắc Kạn",
        "domains": ["backan.gov.vn", "backan.vn"],
        "timezone": "Asia/Ho_Chi_Minh",
        "respect_dnt": False,
    }
    resp = await client.put(
        "/api/v1/sites/backan", json={"timezone": "Europe/Berlin"}, headers=AUTH
    )
    assert resp.status == 200
    listed = await (await client.get("/api/v1/sites", headers=AUTH)).json()
    assert [s["site"] for s in listed["sites"]] == ["backan", "caobang"]
    assert listed["sites"][0]["timezone"] == "Europe/Berlin"
    # the new site counts at once in this process
    ok = await send(client, "backan", url="https://backan.gov.vn/", headers={"Origin": ""})
    assert ok.status == 204


@pytest.mark.parametrize(
    ("site", "body", "field"),
    [
        ("Bad Site", {}, "site"),
        ("ok", {"timezone": "Mars/Olympus"}, "timezone"),
        ("ok", {"domains": "caobang.gov.vn"}, "domains"),
        ("ok", {"domains": ["not a host"]}, "domains"),
        ("ok", {"name": 5}, "name"),
        ("ok", {"respect_dnt": "yes"}, "respect_dnt"),
    ],
)
async def test_site_validation_names_the_field(client, site, body, field):
    resp = await client.put(f"/api/v1/sites/{site}", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["field"] == field


async def test_admin_body_must_be_a_json_object(client):
    resp = await client.put("/api/v1/sites/ok", data=b"[1]", headers=AUTH)
    assert resp.status == 400
    resp = await client.put("/api/v1/sites/ok", data=b"{", headers=AUTH)
    assert resp.status == 400


async def counters(client):
    return await (await client.get("/api/v1/sites/caobang/counters")).json()


async def views(client, article):
    return (await (await client.get(f"/api/v1/sites/caobang/articles/{article}")).json())["views"]


async def test_baseline_then_live_views_add_up_and_reimport_replaces(client, db):
    await send(client, article="123")
    resp = await client.post(
        "/api/v1/sites/caobang/baseline",
        json={
            "total": {"pageviews": 4512301, "visits": 1200000},
            "articles": {"123": 703, "456": 12},
            "source": "old-counter",
        },
        headers=AUTH,
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["total"]["pageviews"] == 4512301
    assert body["total"]["source"] == "old-counter"
    assert body["articles"]["count"] == 2
    assert (await counters(client))["total"]["pageviews"] == 4512302
    assert (await counters(client))["total"]["visits"] == 1200001
    assert (await counters(client))["today"]["pageviews"] == 1  # baselines are totals only
    assert await views(client, "123") == 704
    assert await views(client, "456") == 12
    await send(client, article="456")
    assert await views(client, "456") == 13

    # a new import replaces the old one; it never adds
    resp = await client.post(
        "/api/v1/sites/caobang/baseline",
        json={"total": {"pageviews": 5000000, "visits": 1300000}, "articles": {"123": 800}},
        headers=AUTH,
    )
    assert resp.status == 200
    assert (await counters(client))["total"]["pageviews"] == 5000002
    assert await views(client, "123") == 801
    assert await views(client, "456") == 13  # not in the new import: its baseline stays

    # baselines stay apart from live counts in PostgreSQL, and survive the rollup
    await rollup(client.app)
    live = await db.fetchval("SELECT views FROM articles WHERE article = '123'")
    base = await db.fetchval("SELECT views FROM article_baselines WHERE article = '123'")
    assert (live, base) == (1, 800)
    assert (await counters(client))["total"]["pageviews"] == 5000002


async def test_a_baseline_the_replicas_did_not_acknowledge_is_a_503_and_safe_to_repeat(
    make_client, settings, db
):
    """Asked for more Redis replicas than exist, the import says the live totals may not survive
    a failover; the baseline is stored, and importing it again replaces, never adds."""
    client = await make_client(settings=dataclasses.replace(settings, rollup_min_replicas=5))
    await add_site(client)
    await send(client, article="123")
    # built: the import now moves the live totals (on a site not built yet, it rebuilds it from
    # PostgreSQL, which a failover that lost it would simply do again)
    await rollup(client.app)
    body = {"total": {"pageviews": 1000, "visits": 500}, "articles": {"123": 703}}
    for _ in range(2):
        resp = await client.post("/api/v1/sites/caobang/baseline", json=body, headers=AUTH)
        assert resp.status == 503
        error = await resp.json()
        assert error["error"] == "storage_unavailable"
        assert "0 of 5 Redis replica(s)" in error["detail"]
        assert "import it again" in error["detail"]
        assert await db.fetchval("SELECT pageviews FROM site_baselines") == 1000
        assert (await counters(client))["total"]["pageviews"] == 1001
        assert await views(client, "123") == 704


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "total"),
        ({"total": {"pageviews": -1}}, "total.pageviews"),
        ({"total": {"pageviews": 1.5}}, "total.pageviews"),
        ({"total": 5}, "total"),
        ({"articles": {"bad id": 1}}, "articles"),
        ({"articles": {"1": "703"}}, "articles.1"),
        ({"articles": [1]}, "articles"),
    ],
)
async def test_baseline_validation(client, body, field):
    resp = await client.post("/api/v1/sites/caobang/baseline", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["field"] == field
    assert (await counters(client))["total"]["pageviews"] == 0


async def test_baseline_for_unknown_site_is_404(client):
    resp = await client.post(
        "/api/v1/sites/nowhere/baseline", json={"total": {"pageviews": 1}}, headers=AUTH
    )
    assert resp.status == 404

from tests.conftest import send


async def test_beacon_counts(client):
    resp = await send(client, article="123")
    assert resp.status == 204, await resp.text()
    resp = await client.get("/api/v1/sites/caobang/counters")
    body = await resp.json()
    assert body["today"] == {"pageviews": 1, "visits": 1, "visitors": 1}
    assert body["online"] == 1
    resp = await client.get("/api/v1/sites/caobang/articles/123")
    assert (await resp.json())["views"] == 1

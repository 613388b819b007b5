"""Helpers of the abuse, privacy and input-limit tests: reading what was counted, and why not."""

from __future__ import annotations

from typing import Any


async def counters(client: Any, site: str = "caobang") -> dict[str, Any]:
    resp = await client.get(f"/api/v1/sites/{site}/counters")
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def article_views(client: Any, article: str, site: str = "caobang") -> int:
    resp = await client.get(f"/api/v1/sites/{site}/articles/{article}")
    assert resp.status == 200, await resp.text()
    views: int = (await resp.json())["views"]
    return views


async def metric(client: Any, reason: str, result: str = "dropped") -> float:
    """The beacons counter for one (result, reason), as /metrics shows it."""
    text = await (await client.get("/metrics")).text()
    needle = f'analytics_beacons_total{{reason="{reason}",result="{result}"}} '
    line = next(x for x in text.splitlines() if x.startswith(needle))
    return float(line.removeprefix(needle))


async def pageviews(client: Any, site: str = "caobang") -> int:
    total: int = (await counters(client, site))["total"]["pageviews"]
    return total

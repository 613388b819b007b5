"""Reads: the numbers the widget and the JSON API show, in real time.

Redis holds the live counters: PostgreSQL's durable record (added back by `rebuild` after a loss)
plus everything counted since, so a view shows at once and never twice across a rollup. The
counters and article reads are one Redis round trip each; `daily` and titles come from
PostgreSQL, overlaid with the days Redis still holds live.
"""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta
from typing import Any, cast

from redis.exceptions import RedisError

from aggregations.errors import POSTGRES_ERRORS, StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar
from aggregations.redis_client import RedisClient
from aggregations.scripts import Scripts
from aggregations.sites import Site

PERIODS = (
    "today",
    "yesterday",
    "this_week",
    "last_week",
    "this_month",
    "last_month",
    "this_year",
    "total",
)
TOP_PERIODS = ("today", "week", "month", "all")


class Reader:
    """Reads counters for one Redis key prefix; `pool` is used only for history and titles."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        prefix: str,
        online_window: float,
        calendar: Calendar | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.prefix = prefix
        self.online_window = online_window
        self.calendar = calendar or Calendar()

    def keys(self, site: Site) -> SiteKeys:
        return SiteKeys(self.prefix, site.id)

    async def counters(self, site: Site, now: float) -> dict[str, Any]:
        """Online now and every period's page views, visits and visitors."""
        k = self.keys(site)
        p = self.calendar.at(now, site.tz)
        hashes = [
            k.day(p.day),
            k.day(p.yesterday),
            k.week(p.week),
            k.week(p.last_week),
            k.month(p.month),
            k.month(p.last_month),
            k.year(p.year),
            k.total,
        ]
        hlls = [
            k.day_visitors(p.day),
            k.day_visitors(p.yesterday),
            k.week_visitors(p.week),
            k.week_visitors(p.last_week),
            k.month_visitors(p.month),
            k.month_visitors(p.last_month),
            k.year_visitors(p.year),
            k.total_visitors,
        ]
        try:
            reply = await self.scripts.read_counters(
                keys=[*hashes, *hlls, k.seen, k.marker],
                args=[int((now - self.online_window) * 1000)],
            )
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err
        result: dict[str, Any] = {
            "site": site.id,
            "timezone": site.timezone,
            "as_of": datetime.fromtimestamp(now, site.tz).isoformat(timespec="seconds"),
            "online": int(reply[24]),
        }
        for i, name in enumerate(PERIODS):
            result[name] = {
                "pageviews": int(reply[3 * i]),
                "visits": int(reply[3 * i + 1]),
                "visitors": int(reply[3 * i + 2]),
            }
        return result

    async def articles(self, site: Site, ids: list[str], now: float) -> list[dict[str, Any]]:
        """Lifetime (baseline included) and today's views of each article."""
        if not ids:
            return []
        k = self.keys(site)
        p = self.calendar.at(now, site.tz)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zmscore(k.articles_total, ids)
                pipe.zmscore(k.articles_day(p.day), ids)
                totals, today = await pipe.execute()
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err
        return [
            {"article": a, "views": int(t or 0), "today": int(d or 0)}
            for a, t, d in zip(ids, totals, today, strict=True)
        ]

    async def top(
        self, site: Site, period: str, limit: int, now: float, pool: Any
    ) -> list[dict[str, Any]]:
        """The most viewed articles of a period, with titles when beacons carried them."""
        k = self.keys(site)
        p = self.calendar.at(now, site.tz)
        key = {
            "today": k.articles_day(p.day),
            "week": k.articles_week(p.week),
            "month": k.articles_month(p.month),
            "all": k.articles_total,
        }[period]
        try:
            ranked = cast(
                list[tuple[bytes, float]],
                await self.redis.zrevrange(key, 0, limit - 1, withscores=True),
            )
            ids = [a.decode() for a, _ in ranked]
            pending = cast(
                list[bytes | None], await self.redis.hmget(k.pending_titles, ids) if ids else []
            )
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err
        titles = {a: t.decode() for a, t in zip(ids, pending, strict=True) if t is not None}
        missing = [a for a in ids if a not in titles]
        if missing:
            # titles are a nicety: the ranking itself is live in Redis
            with contextlib.suppress(*POSTGRES_ERRORS):
                titles.update(await stored_titles(pool, site.id, missing))
        return [
            {"article": a, "title": titles.get(a), "views": int(score)}
            for a, (_, score) in zip(ids, ranked, strict=True)
        ]

    async def daily(
        self, site: Site, start: date, end: date, now: float, pool: Any
    ) -> list[dict[str, Any]]:
        """Every day of [start, end], zero-filled: PostgreSQL, overlaid with live Redis days.

        Redis keeps a day's hash for three days; it holds the whole day (PostgreSQL's part
        included) once built, and only what came after a loss until then: the larger wins.
        """
        try:
            rows = await pool.fetch(
                "SELECT day, pageviews, visits, visitors FROM site_days"
                " WHERE site_id = $1 AND day BETWEEN $2 AND $3",
                site.id,
                start,
                end,
            )
        except POSTGRES_ERRORS as err:
            raise StorageUnavailable(f"PostgreSQL could not be read: {err}") from err
        stored = {r["day"]: (r["pageviews"], r["visits"], r["visitors"]) for r in rows}
        k = self.keys(site)
        today = self.calendar.at(now, site.tz).day
        live_days = [d for d in (today - timedelta(days=i) for i in range(3)) if start <= d <= end]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for d in live_days:
                    pipe.hmget(k.day(d), ["pv", "visits"])
                    pipe.execute_command("PFCOUNT", k.day_visitors(d))  # see redis_client
                replies = await pipe.execute()
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err
        for i, d in enumerate(live_days):
            pv, visits = replies[2 * i]
            if pv is not None:
                live = (int(pv), int(visits or 0), int(replies[2 * i + 1]))
                old = stored.get(d, (0, 0, 0))
                stored[d] = (max(live[0], old[0]), max(live[1], old[1]), max(live[2], old[2]))
        days = []
        d = start
        while d <= end:
            pv, visits, visitors = stored.get(d, (0, 0, 0))
            days.append(
                {"date": d.isoformat(), "pageviews": pv, "visits": visits, "visitors": visitors}
            )
            d += timedelta(days=1)
        return days


async def stored_titles(pool: Any, site_id: str, ids: list[str]) -> dict[str, str]:
    rows = await pool.fetch(
        "SELECT article, title FROM articles WHERE site_id = $1 AND article = ANY($2)"
        " AND title IS NOT NULL",
        site_id,
        ids,
    )
    return {r["article"]: r["title"] for r in rows}

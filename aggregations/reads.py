"""Reads: the numbers the widget and the JSON API show, in real time.

Redis holds the live counters: PostgreSQL's durable record (added back by `rebuild` after a loss)
plus everything counted since, so a view shows at once and never twice across a rollup. The
counters and article reads are one Redis round trip each; `daily` and titles come from
PostgreSQL, overlaid with the days Redis still holds live.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Hashable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, cast

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

from aggregations.errors import POSTGRES_ERRORS, StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar, Periods
from aggregations.pipeline import GroupCommit, bulk, bulks
from aggregations.readcache import ReadCache
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


def score(value: bytes | None) -> int:
    """A sorted-set score as Redis writes it ("703", or "703.0" style from a float)."""
    return int(float(value)) if value is not None else 0


class Reader:
    """Reads counters for one Redis key prefix; `pool` is used only for history and titles.

    The widget's two hot reads (counters, article views) go through the group commit
    (`aggregations.pipeline`): identical reads of one event-loop tick share one Redis command,
    so a burst of widgets costs Redis one run, not one each.
    """

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        prefix: str,
        online_window: float,
        calendar: Calendar | None = None,
        *,
        pipe: GroupCommit | None,
        cache: ReadCache | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.prefix = prefix
        self.online_window = online_window
        self.calendar = calendar or Calendar()
        self.pipe = pipe
        self.cache = cache or ReadCache(ttl=0.0)
        self._counter_commands: dict[tuple[str, date], tuple[bytes, list[str]]] = {}

    def keys(self, site: Site) -> SiteKeys:
        return SiteKeys(self.prefix, site.id)

    def _counters_command(self, site: Site, p: Periods) -> tuple[bytes, list[str]]:
        """`lua/read_counters.lua` by SHA with its keys, encoded once per site and day (the one
        argument, online since, follows), and the keys unencoded."""
        cached = self._counter_commands.get((site.id, p.day))
        if cached is None:
            if len(self._counter_commands) > 10_000:
                self._counter_commands.clear()
            k = self.keys(site)
            keys = [
                *(k.day(p.day), k.day(p.yesterday), k.week(p.week), k.week(p.last_week)),
                *(k.month(p.month), k.month(p.last_month), k.year(p.year), k.total),
                *(k.day_visitors(p.day), k.day_visitors(p.yesterday)),
                *(k.week_visitors(p.week), k.week_visitors(p.last_week)),
                *(k.month_visitors(p.month), k.month_visitors(p.last_month)),
                *(k.year_visitors(p.year), k.total_visitors, k.seen, k.marker),
            ]
            head = b"*%d\r\n" % (3 + len(keys) + 1)
            encoded = head + bulks(["EVALSHA", self.scripts.read_counters.sha, len(keys), *keys])
            cached = self._counter_commands[(site.id, p.day)] = (encoded, keys)
        return cached

    def _read(
        self,
        key: Hashable,
        command: bytes,
        plain: Sequence[Any],
        script: AsyncScript | None = None,
    ) -> Awaitable[Any]:
        """The reply of a read, queued now (so reads queued together go out together); on a
        Redis Cluster (no group commit), the same command, `plain`, through redis-py."""
        if self.pipe is None:
            return self._direct(plain, script)
        return self._await(self.pipe.shared(key, command), command, key, script)

    async def _direct(self, plain: Sequence[Any], script: AsyncScript | None) -> Any:
        try:
            try:
                return await self.redis.execute_command(*plain)
            except NoScriptError:
                if script is None:
                    raise
                await self.redis.script_load(script.script)
                return await self.redis.execute_command(*plain)
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err

    async def _await(
        self, reply: Awaitable[Any], command: bytes, key: Hashable, script: AsyncScript | None
    ) -> Any:
        try:
            try:
                return await reply
            except NoScriptError:
                if script is None:
                    raise
                await self.redis.script_load(script.script)
                assert self.pipe is not None
                return await self.pipe.shared(key, command)
        except RedisError as err:
            raise StorageUnavailable(f"Redis could not be read: {err}") from err

    async def counters(self, site: Site, now: float) -> dict[str, Any]:
        """Online now and every period's page views, visits and visitors (a fresh dict; its
        nested period dicts may be shared with other callers: do not change them)."""
        cached = await self.cache.through(
            site.id, "counters", now, lambda: self._counters(site, now)
        )
        return dict(cached)

    async def _counters(self, site: Site, now: float) -> dict[str, Any]:
        p = self.calendar.at(now, site.tz)
        since = int((now - self.online_window) * 1000)
        # readers of the same site and second share a run; its `online` boundary is the first
        # one's, which differs from the others' by less than the tick they arrived in
        encoded, keys = self._counters_command(site, p)
        script = self.scripts.read_counters
        reply = await self._read(
            ("counters", site.id, p.day, since // 1000),
            encoded + bulk(b"%d" % since),
            ("EVALSHA", script.sha, len(keys), *keys, since),
            script,
        )
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
        """Lifetime (baseline included) and today's views of each article (fresh dicts)."""
        if not ids:
            return []
        key = ("articles", *ids)
        cached = await self.cache.through(site.id, key, now, lambda: self._articles(site, ids, now))
        return [dict(a) for a in cached]

    async def _articles(self, site: Site, ids: list[str], now: float) -> list[dict[str, Any]]:
        k = self.keys(site)
        p = self.calendar.at(now, site.tz)
        members = bulks(ids)
        head = b"*%d\r\n$7\r\nZMSCORE\r\n" % (2 + len(ids))
        key = (site.id, p.day, *ids)
        # both queued in this tick, then awaited: one write, no extra task (asyncio.gather)
        total_key, day_key = k.articles_total, k.articles_day(p.day)
        totals_read = self._read(
            ("t", *key), head + bulk(total_key.encode()) + members, ("ZMSCORE", total_key, *ids)
        )
        today_read = self._read(
            ("d", *key), head + bulk(day_key.encode()) + members, ("ZMSCORE", day_key, *ids)
        )
        totals, today = await totals_read, await today_read
        return [
            {"article": a, "views": score(t), "today": score(d)}
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

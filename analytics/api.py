"""The public read API: counters, article views, top articles, daily history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

import msgspec
from aiohttp import web

from aggregations.errors import InvalidInput, UnknownSite
from aggregations.reads import TOP_PERIODS
from aggregations.sites import Site, check_article_id, check_site_id
from analytics import appkeys as K
from analytics.responses import PREFLIGHT, Cacheable, read_json

MAX_IDS = 100
MAX_LIMIT = 100
MAX_DAYS = 366


async def preflight(request: web.Request) -> web.Response:
    """A browser asking whether a script on another origin may read with a validator."""
    return web.Response(status=204, headers=PREFLIGHT)


def site_of(request: web.Request, app: web.Application) -> Site:
    raw = request.match_info["site"]
    site = app[K.SITES].get(raw)
    if site is None:  # a configured id is valid: check the form only of the others
        site_id = check_site_id(raw)
        raise UnknownSite(f"site {site_id!r} is not configured here", "site")
    return site


async def hot_json(
    request: web.Request,
    app: web.Application,
    site: Site,
    key: Hashable,
    read: Callable[[float], Awaitable[Any]],
) -> web.Response:
    """A widget read, its encoded answer and headers kept in the read cache
    (`aggregations.readcache`): within the second, the next identical request skips Redis,
    JSON encoding, hashing and building the headers."""
    now = app[K.CLOCK].now()

    async def encoded() -> Cacheable:
        return Cacheable(msgspec.json.encode(await read(now)), "application/json")

    found: Cacheable = await app[K.READ_CACHE].through(site.id, key, now, encoded)
    return found.response(request)


async def counters(request: web.Request) -> web.Response:
    app = request.app  # once: a property that walks the match info
    site = site_of(request, app)
    reader = app[K.READER]
    return await hot_json(request, app, site, COUNTERS_KEY, lambda now: reader.counters(site, now))


async def article(request: web.Request) -> web.Response:
    app = request.app
    site = site_of(request, app)
    article_id = check_article_id(request.match_info["article"])
    found = await app[K.READER].articles(site, [article_id], app[K.CLOCK].now())
    return read_json(request, found[0])


def parse_ids(raw: str | None) -> list[str]:
    if not raw:
        raise InvalidInput("ids must list 1-100 article ids, separated by commas", "ids")
    return list(_parse_ids(raw))


def checked_ids(raw: str) -> tuple[str, ...] | None:
    """The ids `raw` lists, or None when `parse_ids` would refuse them (the connection's read
    path then leaves the request to the routed handler, which answers the error)."""
    try:
        return _parse_ids(raw)
    except InvalidInput:
        return None


def articles_key(ids: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The read cache's key of an articles read (shared with the connection's read path)."""
    return ("json", *ids)


COUNTERS_KEY = "json"  # the read cache's key of the counters read


@lru_cache(maxsize=1024)  # a page asks for the same list on every view
def _parse_ids(raw: str) -> tuple[str, ...]:
    ids = list(dict.fromkeys(raw.split(",")))
    if len(ids) > MAX_IDS:
        raise InvalidInput(f"ids may list at most {MAX_IDS} article ids", "ids")
    return tuple(check_article_id(i, "ids") for i in ids)


async def articles(request: web.Request) -> web.Response:
    app = request.app
    site = site_of(request, app)
    ids = parse_ids(request.query.get("ids"))
    reader = app[K.READER]

    async def read(now: float) -> dict[str, Any]:
        return {"articles": await reader.articles(site, ids, now)}

    return await hot_json(request, app, site, articles_key(ids), read)


def parse_int(raw: str | None, field: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field)
    return value


async def top(request: web.Request) -> web.Response:
    app = request.app
    site = site_of(request, app)
    period = request.query.get("period", "today")
    if period not in TOP_PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(TOP_PERIODS)}", "period")
    limit = parse_int(request.query.get("limit"), "limit", 10, 1, MAX_LIMIT)
    found = await app[K.READER].top(site, period, limit, app[K.CLOCK].now(), app[K.POOL])
    return read_json(request, {"period": period, "articles": found})


def parse_date(raw: str | None, field: str) -> date | None:
    if not raw:
        return None
    if len(raw) == 10:
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise InvalidInput(f"{field} must be a date written YYYY-MM-DD", field)


async def daily(request: web.Request) -> web.Response:
    app = request.app
    site = site_of(request, app)
    now = app[K.CLOCK].now()
    today = app[K.READER].calendar.at(now, site.tz).day
    end = parse_date(request.query.get("to"), "to") or today
    start = parse_date(request.query.get("from"), "from") or end - timedelta(days=29)
    if start > end:
        raise InvalidInput("from must not be after to", "from")
    if (end - start).days + 1 > MAX_DAYS:
        raise InvalidInput(f"a range covers at most {MAX_DAYS} days", "to")
    days = await app[K.READER].daily(site, start, end, now, app[K.POOL])
    return read_json(request, {"site": site.id, "days": days})

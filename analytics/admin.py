"""The admin API, behind `Authorization: Bearer $ANALYTICS_ADMIN_TOKEN` (off without a token)."""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
from aiohttp import web

from aggregations.baselines import Baseline, baseline_of, set_baseline
from aggregations.errors import AdminDisabled, InvalidInput, TooLarge, Unauthorized, UnknownSite
from aggregations.sites import check_article_id, check_site_id, load_sites, make_site, save_site
from analytics import appkeys as K
from analytics.responses import private_json

MAX_ADMIN_BODY = 16 * 1024 * 1024  # a baseline may carry many articles
MAX_COUNT = 10**15


def require_admin(request: web.Request) -> None:
    token = request.app[K.SETTINGS].admin_token
    if not token:
        raise AdminDisabled("the admin API is off: set ANALYTICS_ADMIN_TOKEN to turn it on")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("send Authorization: Bearer <ANALYTICS_ADMIN_TOKEN>")


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_ADMIN_BODY:
        raise TooLarge(f"an admin request is at most {MAX_ADMIN_BODY} bytes")
    try:
        body = msgspec.json.decode(await request.read())
    except (msgspec.DecodeError, UnicodeDecodeError) as err:
        raise InvalidInput(f"the body must be JSON: {err}") from err
    except RecursionError as err:
        raise InvalidInput("the body nests too deeply") from err
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


async def put_site(request: web.Request) -> web.Response:
    require_admin(request)
    site_id = check_site_id(request.match_info["site"])
    body = await json_body(request)
    site = make_site(
        site_id,
        body.get("name"),
        body.get("domains", []),
        body.get("timezone") or "Asia/Ho_Chi_Minh",
        body.get("respect_dnt", False),
    )
    async with request.app[K.POOL].acquire() as conn:
        created = await save_site(conn, site)
    request.app[K.SITES].put(site)
    return private_json(site.as_json(), status=201 if created else 200)


async def list_sites(request: web.Request) -> web.Response:
    require_admin(request)
    async with request.app[K.POOL].acquire() as conn:
        sites = await load_sites(conn)
    return private_json({"sites": [s.as_json() for s in sites]})


def count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidInput(f"{field} must be a whole number, 0 or more", field)
    return value


def parse_baseline(body: dict[str, Any]) -> Baseline:
    total = body.get("total")
    articles = body.get("articles") or {}
    if total is not None and not isinstance(total, dict):
        raise InvalidInput("total must be an object with pageviews and visits", "total")
    if not isinstance(articles, dict):
        raise InvalidInput("articles must map article ids to view counts", "articles")
    if total is None and not articles:
        raise InvalidInput("give a total, articles, or both", "total")
    parsed = {
        check_article_id(a, "articles"): count(v, f"articles.{a}") for a, v in articles.items()
    }
    if total is None:
        return Baseline(articles=parsed)
    return Baseline(
        count(total.get("pageviews", 0), "total.pageviews"),
        count(total.get("visits", 0), "total.visits"),
        parsed,
    )


async def post_baseline(request: web.Request) -> web.Response:
    require_admin(request)
    site_id = check_site_id(request.match_info["site"])
    site = request.app[K.SITES].get(site_id)
    if site is None:
        raise UnknownSite(f"site {site_id!r} is not configured here", "site")
    body = await json_body(request)
    baseline = parse_baseline(body)
    source = body.get("source", "api")
    if not isinstance(source, str) or len(source) > 200:
        raise InvalidInput("source must be a string of at most 200 characters", "source")
    app = request.app
    async with app[K.POOL].acquire() as conn:
        await set_baseline(
            app[K.REDIS],
            app[K.SCRIPTS],
            conn,
            app[K.SETTINGS].redis_prefix,
            site,
            baseline,
            source,
            app[K.CLOCK].now(),
            app[K.SETTINGS].rollup_min_replicas,
        )
        app[K.READ_CACHE].drop(site_id)  # totals changed: reads from here on see them
        stored = await baseline_of(conn, site_id)
    return private_json({"site": site_id, **stored})

"""Edges: every error answered as JSON (unknown routes included), and per-route metrics.

A store that fails is answered 503 and counted once, here, by the operation the route stands
for (the pixel, which answers every error with its GIF, counts its own).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from aggregations.errors import POSTGRES_FAILURES, AnalyticsError, StorageUnavailable
from analytics import appkeys as K
from collectors.handlers import NO_STORE

log = logging.getLogger("analytics.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}


def error_response(
    status: int,
    code: str,
    detail: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, str] = {"error": code, "detail": detail}
    if field:
        body["field"] = field
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers={**NO_STORE, **(headers or {})},
    )


# route name -> (Redis operation, PostgreSQL operation) of the metrics' error counters
ADMIN_ROUTES = frozenset(("sites", "site", "baseline"))
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, *POSTGRES_FAILURES)


def store_operations(route: str) -> tuple[str, str]:
    if route == "collect":
        return "record", "read"
    if route in ADMIN_ROUTES:
        return "baseline", "admin"
    return "read", "read"


async def answer(request: web.Request, handler: Handler, route: str) -> web.StreamResponse:
    """The handler's answer, or the JSON error that stands for what it raised."""
    try:
        return await handler(request)
    except StorageUnavailable as err:
        request.app[K.METRICS].store_error(err, *store_operations(route))
        return error_response(err.status, err.code, err.detail, err.field)
    except AnalyticsError as err:
        return error_response(err.status, err.code, err.detail, err.field)
    except STORE_ERRORS as err:
        request.app[K.METRICS].store_error(err, *store_operations(route))
        log.warning("%s: a store failed: %s", route, err)
        return error_response(503, "storage_unavailable", "a store is unavailable; try again")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        detail = "no such resource" if exc.status == 404 else exc.reason
        if exc.status == 405:
            detail = f"{request.method} is not allowed here"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, detail, headers=headers)
    except Exception:
        log.exception("unhandled error on %s", route)
        return error_response(500, "internal", "the service failed to answer; it is logged")


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON and per-route metrics in one layer: aiohttp builds the middleware chain
    anew for every request, so each layer costs every beacon and every widget read."""
    started = time.perf_counter()
    route = request.match_info.route.name or "unmatched"
    status = 500
    try:
        response = await answer(request, handler, route)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect or other non-error the handler raised
        status = exc.status
        raise
    finally:
        request.app[K.METRICS].observe_http(route, status, time.perf_counter() - started)

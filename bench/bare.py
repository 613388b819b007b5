"""The baseline: a bare aiohttp app on the service's routes that does no work at all.

`POST /collect` answers 204 without reading the body; the two reads answer a constant JSON body
of the size the service's answer has. Run as `python -m bench.bare PORT LOOP`, where LOOP is
`uvloop` or `asyncio` - the bench passes the loop the service uses, so that the ratio compares
like with like.
"""

from __future__ import annotations

import asyncio
import sys

import msgspec
from aiohttp import web

from aggregations.reads import PERIODS  # the same keys as the service's answer

PERIOD = {"pageviews": 123456, "visits": 45678, "visitors": 34567}
COUNTERS = msgspec.json.encode(
    {
        "site": "bench",
        "timezone": "Asia/Ho_Chi_Minh",
        "as_of": "2026-11-27T10:00:00+07:00",
        "online": 1234,
        **{p: PERIOD for p in PERIODS},
    }
)
ARTICLES = msgspec.json.encode(
    {"articles": [{"article": str(i), "views": 12345, "today": 123} for i in range(1, 21)]}
)
HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=2"}


async def collect(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def counters(request: web.Request) -> web.Response:
    return web.Response(body=COUNTERS, content_type="application/json", headers=HEADERS)


async def articles(request: web.Request) -> web.Response:
    return web.Response(body=ARTICLES, content_type="application/json", headers=HEADERS)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/collect", collect)
    app.router.add_get("/api/v1/sites/{site}/counters", counters)
    app.router.add_get("/api/v1/sites/{site}/articles", articles)
    app.router.add_get("/healthz", healthz)
    return app


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def main() -> None:
    port, kind = int(sys.argv[1]), sys.argv[2]
    web.run_app(
        create_app(), host="127.0.0.1", port=port, access_log=None, print=None, loop=new_loop(kind)
    )


if __name__ == "__main__":
    main()

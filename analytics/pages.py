"""Pages: the demo page of the embedded default, and a short index otherwise."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from analytics import appkeys as K
from analytics.responses import private_json


def static_bytes(name: str) -> bytes:
    return resources.files("analytics.static").joinpath(name).read_bytes()


async def index(request: web.Request) -> web.Response:
    if request.app[K.SETTINGS].embedded:
        return web.Response(
            body=static_bytes("demo.html"),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store"},
        )
    return private_json(
        {
            "service": "visitor analytics",
            "tracker": "/t.js",
            "api": "/api/v1/openapi.json",
            "health": "/readyz",
        }
    )

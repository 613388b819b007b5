"""HTTP handlers of intake: `POST /collect`, `GET /collect.gif`, `GET /t.js`.

Each only reads the request, hands the beacon to `Intake`, and answers; errors are domain
exceptions that the app's middleware answers as JSON, except for the pixel, which always answers
with the GIF (the reason in `X-Analytics-Error`).
"""

from __future__ import annotations

import base64
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from aggregations.errors import AnalyticsError, StorageUnavailable, TooLarge
from aggregations.reads import Reader
from aggregations.sites import Site
from collectors.assets import CORS, ScriptAsset
from collectors.beacons import MAX_BODY, Beacon, parse_body, parse_query
from collectors.intake import Intake, Sender

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store", **CORS}
# the acknowledgement's headers, as a multidict made once (aiohttp copies it faster than a dict)
ACK_HEADERS = CIMultiDictProxy(CIMultiDict(NO_STORE))
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


def static_text(name: str) -> str:
    return resources.files("collectors.static").joinpath(name).read_text(encoding="utf-8")


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit` - before reading it all."""
    length = request.content_length
    if length is not None:
        if length > limit:
            raise TooLarge(f"a beacon is at most {limit} bytes")
        content = request.content
        if content.is_eof():
            # the whole body came with the headers (a beacon nearly always does): take it as it
            # lies in the buffer, without request.read()'s loop of awaits (~8 us a beacon)
            return content.read_nowait()
        return await request.read()  # the length is known and small: one read
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"a beacon is at most {limit} bytes")
    return bytes(body)


def sender_of(peer: str | None, headers: CIMultiDictProxy[str], origin: str | None) -> Sender:
    return Sender(
        peer=peer,
        forwarded_for=headers.get("X-Forwarded-For"),
        user_agent=headers.get("User-Agent", ""),
        origin=origin,
        headers=headers,
    )


class BeaconViews:
    """The intake routes. Built with the app; `attach` gives them the counting objects once
    the stores are open (start-up)."""

    intake: Intake
    reader: Reader

    def __init__(self) -> None:
        self.tracker_script = ScriptAsset(static_text("t.js").encode())

    def attach(self, intake: Intake, reader: Reader) -> None:
        self.intake = intake
        self.reader = reader

    async def collect(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_body(request)
        except AnalyticsError as err:
            self.intake.count_error(err)
            raise
        site, beacon = await self.count(body, request.headers, request.remote)
        if request.query_string and request.query.get("counters") == "1":
            return await self.counters_response(site, beacon)
        return web.Response(status=204, headers=ACK_HEADERS)

    async def count(
        self, body: bytes, headers: CIMultiDictProxy[str], peer: str | None
    ) -> tuple[Site, Beacon]:
        """`POST /collect`'s work on a body read whole: parse it and hand the beacon to intake."""
        beacon = self.parse(body)
        site, _ = await self.intake.accept(beacon, sender_of(peer, headers, headers.get("Origin")))
        return site, beacon

    def parse(self, body: bytes) -> Beacon:
        """The beacon in a body read whole; a refused one is counted in the metrics. Shared with
        the connection's own beacon path (`analytics.protocol`)."""
        try:
            if len(body) > MAX_BODY:
                raise TooLarge(f"a beacon is at most {MAX_BODY} bytes")
            return parse_body(body)
        except AnalyticsError as err:
            self.intake.count_error(err)
            raise

    async def counters_response(self, site: Site, beacon: Beacon) -> web.Response:
        now = self.intake.clock.now()
        payload: dict[str, Any] = await self.reader.counters(site, now)
        if beacon.article:
            payload["article"] = (await self.reader.articles(site, [beacon.article], now))[0]
        return web.Response(
            body=msgspec.json.encode(payload),
            content_type="application/json",
            headers=NO_STORE,
        )

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=PREFLIGHT)

    async def pixel(self, request: web.Request) -> web.Response:
        status, headers = 200, dict(NO_STORE)
        try:
            beacon = parse_query(request.query)
        except AnalyticsError as err:
            self.intake.count_error(err)
            status, headers["X-Analytics-Error"] = 400, err.code
        else:
            # the pixel has no Origin: the page that embeds it is its Referer
            origin = request.headers.get("Origin") or request.headers.get("Referer")
            try:
                await self.intake.accept(beacon, sender_of(request.remote, request.headers, origin))
            except AnalyticsError as err:
                if isinstance(err, StorageUnavailable):
                    self.intake.metrics.store_error(err, "record", "read")
                status, headers["X-Analytics-Error"] = err.status, err.code
        return web.Response(body=PIXEL, status=status, content_type="image/gif", headers=headers)

    async def tracker(self, request: web.Request) -> web.Response:
        return self.tracker_script.response(request)

"""Answers shared by the read views: JSON with CORS, a short public cache life and an ETag."""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

READ_MAX_AGE = 2
# any origin may read public counts, without credentials; scripts may see the ETag
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag"}
PREFLIGHT = {
    **CORS,
    "Access-Control-Allow-Methods": "GET, HEAD",
    "Access-Control-Allow-Headers": "If-None-Match",
    "Access-Control-Max-Age": "86400",
}


def etag_of(body: bytes) -> str:
    return 'W/"' + hashlib.blake2b(body, digest_size=8).hexdigest() + '"'


def not_modified(request: web.Request, etag: str) -> bool:
    return matches(request.headers.get("If-None-Match"), etag)


def matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header's value names `etag`: the client has the body."""
    if not if_none_match:
        return False
    tags = {t.strip() for t in if_none_match.split(",")}
    return "*" in tags or etag in tags or etag.removeprefix("W/") in tags


class Cacheable:
    """An answer's body with its validators and headers, made once: the read cache keeps these,
    and each request it answers builds only its response."""

    __slots__ = ("body", "etag", "headers", "validators", "wire")

    def __init__(
        self,
        body: bytes,
        content_type: str,
        max_age: int = READ_MAX_AGE,
        charset: str | None = None,
        etag: str | None = None,
    ) -> None:
        self.body = body
        self.etag = etag or etag_of(body)
        # as multidicts made once: aiohttp copies them faster than a dict into each response
        validators = {"Cache-Control": f"public, max-age={max_age}", "ETag": self.etag, **CORS}
        self.validators = CIMultiDictProxy(CIMultiDict(validators))
        if charset:
            content_type += "; charset=" + charset
        self.headers = CIMultiDictProxy(CIMultiDict(validators, **{"Content-Type": content_type}))
        # its two answers as bytes (but for the date), made by the connection's read path
        # (`analytics.protocol`) the first time it answers from this entry
        self.wire: tuple[bytes, bytes] | None = None

    def response(self, request: web.Request) -> web.Response:
        """The body, or 304 when the client already has it."""
        if not_modified(request, self.etag):
            return web.Response(status=304, headers=self.validators)
        return web.Response(body=self.body, headers=self.headers)


def cached(
    request: web.Request,
    body: bytes,
    content_type: str,
    max_age: int = READ_MAX_AGE,
    charset: str | None = None,
    etag: str | None = None,
) -> web.Response:
    """`body` with validators; 304 when the client already has it."""
    return Cacheable(body, content_type, max_age, charset, etag).response(request)


def read_json(request: web.Request, payload: Any, max_age: int = READ_MAX_AGE) -> web.Response:
    return cached(request, msgspec.json.encode(payload), "application/json", max_age)


def private_json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=msgspec.json.encode(payload),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )

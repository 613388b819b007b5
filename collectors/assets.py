"""Scripts the service hands to browsers (`t.js`, `widget.js`): built once at start-up, served
with an ETag (304 on a match), a cache lifetime, and gzip when the browser accepts it."""

from __future__ import annotations

import gzip
import hashlib

from aiohttp import web

# any origin may load them (and post beacons: `collectors.handlers`)
CORS = {"Access-Control-Allow-Origin": "*"}


class ScriptAsset:
    def __init__(self, body: bytes, max_age: int = 3600) -> None:
        self.body = body
        self.gzipped = gzip.compress(body, 9, mtime=0)
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        self.max_age = max_age

    def response(self, request: web.Request) -> web.Response:
        zipped = "gzip" in request.headers.get("Accept-Encoding", "")
        etag = self.etag[:-1] + '-gz"' if zipped else self.etag
        headers = {
            "Cache-Control": f"public, max-age={self.max_age}",
            "Vary": "Accept-Encoding",
            "ETag": etag,
            **CORS,
        }
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return web.Response(
            body=self.gzipped if zipped else self.body,
            content_type="application/javascript",
            charset="utf-8",
            headers=headers,
        )

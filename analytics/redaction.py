"""What aiohttp would log about a client, and must not: its line for a request it cannot parse.

aiohttp logs "Error handling request from <peer address>" with a traceback that quotes the
offending bytes (a user agent, a query string) for every request its HTTP parser refuses: a
header or request line too long, too many headers, not HTTP at all. `ServerErrorFilter` keeps the
kind of error and drops the rest. (The access log is `logs.AccessLogger`, which writes no address,
user agent or query string either.)
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

SERVER_LOGGER = "aiohttp.server"
PEER_ERROR = "Error handling request from %s"


class ServerErrorFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request from <address>": a request that could not be
    parsed becomes one INFO line naming the error's kind and status; any other error keeps its
    traceback, without the address."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != PEER_ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "refused a request that is not valid HTTP: %s (%d)"
            record.args = (type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            if record.levelno > logging.INFO:
                record.levelno, record.levelname = logging.INFO, "INFO"
        else:
            record.msg, record.args = "error handling a request", ()
        return True


def install() -> None:
    """Give aiohttp's server logger the filter (once per process)."""
    server = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, ServerErrorFilter) for f in server.filters):
        server.addFilter(ServerErrorFilter())

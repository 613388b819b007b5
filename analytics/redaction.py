"""What the logs never carry: a client's address, its user agent, a query string, the admin token.

The service's own log lines name none of them. Two things from aiohttp would, and are replaced
here: its access log (the default format writes the peer's address, the request line with its
query, the Referer and the User-Agent), by `AccessLogger`; and its line for a request it could
not parse ("Error handling request from <peer address>", with a traceback quoting the offending
bytes), by `ServerErrorFilter`, which keeps the kind of error and drops the rest.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import BaseRequest, StreamResponse

from analytics.settings import Settings

ACCESS_LOGGER = "analytics.access"
SERVER_LOGGER = "aiohttp.server"
PEER_ERROR = "Error handling request from %s"
MAX_PATH = 200


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path without the query (a pixel's query carries page
    addresses), status, size and time - nothing about who asked."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %d %dB %.2fms",
            request.method,
            request.path[:MAX_PATH],
            response.status,
            response.body_length,
            time * 1000,
        )


def access_logger(settings: Settings) -> logging.Logger | None:
    """The logger to give aiohttp for the access log, or None: no access log at all."""
    return logging.getLogger(ACCESS_LOGGER) if settings.access_log else None


class ServerErrorFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request from <address>": a request that could not be
    parsed (a header or request line too long, too many headers, not HTTP) becomes one INFO line
    naming the error's kind and status; any other error keeps its traceback, without the
    address."""

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


def install(settings: Settings) -> None:
    """Give aiohttp's loggers the filters and levels above (once per process)."""
    server = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, ServerErrorFilter) for f in server.filters):
        server.addFilter(ServerErrorFilter())
    # aiohttp's own access logger is never given to the server; ours is, when asked for
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )

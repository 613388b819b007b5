"""Logging an operator can read: one line per event, text or JSON (`ANALYTICS_LOG_FORMAT`).

Start, stop, each rollup that did work, each error: one line each, with the process id (several
workers write to one stream). No line carries a client address or user agent: the access log
(off by default, since writing it costs as much as counting the beacon) names the route, path,
status, size and time, and nothing about who asked.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from analytics import redaction
from analytics.settings import Settings

ACCESS_LOGGER = "analytics.access"
# fields an event may add to its line (`log.info(..., extra={"fields": {...}})`)
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class AccessLogger(AbstractAccessLogger):
    """One line per request, without the client's address or user agent, nor the query string
    (a pixel's query carries page addresses)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        match_info = getattr(request, "match_info", None)
        route = match_info.route.name if match_info is not None else None
        path, status, size = request.path, response.status, response.body_length
        self.entry(request.method, path, route or "unmatched", status, size, time)

    def entry(
        self, method: str, path: str, route: str, status: int, size: int, seconds: float
    ) -> None:
        """The line of one answered request (`log` for aiohttp's, and the beacons that the
        connection answers itself: `analytics.protocol`)."""
        fields = {
            "method": method,
            "path": path[:200],
            "route": route,
            "status": status,
            "bytes": size,
            "ms": round(seconds * 1000, 2),
        }
        self.logger.info(
            "%s %s %d %dB %.2fms",
            fields["method"],
            fields["path"],
            fields["status"],
            fields["bytes"],
            fields["ms"],
            extra={FIELDS: fields},
        )


def access_logger(settings: Settings) -> logging.Logger | None:
    """The logger to give aiohttp for the access log, or None: no access log at all."""
    return logging.getLogger(ACCESS_LOGGER) if settings.access_log else None


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # the embedded PostgreSQL narrates every command it runs; its warnings are enough
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # aiohttp's own access logger is never used (ours leaves addresses out); its error loggers
    # stay at WARNING even with ANALYTICS_LOG_LEVEL=DEBUG, since their debug lines name peers
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").setLevel(max(logging.WARNING, root.level))
    logging.getLogger(ACCESS_LOGGER).setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )
    # and its line for a request it cannot parse names the peer and quotes the request
    redaction.install()

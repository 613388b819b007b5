"""Logging an operator can read: one line per event, text or JSON (`ANALYTICS_LOG_FORMAT`)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from analytics.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # the embedded PostgreSQL narrates every command it runs; its warnings are enough
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # aiohttp's access log costs as much as a beacon: only when asked for
    logging.getLogger("aiohttp.access").setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )

"""The closed set of domain errors. Each names the HTTP status it is answered with, so that the
app's one error middleware and the pixel (which answers with its GIF whatever happens) agree."""

from __future__ import annotations

import asyncpg


class AnalyticsError(Exception):
    """Base: `code` is machine-readable, `detail` a sentence for a human, `field` the culprit."""

    code = "error"
    status = 500

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(AnalyticsError):
    status = 400
    code = "invalid"


class NotFound(AnalyticsError):
    status = 404
    code = "not_found"


class UnknownSite(NotFound):
    code = "unknown_site"


class OriginRefused(AnalyticsError):
    status = 403
    code = "origin_not_allowed"


class TooLarge(AnalyticsError):
    status = 413
    code = "too_large"


class RateLimited(AnalyticsError):
    status = 429
    code = "rate_limited"


class Unauthorized(AnalyticsError):
    status = 401
    code = "unauthorized"


class AdminDisabled(AnalyticsError):
    status = 403
    code = "admin_disabled"


class StorageUnavailable(AnalyticsError):
    status = 503
    code = "storage_unavailable"


# what a PostgreSQL call raises when the server is down, restarting or unreachable
POSTGRES_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
)
# ... or anything else a PostgreSQL call can fail with (the server refused the statement too)
POSTGRES_FAILURES: tuple[type[BaseException], ...] = (*POSTGRES_ERRORS, asyncpg.PostgresError)

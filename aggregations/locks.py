"""Per-site PostgreSQL advisory locks: rollup, rebuild and baseline imports of a site take turns,
across processes and instances."""

from __future__ import annotations

from typing import Any


def site_lock_key(site_id: str) -> str:
    return f"analytics:site:{site_id}"


class SiteLock:
    """A session-level advisory lock on one site, held on one connection."""

    def __init__(self, conn: Any, site_id: str, wait: bool) -> None:
        self.conn = conn
        self.key = site_lock_key(site_id)
        self.wait = wait
        self.held = False

    async def __aenter__(self) -> bool:
        if self.wait:
            await self.conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self.key)
            self.held = True
        else:
            self.held = await self.conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self.key
            )
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if self.held:
            await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self.key)

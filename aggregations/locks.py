"""Per-site PostgreSQL advisory locks: rollup, rebuild and baseline imports of a site take turns,
across processes and instances."""

from __future__ import annotations

from typing import Any

import asyncpg


def site_lock_key(site_id: str) -> str:
    return f"analytics:site:{site_id}"


class SiteLock:
    """A session-level advisory lock on one site, held on one connection.

    `wait` is how many seconds to wait for it (0: take it only if free); never forever, so a lock
    left behind by a stuck connection cannot hang a shutdown. The `held` answer says whether it
    was taken.
    """

    def __init__(self, conn: Any, site_id: str, wait: float = 0.0) -> None:
        self.conn = conn
        self.key = site_lock_key(site_id)
        self.wait = wait
        self.held = False

    async def __aenter__(self) -> bool:
        if self.wait <= 0:
            self.held = bool(
                await self.conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self.key
                )
            )
            return self.held
        await self.conn.execute(
            "SELECT set_config('lock_timeout', $1, false)", f"{int(self.wait * 1000)}ms"
        )
        try:
            await self.conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self.key)
            self.held = True
        except asyncpg.exceptions.LockNotAvailableError:
            self.held = False
        finally:
            await self.conn.execute("SELECT set_config('lock_timeout', '0', false)")
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if not self.held:
            return
        try:
            await self.conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self.key)
        except BaseException:
            # cut short (cancelled mid-query, connection lost): end the session, which is what
            # releases the lock, rather than return a connection that may still hold it
            self.conn.terminate()
            raise

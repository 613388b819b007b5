"""Rollup leadership: the timed rollup runs in one process at a time, across the worker processes
of one instance and across instances, namely in the one holding a session-level PostgreSQL
advisory lock on a connection of its own.

When that connection dies (or its process does), PostgreSQL drops the lock and another process
takes over at its next tick. Correctness never rests on this lock - the per-site locks and the
batch ledger keep a rollup exactly-once even when two run - it only keeps the others idle.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from aggregations.errors import POSTGRES_FAILURES

log = logging.getLogger("analytics.rollup")

LEADER_LOCK = "analytics:rollup-leader"
CONNECT_TIMEOUT = 5.0


class Leadership:
    """Try for the leader lock at each tick; keep it while the connection lives."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.conn: Any = None
        self.held = False
        # whether this process led when last PostgreSQL could tell: while it cannot, the last
        # leader goes on trying (and failing, counted) and the others stay quiet
        self.last_known = False

    async def ensure(self) -> bool:
        """True when this process leads (it just took the lock, or still holds it).

        Raises the PostgreSQL error when the server cannot be asked; leadership is then given up.
        """
        try:
            if self.conn is None or self.conn.is_closed():
                self.held = False
                self.conn = await asyncpg.connect(self.database_url, timeout=CONNECT_TIMEOUT)
            if self.held:
                await self.conn.fetchval("SELECT 1")  # the session lives, so the lock is ours
                return True
            self.held = bool(
                await self.conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", LEADER_LOCK
                )
            )
        except POSTGRES_FAILURES:
            await self.release()
            raise
        if self.held and not self.last_known:
            log.info("rollup: this process leads the timed rollup")
        self.last_known = self.held
        return self.held

    async def release(self) -> None:
        """Give up the lock by closing its session (whatever state the connection is in)."""
        was_held, self.held = self.held, False
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=CONNECT_TIMEOUT)
            except POSTGRES_FAILURES:
                conn.terminate()
        if was_held:
            log.info("rollup: this process no longer leads the timed rollup")

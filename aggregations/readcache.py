"""The widget's hot reads, kept for one second of the service's clock.

Reads are public and cacheable for a second or two (`Cache-Control: max-age=2`); under a burst
of widgets, answering from this process's memory for up to a second spares every request its
Redis round trip. Read-your-writes holds within the process: every beacon this process records
for a site (counted, or failed in a way that may have counted), and every baseline or rebuild it
applies, drops the site's entries once Redis has answered, so a read after it reads Redis again
(and fails with Redis, when Redis is down). Another process's writes show within the second.

A read that was sent before such a drop may come back after it, older than the write: it is not
kept. A reader takes the site's `version` before it reads and hands it to `put`, which keeps the
value only if nothing was dropped in between (a beacon's answer is written as its run's reply is
read, before the task of a read answered in the same reply resumes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

TTL = 1.0
MAX_KEYS_PER_SITE = 1024  # article lists vary; past this many, start the site afresh


class ReadCache:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._sites: dict[str, dict[Hashable, tuple[float, Any]]] = {}
        self._versions: dict[str, int] = {}  # per site, moved on by every drop

    def get(self, site: str, key: Hashable, now: float) -> Any | None:
        """The value read at most `ttl` ago (by the clock that stamps `now`), else None."""
        entries = self._sites.get(site)
        if entries is None:
            return None
        found = entries.get(key)
        if found is None or not found[0] <= now < found[0] + self.ttl:
            return None
        return found[1]

    async def through(
        self, site: str, key: Hashable, now: float, read: Callable[[], Awaitable[Any]]
    ) -> Any:
        """The value read at most `ttl` ago, else what `read()` reads now, kept unless the
        site's entries are dropped while it reads (see `version`)."""
        found = self.get(site, key, now)
        if found is None:
            version = self.version(site)
            found = await read()
            self.put(site, key, now, found, version)
        return found

    def version(self, site: str) -> int:
        """The site's version now: taken before a read is sent, handed to `put` after."""
        return self._versions.get(site, 0)

    def put(self, site: str, key: Hashable, now: float, value: Any, version: int) -> None:
        """Keep `value`, read at `version` (see `version`): unless the site's entries were
        dropped since, when it may be older than a write this process acknowledged."""
        if self._versions.get(site, 0) != version:
            return
        entries = self._sites.get(site)
        if entries is None or len(entries) >= MAX_KEYS_PER_SITE:
            entries = self._sites[site] = {}
        entries[key] = (now, value)

    def drop(self, site: str) -> None:
        """The site's counters changed here: forget what was read before, and what is being
        read now."""
        self._sites.pop(site, None)
        self._versions[site] = self._versions.get(site, 0) + 1

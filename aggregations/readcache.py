"""The widget's hot reads, kept for one second of the service's clock.

Reads are public and cacheable for a second or two (`Cache-Control: max-age=2`); under a burst
of widgets, answering from this process's memory for up to a second spares every request its
Redis round trip. Read-your-writes holds within the process: every beacon this process records
for a site (counted, or failed in a way that may have counted), and every baseline or rebuild it
applies, drops the site's entries once Redis has answered, so a read after it reads Redis again
(and fails with Redis, when Redis is down). Another process's writes show within the second.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

TTL = 1.0
MAX_KEYS_PER_SITE = 1024  # article lists vary; past this many, start the site afresh


class ReadCache:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._sites: dict[str, dict[Hashable, tuple[float, Any]]] = {}

    def get(self, site: str, key: Hashable, now: float) -> Any | None:
        """The value read at most `ttl` ago (by the clock that stamps `now`), else None."""
        entries = self._sites.get(site)
        if entries is None:
            return None
        found = entries.get(key)
        if found is None or not found[0] <= now < found[0] + self.ttl:
            return None
        return found[1]

    def put(self, site: str, key: Hashable, now: float, value: Any) -> None:
        entries = self._sites.get(site)
        if entries is None or len(entries) >= MAX_KEYS_PER_SITE:
            entries = self._sites[site] = {}
        entries[key] = (now, value)

    def drop(self, site: str) -> None:
        """The site's counters changed here: forget what was read before."""
        self._sites.pop(site, None)

"""Recording a hit: every live counter of the site in one Redis round trip (`lua/record.lua`).

A visitor is `blake2b(identity, key=daily salt)`, where the identity (site, client address, user
agent) is built by intake and never leaves this process; the salt is random per site and local
day, created in Redis by the first hit of the day and deleted 48 h after the day began.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum

from redis.exceptions import RedisError

from aggregations.errors import RateLimited, StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar, Periods
from aggregations.redis_client import RedisClient
from aggregations.scripts import Scripts, as_text
from aggregations.sites import Site


@dataclass(frozen=True, slots=True)
class Hit:
    """One page view that passed intake's checks."""

    site: Site
    identity: bytes
    network: bytes
    ts: float
    article: str | None = None
    title: str | None = None


class ArticleCount(IntEnum):
    NONE = 0  # no article, or already counted in this visit
    COUNTED = 1
    CAPPED = 2  # a new article id past the per-day cap


@dataclass(frozen=True, slots=True)
class Recorded:
    new_visit: bool
    article: ArticleCount
    built: bool  # False: Redis lost the site's counters and a rebuild is due


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: `burst` beacons at once, refilled at `per_minute`. A limit without a burst
    gets six seconds' worth (at least 1): a bucket of 0 would refuse every beacon."""

    per_minute: int  # 0: no limit
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute > 0 and self.burst < 1:
            object.__setattr__(self, "burst", max(1, self.per_minute // 10))


@dataclass(frozen=True, slots=True)
class CountingPolicy:
    visit_timeout: float = 1800.0
    online_window: float = 300.0
    article_dedup: bool = True
    max_articles_per_day: int = 100_000
    client_limit: RateLimit = RateLimit(600, 60)
    site_limit: RateLimit = RateLimit(0, 0)


def ttls(periods: Periods, now: float) -> list[int]:
    """Time to live of the day, week, month, year keys and of the salt, from `now`.

    Relative, not absolute: Redis expires keys by its own clock, which need not agree with the
    clock that stamped the hit (an injected one in tests, a skewed one in production).
    """
    return [
        max(1, int(expires - now))
        for expires in (
            periods.day_expires,
            periods.week_expires,
            periods.month_expires,
            periods.year_expires,
            periods.salt_expires,
        )
    ]


def visitor_id(salt: bytes, identity: bytes) -> str:
    return hashlib.blake2b(identity, key=salt, digest_size=8).hexdigest()


class Salts:
    """This process's copy of each site's salt for the day; Redis has the authoritative one.

    A copy is forgotten once its day is two days old, as Redis forgets the salt itself: no salt
    outlives the 48 h after its day began, in Redis or in memory.
    """

    def __init__(self) -> None:
        self._salts: dict[tuple[str, date], str] = {}

    def get(self, site: str, day: date) -> str:
        salt = self._salts.get((site, day))
        if salt is None:
            self._forget_before(day - timedelta(days=1))
            salt = self._salts[(site, day)] = secrets.token_hex(16)
        return salt

    def learn(self, site: str, day: date, salt: str) -> None:
        self._salts[(site, day)] = salt

    def _forget_before(self, day: date) -> None:
        if len(self._salts) > 10_000:
            self._salts.clear()
        for key in [k for k in self._salts if k[1] < day]:
            del self._salts[key]

    def days(self) -> set[date]:
        return {day for _, day in self._salts}


class Recorder:
    """Counts hits into Redis."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        prefix: str,
        policy: CountingPolicy,
        calendar: Calendar | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.prefix = prefix
        self.policy = policy
        self.calendar = calendar or Calendar()
        self.salts = Salts()
        self._keys: dict[tuple[str, date], tuple[SiteKeys, list[str], list[str]]] = {}
        p = policy
        self._policy_args = [
            int(p.visit_timeout * 1000),
            int(max(p.visit_timeout, p.online_window) * 1000),
        ]
        self._limit_args = [
            p.client_limit.per_minute,
            p.client_limit.burst,
            p.site_limit.per_minute,
            p.site_limit.burst,
        ]

    def _site_keys(self, site: str, periods: Periods) -> tuple[SiteKeys, list[str], list[str]]:
        cached = self._keys.get((site, periods.day))
        if cached is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            k = SiteKeys(self.prefix, site)
            head = [k.salt(periods.day), k.seen]
            tail = [
                *(k.day(periods.day), k.week(periods.week), k.month(periods.month)),
                *(k.year(periods.year), k.total),
                *(k.day_visitors(periods.day), k.week_visitors(periods.week)),
                *(k.month_visitors(periods.month), k.year_visitors(periods.year)),
                *(k.total_visitors, k.pending, k.pending_titles),
                *(k.articles_day(periods.day), k.articles_week(periods.week)),
                *(k.articles_month(periods.month), k.articles_total, k.marker),
            ]
            cached = self._keys[(site, periods.day)] = (k, head, tail)
        return cached

    async def record(self, hit: Hit) -> Recorded:
        site = hit.site
        periods = self.calendar.at(hit.ts, site.tz)
        k, head, tail = self._site_keys(site.id, periods)
        for _ in range(3):
            salt = self.salts.get(site.id, periods.day)
            key = bytes.fromhex(salt)
            visitor = visitor_id(key, hit.identity)
            client = visitor_id(key, hit.network)
            keys = [*head, k.visit_articles(visitor), *tail, k.rate_client(client), k.rate_site]
            args = [
                salt,
                visitor,
                int(hit.ts * 1000),
                *self._policy_args,
                periods.day.isoformat(),
                hit.article or "",
                hit.title or "",
                1 if self.policy.article_dedup else 0,
                self.policy.max_articles_per_day,
                *ttls(periods, hit.ts),
                *self._limit_args,
            ]
            try:
                reply = await self.scripts.record(keys=keys, args=args)
            except RedisError as err:
                raise StorageUnavailable(f"Redis refused the hit: {err}") from err
            status = int(reply[0])
            if status == 1:
                return Recorded(bool(reply[1]), ArticleCount(int(reply[2])), bool(reply[3]))
            if status == 2:
                raise RateLimited(f"too many page views from this {as_text(reply[1])}")
            self.salts.learn(site.id, periods.day, as_text(reply[1]))
        raise StorageUnavailable("the day's salt kept changing under this process")

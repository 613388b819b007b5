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
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from aggregations.errors import RateLimited, StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar, Periods
from aggregations.pipeline import GroupCommit, bulk, bulks
from aggregations.readcache import ReadCache
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


RECORD_KEYS = 22  # see lua/record.lua
RECORD_ARGS = 19


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


@dataclass(slots=True)
class _Command:
    """The counting script's command for one site and day, pre-encoded in runs (RESP), so that
    a beacon encodes only what is its own: visitor, client, time, article, title. Saves about
    10 us a beacon against encoding all 44 arguments each time."""

    head: bytes  # EVALSHA, the script's SHA, the number of keys, the salt and seen keys
    visit_articles: str  # key prefix, completed with the visitor
    tail: bytes  # the 17 period, pending, article and marker keys
    rate_client: str  # key prefix, completed with the client's hash
    rate_site: bytes
    policy_day: bytes  # visit timeout, seen retention, day label
    dedup_cap: bytes  # article dedup flag, articles a day
    limits: bytes
    plain: tuple[list[Any], list[Any], str, list[Any], list[Any]]  # the same, unencoded, for
    # a Redis Cluster (no group commit): salt and seen keys, tail keys, site rate key, policy
    # and day, dedup and cap
    ttl_second: int = -1  # the second `ttls` was encoded for
    ttls: bytes = b""


class Recorder:
    """Counts hits into Redis: one run of `lua/record.lua` a hit, sent through the group commit
    (`aggregations.pipeline`) so that concurrent hits share one write to Redis; on a Redis
    Cluster (`pipe` None), through redis-py's cluster client, which routes it to the site's
    node."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        prefix: str,
        policy: CountingPolicy,
        calendar: Calendar | None = None,
        *,
        pipe: GroupCommit | None,
        cache: ReadCache | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.prefix = prefix
        self.policy = policy
        self.calendar = calendar or Calendar()
        self.pipe = pipe
        self.cache = cache
        self.salts = Salts()
        self._commands: dict[tuple[str, date], _Command] = {}
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

    def _command(self, site: str, periods: Periods) -> _Command:
        cached = self._commands.get((site, periods.day))
        if cached is None:
            if len(self._commands) > 10_000:
                self._commands.clear()
            k = SiteKeys(self.prefix, site)
            tail = [
                *(k.day(periods.day), k.week(periods.week), k.month(periods.month)),
                *(k.year(periods.year), k.total),
                *(k.day_visitors(periods.day), k.week_visitors(periods.week)),
                *(k.month_visitors(periods.month), k.year_visitors(periods.year)),
                *(k.total_visitors, k.pending, k.pending_titles),
                *(k.articles_day(periods.day), k.articles_week(periods.week)),
                *(k.articles_month(periods.month), k.articles_total, k.marker),
            ]
            p = self.policy
            cached = self._commands[(site, periods.day)] = _Command(
                head=b"*%d\r\n" % (3 + RECORD_KEYS + RECORD_ARGS)
                + bulks(["EVALSHA", self.scripts.record.sha, RECORD_KEYS])
                + bulks([k.salt(periods.day), k.seen]),
                visit_articles=k.visit_articles(""),
                tail=bulks(tail),
                rate_client=k.rate_client(""),
                rate_site=bulk(k.rate_site.encode()),
                policy_day=bulks([*self._policy_args, periods.day.isoformat()]),
                dedup_cap=bulks([1 if p.article_dedup else 0, p.max_articles_per_day]),
                limits=bulks(self._limit_args),
                plain=(
                    [k.salt(periods.day), k.seen],
                    tail,
                    k.rate_site,
                    [*self._policy_args, periods.day.isoformat()],
                    [1 if p.article_dedup else 0, p.max_articles_per_day],
                ),
            )
        return cached

    def _pack(self, cmd: _Command, periods: Periods, hit: Hit, salt: str) -> bytes:
        """The script's command: KEYS salt, seen, visit articles, tail, client and site rate
        buckets; ARGV salt, visitor, now, policy and day, article, title, dedup and cap, TTLs,
        limits - the order `lua/record.lua` documents."""
        key = bytes.fromhex(salt)
        visitor = visitor_id(key, hit.identity)
        client = visitor_id(key, hit.network)
        second = int(hit.ts)
        if cmd.ttl_second != second:
            cmd.ttls, cmd.ttl_second = bulks(ttls(periods, hit.ts)), second
        return b"".join(
            [
                cmd.head,
                bulk((cmd.visit_articles + visitor).encode()),
                cmd.tail,
                bulk((cmd.rate_client + client).encode()),
                cmd.rate_site,
                bulk(salt.encode()),
                bulk(visitor.encode()),
                b"$%d\r\n%d\r\n" % (len(b"%d" % int(hit.ts * 1000)), int(hit.ts * 1000)),
                cmd.policy_day,
                bulk((hit.article or "").encode()),
                bulk((hit.title or "").encode()),
                cmd.dedup_cap,
                cmd.ttls,
                cmd.limits,
            ]
        )

    def _arguments(self, cmd: _Command, periods: Periods, hit: Hit, salt: str) -> list[Any]:
        """The script's keys and arguments as `_pack` encodes them, for a Redis Cluster, where
        each site's slot may live on another node and redis-py routes the command."""
        key = bytes.fromhex(salt)
        visitor = visitor_id(key, hit.identity)
        client = visitor_id(key, hit.network)
        head, tail, rate_site, policy_day, dedup_cap = cmd.plain
        return [
            *head,
            cmd.visit_articles + visitor,
            *tail,
            cmd.rate_client + client,
            rate_site,
            salt,
            visitor,
            int(hit.ts * 1000),
            *policy_day,
            hit.article or "",
            hit.title or "",
            *dedup_cap,
            *ttls(periods, hit.ts),
            *self._limit_args,
        ]

    async def _run(self, cmd: _Command, periods: Periods, hit: Hit, salt: str) -> Any:
        try:
            if self.pipe is None:
                arguments = self._arguments(cmd, periods, hit, salt)
                return await self.scripts.record(
                    keys=arguments[:RECORD_KEYS], args=arguments[RECORD_KEYS:]
                )
            command = self._pack(cmd, periods, hit, salt)
            try:
                return await self.pipe.call(command)
            except NoScriptError:
                # Redis restarted or its scripts were flushed: load ours again, once
                await self.redis.script_load(self.scripts.record.script)
                return await self.pipe.call(command)
        except RedisError as err:
            raise StorageUnavailable(f"Redis refused the hit: {err}") from err

    async def record(self, hit: Hit) -> Recorded:
        try:
            return await self._record(hit)
        finally:
            # whatever came of it (counted, or a failure that may have counted all the same),
            # the site's counters may have changed: reads from here on ask Redis again
            if self.cache is not None:
                self.cache.drop(hit.site.id)

    async def _record(self, hit: Hit) -> Recorded:
        site = hit.site
        periods = self.calendar.at(hit.ts, site.tz)
        cmd = self._command(site.id, periods)
        for _ in range(3):
            salt = self.salts.get(site.id, periods.day)
            reply = await self._run(cmd, periods, hit, salt)
            status = int(reply[0])
            if status == 1:
                return Recorded(bool(reply[1]), ArticleCount(int(reply[2])), bool(reply[3]))
            if status == 2:
                raise RateLimited(f"too many page views from this {as_text(reply[1])}")
            self.salts.learn(site.id, periods.day, as_text(reply[1]))
        raise StorageUnavailable("the day's salt kept changing under this process")

"""Recording a hit: every live counter of the site in one Redis round trip (`lua/record.lua`),
shared with the other hits of the same site that arrive in the same event-loop tick.

A visitor is `blake2b(identity, key=daily salt)`, where the identity (site, client address, user
agent) is built by intake and never leaves this process; the salt is random per site and local
day, created in Redis by the first hit of the day and deleted 48 h after the day began.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import hashlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import date, timedelta
from enum import IntEnum
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from aggregations.errors import RateLimited, StorageUnavailable
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar, Periods
from aggregations.pipeline import BULK, GroupCommit, bulk, bulks, call_guarded
from aggregations.readcache import ReadCache
from aggregations.redis_client import RedisClient
from aggregations.scripts import Scripts, as_text
from aggregations.sites import Site

log = logging.getLogger("analytics.counting")


@dataclass(slots=True)  # not frozen: a frozen dataclass takes ~2 us more to make, per beacon
class Hit:
    """One page view that passed intake's checks. Not changed once made."""

    site: Site
    identity: bytes
    network: bytes
    ts: float
    article: str | None = None
    title: str | None = None


RECORD_KEYS = 20  # the constant keys and arguments of lua/record.lua; a hit adds 2 and 4
RECORD_ARGS = 15
# hits in one run of the script; a full run is written to Redis at once, mid-tick, so that Redis
# counts it while this process reads the rest of the tick (with one write a tick, the two took
# turns: beacons 0.65-0.71 of the bare app, against 0.68-0.77 so, alternating on one machine)
MAX_BATCH = 16
# on a Redis Cluster a run goes out as a task of its own, on the next turn of the loop whatever
# its size, and holds one of the node's pooled connections: there, runs stay as large as before
ROUTED_BATCH = 128
SALT_ATTEMPTS = 3  # runs of a hit whose salt was another process's (the day's first hits)
LIMITED = {2: "client", 3: "site"}  # the script's statuses of a hit a rate limit refused


class ArticleCount(IntEnum):
    NONE = 0  # no article, or already counted in this visit
    COUNTED = 1
    CAPPED = 2  # a new article id past the per-day cap


ARTICLE_COUNTS = tuple(ArticleCount)  # by value: indexing skips Enum.__call__ (~1 us a hit)


@dataclass(slots=True)  # not frozen, as Hit
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


class Hasher:
    """Visitor (and client) ids under one salt: `blake2b(identity, key=salt)`, 8 bytes, in hex
    (ASCII bytes, as they go to Redis). The key's block is hashed once; each id copies that state
    (half the time of hashing the key again for every visitor and client)."""

    __slots__ = ("_keyed",)

    def __init__(self, salt: bytes) -> None:
        self._keyed = hashlib.blake2b(key=salt, digest_size=8)

    def __call__(self, identity: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(identity)
        return binascii.hexlify(h.digest())


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


class _Command:
    """The counting script's constant part for one site and day, pre-encoded (RESP), so that a
    hit encodes only what is its own: visitor, client, time, article, title."""

    def __init__(self, k: SiteKeys, keys: list[str], policy: list[Any], limits: list[int]) -> None:
        # key prefixes, completed with the visitor and with the client's hash
        self.visit_articles = k.visit_articles("").encode()
        self.rate_client = k.rate_client("").encode()
        self.keys = keys  # the 20 constant keys, see lua/record.lua
        self.policy = policy  # ARGV 2..6: visit timeout, seen retention, day, dedup, cap
        self.limits = limits  # ARGV 12..15
        self.encoded_keys = bulks(keys)
        self.encoded_policy = bulks(policy)
        self.encoded_limits = bulks(limits)
        self.ttl_second = -1  # the second `ttls` was computed for
        self.ttls: list[int] = []
        self.encoded_ttls = b""

    def ttls_at(self, periods: Periods, now: float) -> list[int]:
        second = int(now)
        if second != self.ttl_second:
            self.ttls, self.ttl_second = ttls(periods, now), second
            self.encoded_ttls = bulks(self.ttls)
        return self.ttls


# a hit's own arguments, encoded: visit-articles key, client bucket key, visitor, now (ms),
# article, title
_HitArgs = tuple[bytes, bytes, bytes, bytes, bytes, bytes]
# a hit's outcome: (status, new_visit, article, built), or (0, salt) for another day's salt
Outcome = tuple[Any, ...]
# a hit's receiver of its outcome, called once: (outcome, None), or (None, why it failed)
OnOutcome = Callable[[Outcome | None, StorageUnavailable | None], None]


_KEYS_OF_HIT = BULK * 2  # a hit's keys and arguments, formatted in one go
_ARGS_OF_HIT = BULK * 4


class _Batch:
    """The hits of one site, day and salt that arrived in one event-loop tick: one script run.
    Each hit's outcome goes to its waiter: a future (`Recorder.submit`), or a receiver called at
    once (`Recorder.submit_with`)."""

    __slots__ = ("cmd", "hash", "hits", "loop", "periods", "reloaded", "salt", "ts", "waiters")

    def __init__(self, cmd: _Command, periods: Periods, salt: str, ts: float) -> None:
        self.loop = asyncio.get_running_loop()  # once a batch, not once a hit (it asks getpid)
        self.cmd = cmd
        self.periods = periods
        self.salt = salt
        self.hash = Hasher(bytes.fromhex(salt))  # of every visitor and client in the batch
        self.ts = ts
        self.hits: list[_HitArgs] = []
        self.waiters: list[asyncio.Future[Outcome] | OnOutcome] = []
        self.reloaded = False


def _tell(
    waiter: asyncio.Future[Outcome] | OnOutcome,
    outcome: Outcome | None,
    error: StorageUnavailable | None,
) -> None:
    """Hand a hit's outcome (or `error`) to its waiter: a future not yet done, or a receiver
    (what it raises is logged: the run's other hits are still to be told)."""
    if not isinstance(waiter, asyncio.Future):
        call_guarded(log, "a hit's receiver", waiter, outcome, error)
    elif waiter.done():
        pass
    elif error is not None:
        waiter.set_exception(error)
    elif outcome is not None:
        waiter.set_result(outcome)


class Recorder:
    """Counts hits into Redis with `lua/record.lua`. The hits of one site and day that arrive in
    the same event-loop tick go out as one run of the script (at most `max_batch` hits; a full
    run is written at once, the rest at the end of the tick), which judges each hit in order as
    if it ran alone and writes their sum once; each hit's request waits for the run that holds
    it, so it is acknowledged only once Redis has counted it. Runs go through the group commit
    (`aggregations.pipeline`); on a Redis Cluster (`pipe` None), through redis-py's cluster
    client, which routes each to the site's node."""

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
        self.max_batch = MAX_BATCH if pipe is not None else ROUTED_BATCH
        self._commands: dict[tuple[str, date], _Command] = {}
        self._batches: dict[tuple[str, date, str], _Batch] = {}
        self._dispatch_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
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
            keys = [
                *(k.salt(periods.day), k.seen),
                *(k.day(periods.day), k.week(periods.week), k.month(periods.month)),
                *(k.year(periods.year), k.total),
                *(k.day_visitors(periods.day), k.week_visitors(periods.week)),
                *(k.month_visitors(periods.month), k.year_visitors(periods.year)),
                *(k.total_visitors, k.pending, k.pending_titles),
                *(k.articles_day(periods.day), k.articles_week(periods.week)),
                *(k.articles_month(periods.month), k.articles_total, k.marker, k.rate_site),
            ]
            p = self.policy
            policy = [*self._policy_args, periods.day.isoformat()]
            policy += [1 if p.article_dedup else 0, p.max_articles_per_day]
            cached = self._commands[(site, periods.day)] = _Command(
                k, keys, policy, self._limit_args
            )
        return cached

    @staticmethod
    def _hit_args(batch: _Batch, hit: Hit) -> _HitArgs:
        visitor = batch.hash(hit.identity)
        cmd = batch.cmd
        return (
            cmd.visit_articles + visitor,
            cmd.rate_client + batch.hash(hit.network),
            visitor,
            b"%d" % int(hit.ts * 1000),
            hit.article.encode() if hit.article else b"",
            hit.title.encode() if hit.title else b"",
        )

    def _enqueue(self, hit: Hit, on_outcome: OnOutcome | None) -> asyncio.Future[Outcome] | None:
        """Add `hit` to this tick's batch of its site, day and salt. Its outcome goes to
        `on_outcome`, or when that is None, to the future returned."""
        periods = self.calendar.at(hit.ts, hit.site.tz)
        site = hit.site.id
        salt = self.salts.get(site, periods.day)
        key = (site, periods.day, salt)
        batch = self._batches.get(key)
        if batch is None:
            cmd = self._command(site, periods)
            batch = self._batches[key] = _Batch(cmd, periods, salt, hit.ts)
            if not self._dispatch_scheduled:
                self._dispatch_scheduled = True
                batch.loop.call_soon(self._dispatch)
        fut: asyncio.Future[Outcome] | None = None
        waiter: asyncio.Future[Outcome] | OnOutcome
        if on_outcome is None:
            fut = waiter = batch.loop.create_future()
        else:
            waiter = on_outcome
        batch.hits.append(self._hit_args(batch, hit))
        batch.waiters.append(waiter)
        if len(batch.hits) >= self.max_batch:  # full: it goes now, the tick starts another
            del self._batches[key]
            self._send(batch)
            if self.pipe is not None:
                self.pipe.flush()
        return fut

    def _dispatch(self) -> None:
        """The tick's runs, written at once (not on a later turn of the loop)."""
        self._dispatch_scheduled = False
        batches, self._batches = self._batches, {}
        for batch in batches.values():
            self._send(batch)
        if self.pipe is not None:
            self.pipe.flush()

    def _pack(self, batch: _Batch) -> bytes:
        """The batch's EVALSHA as RESP, in the order `lua/record.lua` documents."""
        cmd, hits = batch.cmd, batch.hits
        cmd.ttls_at(batch.periods, batch.ts)
        n = len(hits)
        parts = [
            b"*%d\r\n" % (3 + RECORD_KEYS + RECORD_ARGS + 6 * n),
            bulks(["EVALSHA", self.scripts.record.sha, RECORD_KEYS + 2 * n]),
            cmd.encoded_keys,
        ]
        for visit_articles, rate_client, *_ in hits:
            parts.append(
                _KEYS_OF_HIT % (len(visit_articles), visit_articles, len(rate_client), rate_client)
            )
        parts += [bulk(batch.salt.encode()), cmd.encoded_policy, cmd.encoded_ttls]
        parts.append(cmd.encoded_limits)
        for _, _, visitor, now, article, title in hits:
            parts.append(
                _ARGS_OF_HIT
                % (len(visitor), visitor, len(now), now, len(article), article, len(title), title)
            )
        return b"".join(parts)

    def _arguments(self, batch: _Batch) -> tuple[list[Any], list[Any]]:
        """The script's keys and arguments as `_pack` encodes them, for a Redis Cluster, where
        each site's slot may live on another node and redis-py routes the command."""
        cmd, hits = batch.cmd, batch.hits
        keys = [*cmd.keys, *(k for h in hits for k in h[:2])]
        args = [batch.salt, *cmd.policy, *cmd.ttls_at(batch.periods, batch.ts), *cmd.limits]
        args += [a for h in hits for a in h[2:]]
        return keys, args

    def _send(self, batch: _Batch) -> None:
        try:
            if self.pipe is None:
                self._spawn(self._run_routed(batch))
                return
            self.pipe.send(self._pack(batch), functools.partial(self._replied, batch))
        except Exception as err:  # a bug: its requests are answered, not left waiting
            self._failed(batch, err)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task, kept referenced until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_routed(self, batch: _Batch) -> None:
        try:
            keys, args = self._arguments(batch)
            reply = await self.scripts.record(keys=keys, args=args)
        except RedisError as err:
            self._fail(batch, err)
        except Exception as err:
            self._failed(batch, err)
        else:
            self._delivered(batch, reply)

    def _replied(self, batch: _Batch, reply: Any, err: BaseException | None) -> None:
        """The run's reply, called by the pipeline's connection as soon as it is read."""
        if err is None:
            self._delivered(batch, reply)
        elif isinstance(err, NoScriptError) and not batch.reloaded:
            # Redis restarted or its scripts were flushed: load ours again, and run it once more
            batch.reloaded = True
            self._spawn(self._reload_and_send(batch))
        else:
            self._fail(batch, err)

    async def _reload_and_send(self, batch: _Batch) -> None:
        try:
            await self.redis.script_load(self.scripts.record.script)
        except RedisError as err:
            self._fail(batch, err)
        else:
            self._send(batch)

    def _delivered(self, batch: _Batch, reply: Any) -> None:
        try:
            self._deliver(batch, reply)
        except Exception as err:  # a reply not of the script's shape
            self._failed(batch, err)

    def _failed(self, batch: _Batch, err: Exception) -> None:
        """A run that failed for a reason of this process's own (a bug, not Redis): logged, and
        its hits fail as a store failure would, so that no request waits forever."""
        log.exception("recording a run of %d hits failed", len(batch.hits), exc_info=err)
        self._fail(batch, err)

    @staticmethod
    def _fail(batch: _Batch, err: BaseException) -> None:
        waiters, batch.waiters = batch.waiters, []  # each told once, whatever fails after
        for waiter in waiters:
            error = StorageUnavailable(f"Redis refused the hit: {err}")
            error.__cause__ = err
            _tell(waiter, None, error)

    @staticmethod
    def _deliver(batch: _Batch, reply: list[Any]) -> None:
        if int(reply[0]) == 0:  # another salt: every hit is hashed again and sent again
            outcome: Outcome = (0, as_text(reply[1]))
            outcomes = [outcome] * len(batch.waiters)
        else:
            built = bool(reply[1])
            outcomes = [
                (int(reply[j]), bool(reply[j + 1]), int(reply[j + 2]), built)
                for j in range(2, 2 + 3 * len(batch.waiters), 3)
            ]
        waiters, batch.waiters = batch.waiters, []
        for waiter, outcome in zip(waiters, outcomes, strict=True):
            _tell(waiter, outcome, None)

    async def record(self, hit: Hit) -> Recorded:
        try:
            for _ in range(SALT_ATTEMPTS):
                recorded = self.outcome(hit, await self.submit(hit))
                if recorded is not None:
                    return recorded
            raise StorageUnavailable("the day's salt kept changing under this process")
        finally:
            self.settled(hit)

    # `record` in three steps, for a caller that waits with a callback rather than a coroutine
    # (the connection's beacon path, `analytics.protocol`): submit_with, read the outcome it
    # is handed (again from submit_with when it says None), and settled, whatever came of it

    def submit(self, hit: Hit) -> asyncio.Future[Outcome]:
        """Queue `hit` in this tick's run of its site and day: the future of its outcome."""
        fut = self._enqueue(hit, None)
        assert fut is not None
        return fut

    def submit_with(self, hit: Hit, on_outcome: OnOutcome) -> None:
        """As `submit`, but the outcome goes to `on_outcome(outcome, None)`, or to
        `on_outcome(None, error)`, called once, as soon as the run's reply is read: no future,
        and no turn of the event loop between the reply and the caller's answer."""
        self._enqueue(hit, on_outcome)

    def outcome(self, hit: Hit, outcome: Outcome) -> Recorded | None:
        """What the run said of `hit`: counted, or refused by a rate limit (raises), or None:
        the day's salt in Redis is another one, now learnt - `hit` must be submitted again."""
        status = outcome[0]
        if status == 1:
            return Recorded(outcome[1], ARTICLE_COUNTS[outcome[2]], outcome[3])
        if status in LIMITED:
            raise RateLimited(f"too many page views from this {LIMITED[status]}")
        day = self.calendar.at(hit.ts, hit.site.tz).day
        self.salts.learn(hit.site.id, day, outcome[1])
        return None

    def settled(self, hit: Hit) -> None:
        """Whatever came of `hit` (counted, or a failure that may have counted all the same),
        its site's counters may have changed: reads from here on ask Redis again."""
        if self.cache is not None:
            self.cache.drop(hit.site.id)

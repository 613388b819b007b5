"""The service's own Prometheus instruments, defined once.

They live at the bottom of the import chain so that every layer can record into them; `analytics`
creates them on a registry of its choosing (a fresh one per app in tests) and serves `/metrics`.
No label takes a user-supplied value: routes are the router's names, reasons a closed set, and
sites (configured by the operator) only on the online-visitors gauge, capped.

These are the instruments a process updates as it works (per request, a few additions to plain
numbers, which reach the instruments once an event-loop tick: `TickBuffer`). What only Redis
knows - the rollup backlog and lag, visitors online per site, Redis memory - is read when
Prometheus scrapes (`analytics.scrape`), never per beacon. With several worker processes,
prometheus-client's multiprocess mode keeps each value in a file per process and a scrape sums
them; each gauge below says how its per-process values combine.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError

NAMESPACE = "analytics"
FAST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Drop(StrEnum):
    """Why a beacon did not count (or, for `ID_CAP`, why its article did not)."""

    BOT = "bot"
    PREFETCH = "prefetch"
    DNT = "dnt"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNKNOWN_SITE = "unknown_site"
    ORIGIN = "origin"
    RATE_LIMITED = "rate_limited"
    ID_CAP = "id_cap"
    STORAGE_ERROR = "storage_error"


STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# "record": a beacon request (counting, and the counters a beacon may ask back); "read": the read
# API; "baseline": the admin API; "metrics": a scrape's reads; "leader": the rollup leader's lock
REDIS_OPERATIONS = ("record", "read", "rollup", "rebuild", "baseline", "health", "metrics")
POSTGRES_OPERATIONS = ("rollup", "read", "sites", "admin", "health", "leader")
ROLLUP_RESULTS = ("ok", "error", "skipped")


class TickBuffer:
    """What the requests of one event-loop tick add to a few counters and histograms, kept as
    plain numbers and added to the Prometheus children once, at the start of the next tick.

    prometheus-client takes a lock for every increment and walks a histogram's buckets for
    every observation (about 3 us a request, measured); a busy tick answers tens of requests.
    A scrape reads what the ticks before its own added. Histograms are added to through their
    children's bucket values (`_buckets`, `_sum`, `_upper_bounds`: prometheus-client's, held
    since its first versions; `tests/test_metrics.py` checks the result against `observe`).
    Outside a running event loop, everything is added at once.
    """

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}  # counter child -> increments
        self._observed: dict[Any, tuple[list[float], list[int]]] = {}  # child -> sum, buckets
        self._scheduled = False

    def inc(self, child: Any) -> None:
        counts = self._counts
        if child in counts:
            counts[child] += 1
        else:
            counts[child] = 1
            self._schedule()

    def observe(self, child: Any, value: float) -> None:
        found = self._observed.get(child)
        fresh = found is None
        if found is None:
            found = self._observed[child] = ([0.0], [0] * len(child._upper_bounds))
        found[0][0] += value
        found[1][bisect_left(child._upper_bounds, value)] += 1  # the first bound >= value
        if fresh:
            self._schedule()  # last: outside a loop, it adds what is here at once

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        counts, self._counts = self._counts, {}
        for child, n in counts.items():
            child.inc(n)
        observed, self._observed = self._observed, {}
        for child, (total, buckets) in observed.items():
            child._sum.inc(total[0])
            for i, n in enumerate(buckets):
                if n:
                    child._buckets[i].inc(n)


class Metrics:
    def observe_http(self, route: str, status: int, seconds: float) -> None:
        """One answered request, added at the end of the tick (`TickBuffer`). The labelled
        children are looked up once per route and status class (`labels()` takes a lock and
        builds a key)."""
        key = (route, status // 100)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self.http_requests.labels(route, f"{status // 100}xx"),
                self.http_duration.labels(route),
            )
        self.tick.inc(children[0])
        self.tick.observe(children[1], seconds)

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        routes: tuple[str, ...] = (),
        version: str = "unknown",
    ) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self._http: dict[tuple[str, int], tuple[Any, Any]] = {}
        self.tick = TickBuffer()  # the per-request instruments go through it
        self.registry = r
        self.beacons = Counter(
            "beacons",
            "Beacons received, by result (counted/dropped) and reason.",
            ["result", "reason"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.beacons.labels("counted", "none")
        for reason in Drop:
            result = "counted" if reason is Drop.ID_CAP else "dropped"
            self.beacons.labels(result, reason.value)
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests answered, by route name and status class.",
            ["route", "status"],
            namespace=NAMESPACE,
            registry=r,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route name.",
            ["route"],
            namespace=NAMESPACE,
            registry=r,
            buckets=FAST_BUCKETS,
        )
        for route in routes:
            self.http_duration.labels(route)
            for status in STATUS_CLASSES:
                self.http_requests.labels(route, status)
        self.redis_errors = Counter(
            "redis_errors",
            "Redis operations that failed, by operation.",
            ["operation"],
            namespace=NAMESPACE,
            registry=r,
        )
        for op in REDIS_OPERATIONS:
            self.redis_errors.labels(op)
        self.postgres_errors = Counter(
            "postgres_errors",
            "PostgreSQL operations that failed, by operation.",
            ["operation"],
            namespace=NAMESPACE,
            registry=r,
        )
        for op in POSTGRES_OPERATIONS:
            self.postgres_errors.labels(op)
        self.rollup_runs = Counter(
            "rollup_runs",
            "Rollup passes, by result.",
            ["result"],
            namespace=NAMESPACE,
            registry=r,
        )
        for result in ROLLUP_RESULTS:
            self.rollup_runs.labels(result)
        self.rollup_duration = Histogram(
            "rollup_duration_seconds",
            "Time a rollup pass took.",
            namespace=NAMESPACE,
            registry=r,
            buckets=SLOW_BUCKETS,
        )
        self.rollup_rows = Counter(
            "rollup_rows",
            "Rows applied to PostgreSQL by the rollup.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rollup_rebuilds = Counter(
            "rollup_rebuilds",
            "Sites whose live counters were rebuilt from PostgreSQL after Redis lost them.",
            namespace=NAMESPACE,
            registry=r,
        )
        self.rollup_last_success = Gauge(
            "rollup_last_success_timestamp_seconds",
            "Unix time of the last rollup pass that finished without error.",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="max",
        )
        self.rollup_leader = Gauge(
            "rollup_leader",
            "1 in the process that currently runs the timed rollup (the leader), else 0.",
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.info = Gauge(
            "build_info",
            "Always 1; the label says which version of the service runs.",
            ["version"],
            namespace=NAMESPACE,
            registry=r,
            multiprocess_mode="max",
        )
        self.info.labels(version).set(1)

    def store_error(self, err: BaseException, redis_op: str, postgres_op: str) -> None:
        """Count a failed store call, by the store that failed (a domain error's cause)."""
        cause = err.__cause__ if err.__cause__ is not None else err
        if isinstance(cause, RedisError):
            self.redis_errors.labels(redis_op).inc()
        else:
            self.postgres_errors.labels(postgres_op).inc()

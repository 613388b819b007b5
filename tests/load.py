"""Beacons over real HTTP to running `analytics serve` processes, as many browsers would send
them, and a tally of what each instance answered: the multi-instance and failover tests send
through here. Also the environment and set-up of such instances."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tests.conftest import ADMIN_TOKEN, BROWSER
from tests.processes import Service, clean_env
from tests.stores import Stores


@dataclass(frozen=True)
class Beacon:
    site: str
    ip: str
    article: str | None = None


@dataclass
class Tally:
    """What the services answered: 204s per site (acknowledged, so counted), other statuses."""

    accepted: Counter[str] = field(default_factory=Counter)
    articles: Counter[tuple[str, str]] = field(default_factory=Counter)
    refused: Counter[tuple[str, int]] = field(default_factory=Counter)
    by_instance: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.accepted.values())


def noon_zone(now: float | None = None) -> str:
    """A fixed-offset time zone where it is about noon now, so that a test that runs on the
    real clock (a service in its own process) never sees a local midnight split its day."""
    hour = datetime.fromtimestamp(time.time() if now is None else now, UTC).hour
    offset = 12 - hour  # -11 .. +12
    return f"Etc/GMT{-offset:+d}"  # POSIX sign: Etc/GMT-7 is UTC+7


def ip_of(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


async def send(
    urls: Sequence[str],
    beacons: Iterable[Beacon],
    *,
    concurrency: int = 32,
    tally: Tally | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Tally:
    """POST every beacon, the i-th to `urls[i % len(urls)]`, `concurrency` at a time, until
    `stop()` says so. Connection errors count as status 0 (not acknowledged)."""
    tally = tally or Tally()
    queue: asyncio.Queue[tuple[int, Beacon] | None] = asyncio.Queue(maxsize=concurrency * 4)
    started = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := await queue.get()) is not None:
            i, b = item
            instance = i % len(urls)
            body: dict[str, Any] = {"site": b.site, "url": f"https://{b.site}.example/"}
            if b.article is not None:
                body["article"] = b.article
            headers = {"User-Agent": BROWSER, "X-Forwarded-For": b.ip}
            try:
                async with session.post(
                    urls[instance] + "/collect", json=body, headers=headers
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            if status == 204:
                tally.accepted[b.site] += 1
                tally.by_instance[instance] += 1
                if b.article is not None:
                    tally.articles[(b.site, b.article)] += 1
            else:
                tally.refused[(b.site, status)] += 1

    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            for item in enumerate(beacons):
                if stop():
                    break
                await queue.put(item)
            for _ in workers:
                await queue.put(None)  # each worker sends what is queued, then stops
            await asyncio.gather(*workers)
        finally:
            # cut short (cancelled, a worker failed): stop the workers rather than queue their
            # stop behind a full queue that no one reads any more (that hung a test's teardown)
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    tally.seconds += time.perf_counter() - started
    return tally


def services_env(stores: Stores, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    return clean_env(
        ANALYTICS_REDIS_URL=redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
        ANALYTICS_ADMIN_TOKEN=ADMIN_TOKEN,
        ANALYTICS_TRUSTED_PROXIES="127.0.0.1",
        ANALYTICS_ROLLUP_INTERVAL="1",  # both instances roll up all the time, side by side
        ANALYTICS_ONLINE_WINDOW="3600",  # "online" = everyone this test sent, however slow it runs
        ANALYTICS_ARTICLE_DEDUP="none",
        ANALYTICS_SITES_REFRESH="1",
        **extra,
    )


def add_sites(services: list[Service], sites: tuple[str, ...], timezone: str) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    for site in sites:
        body = json.dumps({"domains": [], "timezone": timezone}).encode()
        status, text = services[0].request("PUT", f"/api/v1/sites/{site}", body, **admin)
        assert status in (200, 201), text
    # the other instance learns of them by NOTIFY (or its periodic refresh)
    deadline = time.monotonic() + 30
    for service in services:
        for site in sites:
            while service.request("GET", f"/api/v1/sites/{site}/counters")[0] != 200:
                assert time.monotonic() < deadline, f"{service.url} never learned of {site}"
                time.sleep(0.1)

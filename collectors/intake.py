"""The beacon pipeline: parse -> screen -> record, with a closed set of outcomes.

`Intake.accept` takes a parsed `Beacon` and what the request says about its sender, and either
counts it (returns None), drops it by policy (returns the `Drop` reason), or raises a domain error
that the HTTP layer turns into a 4xx/5xx. Every outcome is counted in metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from aggregations.clock import Clock
from aggregations.counters import ArticleCount, Hit, Recorded, Recorder
from aggregations.errors import (
    AnalyticsError,
    InvalidInput,
    OriginRefused,
    RateLimited,
    StorageUnavailable,
    TooLarge,
    UnknownSite,
)
from aggregations.metrics import Drop, Metrics
from aggregations.sites import Site, SiteCache, host_allowed
from collectors.beacons import Beacon
from collectors.clients import ClientResolver, rate_network
from collectors.screening import screen

log = logging.getLogger("analytics.intake")

DROP_OF_ERROR: dict[type[AnalyticsError], Drop] = {
    InvalidInput: Drop.INVALID,
    TooLarge: Drop.TOO_LARGE,
    UnknownSite: Drop.UNKNOWN_SITE,
    OriginRefused: Drop.ORIGIN,
    RateLimited: Drop.RATE_LIMITED,
    StorageUnavailable: Drop.STORAGE_ERROR,
}


@dataclass(slots=True)  # not frozen: a frozen dataclass takes ~2 us more to make, per beacon
class Sender:
    """What the request tells about who sent a beacon. Never stored, never changed."""

    peer: str | None
    forwarded_for: str | None
    user_agent: str
    origin: str | None
    headers: Mapping[str, str]


class Intake:
    def __init__(
        self,
        sites: SiteCache,
        recorder: Recorder,
        clients: ClientResolver,
        clock: Clock,
        metrics: Metrics,
        on_unbuilt: Callable[[], None] | None = None,
    ) -> None:
        self.sites = sites
        self.recorder = recorder
        self.clients = clients
        self.clock = clock
        self.metrics = metrics
        self._counted = metrics.beacons.labels("counted", "none")
        self._capped = metrics.beacons.labels("counted", Drop.ID_CAP.value)
        self.on_unbuilt = on_unbuilt

    def site(self, site_id: str) -> Site:
        site = self.sites.get(site_id)
        if site is None:
            raise UnknownSite(f"site {site_id!r} is not configured here", "site")
        return site

    def check_origin(self, site: Site, beacon: Beacon, origin: str | None) -> None:
        if not site.domains:
            return
        refused = origin_refused(origin, beacon.url, site.domains)
        if refused == "origin":
            raise OriginRefused(f"origin {(origin or '')[:100]!r} is not one of the site's domains")
        if refused == "url":
            raise OriginRefused("url is not on one of the site's domains", "url")

    def count_error(self, err: AnalyticsError) -> None:
        reason = DROP_OF_ERROR.get(type(err), Drop.INVALID)
        self.metrics.beacons.labels("dropped", reason.value).inc()

    async def accept(self, beacon: Beacon, sender: Sender) -> tuple[Site, Drop | None]:
        """Count `beacon`, or say why not. Raises a domain error for a refused beacon."""
        site, admitted = self.admit(beacon, sender)
        if not isinstance(admitted, Hit):
            return site, admitted
        try:
            recorded = await self.recorder.record(admitted)
        except AnalyticsError as err:
            self.count_error(err)
            raise
        return site, self.counted(recorded)

    # `accept` in steps, for a caller that waits for the recorder with a callback (the
    # connection's beacon path, `analytics.protocol`): admit, then the recorder's submit,
    # outcome and settled, then counted - or count_error for what any step raised

    def admit(self, beacon: Beacon, sender: Sender) -> tuple[Site, Hit | Drop]:
        """The checks before counting: the hit to record, or the policy's reason to drop the
        beacon (counted in the metrics). Raises a domain error for a refused beacon."""
        try:
            site = self.site(beacon.site)
            self.check_origin(site, beacon, sender.origin)
            drop = screen(site, sender.user_agent, sender.headers)
            if drop is not None:
                self.metrics.beacons.labels("dropped", drop.value).inc()
                return site, drop
            client = self.clients.client(sender.peer, sender.forwarded_for)
        except AnalyticsError as err:
            self.count_error(err)
            raise
        return site, Hit(
            site=site,
            # a header's bytes that are not UTF-8 come as surrogates: hashed as they came
            identity=f"{site.id}\0{client}\0{sender.user_agent}".encode("utf-8", "surrogateescape"),
            network=rate_network(client).encode(),
            ts=self.clock.now(),
            article=beacon.article,
            title=beacon.title,
        )

    def counted(self, recorded: Recorded) -> Drop | None:
        """A hit the recorder counted, in the metrics: None, or ID_CAP for a new article past
        the day's cap (the view counted, the article not)."""
        if recorded.article is ArticleCount.CAPPED:
            self.metrics.tick.inc(self._capped)
            return Drop.ID_CAP
        self.metrics.tick.inc(self._counted)
        if not recorded.built and self.on_unbuilt is not None:
            self.on_unbuilt()
        return None


# the one cache of the check (host_allowed and hostname have none of their own): one lookup a
# beacon, as the origin repeats and so do popular pages
@lru_cache(maxsize=16384)
def origin_refused(origin: str | None, url: str, domains: tuple[str, ...]) -> str | None:
    """Which of the sending page's origin and its url is not on one of `domains`, if any."""
    if origin is not None and not host_allowed(hostname(origin), domains):
        return "origin"
    if not host_allowed(hostname(url), domains):
        return "url"
    return None


def hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None

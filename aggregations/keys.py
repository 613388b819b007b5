"""Every Redis key of the service, in one place.

All keys of a site carry its hash tag `{site}`, so every per-site multi-key operation (the counting
script, the rollup's move-aside, the rebuild) touches one Redis Cluster slot. Period keys expire
(see `periods`); lifetime totals, the pending buffer and batches in flight do not: the first are
the point of the service, the others are drained by the rollup and must never be lost to a TTL.
"""

from __future__ import annotations

from datetime import date

DEFAULT_PREFIX = "an"


class SiteKeys:
    """Key names of one site under one key prefix."""

    __slots__ = ("base",)

    def __init__(self, prefix: str, site: str) -> None:
        self.base = f"{prefix}:{{{site}}}:"

    # live counters: a hash {"pv", "visits"} and a HyperLogLog of visitors per period
    def day(self, day: date) -> str:
        return f"{self.base}d:{day.isoformat()}"

    def day_visitors(self, day: date) -> str:
        return f"{self.base}dv:{day.isoformat()}"

    def week(self, label: str) -> str:
        return f"{self.base}w:{label}"

    def week_visitors(self, label: str) -> str:
        return f"{self.base}wv:{label}"

    def month(self, label: str) -> str:
        return f"{self.base}m:{label}"

    def month_visitors(self, label: str) -> str:
        return f"{self.base}mv:{label}"

    def year(self, label: str) -> str:
        return f"{self.base}y:{label}"

    def year_visitors(self, label: str) -> str:
        return f"{self.base}yv:{label}"

    @property
    def total(self) -> str:
        return f"{self.base}t"

    @property
    def total_visitors(self) -> str:
        return f"{self.base}tv"

    # live article views: sorted sets article -> views
    def articles_day(self, day: date) -> str:
        return f"{self.base}ad:{day.isoformat()}"

    def articles_week(self, label: str) -> str:
        return f"{self.base}aw:{label}"

    def articles_month(self, label: str) -> str:
        return f"{self.base}am:{label}"

    @property
    def articles_total(self) -> str:
        return f"{self.base}at"

    # baselines carried over from an older counter, kept so that a new one replaces the old
    @property
    def baseline(self) -> str:
        return f"{self.base}base"

    @property
    def article_baselines(self) -> str:
        return f"{self.base}abase"

    # visits: visitor -> last seen (ms); and the articles already counted in a visit
    @property
    def seen(self) -> str:
        return f"{self.base}seen"

    def visit_articles(self, visitor: str) -> str:
        return f"{self.base}va:{visitor}"

    def salt(self, day: date) -> str:
        return f"{self.base}salt:{day.isoformat()}"

    # the rollup's buffer: "day|article" / "day|#pv" / "day|#visits" -> count, article -> title
    @property
    def pending(self) -> str:
        return f"{self.base}pending"

    @property
    def pending_titles(self) -> str:
        return f"{self.base}ptitles"

    @property
    def batches(self) -> str:
        return f"{self.base}batches"

    def batch(self, batch_id: str) -> str:
        return f"{self.base}batch:{batch_id}"

    def batch_titles(self, batch_id: str) -> str:
        return f"{self.base}batcht:{batch_id}"

    # present while the live counters include PostgreSQL's durable record (see `rebuild`)
    @property
    def marker(self) -> str:
        return f"{self.base}built"

    def staging(self, name: str) -> str:
        return f"{self.base}rb:{name}"

    # rate limiting, by a hash of the client network and for the whole site
    def rate_client(self, client: str) -> str:
        return f"{self.base}rl:{client}"

    @property
    def rate_site(self) -> str:
        return f"{self.base}rl"


def rollup_state_key(prefix: str) -> str:
    """The rollup's shared mark (a hash): `drained_at`, the start of the last pass that applied
    every site, so any process can tell how far PostgreSQL is behind. One key, not per site."""
    return f"{prefix}:rollup"


def check_prefix(prefix: str) -> str:
    """A key prefix must not carry a hash tag of its own, or sites would share a slot."""
    if not prefix or any(c in prefix for c in "{}: \t\r\n"):
        raise ValueError(f"Redis key prefix {prefix!r} must be non-empty without '{{', '}}', ':'")
    return prefix

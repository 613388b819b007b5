"""Sites: identifiers, the PostgreSQL table, and the in-process cache that beacons consult.

The cache lets counting go on while PostgreSQL is down; it is refreshed on change (NOTIFY) and
periodically, by `analytics`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aggregations.errors import InvalidInput
from aggregations.periods import DEFAULT_TIMEZONE

SITE_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ARTICLE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
HOSTNAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)
NOTIFY_CHANNEL = "analytics_sites"


def check_site_id(value: object, field: str = "site") -> str:
    if isinstance(value, str) and SITE_ID.fullmatch(value):
        return value
    raise InvalidInput(
        f"{field} must be 1-64 characters of a-z, 0-9, '_' and '-', not starting with '_' or '-'",
        field,
    )


def check_article_id(value: object, field: str = "article") -> str:
    if isinstance(value, str) and ARTICLE_ID.fullmatch(value):
        return value
    raise InvalidInput(
        f"{field} must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'", field
    )


def check_timezone(value: object, field: str = "timezone") -> ZoneInfo:
    if isinstance(value, str) and value and len(value) <= 64 and ".." not in value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise InvalidInput(f"{field} must be an IANA time zone such as Asia/Ho_Chi_Minh", field)


def normalize_domain(value: object, field: str = "domains") -> str:
    """A bare host name: lower case, no scheme, port, path or leading 'www.'."""
    if isinstance(value, str):
        host = value.strip().lower()
        host = host.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].rstrip(".")
        host = host.removeprefix("www.")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            host = ""
        if HOSTNAME.fullmatch(host):
            return host
    raise InvalidInput(f"{field} must hold host names such as portal.example.gov.vn", field)


def host_allowed(host: str | None, domains: Sequence[str]) -> bool:
    """True when `host` is one of `domains` or a subdomain of one; `www.` and bare are the same."""
    if not domains:
        return True
    if not host:
        return False
    host = host.lower().rstrip(".").removeprefix("www.")
    return any(host == d or host.endswith("." + d) for d in domains)


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str = ""
    domains: tuple[str, ...] = ()
    timezone: str = DEFAULT_TIMEZONE
    respect_dnt: bool = False
    tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tz", ZoneInfo(self.timezone))

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.id,
            "name": self.name,
            "domains": list(self.domains),
            "timezone": self.timezone,
            "respect_dnt": self.respect_dnt,
        }


def make_site(
    site_id: object,
    name: object = None,
    domains: object = (),
    timezone: object = DEFAULT_TIMEZONE,
    respect_dnt: object = False,
) -> Site:
    """Validate every part of a site definition, naming the field at fault."""
    sid = check_site_id(site_id)
    if name is None:
        name = sid
    if not isinstance(name, str) or len(name) > 200:
        raise InvalidInput("name must be a string of at most 200 characters", "name")
    if isinstance(domains, str) or not isinstance(domains, Iterable):
        raise InvalidInput("domains must be a list of host names", "domains")
    hosts = tuple(dict.fromkeys(normalize_domain(d) for d in domains))
    if len(hosts) > 100:
        raise InvalidInput("domains may hold at most 100 host names", "domains")
    tz = check_timezone(timezone)
    if not isinstance(respect_dnt, bool):
        raise InvalidInput("respect_dnt must be true or false", "respect_dnt")
    return Site(sid, name, hosts, tz.key, respect_dnt)


SITE_COLUMNS = "id, name, domains, timezone, respect_dnt"


def site_from_row(row: Any) -> Site:
    return Site(row["id"], row["name"], tuple(row["domains"]), row["timezone"], row["respect_dnt"])


async def load_sites(conn: Any) -> list[Site]:
    rows = await conn.fetch(f"SELECT {SITE_COLUMNS} FROM sites ORDER BY id")
    return [site_from_row(r) for r in rows]


async def save_site(conn: Any, site: Site) -> bool:
    """Insert or update `site`; True when it was created. Tells other processes to reload."""
    async with conn.transaction():
        created = await conn.fetchval(
            """
            INSERT INTO sites (id, name, domains, timezone, respect_dnt)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (id) DO UPDATE SET name = excluded.name, domains = excluded.domains,
                timezone = excluded.timezone, respect_dnt = excluded.respect_dnt,
                updated_at = now()
            RETURNING (xmax = 0)
            """,
            site.id,
            site.name,
            list(site.domains),
            site.timezone,
            site.respect_dnt,
        )
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, site.id)
    return bool(created)


class SiteCache:
    """The sites this process knows, by id. Replaced wholesale on reload.

    A reload reads a snapshot of the table; a site this process saved (`put`) while that read was
    under way may be missing from it, so `replace` keeps such newer puts instead of regressing.
    """

    def __init__(self, sites: Iterable[Site] = ()) -> None:
        self._sites: dict[str, Site] = {s.id: s for s in sites}
        self._generation = 0
        self._puts: list[tuple[int, Site]] = []  # puts not yet seen by a completed reload

    @property
    def generation(self) -> int:
        """Take it before reading the table; hand it to `replace` with what was read."""
        return self._generation

    def get(self, site_id: str) -> Site | None:
        return self._sites.get(site_id)

    def replace(self, sites: Iterable[Site], read_from: int | None = None) -> None:
        fresh = {s.id: s for s in sites}
        if read_from is not None:
            self._puts = [(g, site) for g, site in self._puts if g > read_from]
            for _, site in self._puts:
                fresh[site.id] = site
        else:
            self._puts = []
        self._sites = fresh

    def put(self, site: Site) -> None:
        self._generation += 1
        self._puts.append((self._generation, site))
        self._sites = {**self._sites, site.id: site}

    def all(self) -> list[Site]:
        return list(self._sites.values())

    def __len__(self) -> int:
        return len(self._sites)

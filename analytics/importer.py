"""`analytics import FILE.csv`: baselines from an older counter.

The file has a header `site,article,views,visits`. A row without an article is the site's total
(`views` are its page views, `visits` its visits); a row with one is that article's views. The
whole file is checked before anything is written; each site's baseline then replaces the old one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from aggregations.baselines import Baseline, set_baseline
from aggregations.errors import AnalyticsError, InvalidInput
from aggregations.sites import Site, check_article_id, check_site_id
from analytics import appkeys as K

COLUMNS = ("site", "article", "views", "visits")


@dataclass
class SiteImport:
    pageviews: int | None = None
    visits: int | None = None
    articles: dict[str, int] = field(default_factory=dict)


def number(raw: str | None, what: str, line: int) -> int:
    try:
        value = int((raw or "0").replace("_", "").replace(" ", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidInput(f"line {line}: {what} must be a whole number, 0 or more, not {raw!r}")
    return value


def read_csv(path: Path) -> dict[str, SiteImport]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"site", "views"} <= set(reader.fieldnames):
            raise InvalidInput(f"{path}: the first line must be the header {','.join(COLUMNS)}")
        sites: dict[str, SiteImport] = {}
        for row in reader:
            line = reader.line_num
            try:
                site = check_site_id((row.get("site") or "").strip())
                article = (row.get("article") or "").strip()
                entry = sites.setdefault(site, SiteImport())
                if article:
                    entry.articles[check_article_id(article)] = number(row["views"], "views", line)
                else:
                    entry.pageviews = number(row["views"], "views", line)
                    entry.visits = number(row.get("visits"), "visits", line)
            except AnalyticsError as err:
                if err.detail.startswith("line "):
                    raise
                raise InvalidInput(f"line {line}: {err.detail}") from err
    return sites


async def import_csv(app: web.Application, path: Path, source: str) -> list[str]:
    sites = read_csv(path)
    known: dict[str, Site] = {}
    for site_id in sites:
        site = app[K.SITES].get(site_id)
        if site is not None:
            known[site_id] = site
    unknown = sorted(set(sites) - set(known))
    if unknown:
        raise InvalidInput(f"unknown site(s): {', '.join(unknown)}; add them first")
    summary = []
    async with app[K.POOL].acquire() as conn:
        for site_id, entry in sites.items():
            baseline = Baseline(entry.pageviews, entry.visits, entry.articles)
            await set_baseline(
                app[K.REDIS],
                app[K.SCRIPTS],
                conn,
                app[K.SETTINGS].redis_prefix,
                known[site_id],
                baseline,
                source,
                app[K.CLOCK].now(),
                app[K.SETTINGS].rollup_min_replicas,
            )
            total = "" if entry.pageviews is None else f"total {entry.pageviews} page views, "
            summary.append(
                f"{site_id}: {total}{len(entry.articles)} article baseline(s) from {source}"
            )
    return summary

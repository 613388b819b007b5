"""`analytics serve | migrate | rollup --once | site add | import` - the operator's commands."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from prometheus_client import disable_created_metrics

from aggregations.errors import AnalyticsError
from analytics import appkeys as K
from analytics import serving
from analytics.app import create_app
from analytics.logs import setup_logging
from analytics.settings import Settings, SettingsError

log = logging.getLogger("analytics")
ROLLUP_LOCK_WAIT = 60.0  # seconds `rollup --once` waits for a site the service is rolling up


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="analytics",
        description="Visitor analytics: live counters in Redis, durable totals in PostgreSQL.",
        epilog="Configuration comes from ANALYTICS_* environment variables (see README).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="serve HTTP (the embedded Redis/PostgreSQL when none is set)")
    sub.add_parser("migrate", help="apply PostgreSQL migrations and exit")
    rollup = sub.add_parser("rollup", help="move pending counts into PostgreSQL")
    rollup.add_argument("--once", action="store_true", required=True, help="one pass, then exit")
    site = sub.add_parser("site", help="manage sites")
    site_sub = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    add = site_sub.add_parser("add", help="create or update a site")
    add.add_argument("site", help="site id: a-z, 0-9, '_', '-'")
    add.add_argument("--name", help="display name (default: the id)")
    add.add_argument("--domain", action="append", default=[], help="allowed domain (repeatable)")
    add.add_argument("--timezone", default="Asia/Ho_Chi_Minh", help="IANA time zone")
    add.add_argument("--respect-dnt", action="store_true", help="honour Do Not Track")
    site_sub.add_parser("list", help="list the sites")
    imp = sub.add_parser("import", help="import baselines (old counts) from a CSV file")
    imp.add_argument("file", type=Path, help="CSV with columns site,article,views,visits")
    imp.add_argument("--source", help="provenance to record (default: the file name)")
    return p


@asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[web.Application]:
    """The app's resources without the HTTP server, for one-shot commands."""
    settings = dataclasses.replace(settings, rollup_enabled=False)
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


async def cmd_migrate(settings: Settings) -> int:
    async with started(settings):
        pass  # start-up applies the migrations
    print("migrations applied")
    return 0


async def cmd_rollup(settings: Settings) -> int:
    from analytics.lifecycle import rollup_pass

    async with started(settings) as app:
        ok = await rollup_pass(app, wait=ROLLUP_LOCK_WAIT)
    return 0 if ok else 1


async def cmd_site_add(settings: Settings, args: argparse.Namespace) -> int:
    from aggregations.sites import make_site, save_site

    site = make_site(args.site, args.name, args.domain, args.timezone, args.respect_dnt)
    async with started(settings) as app, app[K.POOL].acquire() as conn:
        created = await save_site(conn, site)
    print(f"{'created' if created else 'updated'} site {site.id}: {site.as_json()}")
    return 0


async def cmd_site_list(settings: Settings) -> int:
    from aggregations.sites import load_sites

    async with started(settings) as app, app[K.POOL].acquire() as conn:
        for site in await load_sites(conn):
            print(f"{site.id}\t{site.timezone}\t{','.join(site.domains) or '*'}\t{site.name}")
    return 0


async def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from analytics.importer import import_csv

    async with started(settings) as app:
        summary = await import_csv(app, args.file, args.source or args.file.name)
    for line in summary:
        print(line)
    return 0


def serve(settings: Settings) -> int:
    if settings.workers > 1:
        return serving.supervise(settings)
    return serving.serve_single(settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"analytics: {err}", file=sys.stderr)
        return 2
    setup_logging(settings)
    # `_created` series double a scrape and no dashboard reads them
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        if args.command == "serve":
            return serve(settings)
        if args.command == "migrate":
            return asyncio.run(cmd_migrate(settings))
        if args.command == "rollup":
            return asyncio.run(cmd_rollup(settings))
        if args.command == "site":
            if args.site_command == "add":
                return asyncio.run(cmd_site_add(settings, args))
            return asyncio.run(cmd_site_list(settings))
        if args.command == "import":
            return asyncio.run(cmd_import(settings, args))
    except AnalyticsError as err:
        print(f"analytics: {err.detail}", file=sys.stderr)
        return 2
    except SettingsError as err:
        print(f"analytics: {err}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as err:
        print(f"analytics: {err}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())

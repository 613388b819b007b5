"""Schema migrations applied to a database that already holds data, as an upgrade does."""

from __future__ import annotations

import asyncpg

from analytics.db import migrate, migration_files
from tests.stores import with_database


async def test_an_upgrade_from_the_first_schema_keeps_the_rows_and_reshapes_the_article_tables(
    stores,
):
    name = f"analytics_test_{stores.run_id}_upgrade"
    admin = await asyncpg.connect(stores.admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(with_database(stores.admin_url, name))
        try:
            first = migration_files()[0]
            assert first[1] == "001_initial.sql"
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute(first[2])
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (1, $1)", first[1]
            )
            await conn.execute("INSERT INTO sites (id, name) VALUES ('caobang', 'Cao Bằng')")
            await conn.execute(
                "INSERT INTO article_days VALUES ('caobang', '2026-11-27', 'b', 2),"
                " ('caobang', '2026-11-27', 'B', 3), ('caobang', '2026-11-27', 'ä', 4)"
            )
            await conn.execute(
                "INSERT INTO articles (site_id, article, views) VALUES ('caobang', 'b', 2)"
            )
            await conn.execute(
                "INSERT INTO article_baselines VALUES ('caobang', 'b', 700, 'old.csv', now())"
            )

            applied = await migrate(conn)

            assert applied == [n for _, n, _ in migration_files()[1:]]
            assert applied[0] == "002_article_tables_for_bulk_rollup.sql"
            rows = await conn.fetch("SELECT article, views FROM article_days ORDER BY article")
            assert [tuple(r) for r in rows] == [("B", 3), ("b", 2), ("ä", 4)]  # byte order
            collations = await conn.fetch(
                "SELECT table_name, collation_name FROM information_schema.columns"
                " WHERE column_name = 'article' ORDER BY table_name"
            )
            assert [tuple(r) for r in collations] == [
                ("article_baselines", "C"), ("article_days", "C"), ("articles", "C"),
            ]  # fmt: skip
            foreign = await conn.fetch(
                "SELECT conrelid::regclass::text AS t FROM pg_constraint WHERE contype = 'f'"
                " ORDER BY 1"
            )
            assert "article_days" not in {r["t"] for r in foreign}
            assert "articles" not in {r["t"] for r in foreign}
            assert "site_days" in {r["t"] for r in foreign}  # the others still cascade
            total = await conn.fetchval(
                "SELECT a.views + b.views FROM articles a JOIN article_baselines b USING (article)"
            )
            assert total == 702
            assert await migrate(conn) == []  # applied once
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

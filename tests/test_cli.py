"""The command line as an operator uses it: settings errors, the embedded default, site, import,
rollup."""

from __future__ import annotations

import json

from tests.conftest import BROWSER
from tests.processes import Service, clean_env, run_cli


def test_a_bad_setting_stops_with_the_variable_named():
    result = run_cli("migrate", env=clean_env(ANALYTICS_PORT="eighty"))
    assert result.returncode == 2
    assert "ANALYTICS_PORT='eighty'" in result.stderr
    result = run_cli("serve", env=clean_env(ANALYTICS_VISIT_TIMEOUT="-5"))
    assert result.returncode == 2
    assert "ANALYTICS_VISIT_TIMEOUT" in result.stderr
    result = run_cli("serve", env=clean_env(ANALYTICS_ADMIN_TOKEN="short"))
    assert "ANALYTICS_ADMIN_TOKEN=(hidden)" in result.stderr
    assert "short" not in result.stderr


def test_only_one_store_configured_is_refused(stores):
    result = run_cli("migrate", env=clean_env(ANALYTICS_REDIS_URL=stores.redis_url))
    assert result.returncode == 1
    assert "ANALYTICS_DATABASE_URL" in result.stderr
    # the supervisor of several workers resolves the stores itself, and says the same
    env = clean_env(ANALYTICS_DATABASE_URL=stores.database_url, ANALYTICS_WORKERS="2")
    result = run_cli("serve", env=env)
    assert result.returncode == 1
    assert "set both ANALYTICS_REDIS_URL and ANALYTICS_DATABASE_URL" in result.stderr


def beacon(service: Service, article: str) -> int:
    body = json.dumps({"site": "demo", "url": "http://127.0.0.1/", "article": article}).encode()
    status, _ = service.request("POST", "/collect", body, **{"User-Agent": BROWSER})
    return int(status)


def counters(service: Service) -> dict:
    status, body = service.request("GET", "/api/v1/sites/demo/counters")
    assert status == 200
    return json.loads(body)


def test_embedded_default_keeps_counts_across_restarts(tmp_path):
    """No store configured: the service starts its own Redis and PostgreSQL, serves the demo page,
    counts, and still has the count after a restart."""
    env = clean_env(ANALYTICS_DATA_DIR=str(tmp_path / "data"))
    service = Service(env, tmp_path / "service.log")
    service.start()
    try:
        status, page = service.request("GET", "/")
        assert status == 200
        assert b'src="/t.js"' in page
        assert b'data-site="demo"' in page
        assert beacon(service, "hello") == 204
        assert counters(service)["total"]["pageviews"] == 1
    finally:
        assert service.stop() == 0, service.output()
    assert (tmp_path / "data" / "redis" / "appendonlydir").exists() or any(
        (tmp_path / "data" / "redis").glob("appendonly*")
    )
    service.start()
    try:
        assert counters(service)["total"]["pageviews"] == 1
        status, body = service.request("GET", "/api/v1/sites/demo/articles/hello")
        assert json.loads(body)["views"] == 1
        assert beacon(service, "hello") == 204
        assert counters(service)["total"]["pageviews"] == 2
    finally:
        assert service.stop() == 0, service.output()
    log = service.output()
    assert "embedded" in log
    assert "final rollup" in log


async def test_site_add_import_and_rollup_commands(stores, prefix, db, tmp_path):
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
    )
    result = run_cli("migrate", env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli(
        "site", "add", "caobang", "--domain", "caobang.gov.vn", "--timezone", "Asia/Bangkok",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created site caobang" in result.stdout
    result = run_cli("site", "list", env=env)
    assert "caobang\tAsia/Bangkok\tcaobang.gov.vn" in result.stdout

    csv = tmp_path / "old.csv"
    csv.write_text(
        "site,article,views,visits\ncaobang,,4512301,1200000\ncaobang,123,703,\ncaobang,9,1,\n"
    )
    result = run_cli("import", str(csv), env=env)
    assert result.returncode == 0, result.stderr
    assert "caobang: total 4512301 page views, 2 article baseline(s) from old.csv" in result.stdout
    base = await db.fetchrow("SELECT pageviews, visits, source FROM site_baselines")
    assert tuple(base) == (4512301, 1200000, "old.csv")
    csv.write_text("site,article,views\ncaobang,123,800\n")
    assert run_cli("import", str(csv), "--source", "fix", env=env).returncode == 0
    articles = dict(await db.fetch("SELECT article, views FROM article_baselines"))
    assert articles == {"123": 800, "9": 1}  # replaced, not added; 9 untouched
    bad = tmp_path / "bad.csv"
    bad.write_text("site,article,views\ncaobang,123,lots\n")
    result = run_cli("import", str(bad), env=env)
    assert result.returncode == 2
    assert "line 2" in result.stderr
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("site,article,views\nnowhere,1,1\n")
    result = run_cli("import", str(unknown), env=env)
    assert result.returncode == 2
    assert "nowhere" in result.stderr

    result = run_cli("rollup", "--once", env=env)
    assert result.returncode == 0, result.stderr
    assert await db.fetchval("SELECT count(*) FROM rollup_batches") == 0  # nothing was pending

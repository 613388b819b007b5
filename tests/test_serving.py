"""`analytics serve` with ANALYTICS_WORKERS=2, as real processes: two workers on one port, one
rollup leader, metrics summed across the workers, a dead worker replaced, and on SIGTERM a clean
exit with every accepted beacon in PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from aggregations.sites import make_site, save_site
from tests.conftest import ADMIN_TOKEN, BROWSER
from tests.processes import Service, clean_env
from tests.promtool import check_metrics, samples

ARTICLES = ("a1", "a2", "a3")


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    """Poll until `predicate()` holds; a deadline only against hanging forever."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def beacon(service: Service, i: int) -> int:
    body = json.dumps(
        {"site": "caobang", "url": "https://caobang.gov.vn/", "article": ARTICLES[i % 3]}
    ).encode()
    status, _ = service.request(
        "POST",
        "/collect",
        body,
        **{
            "User-Agent": BROWSER,
            # a distinct visitor per beacon, so each one counts an article view
            "X-Forwarded-For": f"198.18.{i // 250}.{i % 250 + 1}",
        },
    )
    return int(status)


def send_many(service: Service, start: int, count: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: beacon(service, i), range(start, start + count)))


def worker_pids(log: str) -> dict[int, int]:
    """The latest pid of each worker, from the supervisor's log."""
    found: dict[int, int] = {}
    for index, pid in re.findall(r"worker (\d+) started \(pid (\d+)\)", log):
        found[int(index)] = int(pid)
    return found


def entries(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def access_lines(log: str) -> list[dict]:
    return [e for e in entries(log) if e["logger"] == "analytics.access"]


def ready(log: str, pid: int) -> bool:
    return any(e["pid"] == pid and e["message"].endswith(" ready") for e in entries(log))


@pytest.fixture
async def service(stores, prefix, db, tmp_path):
    # the site exists before the workers start, so each loads it at start-up
    await save_site(db, make_site("caobang", None, ["caobang.gov.vn"]))
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
        ANALYTICS_ADMIN_TOKEN=ADMIN_TOKEN,
        ANALYTICS_WORKERS="2",
        ANALYTICS_TRUSTED_PROXIES="127.0.0.1",
        # one pass at start-up, then only the final one: what the test sends stays pending
        ANALYTICS_ROLLUP_INTERVAL="3600",
        ANALYTICS_SHUTDOWN_TIMEOUT="20",
        ANALYTICS_LOG_FORMAT="json",
        ANALYTICS_ACCESS_LOG="true",
        ANALYTICS_METRICS_DIR=str(tmp_path / "metrics"),
    )
    svc = Service(env, tmp_path / "service.log")
    svc.start()
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.process.kill()
        svc.process.wait()


async def test_two_workers_count_exactly_and_stop_cleanly(service, db, tmp_path):
    assert beacon(service, 10_000) == 204
    assert beacon(service, 10_001) == 204
    warm = 2
    first = send_many(service, 0, 300)
    assert Counter(first) == {204: 300}

    status, body = service.request("GET", "/metrics")
    assert status == 200
    check_metrics(body)
    found = samples(body.decode())
    # summed over both workers' files; the counters count every beacon exactly once
    assert found['analytics_beacons_total{reason="none",result="counted"}'] == 300 + warm
    assert found["analytics_rollup_leader"] == 1  # exactly one of the two workers leads
    assert found['analytics_online_visitors{site="caobang"}'] == 300 + warm
    assert found["analytics_rollup_backlog_entries"] > 0

    # a worker that dies is replaced, and the service keeps counting
    log = service.output()
    pids = worker_pids(log)
    assert sorted(pids) == [1, 2]
    os.kill(pids[2], signal.SIGKILL)
    wait_for(lambda: worker_pids(service.output())[2] != pids[2], "a replacement worker")
    replacement = worker_pids(service.output())[2]
    wait_for(lambda: ready(service.output(), replacement), "the replacement to serve")
    second = send_many(service, 300, 100)
    assert Counter(second) == {204: 100}
    status, body = service.request("GET", "/metrics")
    check_metrics(body)
    counted = samples(body.decode())['analytics_beacons_total{reason="none",result="counted"}']
    assert counted == 400 + warm  # the dead worker's counts are kept, not lost or doubled

    assert service.stop(timeout=30) == 0, service.output()
    log = service.output()
    assert log.count('"message": "final rollup before exit"') >= 2

    total = 400 + warm
    day = await db.fetchrow(
        "SELECT sum(pageviews)::bigint AS pv, sum(visits)::bigint AS visits FROM site_days"
        " WHERE site_id = 'caobang'"
    )
    assert (day["pv"], day["visits"]) == (total, total)
    views = dict(await db.fetch("SELECT article, views FROM articles WHERE site_id = 'caobang'"))
    expected = Counter(ARTICLES[i % 3] for i in [*range(400), 10_000, 10_001])
    assert views == dict(expected)

    # the access log (asked for here) names no client address and no query string
    lines = access_lines(log)
    assert len([e for e in lines if e["route"] == "collect"]) >= total
    assert {e["pid"] for e in lines} <= set(worker_pids(log).values()) | set(pids.values())
    assert "198.18." not in log
    assert "127.0.0.1:" not in "".join(e["message"] for e in lines)


def test_workers_share_the_embedded_stores_started_once(tmp_path):
    env = clean_env(
        ANALYTICS_DATA_DIR=str(tmp_path / "data"),
        ANALYTICS_WORKERS="2",
        ANALYTICS_SHUTDOWN_TIMEOUT="20",
    )
    service = Service(env, tmp_path / "service.log")
    service.start()
    try:
        body = json.dumps({"site": "demo", "url": "http://127.0.0.1/", "article": "x"}).encode()
        statuses = [
            service.request("POST", "/collect", body, **{"User-Agent": BROWSER})[0]
            for _ in range(4)
        ]
        assert statuses == [204] * 4
    finally:
        assert service.stop(timeout=40) == 0, service.output()
    log = service.output()
    assert log.count("embedded redis started") == 1, log
    assert log.count("embedded postgres running") == 1, log
    assert log.count("worker 1 started") == 1
    assert log.count("worker 2 started") == 1
    assert "embedded redis stopped" in log


def test_metrics_dir_is_emptied_at_start(tmp_path, stores, prefix, db):
    stale = tmp_path / "metrics"
    stale.mkdir()
    (stale / "counter_999999.db").write_bytes(b"left by a process long gone")
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
        ANALYTICS_WORKERS="2",
        ANALYTICS_METRICS_DIR=str(stale),
    )
    service = Service(env, tmp_path / "service.log")
    service.start()
    try:
        assert not (stale / "counter_999999.db").exists()
        status, body = service.request("GET", "/metrics")
        assert status == 200
        check_metrics(body)
    finally:
        assert service.stop(timeout=40) == 0, service.output()


def test_a_worker_that_cannot_start_stops_the_supervisor(tmp_path, stores):
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        # nothing listens there: every worker fails at start
        ANALYTICS_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
        ANALYTICS_WORKERS="2",
    )
    service = Service(env, tmp_path / "service.log")
    with pytest.raises(RuntimeError, match="service exited 1"):
        service.start(timeout=120)
    assert "workers keep failing at start" in service.output()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stop_during_start_up_is_clean(tmp_path, stores, prefix, db, workers):
    """SIGTERM while the service is still starting: it finishes starting, then stops as usual
    (final rollup, resources closed) and exits 0 - no process is killed half-started."""
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
        ANALYTICS_WORKERS=workers,
    )
    service = Service(env, tmp_path / "service.log")
    service.launch()
    started = "worker 2 started" if workers == "2" else "serving on"
    wait_for(lambda: started in service.output(), "the start to begin")
    assert service.stop(timeout=40) == 0, service.output()
    log = service.output()
    assert log.count("final rollup before exit") == int(workers), log

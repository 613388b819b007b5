"""Capacity run (not a test): beacons a second one service instance sustains, and counting
scripts a second one Redis Cluster shard sustains, measured on this machine.

    .venv/bin/python -m tests.capacity [--seconds 10] [--rounds 3] [--out FILE.json]

Starts a local Redis Cluster (`tests.cluster`: three primaries, one replica each), a database on
the tests' PostgreSQL (`tests.stores`), and `analytics serve`; then

- per instance: `wrk` POSTs beacons to one instance (one worker process) for `--seconds`, each
  from its own client address, every other one with an article; on the cluster, and for
  comparison on the single Redis the tests use;
- per shard: `redis-benchmark` runs the counting script itself (`lua/record.lua`, as a batch
  of one beacon - the most a beacon can cost, since the beacons of a tick share a run - with a
  new visitor and client address each time, one article), then the widget's read
  (`lua/read_counters.lua`), against the primary that serves the site, and Redis reports each
  script's own CPU time per call (`INFO commandstats`).

Needs `wrk` and `redis-benchmark` (Debian: wrk, redis-tools). Every figure is the min, median
and max of `--rounds` rounds; on a shared 2-core machine they are noisy, and the load generator
takes CPU from what it measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aggregations.counters import ttls
from aggregations.keys import SiteKeys
from aggregations.periods import Calendar
from aggregations.scripts import lua
from tests.cluster import LocalCluster, Node
from tests.conftest import ADMIN_TOKEN, BROWSER
from tests.load import noon_zone
from tests.processes import Service, clean_env
from tests.stores import flush_prefix, test_stores

SITE = "caobang"
WRK_SCRIPT = """
local n = 0
local ua = "%s"
request = function()
  n = n + 1
  local a, b, c = math.floor(n / 65536) %% 256, math.floor(n / 256) %% 256, n %% 256
  local body
  if n %% 2 == 0 then
    body = '{"site":"%s","url":"https://%s.example/","article":"' .. (n %% 500) .. '"}'
  else
    body = '{"site":"%s","url":"https://%s.example/"}'
  end
  return wrk.format("POST", "/collect%s", {["Content-Type"] = "text/plain",
    ["User-Agent"] = ua, ["X-Forwarded-For"] = string.format("10.%%d.%%d.%%d", a, b, c)}, body)
end
"""


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values)),
        "median": round(statistics.median(values)),
        "max": round(max(values)),
    }


def wrk(url: str, seconds: int, connections: int, script: Path) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{errors.group(1)} beacons refused:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert found, out
    return float(found.group(1))


def instance_rate(
    env: dict[str, str], tmp: Path, seconds: int, rounds: int, connections: int, counters: bool
) -> list[float]:
    service = Service(env, tmp / f"service-{time.monotonic_ns()}.log")
    service.start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        body = json.dumps({"domains": [], "timezone": noon_zone()}).encode()
        status, text = service.request("PUT", f"/api/v1/sites/{SITE}", body, **admin)
        assert status in (200, 201), text
        script = tmp / "beacon.lua"
        query = "?counters=1" if counters else ""
        script.write_text(WRK_SCRIPT % (BROWSER, SITE, SITE, SITE, SITE, query))
        wrk(service.url, 2, connections, script)  # warm-up: scripts loaded, site built
        return [wrk(service.url, seconds, connections, script) for _ in range(rounds)]
    finally:
        service.stop()


def record_command(prefix: str) -> list[str]:
    """The counting script's EVALSHA for a batch of one beacon (the least a beacon can share a run
    with), with `__rand_int__` for the visitor."""
    now = time.time()
    p = Calendar().at(now, ZoneInfo("Asia/Ho_Chi_Minh"))
    k = SiteKeys(prefix, SITE)
    keys = [
        k.salt(p.day), k.seen,
        k.day(p.day), k.week(p.week), k.month(p.month), k.year(p.year), k.total,
        k.day_visitors(p.day), k.week_visitors(p.week), k.month_visitors(p.month),
        k.year_visitors(p.year), k.total_visitors, k.pending, k.pending_titles,
        k.articles_day(p.day), k.articles_week(p.week), k.articles_month(p.month),
        k.articles_total, k.marker, k.rate_site,
        k.visit_articles("v__rand_int__"), k.rate_client("c__rand_int__"),
    ]  # fmt: skip
    args = [
        "0" * 32, "1800000", "1800000", p.day.isoformat(), "1", "100000",
        *map(str, ttls(p, now)), "600", "60", "0", "0",
        "v__rand_int__", str(int(now * 1000)), "123", "",
    ]  # fmt: skip
    sha = hashlib.sha1(lua("record").encode()).hexdigest()
    return ["EVALSHA", sha, str(len(keys)), *keys, *args]


def read_command(prefix: str) -> list[str]:
    """The widget's read (`lua/read_counters.lua`) as the counters API sends it."""
    now = time.time()
    p = Calendar().at(now, ZoneInfo("Asia/Ho_Chi_Minh"))
    k = SiteKeys(prefix, SITE)
    keys = [
        k.day(p.day), k.day(p.yesterday), k.week(p.week), k.week(p.last_week),
        k.month(p.month), k.month(p.last_month), k.year(p.year), k.total,
        k.day_visitors(p.day), k.day_visitors(p.yesterday), k.week_visitors(p.week),
        k.week_visitors(p.last_week), k.month_visitors(p.month),
        k.month_visitors(p.last_month), k.year_visitors(p.year), k.total_visitors,
        k.seen, k.marker,
    ]  # fmt: skip
    sha = hashlib.sha1(lua("read_counters").encode()).hexdigest()
    return ["EVALSHA", sha, str(len(keys)), *keys, str(int((now - 300) * 1000))]


def shard_rate(
    node: Node, name: str, command: list[str], requests: int, rounds: int
) -> dict[str, Any]:
    node.call("SCRIPT", "LOAD", lua(name))
    rates, usec = [], []
    for _ in range(rounds):
        node.call("CONFIG", "RESETSTAT")
        out = subprocess.run(
            ["redis-benchmark", "-h", "127.0.0.1", "-p", str(node.port), "-c", "50",
             "-P", "16", "-n", str(requests), "-r", "1000000", "-q", *command],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        found = re.search(r"([\d.]+) requests per second", out)
        assert found, out
        rates.append(float(found.group(1)))
        stats = node.info("commandstats")["cmdstat_evalsha"]
        assert isinstance(stats, dict), stats
        assert int(stats.get("failed_calls", 0)) == 0, stats
        usec.append(float(stats["usec_per_call"]))
    return {"scripts_per_second": spread(rates), "redis_cpu_usec_per_script": spread(usec)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=200_000, help="per shard round")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    for tool in ("wrk", "redis-benchmark"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed (Debian: apt-get install wrk redis-tools)")
    tmp = Path(tempfile.mkdtemp(prefix="analytics-capacity-"))
    results: dict[str, Any] = {"seconds": opts.seconds, "connections": opts.connections}
    with test_stores() as stores:
        cluster = LocalCluster(tmp / "cluster").start()
        try:
            prefix = f"t{stores.run_id}cap"

            def env(url: str) -> dict[str, str]:
                return clean_env(
                    ANALYTICS_REDIS_URL=url, ANALYTICS_DATABASE_URL=stores.database_url,
                    ANALYTICS_REDIS_PREFIX=prefix, ANALYTICS_ADMIN_TOKEN=ADMIN_TOKEN,
                    ANALYTICS_TRUSTED_PROXIES="127.0.0.1", ANALYTICS_LOG_LEVEL="WARNING",
                )  # fmt: skip

            for name, url in (("cluster", cluster.url), ("single", stores.redis_url)):
                for counters in (False, True):
                    label = f"instance_{name}" + ("_with_counters" if counters else "")
                    rates = instance_rate(
                        env(url), tmp, opts.seconds, opts.rounds, opts.connections, counters
                    )
                    results[label] = spread(rates)
                    print(label, results[label], flush=True)
                flush_prefix(url, prefix)
            node = cluster.primary_for(SiteKeys(prefix, SITE).total)
            for name, command in (
                ("record", record_command(prefix)),  # first: the read then has data to read
                ("read_counters", read_command(prefix)),
            ):
                label = f"shard_{name}"
                results[label] = shard_rate(node, name, command, opts.requests, opts.rounds)
                print(label, results[label], flush=True)
        finally:
            cluster.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

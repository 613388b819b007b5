"""`python -m bench`: the service against a bare aiohttp app, same machine, loop and load.

One run starts both servers (and its own PostgreSQL database and Redis key prefix), warms them,
then alternates wrk rounds between them for each scenario, and prints for each: acknowledged
requests a second, p50/p99 latency, errors, and the ratio service / bare per round with its
min/median/max. Then: the exact page-view count check, Redis memory, optionally a profile of
the service under beacon load, and the rollup benchmark (`bench.rollup`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import redis

from aggregations.keys import SiteKeys
from analytics import loops
from bench import memory, profile
from bench.exact import send_exactly
from bench.load import Result, find_wrk, run_wrk
from bench.servers import DOMAIN, SITE, Server, bare, metric, service
from bench.stores import REDIS_URL, Stores, bench_stores

ARTICLE_IDS = ",".join(str(i) for i in range(1, 21))


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    script: str
    path: str
    target: float


SCENARIOS = (
    Scenario("collect", "POST /collect (beacons)", "beacons.lua", "", 0.7),
    Scenario("counters", f"GET /api/v1/sites/{SITE}/counters", "reads.lua", "", 0.8),
    Scenario("articles", f"GET /api/v1/sites/{SITE}/articles?ids=1..20", "reads.lua", "", 0.8),
)


def path_of(scenario: Scenario) -> str:
    if scenario.name == "counters":
        return f"/api/v1/sites/{SITE}/counters"
    if scenario.name == "articles":
        return f"/api/v1/sites/{SITE}/articles?ids={ARTICLE_IDS}"
    return ""


@dataclass
class Check:
    """Page views counted in Redis against beacons acknowledged, for one wrk round."""

    acked: int
    in_flight: int
    counted: int
    service_counted: int

    @property
    def ok(self) -> bool:
        return (
            self.acked <= self.counted <= self.acked + self.in_flight
            and self.counted == self.service_counted
        )


@dataclass
class Rounds:
    bare: list[Result] = field(default_factory=list)
    service: list[Result] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


def loop_kind(wanted: str) -> str:
    """The event loop `analytics serve` will run on, so that the bare app runs on the same."""
    return loops.loop_kind(wanted)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "-"
    parts = (min(values), statistics.median(values), max(values))
    return " / ".join(fmt.format(v) for v in parts)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def preemptions(pids: tuple[int, ...]) -> int:
    """How often the processes were taken off a core they still wanted (involuntary context
    switches) so far: on a machine whose cores are all busy, the time a server waits for one."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def page_views(client: redis.Redis, keys: SiteKeys) -> int:
    return int(client.hget(keys.total, "pv") or 0)


def counted_metric(server: Server) -> int:
    return int(metric(server.url, "analytics_beacons_total", 'result="counted",reason="none"'))


class Bench:
    def __init__(self, args: argparse.Namespace, stores: Stores) -> None:
        self.args = args
        self.stores = stores
        self.keys = SiteKeys(stores.prefix, SITE)
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.seed = 0

    def wrk(self, server: Server, scenario: Scenario, seconds: float) -> Result:
        self.seed += 1
        extra = [SITE, DOMAIN, str(self.seed)] if scenario.name == "collect" else []
        return run_wrk(
            server.url + path_of(scenario),
            scenario.script,
            extra,
            threads=self.args.threads,
            connections=self.args.connections,
            seconds=seconds,
        )

    def measure(self, server: Server, scenario: Scenario) -> Result:
        """One round: wrk's result, with the server's and Redis's CPU and the server's
        preemptions over it."""
        cpu0, redis0 = cpu_seconds(server.pids), redis_cpu(self.redis)
        preempted0 = preemptions(server.pids)
        result = self.wrk(server, scenario, self.args.duration)
        return replace(
            result,
            server_cpu=cpu_seconds(server.pids) - cpu0,
            redis_cpu=redis_cpu(self.redis) - redis0,
            preempted=preemptions(server.pids) - preempted0,
        )

    def measured(self, server: Server, scenario: Scenario, rounds: Rounds) -> Result:
        """A round, and for the service's beacons the count check after it."""
        counting = server.name == "service" and scenario.name == "collect"
        if counting:
            pv0, svc0 = page_views(self.redis, self.keys), counted_metric(server)
        result = self.measure(server, scenario)
        if counting:
            time.sleep(0.3)  # let requests written just before wrk's deadline finish
            check = Check(
                acked=result.acked,
                in_flight=max(0, result.sent - result.requests),
                counted=page_views(self.redis, self.keys) - pv0,
                service_counted=counted_metric(server) - svc0,
            )
            rounds.checks.append(check)
        return result

    def run(self, bare_server: Server, service_server: Server) -> dict[str, Rounds]:
        results = {s.name: Rounds() for s in SCENARIOS}
        scenarios = [s for s in SCENARIOS if s.name in self.args.only]
        print(f"warming up ({self.args.warmup:.0f} s per server and scenario)...", flush=True)
        for scenario in scenarios:
            for server in (bare_server, service_server):
                self.wrk(server, scenario, self.args.warmup)
        for i in range(self.args.rounds):
            for scenario in scenarios:
                order = (bare_server, service_server)
                if i % 2:
                    order = order[::-1]  # alternate who goes first: neither gets the quiet slot
                for server in order:
                    result = self.measured(server, scenario, results[scenario.name])
                    getattr(results[scenario.name], server.name).append(result)
                    us = result.per_request_us
                    print(
                        f"  round {i + 1} {scenario.name:<8} {server.name:<7}"
                        f" {result.rate:>9.0f}/s  p50 {result.p50_ms:5.2f} ms"
                        f"  p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                        f"  CPU/request: server {us(result.server_cpu):.0f} us,"
                        f" Redis* {us(result.redis_cpu):.0f} us,"
                        f" wrk {us(result.client_cpu):.0f} us; server preempted"
                        f" {result.preempted_per_request:.3f} a request"
                        f"  (load {load_average()})",
                        flush=True,
                    )
        return results


def median_us(runs: list[Result], cpu: Callable[[Result], float]) -> float:
    """The median over the rounds of a CPU time a request, in microseconds."""
    return statistics.median(r.per_request_us(cpu(r)) for r in runs)


def cpu_rate(server: tuple[float, int], others: list[tuple[float, int]], cores: int) -> float:
    """Requests a second that CPU allows: each process is (microseconds a request, threads it
    can keep busy) and runs on at most that many cores; together they share `cores`."""
    processes = [server, *others]
    rate = cores * 1e6 / max(1e-9, sum(us for us, _ in processes))
    for us, threads in processes:
        if us > 0:
            rate = min(rate, threads * 1e6 / us)
    return rate


def cpu_budget(rounds: Rounds, cores: int, args: argparse.Namespace) -> list[str]:
    """The rounds' CPU a request (medians), and what it leaves the service on this machine: the
    rate a service whose own process cost no more CPU a request than the bare app would reach
    beside the Redis and wrk CPU a request that the service's rounds measured (both taken as
    fixed, though they move with the rate and the batches). A model: it leaves out what sharing
    the cores itself costs; the rates it gives both servers from their own CPU are printed next
    to their measured rates, to show how far to trust it."""
    bare_us = median_us(rounds.bare, lambda r: r.server_cpu)
    bare_wrk = median_us(rounds.bare, lambda r: r.client_cpu)
    svc_us = median_us(rounds.service, lambda r: r.server_cpu)
    redis_us = median_us(rounds.service, lambda r: r.redis_cpu)
    svc_wrk = median_us(rounds.service, lambda r: r.client_cpu)
    wrk = args.threads
    others = [(redis_us, 1), (svc_wrk, wrk)]
    bare_model = cpu_rate((bare_us, 1), [(bare_wrk, wrk)], cores)
    svc_model = cpu_rate((svc_us, args.workers), others, cores)
    ceiling = cpu_rate((bare_us, args.workers), others, cores)
    bare_rate = statistics.median(r.rate for r in rounds.bare)
    svc_rate = statistics.median(r.rate for r in rounds.service)
    processes = f"{args.workers} process{'es' if args.workers > 1 else ''}"
    bare_out = statistics.median(r.preempted_per_request for r in rounds.bare)
    svc_out = statistics.median(r.preempted_per_request for r in rounds.service)
    return [
        f"  CPU a request (medians): bare app {bare_us:.0f} us + wrk {bare_wrk:.0f} us;"
        f" service {svc_us:.0f} us + Redis {redis_us:.0f} us + wrk {svc_wrk:.0f} us;"
        f" preempted a request: bare app {bare_out:.3f}, service {svc_out:.3f}",
        f"  CPU model on {cores} cores: bare app {bare_model:.0f}/s (measured {bare_rate:.0f}/s),"
        f" service {svc_model:.0f}/s (measured {svc_rate:.0f}/s); a service as cheap a request"
        f" as the bare app ({processes}) beside this Redis and wrk: {ceiling:.0f}/s,"
        f" ratio about {ceiling / bare_model:.2f}",
    ]


def print_results(results: dict[str, Rounds], args: argparse.Namespace) -> bool:
    ok = True
    for scenario in SCENARIOS:
        rounds = results[scenario.name]
        if not rounds.service:
            continue
        print(f"\n{scenario.title}")
        print(
            "             acked/s (min / median / max)     p50 ms (median)  p99 ms (median)  errors"
        )
        for name in ("bare", "service"):
            runs: list[Result] = getattr(rounds, name)
            print(
                f"  {name:<9}  {spread([r.rate for r in runs]):<32}"
                f" {statistics.median(r.p50_ms for r in runs):>10.2f}"
                f" {statistics.median(r.p99_ms for r in runs):>16.2f}"
                f" {sum(r.errors for r in runs):>8}"
            )
        ratios = [s.rate / b.rate for s, b in zip(rounds.service, rounds.bare, strict=True)]
        met = statistics.median(ratios) >= scenario.target
        print(
            f"  ratio service / bare per round: {' '.join(f'{r:.2f}' for r in ratios)}"
            f"  -> min / median / max {spread(ratios, '{:.2f}')}"
            f"  (target >= {scenario.target}: {'met' if met else 'NOT met'})"
        )
        print("\n".join(cpu_budget(rounds, len(os.sched_getaffinity(0)), args)))
        if scenario.name == "collect":
            p99 = statistics.median(r.p99_ms for r in rounds.service)
            print(
                f"  service p99 {p99:.2f} ms (target <= 10 ms: {'met' if p99 <= 10 else 'NOT met'})"
            )
            for i, c in enumerate(rounds.checks, 1):
                print(
                    f"  count check round {i}: acknowledged {c.acked}, counted in Redis {c.counted}"
                    f" (service says {c.service_counted}), in flight at wrk's cut-off"
                    f" {c.in_flight}: {'OK' if c.ok else 'MISMATCH'}"
                )
                ok = ok and c.ok
    return ok


def header(args: argparse.Namespace, kind: str) -> None:
    print(f"machine: {os.cpu_count()} cores, {cpu_model()}; Python {platform.python_version()}")
    print(f"aiohttp {aiohttp.__version__}; event loop in both servers: {kind}")
    print(f"load average before the run: {load_average()}")
    print(
        f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s per round,"
        f" {args.rounds} rounds alternating bare/service; beacons from 131072 client addresses"
        " (X-Forwarded-For, ANALYTICS_TRUSTED_PROXIES=127.0.0.1) x 8 user agents, 5000 articles;"
        " rate limits at their defaults (600/min, burst 60 per client address)"
    )
    if args.workers > 1:
        print(f"service: ANALYTICS_WORKERS={args.workers}")
    for value in args.service_env:
        print(f"service: {value}")


def exact_check(server: Server, b: Bench, count: int) -> bool:
    time.sleep(0.5)  # requests written just before the last wrk deadline are still counting
    pv0 = page_views(b.redis, b.keys)
    acked = asyncio.run(send_exactly(server.url, count))
    counted = page_views(b.redis, b.keys) - pv0
    ok = acked == counted
    print(
        f"\nexact count: {count} beacons sent and every answer awaited: {acked} acknowledged,"
        f" page views in Redis +{counted}: {'MATCH' if ok else 'MISMATCH'}"
    )
    return ok


def profile_round(server: Server, b: Bench, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        out = Path(tmp) / "profile.txt"
        spy = profile.start(server.pids[0], seconds - 1, out)
        if spy is None:
            return
        b.wrk(server, SCENARIOS[0], seconds)
        spy.wait()
        print(
            f"\nprofile of the service under beacons (py-spy, {seconds:.0f} s, unmeasured round):"
        )
        if out.exists():
            print("\n".join(profile.summary(out)))
        else:
            err = spy.stderr.read().decode(errors="replace") if spy.stderr else ""
            print(f"  py-spy gave no profile: {err.strip()[-500:]}")


def load_arguments(p: argparse.ArgumentParser, duration: float) -> None:
    """The options of the load and of the servers under it (`bench` and `bench.versions`)."""
    p.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per wrk round ({duration:g})"
    )
    p.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per server (3)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    p.add_argument(
        "--loop", choices=loops.CHOICES, default="auto", help="event loop of every server (auto)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per scenario (3)")
    load_arguments(p, duration=20)
    p.add_argument("--workers", type=int, default=1, help="ANALYTICS_WORKERS for the service (1)")
    p.add_argument(
        "--only",
        default="collect,counters,articles",
        type=lambda v: v.split(","),
        help="scenarios to run (collect,counters,articles)",
    )
    p.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the service, e.g. ANALYTICS_ARTICLE_DEDUP=none (repeatable)",
    )
    p.add_argument("--profile", action="store_true", help="profile the service under beacons")
    p.add_argument("--exact", type=int, default=5000, help="beacons in the exact count (5000)")
    p.add_argument("--rollup-rows", type=int, default=1_000_000, help="rollup bench size; 0: skip")
    return p.parse_args(argv)


def service_or_explain(env: dict[str, str], args: argparse.Namespace) -> Any:
    """`servers.service`, explaining a service that will not start (say, a setting it lacks)."""

    @contextmanager
    def start(stores: Stores) -> Iterator[Server]:
        try:
            cm = service(stores, env)
            svc = cm.__enter__()
        except RuntimeError as err:
            print(f"\nbench: the service did not start with {env}: {err}")
            raise SystemExit(2) from err
        try:
            yield svc
        finally:
            cm.__exit__(None, None, None)

    return start


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    find_wrk()
    kind = loop_kind(args.loop)
    header(args, kind)
    env = {"ANALYTICS_EVENT_LOOP": kind, **dict(v.split("=", 1) for v in args.service_env)}
    if args.workers > 1:
        env["ANALYTICS_WORKERS"] = str(args.workers)
    print(
        "(* Redis CPU is Redis's whole CPU time over the round divided by the requests: other"
        " clients of the same Redis add to it)"
    )
    try:
        servers = (bench_stores(), bare(kind), service_or_explain(env, args))
    except SystemExit:
        raise
    with servers[0] as stores, servers[1] as bare_server, servers[2](stores) as svc:
        b = Bench(args, stores)
        results = b.run(bare_server, svc)
        ok = print_results(results, args)
        if args.profile:
            profile_round(svc, b, args.duration)
        if args.exact and "collect" in args.only:
            ok = exact_check(svc, b, args.exact) and ok
        print("\nRedis memory after the run:")
        print("\n".join(memory.report(stores.redis_url, stores.prefix, SITE)))
    if args.rollup_rows:
        from bench.rollup import main as rollup_main

        print()
        rollup_main(["--rows", str(args.rollup_rows)])
    print(f"\nload average after the run: {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

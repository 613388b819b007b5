"""`python -m bench.instructions`: CPU instructions a serving process spends per request, counted
by valgrind's callgrind - the same figure run after run, however busy the machine is.

wrk rounds on a shared two-core machine move by a third from one minute to the next; an
instruction count moves by well under 1 %, so it tells whether a change to the request path pays.
It starts the service (or, with `--bare`, the bench's bare app) under callgrind with the
instrumentation off, warms it with 300 requests, counts the instructions of the next N requests
(16 at a time, from this process), and prints them per request. User-space instructions only: the
kernel's share of a socket write is not in them, nor is Redis's work.

Reads are answered from the one-second read cache; under valgrind a request is some 50 times
slower, so the cache runs out more often per request than at full speed and each refill costs a
Redis round trip. The run prints how many reads went to Redis, to tell such runs apart.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import redis

from bench.__main__ import SCENARIOS, path_of
from bench.exact import UA
from bench.servers import DOMAIN, SITE, add_site, free_port, service_env, stop, wait_ready
from bench.stores import REDIS_URL, bench_stores

# the read paths the wrk rounds of `python -m bench` use
PATHS = {s.name: path_of(s) for s in SCENARIOS if s.name != "collect"}


async def drive(url: str, scenario: str, count: int, seed: int, concurrency: int = 16) -> int:
    """`count` requests of the scenario, `concurrency` at a time; how many were answered 2xx."""
    rng = random.Random(seed)
    todo = iter(range(count))
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for _ in todo:
            if scenario == "collect":
                article = str(int(5000 ** rng.random()))
                body = (
                    f'{{"site":"{SITE}","url":"https://{DOMAIN}/tin-tuc/{article}",'
                    f'"article":"{article}","title":"Thông báo {article}"}}'
                )
                headers = {
                    "User-Agent": UA,
                    "X-Forwarded-For": f"198.18.{rng.randrange(256)}.{rng.randrange(256)}",
                    "Origin": f"https://{DOMAIN}",
                    "Content-Type": "text/plain",
                }
                request = session.post(url + "/collect", data=body.encode(), headers=headers)
            else:
                request = session.get(url + PATHS[scenario])
            async with request as resp:
                await resp.read()
                ok += resp.status < 300

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok


def total_instructions(path: str) -> int:
    out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    found = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", out)
    if not found:
        raise RuntimeError(f"callgrind_annotate read no total from {path}")
    return int(found.group(1).replace(",", ""))


def redis_calls() -> int:
    stats = redis.Redis.from_url(REDIS_URL).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def measure(scenario: str, requests: int, bare: bool, workdir: Path) -> None:
    out = workdir / "callgrind.out"
    with bench_stores() as stores:
        port = free_port()
        env = service_env(stores, port, {"ANALYTICS_EVENT_LOOP": "asyncio"})
        if bare:
            target = [sys.executable, "-m", "bench.bare", str(port), "asyncio"]
        else:
            add_site(env)
            target = [sys.executable, "-m", "analytics", "serve"]
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
        cmd += [f"--callgrind-out-file={out}", *target]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, timeout=300)
            asyncio.run(drive(url, scenario, 300, seed=1))
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True)
            calls = redis_calls()
            ok = asyncio.run(drive(url, scenario, requests, seed=2))
            calls = redis_calls() - calls
            subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        finally:
            stop(proc)
    dumps = [p for p in glob.glob(f"{out}.*") if p.rsplit(".", 1)[-1].isdigit()]
    if not dumps:
        raise RuntimeError("callgrind wrote no dump of the measured requests")
    counted = total_instructions(max(dumps, key=os.path.getmtime))
    server = "bare app" if bare else "service"
    print(
        f"{scenario} on the {server}: {counted / requests:,.0f} instructions a request"
        f" ({requests} requests, {ok} answered 2xx; Redis commands meanwhile: {calls})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("scenario", choices=("collect", "counters", "articles"))
    p.add_argument("--requests", type=int, default=2000, help="requests counted (2000)")
    p.add_argument("--bare", action="store_true", help="count the bare app instead")
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench.instructions needs {tool} (Debian package valgrind)")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as tmp:
        measure(args.scenario, args.requests, args.bare, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

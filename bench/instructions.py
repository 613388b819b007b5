"""`python -m bench.instructions`: CPU instructions a serving process spends per request, counted
by valgrind's callgrind - the same figure run after run, however busy the machine is.

wrk rounds on a shared two-core machine move by a third from one minute to the next; an instruction
count moves by well under 1 %, so it tells whether a change to the request path pays. It starts the
service (or, with `--bare`, the bench's bare app) under callgrind with the instrumentation off,
warms it with 6 000 requests (`--warmup`), counts the instructions of the next N requests (16 at a
time, from this process), and prints them per request. User-space instructions only: the kernel's
share of a socket write is not in them, nor is Redis's work. The warm-up fills the caches keyed by
page (urls, bodies) about as a wrk round of the bench does (the article draw is skewed: some rare
pages stay unseen); client addresses, of which there are 65 536, stay mostly unseen, as they do
there (a warm-up of 300 left pages unseen too: beacons cost 401 300 instructions instead
of 378 900).

`record` counts Redis's instructions instead: the counting script (`lua/record.lua`) run by the
service's own `Recorder` on a private redis-server under callgrind, in fixed batches of 15 hits
(what a run holds under the bench's load), per hit. Batches of a fixed size make it the same
figure run after run, which Redis CPU read off `INFO` during a wrk round is not.

Reads are answered from the one-second read cache; under valgrind a request is some 50 times
slower, so the cache runs out more often per request than at full speed and each refill costs a
Redis round trip. The run prints how many reads went to Redis, to tell such runs apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis
import redis.asyncio as aredis

from aggregations.counters import CountingPolicy, Hit, Recorder
from aggregations.pipeline import GroupCommit
from aggregations.scripts import Scripts
from aggregations.sites import Site
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


def callgrind_control(pid: int, *args: str) -> None:
    """Switch counting on or off (`-i on|off`) or dump (`-d`), synchronously: no request or
    script run slips past the switch."""
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True)


def total_instructions(path: str) -> int:
    out = subprocess.run(["callgrind_annotate", path], capture_output=True, text=True).stdout
    found = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", out)
    if not found:
        raise RuntimeError(f"callgrind_annotate read no total from {path}")
    return int(found.group(1).replace(",", ""))


def redis_calls() -> int:
    stats = redis.Redis.from_url(REDIS_URL).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def measure(scenario: str, requests: int, warmup: int, bare: bool, workdir: Path) -> None:
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
            asyncio.run(drive(url, scenario, warmup, seed=1))
            callgrind_control(proc.pid, "-i", "on")
            calls = redis_calls()
            ok = asyncio.run(drive(url, scenario, requests, seed=2))
            calls = redis_calls() - calls
            callgrind_control(proc.pid, "-i", "off")
            callgrind_control(proc.pid, "-d")
        finally:
            stop(proc)
    counted = last_dump(out)
    server = "bare app" if bare else "service"
    print(
        f"{scenario} on the {server}: {counted / requests:,.0f} instructions a request"
        f" ({requests} requests, {ok} answered 2xx; Redis commands meanwhile: {calls})"
    )


async def record_batches(url: str, pid: int, batch: int, warm: int, counted: int) -> None:
    """`warm` then `counted` batches of `batch` hits through a `Recorder` (one script run each:
    the hits of a batch are recorded in one tick), callgrind counting only the latter."""
    client = aredis.Redis.from_url(url)
    scripts = Scripts(client)
    pipe = GroupCommit(url)
    recorder = Recorder(client, scripts, "instructions", CountingPolicy(), pipe=pipe)
    site = Site(SITE, domains=(DOMAIN,))
    rng = random.Random(7)
    ts = 1_795_000_000.0  # a fixed clock: the same days, the same keys, run after run

    def hit() -> Hit:
        nonlocal ts
        ts += 0.004
        visitor = rng.randrange(20_000)  # some come back within the visit, as on a portal
        article = str(int(5000 ** rng.random()))
        return Hit(
            site=site,
            identity=b"visitor %d" % visitor,
            network=b"198.18.%d.%d" % (visitor >> 8 & 255, visitor & 255),
            ts=ts,
            article=article,
            title=f"Thông báo {article}",
        )

    try:
        await client.script_load(scripts.record.script)
        for i in range(warm + counted):
            if i == warm:
                callgrind_control(pid, "-i", "on")
            await asyncio.gather(*(recorder.record(hit()) for _ in range(batch)))
        callgrind_control(pid, "-i", "off")
        callgrind_control(pid, "-d")
    finally:
        await pipe.aclose()
        await client.aclose()


def measure_script(batches: int, workdir: Path, batch: int = 15) -> None:
    out = workdir / "callgrind.out"
    port = free_port()
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    cmd += ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 60
        with redis.Redis.from_url(url) as client:
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("redis-server under valgrind did not start") from None
                    time.sleep(0.2)
        asyncio.run(record_batches(url, proc.pid, batch, warm=200, counted=batches))
    finally:
        stop(proc)
    hits = batch * batches
    print(
        f"counting script in Redis: {last_dump(out) / hits:,.0f} instructions a hit"
        f" ({batches} runs of {batch} hits)"
    )


def last_dump(out: Path) -> int:
    """The instructions of callgrind's last dump (the counted part) of the run writing `out`."""
    dumps = [p for p in glob.glob(f"{out}.*") if p.rsplit(".", 1)[-1].isdigit()]
    if not dumps:
        raise RuntimeError("callgrind wrote no dump of the measured part")
    return total_instructions(max(dumps, key=os.path.getmtime))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    p.add_argument("scenario", choices=("collect", "counters", "articles", "record"))
    p.add_argument("--requests", type=int, default=2000, help="requests counted (2000)")
    p.add_argument("--warmup", type=int, default=6000, help="requests before counting (6000)")
    p.add_argument("--runs", type=int, default=300, help="record: script runs counted (300)")
    p.add_argument("--bare", action="store_true", help="count the bare app instead")
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep callgrind's output in DIR (for callgrind_annotate)",
    )
    args = p.parse_args(argv)
    tools = ["valgrind", "callgrind_control", "callgrind_annotate"]
    for tool in tools + (["redis-server"] if args.scenario == "record" else []):
        if shutil.which(tool) is None:
            package = "redis-server" if tool == "redis-server" else "valgrind"
            raise SystemExit(f"bench.instructions needs {tool} (Debian package {package})")
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep.resolve()
            for old in workdir.glob("callgrind.out*"):  # an earlier run's dump is not this one's
                old.unlink()
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cg-")))
        if args.scenario == "record":
            measure_script(args.runs, workdir)
        else:
            measure(args.scenario, args.requests, args.warmup, args.bare, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench.versions`: versions of the service side by side, under the same load.

    python -m bench.versions HEAD~1 HEAD       # two commits
    python -m bench.versions HEAD .            # HEAD against this checkout as it is now

Each version (a git revision, or `.` for this checkout with its uncommitted changes) is checked
out into a temporary git worktree and served from it, with a database and Redis key prefix of
its own; the bare app (`bench.bare`) runs too. wrk rounds then go round all of them in turn,
each round starting one further along, and each round prints, for each server, acknowledged
requests a second, p99, Redis's CPU a request, how often the server was preempted a request,
and its ratio to the same round's bare app; at the end, each version's min / median / max of
those ratios and of its ratio to the first version in the same round.

Why not two runs of `python -m bench`, one a version: this machine's speed moves by a third
between minutes, more than most changes move a ratio; rounds taken in turn share the same
minutes.

A version runs with its worktree as its working directory. `python -m` puts the working
directory first on the import path, ahead of PYTHONPATH: a version started from this checkout's
directory imports this checkout's code, whatever PYTHONPATH says (measured: two "versions" so
started gave the same Redis CPU a beacon; from their own worktrees, 31.8 and 26.0 µs). The
installed dependencies are this environment's for every version.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.__main__ import SCENARIOS, Bench, load_arguments, loop_kind, median_us, spread
from bench.load import Result, find_wrk
from bench.servers import Server, bare, service
from bench.stores import bench_stores

WORKING_TREE = "."


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench.versions: git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def code_env(checkout: Path) -> dict[str, str]:
    """Environment under which Python imports the service's packages from `checkout`; the
    process must also run with `checkout` as its working directory (see the module's text)."""
    return {"PYTHONPATH": str(checkout)}


@contextmanager
def checkouts(revisions: list[str], repo: Path) -> Iterator[list[tuple[str, Path]]]:
    """(label, directory) of each revision: a temporary worktree, removed afterwards; `.` is
    `repo` itself, uncommitted changes included."""
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as tmp:
        made: list[Path] = []
        found: list[tuple[str, Path]] = []
        try:
            for i, rev in enumerate(revisions):
                if rev == WORKING_TREE:
                    found.append((". (working tree)", repo))
                    continue
                path = Path(tmp) / f"v{i}"
                git(repo, "worktree", "add", "--detach", "--quiet", str(path), rev)
                made.append(path)
                sha = git(repo, "rev-parse", "--short", rev)
                found.append((rev if sha.startswith(rev) else f"{rev} ({sha})", path))
            yield found
        finally:
            for path in made:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(path)],
                    cwd=repo,
                    capture_output=True,
                    check=False,
                )


@dataclass
class ServerRounds:
    """One server's rounds, in order."""

    label: str
    server: Server
    results: list[Result] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [r.rate for r in self.results]

    def last(self, bare_rate: float | None) -> str:
        """The last round, with its ratio to the bare app's same round (unless it is it)."""
        r = self.results[-1]
        ratio = f" ({r.rate / bare_rate:.2f})" if bare_rate is not None else ""
        return (
            f"{self.label} {r.rate:.0f}/s{ratio} p99 {r.p99_ms:.1f} ms"
            f" Redis {r.per_request_us(r.redis_cpu):.0f} µs"
            f" preempted {r.preempted_per_request:.3f} errors {r.errors}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.versions", description=__doc__.split("\n")[0])
    p.add_argument("revisions", nargs="+", help="git revisions, or . for this checkout as it is")
    p.add_argument("--scenario", choices=[s.name for s in SCENARIOS], default="collect")
    p.add_argument("--rounds", type=int, default=8, help="rounds over all servers (8)")
    load_arguments(p, duration=10)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    find_wrk()
    kind = loop_kind(args.loop)
    scenario = next(s for s in SCENARIOS if s.name == args.scenario)
    repo = Path(git(Path.cwd(), "rev-parse", "--show-toplevel"))
    print(
        f"{scenario.name}: wrk -t{args.threads} -c{args.connections} -d{args.duration:.0f}s,"
        f" {args.rounds} rounds over the bare app and {len(args.revisions)} versions;"
        f" event loop {kind}",
        flush=True,
    )
    with ExitStack() as stack:
        versions = stack.enter_context(checkouts(args.revisions, repo))
        everyone = [ServerRounds("bare", stack.enter_context(bare(kind)))]
        bench: Bench | None = None
        for i, (label, path) in enumerate(versions):
            stores = stack.enter_context(bench_stores(f"v{i}"))
            env = {"ANALYTICS_EVENT_LOOP": kind, **code_env(path)}
            server = stack.enter_context(service(stores, env, cwd=path))
            everyone.append(ServerRounds(label, server))
            bench = bench or Bench(args, stores)
            print(f"  {label}: {path}", flush=True)
        assert bench is not None  # argparse asks for one revision at least
        for r in everyone:
            bench.wrk(r.server, scenario, args.warmup)
        for i in range(args.rounds):
            turn = i % len(everyone)
            for r in everyone[turn:] + everyone[:turn]:
                r.results.append(bench.measure(r.server, scenario))
            bare_rate = everyone[0].rates()[-1]
            line = "  ".join(r.last(bare_rate if r is not everyone[0] else None) for r in everyone)
            print(f"round {i + 1}: {line}", flush=True)
    bare_rates = everyone[0].rates()
    first = everyone[1].rates()
    print("\nratio to the bare app, and to the first version, per round: min / median / max")
    for r in everyone[1:]:
        to_bare = [a / b for a, b in zip(r.rates(), bare_rates, strict=True)]
        to_first = [a / b for a, b in zip(r.rates(), first, strict=True)]
        print(
            f"  {r.label}: {spread(to_bare, '{:.2f}')};  {spread(to_first, '{:.2f}')};"
            f" medians: p99 {statistics.median(x.p99_ms for x in r.results):.1f} ms,"
            f" Redis {median_us(r.results, lambda x: x.redis_cpu):.1f} µs a request,"
            f" preempted {statistics.median(x.preempted_per_request for x in r.results):.3f}"
            " a request"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

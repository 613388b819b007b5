"""Driving load with wrk (Debian's `wrk`, installed by the bench when missing and it can) and
reading its results: acknowledged requests a second, latency percentiles, errors."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One wrk run. `acked` excludes every 4xx/5xx and socket error: they earn nothing."""

    requests: int  # answered
    sent: int  # written (beacon script only; 0 otherwise)
    seconds: float
    status_errors: int  # answers >= 400
    socket_errors: int  # connect, read, write, timeout
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu: float = 0.0  # CPU seconds wrk itself used (user + system)
    server_cpu: float = 0.0  # of the server's processes, filled in by the bench
    redis_cpu: float = 0.0  # of Redis, all its clients, filled in by the bench
    # times the server's processes were preempted (involuntary context switches), by the bench
    preempted: int = 0

    def per_request_us(self, cpu_seconds: float) -> float:
        return 1e6 * cpu_seconds / max(1, self.requests)

    @property
    def preempted_per_request(self) -> float:
        return self.preempted / max(1, self.requests)

    @property
    def acked(self) -> int:
        return self.requests - self.status_errors

    @property
    def rate(self) -> float:
        return self.acked / self.seconds

    @property
    def errors(self) -> int:
        return self.status_errors + self.socket_errors


def find_wrk() -> str:
    """wrk's path; installs Debian's package when missing and this process may."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing the load generator (Debian package wrk)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"]
        if subprocess.run(cmd, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            subprocess.run(cmd, env=env, capture_output=True, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("bench: wrk is needed: apt-get install wrk (as root)")


def script(name: str, workdir: Path) -> Path:
    """A wrk script with the shared reporting part appended (wrk loads one file)."""
    here = resources.files("bench.wrk")
    text = here.joinpath(name).read_text() + "\n" + here.joinpath("report.lua").read_text()
    path = workdir / name
    path.write_text(text)
    return path


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(
    url: str,
    script_name: str,
    args: list[str],
    *,
    threads: int,
    connections: int,
    seconds: float,
) -> Result:
    wrk = find_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        cmd = [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(script(script_name, Path(tmp))),
            url,
            "--",
            *args,
        ]
        cpu0 = children_cpu()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        client_cpu = children_cpu() - cpu0
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            data = json.loads(line.removeprefix("WRKJSON "))
            return Result(
                requests=data["requests"],
                sent=data["sent"],
                seconds=data["duration_us"] / 1e6,
                status_errors=data["status"],
                socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
                client_cpu=client_cpu,
            )
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")

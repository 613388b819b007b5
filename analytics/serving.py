"""Serving HTTP: in this one process (`ANALYTICS_WORKERS=1`), or as a supervisor of N workers.

The supervisor serves nothing itself. It resolves the stores once - starting the embedded Redis
and PostgreSQL when no URLs are set, so they start once and not per worker - binds the listening
socket once, empties the metrics directory, and runs N worker processes that share the socket
(the kernel hands each connection to one of them). A worker that dies is replaced; workers that
keep dying at start stop the lot. On SIGTERM or SIGINT the supervisor passes SIGTERM to every
worker - each stops accepting, finishes the requests in flight, runs a final rollup and exits -
waits for them up to the shutdown timeout, and exits 0 when they all did.

A worker is a fresh interpreter (`python -m analytics.serving`) running the very app a single
process runs; its environment tells it the socket, the stores and the metrics directory
(prometheus-client's multiprocess mode sums every worker's values at a scrape). The timed rollup
runs in whichever process holds the leader lock (`analytics.leader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from aiohttp import web

from analytics.settings import Settings, SettingsError

log = logging.getLogger("analytics")

WORKER_ENV = "ANALYTICS_WORKER"  # set by the supervisor in each worker's environment only
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LISTEN_BACKLOG = 1024
QUICK_EXIT = 10.0  # a worker that exits sooner than this after its start failed to start
START_FAILURES = 3  # that many in a row, and the supervisor gives up
POLL = 0.1
ORPHAN_CHECK = 1.0
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def block_stop_signals() -> None:
    """In a new worker before it runs Python: a stop request waits (pending) until the worker
    can note it, instead of killing it half-started."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


class Stopper:
    """SIGTERM or SIGINT starts a graceful stop; any later one is ignored (and said so), since
    a second stop request - systemd signalling every process of the unit, a supervisor and a
    terminal both - must not cut short the final rollup. The shutdown timeout still bounds it.

    Until the app has started, a signal is only noted (and acted on once it has): a process
    stopped while it starts still exits cleanly. After that it is handled in the event loop, as
    aiohttp does, never in the middle of a request's code."""

    def __init__(self, ready_message: str | None) -> None:
        self.ready_message = ready_message
        self.early: signal.Signals | None = None
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self.note)

    def note(self, signum: int, frame: FrameType | None) -> None:
        self.early = self.early or signal.Signals(signum)

    def again(self, signum: signal.Signals) -> None:
        log.info("%s: already stopping", signum.name)

    def first(self, signum: signal.Signals) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.again, s)
        log.info("%s: stopping", signum.name)
        raise web.GracefulExit()

    async def on_startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(s, self.first, s)
        if self.ready_message:
            log.info(self.ready_message)
        if self.early is not None:
            loop.call_soon(self.first, self.early)


def run_app(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None = None,
    stopper: Stopper | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: stop accepting, let requests in flight finish (part of the
    shutdown timeout), then close the app's resources (the final rollup among them)."""
    from analytics.lifecycle import request_grace
    from analytics.logs import AccessLogger, access_logger

    app.on_startup.append((stopper or Stopper(None)).on_startup)
    web.run_app(
        app,
        host=None if sock is not None else settings.host,
        port=None if sock is not None else settings.port,
        sock=sock,
        shutdown_timeout=request_grace(settings),
        access_log=access_logger(settings),
        access_log_class=AccessLogger,
        print=lambda *_: None,
        handle_signals=False,
    )


def serve_single(settings: Settings) -> int:
    from analytics.app import create_app

    log.info(
        "serving on http://%s:%d, one process (pid %d), %s",
        settings.host,
        settings.port,
        os.getpid(),
        "embedded Redis and PostgreSQL" if settings.embedded else "configured stores",
    )
    run_app(create_app(settings), settings)
    log.info("stopped")
    return 0


# --- the supervisor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells a worker, through `ANALYTICS_WORKER` (JSON)."""

    index: int
    fd: int
    parent: int
    redis_url: str
    database_url: str
    metrics_dir: str

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, raw: str) -> WorkerSpec:
        return cls(**json.loads(raw))


def listen(settings: Settings) -> socket.socket:
    """The one listening socket every worker accepts on."""
    family, kind, proto, _, address = socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def metrics_directory(settings: Settings) -> Iterator[Path]:
    """Where workers keep their metric values: `ANALYTICS_METRICS_DIR` (emptied of old values
    first, since they belong to processes that are gone), or a private temporary directory."""
    if settings.metrics_dir is None:
        path = Path(tempfile.mkdtemp(prefix="analytics-metrics-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return
    path = settings.metrics_dir
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    yield path


@contextlib.contextmanager
def resolved_stores(settings: Settings) -> Iterator[tuple[str, str]]:
    """The Redis and PostgreSQL URLs: the configured ones, or embedded servers started here."""
    if not settings.embedded:
        if not settings.redis_url or not settings.database_url:
            raise SettingsError(
                "set both ANALYTICS_REDIS_URL and ANALYTICS_DATABASE_URL, or neither (embedded)"
            )
        yield settings.redis_url, settings.database_url
        return
    from analytics.embedded import EmbeddedPostgres, EmbeddedRedis, runtime_dir

    runtime_dir()
    redis_server = EmbeddedRedis(settings.data_dir)
    pg_server = EmbeddedPostgres(settings.data_dir)
    redis_url = redis_server.start()
    try:
        database_url = pg_server.start()
        try:
            yield redis_url, database_url
        finally:
            pg_server.stop()
    finally:
        redis_server.stop()


class Supervisor:
    def __init__(
        self, settings: Settings, sock: socket.socket, stores: tuple[str, str], metrics_dir: Path
    ) -> None:
        self.settings = settings
        self.sock = sock
        self.stores = stores
        self.metrics_dir = metrics_dir
        self.workers: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping = False
        self.failures = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            log.info("%s: stopping %d worker(s)", signal.Signals(signum).name, len(self.workers))
        self.stopping = True

    def spawn(self, index: int) -> None:
        fd = self.sock.fileno()
        spec = WorkerSpec(index, fd, os.getpid(), *self.stores, str(self.metrics_dir))
        env = {**os.environ, WORKER_ENV: spec.to_env(), MULTIPROC_ENV: str(self.metrics_dir)}
        process = subprocess.Popen(
            [sys.executable, "-m", "analytics.serving"],
            env=env,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            # a terminal's Ctrl-C reaches the supervisor only; workers get one SIGTERM from it
            start_new_session=True,
            preexec_fn=block_stop_signals,  # the supervisor has no threads: fork-safe
        )
        self.workers[index] = (process, time.monotonic())
        log.info("worker %d started (pid %d)", index, process.pid)

    def reap(self) -> list[tuple[int, int, float]]:
        """(index, exit code, seconds it ran) of each worker that has exited."""
        gone = []
        for index, (process, started) in list(self.workers.items()):
            code = process.poll()
            if code is not None:
                del self.workers[index]
                self.forget(process.pid)
                gone.append((index, code, time.monotonic() - started))
        return gone

    def forget(self, pid: int) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        for index in range(1, self.settings.workers + 1):
            self.spawn(index)
        while not self.stopping:
            time.sleep(POLL)
            for index, code, ran in self.reap():
                if self.stopping:
                    break
                log.error(
                    "worker %d exited with %d after %.1f s; starting another", index, code, ran
                )
                self.failures = self.failures + 1 if ran < QUICK_EXIT else 0
                if self.failures >= START_FAILURES:
                    log.error("workers keep failing at start (see above); stopping")
                    self.stop()
                    return 1
                self.spawn(index)
        return self.stop()

    def stop(self) -> int:
        """SIGTERM to every worker, then wait up to the shutdown timeout; 0 when all exited 0."""
        self.stopping = True
        clean = True
        for process, _ in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.workers and time.monotonic() < deadline:
            time.sleep(POLL)
            for index, code, _ in self.reap():
                if code != 0:
                    clean = False
                    log.error("worker %d exited with %d while stopping", index, code)
        for index, (process, _) in list(self.workers.items()):
            log.error(
                "worker %d (pid %d) still running at the shutdown timeout: killed",
                index,
                process.pid,
            )
            process.kill()
            process.wait()
            self.forget(process.pid)
            clean = False
        self.workers.clear()
        return 0 if clean else 1


def supervise(settings: Settings) -> int:
    with (
        metrics_directory(settings) as metrics_dir,
        resolved_stores(settings) as stores,
        listen(settings) as sock,
    ):
        host, port = sock.getsockname()[:2]
        log.info(
            "serving on http://%s:%d with %d workers (supervisor pid %d), %s",
            host,
            port,
            settings.workers,
            os.getpid(),
            "embedded Redis and PostgreSQL" if settings.embedded else "configured stores",
        )
        code = Supervisor(settings, sock, stores, metrics_dir).run()
    log.info("stopped" if code == 0 else "stopped, not cleanly")
    return code


# --- a worker ---------------------------------------------------------------------------------


def orphan_watch(parent: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A worker whose supervisor is gone (killed outright) stops by itself, gracefully."""

    async def watch() -> None:
        # nothing signals a parent's death to a child without extra machinery: poll, cheaply
        while os.getppid() == parent:  # noqa: ASYNC110
            await asyncio.sleep(ORPHAN_CHECK)
        log.warning("the supervisor is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(watch(), name="orphan-watch")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def run_worker(settings: Settings, spec: WorkerSpec, stopper: Stopper) -> int:
    from analytics.app import create_app

    sock = socket.socket(fileno=spec.fd)
    app = create_app(
        settings,
        stores=(spec.redis_url, spec.database_url),
        multiprocess_dir=Path(spec.metrics_dir),
    )
    app.cleanup_ctx.append(orphan_watch(spec.parent))
    run_app(app, settings, sock, stopper)
    log.info("worker %d stopped", spec.index)
    return 0


def worker_main() -> int:
    from prometheus_client import disable_created_metrics

    from analytics.logs import setup_logging

    spec = WorkerSpec.from_env(os.environ[WORKER_ENV])
    stopper = Stopper(f"worker {spec.index} ready")
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # noted from here on
    settings = Settings.from_env()
    setup_logging(settings)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        return run_worker(settings, spec, stopper)
    except (OSError, RuntimeError) as err:
        log.error("worker %d could not start: %s", spec.index, err)
        return 1


if __name__ == "__main__":
    sys.exit(worker_main())

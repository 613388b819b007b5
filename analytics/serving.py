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
import gc
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

from analytics.loops import loop_kind, new_event_loop
from analytics.settings import Settings

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

    A signal is only ever noted: the serving coroutine acts on it once the app has started
    (a process stopped while it starts still closes what it opened) and never in the middle of
    a request's code."""

    def __init__(self) -> None:
        self.signum: signal.Signals | None = None
        self.requested: asyncio.Event | None = None
        for s in STOP_SIGNALS:
            signal.signal(s, self.note)  # before the event loop runs

    def note(self, signum: int, frame: FrameType | None = None) -> None:
        if self.signum is not None:
            log.info("%s: already stopping", signal.Signals(signum).name)
            return
        self.signum = signal.Signals(signum)
        if self.requested is not None:
            self.requested.set()

    def attach(self) -> None:
        """From here on, signals arrive through the event loop."""
        loop = asyncio.get_running_loop()
        self.requested = asyncio.Event()
        for s in STOP_SIGNALS:
            loop.add_signal_handler(s, self.note, s)
        if self.signum is not None:
            self.requested.set()

    async def wait(self) -> None:
        assert self.requested is not None
        await self.requested.wait()
        assert self.signum is not None
        log.info("%s: stopping", self.signum.name)


async def serve_until_stopped(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None,
    stopper: Stopper,
    ready_message: str | None,
) -> None:
    """Start the app and its listener, serve until a stop signal, then stop accepting, let the
    requests in flight finish (part of the shutdown timeout) and close the app's resources (the
    final rollup among them) - whatever point start-up had reached."""
    from analytics.lifecycle import request_grace
    from analytics.logs import AccessLogger, access_logger
    from analytics.protocol import ServiceRunner

    stopper.attach()
    runner = ServiceRunner(
        app,
        handle_signals=False,
        shutdown_timeout=request_grace(settings),
        access_log=access_logger(settings),
        access_log_class=AccessLogger,
    )
    try:
        await runner.setup()
        site: web.BaseSite
        if sock is not None:
            site = web.SockSite(runner, sock)
        else:
            site = web.TCPSite(runner, settings.host, settings.port, backlog=LISTEN_BACKLOG)
        await site.start()
        settle_heap()
        if ready_message:
            log.info(ready_message)
        await stopper.wait()
    finally:
        await runner.cleanup()


def settle_heap() -> None:
    """Once start-up is done: a full collection, then what is left (modules, the app, the sites)
    frozen out of the collector's reach, so that a full collection while serving walks only what
    serving made. Measured under the bench's beacons, where one comes about once a minute: a
    pause of the whole process for 60 ms before (66 000 objects to walk), 1.6-2.2 ms after (62 000
    of them frozen)."""
    gc.collect()
    gc.freeze()


def run_app(
    app: web.Application,
    settings: Settings,
    sock: socket.socket | None = None,
    stopper: Stopper | None = None,
    ready_message: str | None = None,
) -> None:
    kind = loop_kind(settings.event_loop)
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        runner.run(serve_until_stopped(app, settings, sock, stopper or Stopper(), ready_message))


def serve_single(settings: Settings) -> int:
    from analytics.app import create_app

    stopper = Stopper()
    log.info(
        "serving on http://%s:%d, one process (pid %d), %s",
        settings.host,
        settings.port,
        os.getpid(),
        "embedded Redis and PostgreSQL" if settings.embedded else "configured stores",
    )
    run_app(create_app(settings), settings, stopper=stopper)
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
            raise RuntimeError(
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
    run_app(app, settings, sock, stopper, f"worker {spec.index} ready")
    log.info("worker %d stopped", spec.index)
    return 0


def worker_main() -> int:
    from prometheus_client import disable_created_metrics

    from analytics.logs import setup_logging

    spec = WorkerSpec.from_env(os.environ[WORKER_ENV])
    stopper = Stopper()
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

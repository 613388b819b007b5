"""Group commit: the Redis commands of concurrent requests go out together, one write per
event-loop tick (or sooner, when a caller with a full batch asks: `flush`), on one pipelined
connection; each request still waits for its own reply.

This is the hot path's Redis client (the counting script and the widget's reads); everything
else uses redis-py. Measured on a 2-core machine with 50 concurrent beacons, redis-py's
per-command path (connection pool checkout, argument encoding, one socket write and one read per
command, a timeout context per reply) cost about 100 us of CPU a beacon in the service and about
a third of Redis's own CPU in syscalls; here a tick's commands cost one `write`, Redis answers
them in one read, and the replies are parsed by hiredis straight into each request's future.

Guarantees, which the callers rely on:

- A future resolves only with its own command's reply, so a request is acknowledged only after
  Redis has executed *its* write; an error reply fails only the command that caused it.
- Replies come back in the order the commands were written (one connection, RESP pipelining).
- When the connection is lost or Redis does not answer within `timeout`, every command waiting
  for a reply fails with `redis.exceptions.ConnectionError`/`TimeoutError` (the caller answers
  503); a command that fails this way may or may not have run, exactly as with any client. The
  next command opens a new connection.
- Commands built by `pack` are sent byte for byte as redis-py would send them.

A caller waits for a reply either with a future (`call`, `execute`, `shared`) or with a plain
callback (`send`), which the connection calls as soon as the reply is parsed: no future, and no
turn of the event loop between the reply and what the caller does with it (the counting path:
a beacon's answer is written in the same turn as its run's reply is read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TimeoutError,
)

log = logging.getLogger("analytics.redis")

DEFAULT_TIMEOUT = 5.0


BULK = b"$%d\r\n%b\r\n"  # one RESP bulk string, formatted with its length and its bytes


def bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return BULK % (len(value), value)


def pack(*parts: bytes) -> bytes:
    """A command as RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join([BULK % (len(p), p) for p in parts])


def as_bytes(value: str | int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return b"%d" % value
    return value.encode()


def bulks(values: Iterable[str | int | bytes]) -> bytes:
    """Several bulk strings, to splice pre-encoded runs of arguments into a command."""
    return b"".join([bulk(as_bytes(v)) for v in values])


def classify(error: ResponseError) -> RedisError:
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return error


class Waiter(Protocol):
    """What waits for one command's reply: an asyncio future, or a `Callback`."""

    def done(self) -> bool: ...
    def set_result(self, result: Any, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


# a reply's receiver: (reply, None), or (None, the error it failed with)
OnReply = Callable[[Any, BaseException | None], None]


def call_guarded(logger: logging.Logger, what: str, fn: Callable[..., None], *args: Any) -> None:
    """`fn(*args)`, logging (as `what` failing) whatever it raises but an exit, as the event
    loop does with a callback's: a receiver called in a loop over others must not stop it."""
    try:
        fn(*args)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        logger.exception("%s failed", what)


class Callback:
    """A reply's waiter that calls `fn` at once, from the connection's `data_received` (or from
    whatever fails the command). What `fn` raises is logged, never let out, as the event loop
    does with a callback's (all but an exit): the connection has the rest of its replies to hand
    out."""

    __slots__ = ("fn",)

    def __init__(self, fn: OnReply) -> None:
        self.fn: OnReply | None = fn

    def done(self) -> bool:
        return self.fn is None

    def set_result(self, result: Any, /) -> None:
        self._call(result, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self._call(None, exception)

    def _call(self, result: Any, exception: BaseException | None) -> None:
        fn, self.fn = self.fn, None
        if fn is not None:  # else called already
            call_guarded(log, "a Redis reply's receiver", fn, result, exception)


class _Protocol(asyncio.Protocol):
    """The connection: writes what it is given, hands each parsed reply to the next waiter."""

    def __init__(self, owner: GroupCommit) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[Waiter] = deque()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio subclass

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while (reply := self.reader.gets()) is not False:
            if not waiting:
                # a reply nobody waits for: the stream is out of step, trust nothing after it
                self.abort(ConnectionError("Redis sent a reply that was not asked for"))
                return
            fut = waiting.popleft()
            if fut.done():
                continue  # its request went away; the reply still had to be consumed
            if isinstance(reply, ResponseError):
                fut.set_exception(classify(reply))
            else:
                fut.set_result(reply)
        self.owner.replied()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))
        if not self.lost.done():
            self.lost.set_result(None)
        self.owner.forget(self)

    def fail(self, error: RedisError) -> None:
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(error)

    def abort(self, error: RedisError) -> None:
        # the connection closing first: what a waiter sends when told goes to a new one
        if self.transport is not None:
            self.transport.abort()
        self.fail(error)


class GroupCommit:
    """Pipelines the commands of concurrent callers onto one Redis connection.

    `call(command)` queues a packed command and returns a future of its reply. The first call
    of a tick schedules one flush for the end of the tick (`loop.call_soon`), which writes every
    command queued by then at once.
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.params = parse_url(url)
        self.timeout = timeout
        self._queue: list[bytes] = []
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}  # reads not yet written, by key
        self._queued: list[Waiter] = []
        self._flush_scheduled = False
        self._conn: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._progress = 0.0  # when Redis last answered, or replies began to be awaited
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    def shared(self, key: Hashable, command: bytes) -> asyncio.Future[Any]:
        """Like `call` for a read-only command, but callers in the same tick that pass the same
        `key` (meaning: the same command) share one run of it and one reply - which they must
        not mutate. Only commands not yet written are shared, so every caller's reply is read
        after the caller arrived: a read still sees every write acknowledged before it."""
        fut = self._shared.get(key)
        if fut is None:
            fut = self._shared[key] = self.call(command)
        return fut

    def call(self, command: bytes) -> asyncio.Future[Any]:
        """The future reply of `command` (RESP bytes, see `pack`)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue_waiter(command, fut)
        return fut

    def send(self, command: bytes, on_reply: OnReply) -> None:
        """Queue `command`; `on_reply(reply, None)` or `on_reply(None, error)` is called once,
        as soon as the reply is read (or the command failed)."""
        self._queue_waiter(command, Callback(on_reply))

    def _queue_waiter(self, command: bytes, waiter: Waiter) -> None:
        if self._closed:
            waiter.set_exception(ConnectionError("the Redis pipeline is closed"))
            return
        self._queue.append(command)
        self._queued.append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def execute(self, command: bytes) -> Any:
        return await self.call(command)

    def flush(self) -> None:
        """Write what is queued now rather than at the end of the tick (a caller that has a
        full batch: Redis can start on it while this process goes on with the tick)."""
        if self._queue and not self._closed:
            self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
                self._connecting.add_done_callback(self._connected)
            return  # flushed once connected
        commands, futures = self._queue, self._queued
        if not commands:
            return
        self._queue, self._queued = [], []
        if self._shared:
            self._shared = {}  # written now: later readers need a run of their own
        if not conn.waiting:
            self._progress = time.monotonic()
        conn.waiting.extend(futures)
        conn.transport.write(b"".join(commands))
        if self._watchdog is None:
            self._arm()

    def _connected(self, task: asyncio.Task[_Protocol]) -> None:
        self._connecting = None
        if task.cancelled():
            error: BaseException = ConnectionError("connecting to Redis was cancelled")
        else:
            found = task.exception()
            if found is None:
                self._conn = task.result()
                self._flush()
                return
            error = found
        # nothing was sent: every queued command fails, and the next call tries again
        futures, self._queue, self._queued = self._queued, [], []
        self._shared = {}
        if not isinstance(error, RedisError):
            error = ConnectionError(f"cannot connect to Redis: {error}")
        for fut in futures:
            if not fut.done():
                fut.set_exception(error)

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        p = self.params
        async with asyncio.timeout(self.timeout):
            if "path" in p:
                _, conn = await loop.create_unix_connection(lambda: _Protocol(self), p["path"])
            else:
                tls = p.get("connection_class") is SSLConnection
                _, conn = await loop.create_connection(
                    lambda: _Protocol(self),
                    p.get("host", "localhost"),
                    p.get("port", 6379),
                    ssl=ssl.create_default_context() if tls else None,
                )
            if conn.transport is None:
                raise ConnectionError("the connection to Redis did not open")
            await self._handshake(conn)
        return conn

    async def _handshake(self, conn: _Protocol) -> None:
        """AUTH and SELECT, as redis-py does on a new connection."""
        steps = []
        if p := self.params.get("password"):
            user = self.params.get("username")
            auth = (b"AUTH", as_bytes(user), as_bytes(p)) if user else (b"AUTH", as_bytes(p))
            steps.append(pack(*auth))
        if db := int(self.params.get("db") or 0):
            steps.append(pack(b"SELECT", b"%d" % db))
        if not steps:
            return
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in steps]
        conn.waiting.extend(futures)
        assert conn.transport is not None
        conn.transport.write(b"".join(steps))
        try:
            await asyncio.gather(*futures)
        except ResponseError as err:
            conn.abort(ConnectionError("handshake failed"))
            raise AuthenticationError(str(err)) from err

    def replied(self) -> None:
        """Called by the connection after replies arrived: Redis is making progress."""
        self._progress = time.monotonic()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.timeout / 4, self._watch)

    def _watch(self) -> None:
        """Every timeout/4 while replies are awaited: give up on a Redis that went silent."""
        self._watchdog = None
        conn = self._conn
        if conn is None or not conn.waiting:
            return
        if time.monotonic() - self._progress > self.timeout:
            conn.abort(TimeoutError(f"Redis did not answer within {self.timeout} s"))
            return
        self._arm()

    def forget(self, conn: _Protocol) -> None:
        if self._conn is conn:
            self._conn = None

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.close()
            await asyncio.wait_for(asyncio.shield(conn.lost), self.timeout)

"""The HTTP connection: aiohttp's, with `POST /collect` and the widget's cached reads answered
beneath aiohttp's request layer.

Every page view is one beacon, and a beacon's answer is an empty 204. aiohttp's request layer (a
task and a `Request` per request, the router, a `Response` prepared header by header, the wake-up
of the connection's own task) cost a beacon a third of the serving process's instructions
(`bench.instructions collect`: 379 500 through it, 257 100 beneath it). Here a beacon is taken
from aiohttp's own parser as soon as it is whole, goes through the same steps as the routed
handler's (`BeaconViews.parse`, `Intake.admit`, the recorder's `submit_with`, `outcome` and
`settled`, `Intake.counted`) with callbacks rather than a task, and is answered, once Redis has
counted it, with bytes made once: in the same turn of the event loop as its run's reply is read.
Its metrics, errors (the same JSON, by the same `answer_error`) and access-log line are the
routed path's.

Only what is plainly a beacon takes this path: an HTTP/1.1 keep-alive `POST /collect` with no
query, no `Expect`, no `Content-Encoding` and no upgrade, whose body came whole, on a connection
with nothing else in hand. Everything else goes through aiohttp unchanged, and in order: a request
that arrives (pipelined) while a beacon is in hand waits until that beacon's answer is written.

The widget's two hot reads - `GET /api/v1/sites/{site}/counters` and `.../articles?ids=...` -
are answered here too, at once, when the read cache (`aggregations.readcache`) holds them: the
same entry the routed handler would answer from, as bytes made once per entry (200, or 304 for
an `If-None-Match` that names its ETag). A read the cache does not hold, or one with anything
unusual about it (another query, a percent-encoded path, a body, HTTP/1.0, `Connection: close`),
goes through aiohttp, which reads Redis and fills the cache.

It leans on `RequestHandler`'s internals (its parser, message queue, waiter, flow control and
keep-alive clock), so it is switched on only for the aiohttp releases it was tested with
(`TESTED`); on another, the service runs on aiohttp's own handler and says so once in its log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDictProxy, istr

from aggregations.clock import Clock
from aggregations.counters import SALT_ATTEMPTS, Hit, Outcome
from aggregations.errors import AnalyticsError, StorageUnavailable
from aggregations.metrics import Metrics
from aggregations.readcache import ReadCache
from aggregations.sites import SiteCache
from analytics import appkeys as K
from analytics.api import COUNTERS_KEY, articles_key, checked_ids
from analytics.logs import AccessLogger
from analytics.middleware import answer_error, error_response
from analytics.responses import Cacheable, matches
from collectors.handlers import ACK_HEADERS, BeaconViews, sender_of

log = logging.getLogger("analytics.http")

TESTED = ("3.14.",)  # aiohttp releases whose RequestHandler this module was tested against
PATH = "/collect"
ROUTE = "collect"


def supported(version: str = aiohttp.__version__) -> bool:
    return version.startswith(TESTED)


class HttpDate:
    """The `Date` header's value, made once a second."""

    __slots__ = ("_clock", "_second", "_value")

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        second = int(self._clock())
        if second != self._second:
            self._second, self._value = second, formatdate(second, usegmt=True).encode()
        return self._value


# A response as aiohttp writes it: status line, headers, `Date`, `Server`, blank line, body. The
# bytes are made once, in two parts around the date's value: `head(...) + date + TAIL + body`.
TAIL = f"\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode()


def head(status: int, headers: CIMultiDictProxy[str] | dict[str, str]) -> bytes:
    """A response's status line and headers, up to the `Date` header's value."""
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    lines.append("Date: ")
    return "".join(lines).encode()


def serialized(response: web.Response, date: bytes) -> bytes:
    """An error response of `answer_error` as bytes, as aiohttp would write it."""
    body = response.body
    assert isinstance(body, bytes)  # answer_error's bodies are JSON bytes
    headers = {name: value for name, value in response.headers.items()}
    headers["Content-Length"] = str(len(body))
    return head(response.status, headers) + date + TAIL + body


class BeaconAnswers:
    """What a connection needs to answer beacons itself: the app's views (and through them,
    intake and the recorder), metrics and the bytes of its answers. One per server."""

    def __init__(self, views: BeaconViews, metrics: Metrics, date: HttpDate | None = None) -> None:
        self.views = views
        self.intake = views.intake
        self.recorder = views.intake.recorder
        self.metrics = metrics
        self.date = date or HttpDate()
        self.ack_head = head(204, ACK_HEADERS)
        self.answered = 0  # beacons answered here (the tests' proof that this path ran)

    def admit(self, headers: CIMultiDictProxy[str], body: bytes, peer: str | None) -> Hit | None:
        """The hit a beacon makes, or None when policy drops it (a bot, a prefetch): answered
        204 at once. Raises the domain error of a refused beacon."""
        beacon = self.views.parse(body)
        _, admitted = self.intake.admit(beacon, sender_of(peer, headers, headers.get("Origin")))
        return admitted if isinstance(admitted, Hit) else None

    def counted(
        self, hit: Hit, outcome: Outcome | None, error: StorageUnavailable | None, attempt: int
    ) -> bool:
        """Whether the recorder's run counted `hit` (False: submit it again, under the day's
        salt, now learnt). Raises the domain error of a hit refused or not recorded."""
        intake = self.intake
        try:
            if error is not None:
                raise error
            assert outcome is not None
            recorded = self.recorder.outcome(hit, outcome)
            if recorded is None and attempt >= SALT_ATTEMPTS:
                raise StorageUnavailable("the day's salt kept changing under this process")
        except AnalyticsError as err:
            intake.count_error(err)
            raise
        finally:
            self.recorder.settled(hit)
        if recorded is None:
            return False
        intake.counted(recorded)
        return True

    def ack(self, started: float, access: AccessLogger | None) -> bytes:
        answer = self.ack_head + self.date() + TAIL
        self._answered(204, len(answer), started, access)
        return answer

    def error(self, err: Exception, started: float, access: AccessLogger | None) -> bytes:
        """The routed handler's JSON error for `err`, as bytes (raises what answer_error does
        not answer)."""
        response = answer_error(err, ROUTE, self.metrics, "POST")
        assert isinstance(response, web.Response)
        answer = serialized(response, self.date())
        self._answered(response.status, len(answer), started, access)
        return answer

    def failed(self) -> bytes:
        """The answer when answering itself failed (a bug): a 500, and the connection closes."""
        response = error_response(500, "internal", "the service failed to answer; it is logged")
        response.headers["Connection"] = "close"
        return serialized(response, self.date())

    def _answered(
        self, status: int, size: int, started: float, access: AccessLogger | None
    ) -> None:
        observe(self.metrics, access, "POST", PATH, ROUTE, status, size, started)
        self.answered += 1


def observe(
    metrics: Metrics,
    access: AccessLogger | None,
    method: str,
    path: str,
    route: str,
    status: int,
    size: int,
    started: float,
) -> None:
    """An answer this module wrote: the route's metrics and the access-log line, as the routed
    handler's (`size`: the bytes written, headers included, as aiohttp's own line counts them)."""
    seconds = time.perf_counter() - started
    metrics.observe_http(route, status, seconds)
    if access is not None:
        access.entry(method, path, route, status, size, seconds)


def is_beacon(message: Any, payload: StreamReader) -> bool:
    """Whether a parsed request is a plain beacon, whole: this module's to answer."""
    return (
        type(message) is RawRequestMessage
        and message.method == "POST"
        and message.path == PATH
        and message.version == HttpVersion11
        and not message.should_close
        and not message.upgrade
        and payload.is_eof()
        and payload.exception() is None
        and "Expect" not in message.headers
        # the routed path limits a compressed body by its length as sent: it answers those
        and "Content-Encoding" not in message.headers
    )


READS = "/api/v1/sites/"
ARTICLES = "articles?ids="
# ids that need no decoding: what a widget sends; anything else goes the routed way
PLAIN_IDS = re.compile(r"[A-Za-z0-9._:,-]{1,4096}")
IF_NONE_MATCH, EXPECT = istr("If-None-Match"), istr("Expect")


def is_plain_get(message: Any, payload: StreamReader) -> bool:
    """Whether a parsed request is a plain keep-alive HTTP/1.1 GET without a body (and
    without `Expect`, which aiohttp answers before any route)."""
    return (
        type(message) is RawRequestMessage
        and message.method == "GET"
        and message.version == HttpVersion11
        and not message.should_close
        and not message.upgrade
        and payload is EMPTY_PAYLOAD
        and EXPECT not in message.headers
    )


class ReadAnswers:
    """The widget's hot reads answered from the read cache on the connection: the bytes of the
    routed handler's answer from the same entry (see the module's text). One per server."""

    def __init__(
        self,
        cache: ReadCache,
        sites: SiteCache,
        clock: Clock,
        metrics: Metrics,
        date: HttpDate,
    ) -> None:
        self.cache = cache
        self.sites = sites
        self.clock = clock
        self.metrics = metrics
        self.date = date
        self.answered = 0  # reads answered here (the tests' proof that this path ran)

    def answer(self, message: RawRequestMessage, access: AccessLogger | None) -> bytes | None:
        """The answer to a plain GET from the read cache, or None: aiohttp answers it."""
        started = time.perf_counter()
        path: str = message.path
        if not path.startswith(READS):
            return None
        raw_site, _, rest = path[len(READS) :].partition("/")
        key: str | tuple[str, ...]
        if rest == "counters":
            route, key = "counters", COUNTERS_KEY
        elif rest.startswith(ARTICLES) and PLAIN_IDS.fullmatch(rest, len(ARTICLES)):
            ids = checked_ids(rest[len(ARTICLES) :])
            if ids is None:
                return None
            route, key = "articles", articles_key(ids)
        else:
            return None
        site = self.sites.get(raw_site)
        if site is None:
            return None
        found: Cacheable | None = self.cache.get(site.id, key, self.clock.now())
        if found is None:
            return None
        wire = found.wire or wire_of(found)
        if matches(message.headers.get(IF_NONE_MATCH), found.etag):
            status, answer = 304, wire[1] + self.date() + TAIL
        else:
            status, answer = 200, wire[0] + self.date() + TAIL + found.body
        observe(
            self.metrics, access, "GET", path.partition("?")[0], route, status, len(answer), started
        )
        self.answered += 1
        return answer


def wire_of(found: Cacheable) -> tuple[bytes, bytes]:
    """A read cache entry's two answers (200 and 304) up to the `Date` header's value, as aiohttp
    writes them: kept on the entry."""
    ok = {**found.headers, "Content-Length": str(len(found.body))}
    found.wire = (head(200, ok), head(304, found.validators))
    return found.wire


Queued = tuple[Any, StreamReader]


class ServiceHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering plain beacons and cached reads itself (see the
    module's text)."""

    __slots__ = ("_access", "_answers", "_draining", "_held", "_peer", "_reading_body", "_reads")

    def __init__(
        self,
        manager: web.Server,
        *,
        answers: BeaconAnswers | None,
        reads: ReadAnswers | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        access = self.access_logger if self._logging_enabled else None
        if access is not None and not isinstance(access, AccessLogger):
            answers = reads = None  # an access log these paths cannot write to: aiohttp's
        self._answers = answers
        self._reads = reads
        self._access = access if isinstance(access, AccessLogger) else None
        self._held: list[Queued] | None = None  # requests behind the beacon being answered
        self._draining: asyncio.Task[None] | None = None
        self._reading_body = False
        self._peer: str | None = None

    def data_received(self, data: bytes) -> None:
        if self._reading_body:
            return  # the empty chunk of reading a beacon's body, when it has nothing to go on with
        answers = self._answers
        if (
            answers is None
            or self._force_close
            or self._close
            or self._payload_parser is not None
            or self._upgraded
        ):
            super().data_received(data)
            return
        # as aiohttp's own data_received, but for the beacons taken out of the queue and the
        # reads answered here
        parser = self._parser
        assert parser is not None
        cap = self._max_msg_queue_size
        queued, beacon = False, None
        while True:
            before = len(self._messages) + len(self._held or ())
            try:
                messages, upgraded, tail = parser.feed_data(data)
            except HttpProcessingError as exc:
                error = web_protocol._ErrInfo(status=400, exc=exc, message=exc.message)
                messages, upgraded, tail = [(error, EMPTY_PAYLOAD)], False, b""
            for message, payload in messages:
                self._request_count += 1
                if self._held is not None:
                    self._held.append((message, payload))
                elif not self._messages and self._idle() and is_beacon(message, payload):
                    parser.message_consumed()
                    self._take()
                    beacon = (message.headers, payload)
                elif not self._messages and self._idle() and self._answered_read(message, payload):
                    parser.message_consumed()
                else:
                    self._messages.append((message, payload))
                    queued = True
            waiting = len(self._messages) + len(self._held or ())
            # The parser stops, keeping the rest of what it was fed, once the requests it has
            # handed out and that are not yet consumed reach the cap. Those taken or answered
            # here were consumed at once: when it stopped for them alone, nothing else (a
            # paused read resumed) would feed it again, so it goes on now with the rest.
            if upgraded or before + len(messages) < cap or waiting >= cap:
                break
            data = b""
        waiter = self._waiter
        if queued and waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self._buffer_paused and waiting >= cap:
            self._pause_reading_for_buffer()
        self._upgraded = upgraded
        if upgraded and tail:
            self._message_tail = tail
        if beacon is not None:
            headers, payload = beacon
            self._start(answers, headers, self._body(payload, waiting))

    def _body(self, payload: StreamReader, waiting: int) -> bytes:
        """A beacon's body, read once the beacon is in hand (after the parse loop): reading it
        resumes reading, which feeds the parser an empty chunk (this handler's data_received,
        re-entered) to go on with whatever it had stopped short of, and what that parses must
        find the beacon taken. When the parser cannot have stopped short - reading not paused
        and its queue short of the cap at which it stops (`waiting` requests held or queued,
        and the beacon; the parse loop has fed it on until it stopped for no other reason) -
        the re-entry is skipped: nearly always, and 4 % of a beacon's instructions."""
        if self._reading_paused or self._buffer_paused or waiting + 1 >= self._max_msg_queue_size:
            return payload.read_nowait()
        self._reading_body = True
        try:
            return payload.read_nowait()
        finally:
            self._reading_body = False

    def _answered_read(self, message: Any, payload: StreamReader) -> bool:
        """Whether a plain GET was one of the hot reads the read cache holds, and is answered
        (written now: nothing is in hand, so it is the connection's next answer)."""
        reads, transport = self._reads, self.transport
        if (
            reads is None
            or transport is None
            or transport.is_closing()
            or self.writing_paused
            or not is_plain_get(message, payload)
        ):
            return False
        try:
            answer = reads.answer(message, self._access)
        except Exception:  # a bug of this path: aiohttp's routed handler answers instead
            log.exception("answering a read on the connection failed")
            return False
        if answer is None:
            return False
        transport.write(answer)
        self._begun()
        return True

    def _idle(self) -> bool:
        """The connection's own task waits for a request: none is being answered."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._request_in_progress

    def _take(self) -> None:
        """A beacon is this connection's request in hand: what comes after it waits."""
        self._held = []
        self._request_in_progress = True  # a graceful shutdown waits for it, as for aiohttp's
        self._begun()

    def _begun(self) -> None:
        """A request this connection answers itself: counted by the server, as aiohttp counts
        its own, and the idle clock restarted."""
        if self._manager is not None:
            self._manager.requests_count += 1
        self._keep_alive_from_now()

    # A beacon in hand goes through intake and the recorder step by step, with callbacks, not
    # a task: its checks run here and now, its hit joins this tick's run of the counting
    # script, and the run's reply answers it, as the reply is read (a task and its coroutines
    # cost a beacon 7 % of its instructions; futures between the reply and the answer, 9 %
    # more, and each of their steps waits for a turn of the event loop).

    def _start(self, answers: BeaconAnswers, headers: CIMultiDictProxy[str], body: bytes) -> None:
        started = time.perf_counter()
        if self._peer is None:
            peer = self.peername  # as `Request.remote` has it
            self._peer = str(peer[0]) if isinstance(peer, (list, tuple)) else peer
        try:
            hit = answers.admit(headers, body, self._peer)
            if hit is None:
                self._finish(answers.ack(started, self._access))
            else:
                self._submit(answers, hit, started, 1)
        except Exception as err:
            self._refuse(answers, err, started)

    def _submit(self, answers: BeaconAnswers, hit: Hit, started: float, attempt: int) -> None:
        replied = functools.partial(self._replied, answers, hit, started, attempt)
        answers.recorder.submit_with(hit, replied)

    def _replied(
        self,
        answers: BeaconAnswers,
        hit: Hit,
        started: float,
        attempt: int,
        outcome: Outcome | None,
        error: StorageUnavailable | None,
    ) -> None:
        """The hit's outcome, as soon as its run's reply is read: answered in the same turn."""
        try:
            if answers.counted(hit, outcome, error, attempt):
                self._finish(answers.ack(started, self._access))
            else:
                self._submit(answers, hit, started, attempt + 1)
        except Exception as err:
            self._refuse(answers, err, started)

    def _refuse(self, answers: BeaconAnswers, err: Exception, started: float) -> None:
        try:
            answer = answers.error(err, started, self._access)
        except Exception:
            log.exception("answering a beacon failed")
            self._finish(answers.failed(), close=True)
        else:
            self._finish(answer)

    def _finish(self, answer: bytes, close: bool = False) -> None:
        """Write a beacon's answer and let the requests behind it through."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)
            if close:
                self.force_close()  # after the 500 is written: the transport flushes it
            elif self.writing_paused:  # a client that does not read: wait, as aiohttp does
                self._draining = self._loop.create_task(self._drained())
                return
        self._release()

    async def _drained(self) -> None:
        try:
            await self._drain_helper()
        except ConnectionError:
            pass  # the client went away
        finally:
            self._draining = None
            self._release()

    def _release(self) -> None:
        self._request_in_progress = False
        if self._handler_waiter is not None and not self._handler_waiter.done():
            self._handler_waiter.set_result(None)
        self._keep_alive_from_now()
        held, self._held = self._held, None
        if held:
            self._messages.extend(held)
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _resume_reading_if_drained(self) -> None:
        if self._held is None:  # while a beacon is in hand, what is held counts as queued
            super()._resume_reading_if_drained()

    def _process_keepalive(self) -> None:
        if self._held is not None:  # a beacon in hand: busy, not idle
            self._keepalive_handle = None
            self._keep_alive_from_now()
            return
        super()._process_keepalive()

    def _keep_alive_from_now(self) -> None:
        """Restart the idle clock, as aiohttp does after each request it answers: a connection
        that sends only beacons is busy, not idle."""
        if self._keepalive_timeout > 0 and self.transport is not None:
            close_time = self._loop.time() + self._keepalive_timeout
            self._next_keepalive_close_time = close_time
            if self._keepalive_handle is None:
                self._keepalive_handle = self._loop.call_at(close_time, self._process_keepalive)


class ServiceServer(web.Server):
    """aiohttp's server, making `ServiceHandler`s."""

    def __init__(
        self,
        *args: Any,
        answers: BeaconAnswers | None,
        reads: ReadAnswers | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.answers = answers
        self.reads = reads

    def __call__(self) -> web_protocol.RequestHandler:
        return ServiceHandler(
            self, answers=self.answers, reads=self.reads, loop=self._loop, **self._kwargs
        )


class ServiceRunner(web.AppRunner):
    """`web.AppRunner` for the service's app: its server answers beacons on the connection."""

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        if not supported():
            log.warning(
                "aiohttp %s is not one this service's beacon path was tested with (%s): "
                "beacons go through aiohttp's request layer, at about two thirds the speed",
                aiohttp.__version__,
                ", ".join(f"{t}x" for t in TESTED),
            )
            return made
        app = self.app
        answers = BeaconAnswers(app[K.BEACONS], app[K.METRICS])
        reads = ReadAnswers(
            app[K.READ_CACHE], app[K.SITES], app[K.CLOCK], app[K.METRICS], answers.date
        )
        return ServiceServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            answers=answers,
            reads=reads,
            **made._kwargs,
        )

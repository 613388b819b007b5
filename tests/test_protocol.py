"""The connection's own beacon path (`analytics.protocol`): it answers exactly as the routed
handler does, only plain beacons take it, and requests on a connection are answered in order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from analytics import protocol
from analytics.app import create_app
from analytics.protocol import HttpDate, ServiceServer
from tests.abuse_helpers import pageviews
from tests.conftest import BROWSER, ServiceTestServer, add_site, answered, send
from tests.test_counting import salt_made_elsewhere
from tests.test_metrics import scrape

BODY = json.dumps({"site": "caobang", "url": "https://caobang.gov.vn/tin-tuc/1"}).encode()


def beacon_request(
    body: bytes = BODY,
    target: str = "/collect",
    version: str = "1.1",
    ip: str = "203.0.113.7",
    extra: str = "",
) -> bytes:
    return (
        f"POST {target} HTTP/{version}\r\nHost: localhost\r\nUser-Agent: {BROWSER}\r\n"
        f"Origin: https://caobang.gov.vn\r\nX-Forwarded-For: {ip}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


class Connection:
    """One raw keep-alive connection to the test server: requests written as given, responses
    read back one by one."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def to(cls, client: TestClient[Any, Any]) -> Connection:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        return cls(reader, writer)

    async def settle(self) -> None:
        # a new connection's own task starts on the next turns of the loop: until it waits for
        # a request, the connection's first request goes through aiohttp (also tested)
        await asyncio.sleep(0.05)

    def write(self, *requests: bytes) -> None:
        self.writer.write(b"".join(requests))

    async def response(self, body: bool = True) -> tuple[str, dict[str, str], bytes]:
        """The next response; `body` False for the answer to a HEAD (its length, no body)."""
        status, headers, _, content = await self.raw_response(body)
        return status, headers, content

    async def raw_response(self, body: bool = True) -> tuple[str, dict[str, str], bytes, bytes]:
        """The next response, with its head as it came (its `Date` blanked: the only part that
        may differ from one answer to the next)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status, *lines = head.decode().split("\r\n")[:-2]
        headers = dict(line.split(": ", 1) for line in lines)
        length = int(headers.get("Content-Length", "0")) if body else 0
        content = await self.reader.readexactly(length)
        blank = head.replace(headers["Date"].encode(), b"<date>") if "Date" in headers else head
        return status, headers, blank, content

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def conn(client: TestClient[Any, Any]) -> Any:
    c = await Connection.to(client)
    await c.settle()
    yield c
    c.close()


async def test_beacons_are_answered_on_the_connection_and_counted(client, conn):
    before = answered(client)
    for i in range(5):
        conn.write(beacon_request(ip=f"203.0.113.{i + 1}"))
        status, _, body = await conn.response()
        assert status == "HTTP/1.1 204 No Content"
        assert body == b""
    assert answered(client) == before + 5
    assert await pageviews(client) == 5
    # and through aiohttp's test client, as every other test sends them
    assert (await send(client)).status == 204
    assert answered(client) >= before + 5


def comparable(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "Date"}


@pytest.mark.parametrize(
    "body",
    [
        BODY,
        b"{not json",
        json.dumps({"site": "nowhere", "url": "https://caobang.gov.vn/"}).encode(),
        json.dumps({"site": "caobang", "url": "https://elsewhere.example/"}).encode(),
        b"x" * (9 * 1024),
    ],
    ids=["counted", "malformed", "unknown-site", "foreign-url", "too-large"],
)
async def test_an_answer_is_byte_for_byte_the_routed_handlers(client, conn, body):
    # `?via=router` is no plain beacon: aiohttp's routed handler answers it, the same way
    before = answered(client)
    conn.write(beacon_request(body, "/collect?via=router", ip="198.51.100.1"))
    routed = await conn.raw_response()
    conn.write(beacon_request(body, ip="198.51.100.2"))
    direct = await conn.raw_response()
    assert answered(client) == before + 1
    assert direct[2] == routed[2]  # status line and headers, in order, but for the date
    assert direct[3] == routed[3]
    assert direct[1]["Date"].endswith(" GMT")


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (beacon_request(version="1.0"), "HTTP/1.0"),
        (beacon_request(extra="Connection: close\r\n"), "closes the connection"),
        (beacon_request(extra="Expect: 100-continue\r\n"), "expects 100-continue"),
        (beacon_request(target="/collect?counters=1"), "asks for the counters"),
        (beacon_request(extra="Content-Encoding: identity\r\n"), "says how it is encoded"),
    ],
)
async def test_what_is_not_a_plain_beacon_goes_through_aiohttp(client, conn, request_bytes, why):
    before = answered(client)
    conn.write(request_bytes)
    status, _, _ = await conn.response()
    if status == "HTTP/1.1 100 Continue":  # aiohttp's interim answer to Expect
        status, _, _ = await conn.response()
    assert status.split(" ", 1)[1].startswith(("204", "200")), why
    assert answered(client) == before, why
    assert await pageviews(client) == 1


async def test_a_body_that_comes_in_two_parts_goes_through_aiohttp(client, conn):
    before = answered(client)
    request = beacon_request()
    conn.write(request[:-10])
    await conn.writer.drain()
    await asyncio.sleep(0.05)
    conn.write(request[-10:])
    status, _, _ = await conn.response()
    assert status == "HTTP/1.1 204 No Content"
    assert answered(client) == before
    assert await pageviews(client) == 1


async def test_pipelined_requests_are_answered_in_order(client, conn):
    before = answered(client)
    counters = b"GET /api/v1/sites/caobang/counters HTTP/1.1\r\nHost: localhost\r\n\r\n"
    missing = b"GET /no-such-page HTTP/1.1\r\nHost: localhost\r\n\r\n"
    # a beacon first (answered here; what follows waits for it), then routed requests and more
    # beacons behind them, all in one write
    conn.write(
        beacon_request(ip="192.0.2.1"),
        counters,
        beacon_request(ip="192.0.2.2"),
        missing,
        beacon_request(ip="192.0.2.3"),
        beacon_request(ip="192.0.2.4"),
    )
    statuses = []
    bodies = []
    for _ in range(6):
        status, _, body = await conn.response()
        statuses.append(status.split(" ")[1])
        bodies.append(body)
    assert statuses == ["204", "200", "204", "404", "204", "204"]
    # the counters were read after the first beacon was counted, before the second
    assert json.loads(bodies[1])["total"]["pageviews"] == 1
    assert answered(client) >= before + 1
    assert await pageviews(client) == 4


async def test_a_connection_that_sends_only_beacons_is_kept_alive(make_client):
    # the idle clock restarts with every beacon answered here, as aiohttp's does for its own
    client = await make_client()
    await add_site(client)
    server = client.server.runner.server
    server._kwargs["keepalive_timeout"] = 0.3
    conn = await Connection.to(client)
    await conn.settle()
    for i in range(8):
        conn.write(beacon_request(ip=f"203.0.113.{i + 1}"))
        assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
        await asyncio.sleep(0.1)
    assert await pageviews(client) == 8
    # and once idle, it is closed, as aiohttp closes any
    assert await conn.closed()
    conn.close()


async def test_the_first_request_of_a_connection_goes_through_aiohttp(client):
    before = answered(client)
    conn = await Connection.to(client)
    conn.write(beacon_request())  # at once: the connection's task has not started yet
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    conn.close()
    assert await pageviews(client) == 1
    assert answered(client) in (before, before + 1)  # either way, counted once


async def test_on_an_untested_aiohttp_the_service_uses_aiohttps_own_handler(
    monkeypatch, aiohttp_client, settings, clock
):
    monkeypatch.setattr(protocol, "supported", lambda: False)
    app = create_app(settings, clock=clock, registry=CollectorRegistry())
    client = await aiohttp_client(ServiceTestServer(app))
    assert not isinstance(client.server.runner.server, ServiceServer)
    assert isinstance(client.server.runner.server, web.Server)
    await add_site(client)
    assert (await send(client)).status == 204
    assert await pageviews(client) == 1


def test_supported_releases():
    assert protocol.supported("3.14.5")
    assert not protocol.supported("3.15.0")
    assert not protocol.supported("4.0.0")


def test_the_date_header_is_made_once_a_second():
    now = [1_795_000_000.2]
    date = HttpDate(lambda: now[0])
    first = date()
    assert first == b"Wed, 18 Nov 2026 11:06:40 GMT"
    now[0] += 0.5
    assert date() is first
    now[0] += 1
    assert date() == b"Wed, 18 Nov 2026 11:06:41 GMT"


def held_back(client: TestClient[Any, Any]) -> tuple[asyncio.Event, asyncio.Event]:
    """Holds the recorder's runs back until the second event is set (the first: one came)."""
    recorder = client.server.runner.server.answers.recorder
    submit_with, entered, release = recorder.submit_with, asyncio.Event(), asyncio.Event()

    def held_submit_with(hit: Any, on_outcome: Any) -> None:
        entered.set()

        async def later() -> None:
            await release.wait()
            submit_with(hit, on_outcome)

        tasks.add(asyncio.ensure_future(later()))

    tasks: set[asyncio.Future[None]] = set()
    recorder.submit_with = held_submit_with
    return entered, release


async def test_a_stop_waits_for_the_beacon_being_answered(client, conn):
    entered, release = held_back(client)
    conn.write(beacon_request())
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.ensure_future(client.server.close())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # the graceful stop waits for the beacon in hand
    release.set()
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    await asyncio.wait_for(stopping, 10)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode()


async def test_a_deep_pipeline_behind_a_beacon_is_answered_whole_and_in_order(client, conn):
    # more requests than aiohttp's parser queues at once (32): it stops, and must be fed again
    # once the beacon's answer lets the rest through; reading the beacon's body re-enters the
    # connection's data_received, which must find the beacon already in hand
    paths = [f"/missing-{i}" for i in range(40)]
    conn.write(beacon_request(ip="192.0.2.1"), *map(get, paths[:31]))
    conn.write(beacon_request(ip="192.0.2.2"), *map(get, paths[31:]))
    answers = [await conn.response() for _ in range(42)]
    statuses = [status.split(" ")[1] for status, _, _ in answers]
    assert statuses == ["204"] + ["404"] * 31 + ["204"] + ["404"] * 9
    assert await pageviews(client) == 2


async def test_a_beacon_in_hand_keeps_its_connection_alive(make_client):
    client = await make_client()
    await add_site(client)
    client.server.runner.server._kwargs["keepalive_timeout"] = 0.2
    entered, release = held_back(client)
    conn = await Connection.to(client)
    await conn.settle()
    conn.write(beacon_request())
    await asyncio.wait_for(entered.wait(), 10)
    await asyncio.sleep(0.6)
    release.set()
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    conn.close()


async def test_when_answering_fails_the_beacon_gets_a_500_and_the_connection_closes(
    client, conn, caplog
):
    views = client.server.runner.server.answers.views

    def broken(*args: Any) -> Any:
        raise web.HTTPFound("/elsewhere")  # no error answer_error knows: a bug in the path

    views.parse = broken
    conn.write(beacon_request(), get("/health"))
    status, headers, body = await conn.response()
    assert status == "HTTP/1.1 500 Internal Server Error"
    assert headers["Connection"] == "close"
    assert json.loads(body)["error"] == "internal"
    assert await conn.closed()  # the request behind it is not answered by mistake
    assert "answering a beacon failed" in caplog.text


async def test_a_beacon_hashed_with_another_salt_is_sent_again_and_counted_once(
    client, conn, clock
):
    """As `Recorder.record` does: another process made the day's salt first."""
    recorder, _, day = await salt_made_elsewhere(client, clock)
    before = answered(client)
    conn.write(beacon_request())
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    assert answered(client) == before + 1
    assert recorder.salts.get("caobang", day) == "ab" * 16
    assert await pageviews(client) == 1


async def test_a_salt_that_keeps_changing_is_a_503(client, conn):
    recorder = client.server.runner.server.answers.recorder

    def another_salt_each_time(hit: Any, on_outcome: Any) -> None:
        on_outcome((0, "ef" * 16), None)

    recorder.submit_with = another_salt_each_time
    conn.write(beacon_request())
    status, _, body = await conn.response()
    assert status == "HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["error"] == "storage_unavailable"


async def test_a_user_agent_that_is_not_utf8_is_counted_on_either_path(client, conn):
    # aiohttp hands such header bytes on as surrogates; the visitor is hashed from them as sent
    for target in ("/collect", "/collect?via=router"):
        request = beacon_request(target=target).replace(b"Chrome/131", b"Chrome/\xff131")
        conn.write(request)
        assert (await conn.response())[0] == "HTTP/1.1 204 No Content", target
    assert await pageviews(client) == 2


# The widget's hot reads, answered on the connection from the read cache


def reads_answered(client: TestClient[Any, Any]) -> int:
    """How many reads the connection's own path has answered."""
    reads = client.server.runner.server.reads
    assert reads is not None
    return int(reads.answered)


def read_request(target: str, extra: str = "", method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {target} HTTP/{version}\r\nHost: localhost\r\n{extra}\r\n".encode()


COUNTERS = "/api/v1/sites/caobang/counters"
ARTICLE_IDS = "/api/v1/sites/caobang/articles?ids=1,2,x-3"


@pytest.mark.parametrize(
    ("routed", "plain"),
    [
        (COUNTERS + "?via=router", COUNTERS),
        (ARTICLE_IDS + "&via=router", ARTICLE_IDS),
    ],
    ids=["counters", "articles"],
)
async def test_a_cached_read_is_answered_byte_for_byte_as_the_routed_handler(
    client, conn, routed, plain
):
    conn.write(beacon_request(ip="198.51.100.3"))  # something to count
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    before = reads_answered(client)
    conn.write(read_request(routed))  # another query: the routed handler, which fills the cache
    first = await conn.raw_response()
    conn.write(read_request(plain))
    direct = await conn.raw_response()
    assert reads_answered(client) == before + 1
    assert direct[0] == first[0] == "HTTP/1.1 200 OK"
    assert direct[2] == first[2]  # status line and headers, in order, but for the date
    assert direct[3] == first[3]
    assert direct[1]["Date"].endswith(" GMT")
    # and the answer to a client that has it: 304, as the routed handler answers it
    etag = first[1]["ETag"]
    conn.write(read_request(routed, f"If-None-Match: {etag}\r\n"))
    routed_304 = await conn.raw_response()
    conn.write(read_request(plain, f"If-None-Match: {etag}\r\n"))
    direct_304 = await conn.raw_response()
    assert reads_answered(client) == before + 2
    assert direct_304[0] == routed_304[0] == "HTTP/1.1 304 Not Modified"
    assert direct_304[2] == routed_304[2]
    assert direct_304[3] == routed_304[3] == b""


@pytest.mark.parametrize(
    ("request_bytes", "why"),
    [
        (read_request(COUNTERS, method="HEAD"), "HEAD"),
        (read_request(COUNTERS, version="1.0"), "HTTP/1.0"),
        (read_request(COUNTERS, "Connection: close\r\n"), "closes the connection"),
        (read_request(COUNTERS + "?x=1"), "another query"),
        (read_request("/api/v1/sites/caoban%67/counters"), "a percent-encoded path"),
        (read_request("/api/v1/sites/nowhere/counters"), "an unknown site"),
        (read_request("/api/v1/sites/caobang/articles?ids=1%2C2"), "encoded ids"),
        (
            read_request("/api/v1/sites/caobang/articles?ids=" + ",".join(map(str, range(101)))),
            "too many ids",
        ),
        (read_request("/api/v1/sites/caobang/articles?ids=1,,2"), "an empty id"),
        (read_request("/api/v1/sites/caobang/top"), "another read"),
        (read_request(COUNTERS, "Expect: 100-continue\r\n"), "expects 100-continue"),
    ],
)
async def test_what_is_not_a_plain_cached_read_goes_through_aiohttp(
    client, conn, request_bytes, why
):
    # the counters and this list of articles in the cache first (through aiohttp)
    for target in (COUNTERS, "/api/v1/sites/caobang/articles?ids=1,2"):
        conn.write(read_request(target + ("&" if "?" in target else "?") + "fill=1"))
        assert (await conn.response())[0] == "HTTP/1.1 200 OK"
    before = reads_answered(client)
    conn.write(request_bytes)
    status, _, _ = await conn.response(body=not request_bytes.startswith(b"HEAD"))
    assert status.split(" ")[1] in ("100", "200", "400", "404"), why  # 100: aiohttp's, first
    assert reads_answered(client) == before, why


async def test_a_read_the_cache_does_not_hold_goes_through_aiohttp_and_a_beacon_drops_it(
    client, conn
):
    before = reads_answered(client)
    conn.write(read_request(COUNTERS))  # nothing cached yet: the routed handler reads Redis
    assert json.loads((await conn.response())[2])["total"]["pageviews"] == 0
    assert reads_answered(client) == before
    conn.write(read_request(COUNTERS))  # now cached: answered here
    assert json.loads((await conn.response())[2])["total"]["pageviews"] == 0
    assert reads_answered(client) == before + 1
    conn.write(beacon_request(ip="198.51.100.4"), read_request(COUNTERS))  # pipelined
    assert (await conn.response())[0] == "HTTP/1.1 204 No Content"
    _, _, body = await conn.response()
    assert json.loads(body)["total"]["pageviews"] == 1  # the beacon dropped the cached read
    assert reads_answered(client) == before + 1


async def test_reads_answered_here_are_in_the_metrics_and_in_order(client, conn):
    conn.write(read_request(COUNTERS))
    await conn.response()  # fills the cache
    before = reads_answered(client)
    conn.write(
        read_request(COUNTERS),
        read_request("/no-such-page"),
        read_request(COUNTERS),
        beacon_request(ip="198.51.100.5"),
        read_request(COUNTERS),
    )
    statuses = [(await conn.response())[0].split(" ")[1] for _ in range(5)]
    assert statuses == ["200", "404", "200", "204", "200"]
    # the first answered here; the second waits behind the 404 aiohttp answers; the last comes
    # after the beacon, whose count dropped the cached read
    assert reads_answered(client) == before + 1
    _, found = await scrape(client)
    assert found['analytics_http_requests_total{route="counters",status="2xx"}'] == 4


async def test_an_unknown_expectation_is_refused_as_aiohttp_refuses_it(client, conn):
    conn.write(read_request(COUNTERS))
    await conn.response()  # cached now
    before = reads_answered(client)
    conn.write(read_request(COUNTERS, "Expect: something-else\r\n"))
    assert (await conn.response())[0] == "HTTP/1.1 417 Expectation Failed"
    assert reads_answered(client) == before


@pytest.mark.parametrize("beacon_at", [None, 20], ids=["reads", "reads-and-a-beacon"])
async def test_more_cached_reads_in_one_write_than_the_parser_hands_out_at_once(
    client, conn, beacon_at
):
    # aiohttp's parser stops after 32 requests not yet consumed and keeps the rest; reads
    # answered here are consumed at once, so the connection must feed it on itself
    conn.write(read_request(COUNTERS))
    await conn.response()  # cached now
    requests = [read_request(COUNTERS) for _ in range(40)]
    if beacon_at is not None:
        requests.insert(beacon_at, beacon_request(ip="198.51.100.6"))
    conn.write(*requests)
    statuses = [(await conn.response())[0].split(" ")[1] for _ in requests]
    expected = ["200"] * 40
    if beacon_at is not None:
        expected.insert(beacon_at, "204")
    assert statuses == expected


async def test_a_cached_read_lasts_a_second_of_the_clock_and_a_beacon_anywhere_drops_it(
    client, conn, clock
):
    conn.write(read_request(COUNTERS))
    await conn.response()
    before = reads_answered(client)
    conn.write(read_request(COUNTERS))
    await conn.response()
    assert reads_answered(client) == before + 1  # from the cache
    clock.advance(1.0)
    conn.write(read_request(COUNTERS))
    await conn.response()
    assert reads_answered(client) == before + 1  # a second later: read again, through aiohttp
    other = await Connection.to(client)
    await other.settle()
    try:
        other.write(beacon_request(ip="198.51.100.7"))  # a beacon on another connection
        assert (await other.response())[0] == "HTTP/1.1 204 No Content"
    finally:
        other.close()
    conn.write(read_request(COUNTERS))
    _, _, body = await conn.response()
    assert json.loads(body)["total"]["pageviews"] == 1
    assert reads_answered(client) == before + 1  # its count dropped the cached read


async def test_a_read_that_fails_to_be_answered_here_is_answered_by_aiohttp(client, conn, caplog):
    conn.write(read_request(COUNTERS))
    await conn.response()
    reads = client.server.runner.server.reads

    def broken(*args: Any) -> bytes:
        raise RuntimeError("a bug in the read path")

    reads.answer = broken
    conn.write(read_request(COUNTERS), read_request(COUNTERS))
    assert [(await conn.response())[0] for _ in range(2)] == ["HTTP/1.1 200 OK"] * 2
    assert "answering a read on the connection failed" in caplog.text

"""The group commit (`aggregations.pipeline`) against the real Redis: every caller gets its own
reply, errors stay with the command that caused them, and a lost Redis fails only what waited."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from aggregations.counters import MAX_BATCH
from aggregations.pipeline import GroupCommit, bulks, pack
from analytics import appkeys as K
from tests.abuse_helpers import pageviews
from tests.conftest import send
from tests.proxy import redis_proxy
from tests.stores import Stores
from tests.test_counting import hit_at


@pytest.fixture
async def pipe(stores: Stores):
    p = GroupCommit(stores.redis_url, timeout=2.0)
    yield p
    await p.aclose()


def test_pack_is_resp():
    assert pack(b"SET", b"k", b"v") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert bulks(["a", 12, b"\xff"]) == b"$1\r\na\r\n$2\r\n12\r\n$1\r\n\xff\r\n"


async def test_concurrent_calls_share_one_write_and_get_their_own_replies(pipe, prefix):
    writes = []
    await pipe.execute(pack(b"PING"))  # connected
    transport = pipe._conn.transport
    real_write = transport.write
    transport.write = lambda data: (writes.append(data), real_write(data))[1]
    key = f"{prefix}:{{p}}:n".encode()
    replies = await asyncio.gather(*(pipe.execute(pack(b"INCR", key)) for _ in range(50)))
    assert replies == list(range(1, 51))
    assert len(writes) == 1


async def test_an_error_reply_fails_only_its_own_command(pipe, prefix):
    key = f"{prefix}:{{p}}:s".encode()
    ok, bad, ok2 = await asyncio.gather(
        pipe.execute(pack(b"SET", key, b"1")),
        pipe.execute(pack(b"INCRBY", key, b"not-a-number")),
        pipe.execute(pack(b"INCR", key)),
        return_exceptions=True,
    )
    assert ok == b"OK"
    assert isinstance(bad, ResponseError)
    assert ok2 == 2


async def test_an_unknown_script_is_noscript(pipe):
    sha = uuid.uuid4().hex + "00000000"
    with pytest.raises(NoScriptError):
        await pipe.execute(pack(b"EVALSHA", sha.encode(), b"0"))


async def test_a_lost_connection_fails_what_waits_then_reconnects(stores, prefix):
    proxy, url = await redis_proxy(stores.redis_url)
    pipe = GroupCommit(url, timeout=2.0)
    try:
        assert await pipe.execute(pack(b"PING")) == b"PONG"
        blocked = pipe.call(pack(b"BLPOP", f"{prefix}:{{p}}:never".encode(), b"0"))
        await asyncio.sleep(0.1)
        await proxy.stop()
        with pytest.raises(ConnectionError):
            await blocked
        with pytest.raises(ConnectionError):
            await pipe.execute(pack(b"PING"))  # Redis unreachable: refused at once
        await proxy.start()
        assert await pipe.execute(pack(b"PING")) == b"PONG"
    finally:
        await pipe.aclose()
        await proxy.stop()


async def test_a_silent_redis_times_out(stores, prefix):
    pipe = GroupCommit(stores.redis_url, timeout=0.4)
    try:
        with pytest.raises(TimeoutError):
            await pipe.execute(pack(b"BLPOP", f"{prefix}:{{p}}:never".encode(), b"0"))
        assert await pipe.execute(pack(b"PING")) == b"PONG"
    finally:
        await pipe.aclose()


async def test_a_receiver_is_called_as_its_reply_is_read_and_one_that_raises_stops_nothing(
    pipe, prefix, caplog
):
    key = f"{prefix}:{{p}}:r".encode()
    got: list[tuple[object, object, bool]] = []

    def broken(reply: object, error: object) -> None:
        raise RuntimeError("a receiver with a bug")

    def receiver(reply: object, error: object) -> None:
        # called while the connection hands out the replies it read, not on a later turn: the
        # future queued behind is not resolved yet (a future's callbacks would find it done)
        got.append((reply, error, after.done()))

    pipe.send(pack(b"INCR", key), broken)
    pipe.send(pack(b"INCR", key), receiver)
    pipe.send(pack(b"INCRBY", key, b"not-a-number"), receiver)
    after = pipe.call(pack(b"INCR", key))  # a future behind them still gets its own reply
    assert await after == 3
    assert got[0] == (2, None, False)
    assert got[1][0] is None
    assert isinstance(got[1][1], ResponseError)
    assert not got[1][2]
    assert "a Redis reply's receiver failed" in caplog.text


async def test_a_receiver_is_told_of_a_lost_connection_once(stores, prefix):
    proxy, url = await redis_proxy(stores.redis_url)
    pipe = GroupCommit(url, timeout=2.0)
    told: list[object] = []
    try:
        assert await pipe.execute(pack(b"PING")) == b"PONG"
        blocked = pack(b"BLPOP", f"{prefix}:{{p}}:never".encode(), b"0")
        pipe.send(blocked, lambda reply, error: told.append(error))
        await asyncio.sleep(0.1)
        await proxy.stop()
        for _ in range(50):
            if told:
                break
            await asyncio.sleep(0.02)
        assert len(told) == 1
        assert isinstance(told[0], ConnectionError)
    finally:
        await pipe.aclose()
    await proxy.start()
    closed: list[object] = []
    pipe.send(pack(b"PING"), lambda reply, error: closed.append(error))  # closed: told at once
    assert len(closed) == 1
    assert isinstance(closed[0], ConnectionError)


async def test_identical_reads_of_a_tick_share_one_run_but_never_an_older_one(pipe, prefix):
    key = f"{prefix}:{{p}}:c".encode()
    read = pack(b"GET", key)
    first = pipe.shared("c", read)
    assert pipe.shared("c", read) is first
    assert pipe.shared("other", read) is not first
    assert await first is None
    await pipe.execute(pack(b"SET", key, b"1"))
    later = pipe.shared("c", read)
    assert later is not first  # written after the first run: a run of its own
    assert await later == b"1"


def test_read_cache_keeps_a_read_one_second_and_forgets_a_site_on_drop():
    from aggregations.readcache import ReadCache

    cache = ReadCache(ttl=1.0)
    cache.put("a", "counters", 100.0, {"pv": 1}, cache.version("a"))
    cache.put("b", "counters", 100.0, {"pv": 2}, cache.version("b"))
    assert cache.get("a", "counters", 100.9) == {"pv": 1}
    assert cache.get("a", "counters", 101.0) is None  # a second later: read again
    assert cache.get("a", "counters", 99.0) is None  # a clock set back: read again
    cache.drop("a")
    assert cache.get("a", "counters", 100.5) is None
    assert cache.get("b", "counters", 100.5) == {"pv": 2}


def test_a_read_sent_before_a_drop_is_not_kept():
    from aggregations.readcache import ReadCache

    cache = ReadCache(ttl=1.0)
    version = cache.version("a")  # a read is sent...
    cache.drop("a")  # ...a beacon is acknowledged before its reply is handled...
    cache.put("a", "counters", 100.0, {"pv": 0}, version)  # ...so the reply may be older
    assert cache.get("a", "counters", 100.5) is None
    cache.put("a", "counters", 100.0, {"pv": 1}, cache.version("a"))
    assert cache.get("a", "counters", 100.5) == {"pv": 1}
    cache.put("b", "counters", 100.0, {"pv": 2}, cache.version("b"))  # other sites: unmoved
    assert cache.get("b", "counters", 100.5) == {"pv": 2}


async def test_a_read_answered_with_a_run_does_not_hide_the_runs_beacons(client, clock):
    """A read sent just before a full run, its reply read in the same chunk as the run's: the
    run's beacons are acknowledged (and the read cache dropped) as the run's reply is read,
    before the read's task resumes with counts from before them. Once acknowledged, a read must
    show them: the older reply is not kept."""
    reader, recorder = client.app[K.READER], client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    pipe = client.app[K.PIPE]
    assert (await send(client)).status == 204  # the pipeline's connection is open
    now = clock.now()
    before = (await reader.counters(site, now))["today"]["pageviews"]
    recorder.settled(hit_at(site, now, "x"))  # forget that read
    early = asyncio.ensure_future(reader.counters(site, now))
    await asyncio.sleep(0)  # the read is queued, not yet written
    acked = asyncio.Event()
    told: list[object] = []

    def on_outcome(hit: Any) -> Any:
        def told_of(outcome: object, error: object) -> None:
            recorder.settled(hit)  # as the connection's beacon path does, then answers 204
            told.append(outcome)
            if len(told) == MAX_BATCH:
                acked.set()

        return told_of

    for i in range(MAX_BATCH):  # a full run: written at once, after the read, in one write
        hit = hit_at(site, now, f"rw{i}")
        recorder.submit_with(hit, on_outcome(hit))
    assert pipe._queue == []  # both went out together
    await asyncio.wait_for(acked.wait(), 5)
    assert (await early)["today"]["pageviews"] == before  # sent before the run: older
    after = await reader.counters(site, now)  # after every acknowledgement: sees them all
    assert after["today"]["pageviews"] == before + MAX_BATCH


async def test_a_read_right_after_a_beacon_sees_it(client, clock):
    """The read cache never hides this process's own acknowledged writes."""
    from tests.conftest import send

    async def today():
        resp = await client.get("/api/v1/sites/caobang/counters")
        return (await resp.json())["today"]["pageviews"]

    assert await today() == 0
    for n in range(1, 4):
        assert (await send(client, ip=f"203.0.113.{n}")).status == 204
        assert await today() == n


async def test_the_counting_script_is_loaded_again_when_redis_lost_it(client):
    """After a Redis restart (or SCRIPT FLUSH) EVALSHA answers NOSCRIPT: the recorder loads the
    script and runs the hit again, once. A script text of our own, never loaded, stands for it."""
    from aggregations.counters import Hit, Recorder
    from aggregations.scripts import Scripts, lua
    from analytics import appkeys as K
    from tests.conftest import at

    app = client.app
    scripts = Scripts(app[K.REDIS])
    scripts.record = app[K.REDIS].register_script(lua("record") + f"\n-- {uuid.uuid4().hex}\n")
    assert not (await app[K.REDIS].script_exists(scripts.record.sha))[0]
    recorder = Recorder(
        app[K.REDIS],
        scripts,
        app[K.SETTINGS].redis_prefix,
        app[K.RECORDER].policy,
        pipe=app[K.PIPE],
    )
    site = app[K.SITES].get("caobang")
    recorded = await recorder.record(
        Hit(site=site, identity=b"id", network=b"net", ts=at("2026-11-27 10:00:00"), article="7")
    )
    assert recorded.new_visit
    assert (await app[K.REDIS].script_exists(scripts.record.sha))[0]


async def test_without_the_group_commit_hits_and_reads_go_through_redis_py(client):
    """On a Redis Cluster there is no group commit (`pipe` None): the recorder and the reader
    send the same commands through redis-py's client, which routes them to the site's node."""
    from aggregations.counters import Hit, Recorder
    from aggregations.reads import Reader
    from analytics import appkeys as K
    from tests.conftest import at

    app = client.app
    prefix = app[K.SETTINGS].redis_prefix
    recorder = Recorder(app[K.REDIS], app[K.SCRIPTS], prefix, app[K.RECORDER].policy, pipe=None)
    reader = Reader(app[K.REDIS], app[K.SCRIPTS], prefix, 300.0, pipe=None)
    site = app[K.SITES].get("caobang")
    now = at("2026-11-27 10:00:00")
    for n in range(3):
        hit = Hit(site=site, identity=b"v%d" % n, network=b"n%d" % n, ts=now, article="9")
        assert (await recorder.record(hit)).new_visit
    counters = await reader.counters(site, now)
    assert counters["today"]["pageviews"] == 3
    assert counters["online"] == 3
    assert await reader.articles(site, ["9", "10"], now) == [
        {"article": "9", "views": 3, "today": 3},
        {"article": "10", "views": 0, "today": 0},
    ]


async def test_a_full_run_is_written_to_redis_at_once_mid_tick(client, clock):
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    pipe = client.app[K.PIPE]
    assert pipe is not None, "a single Redis: on a Redis Cluster the runs bypass the pipeline"
    assert (await send(client)).status == 204  # the pipeline's connection is open
    transport = pipe._conn.transport
    writes: list[bytes] = []
    write = transport.write

    def counted_write(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = counted_write
    futures = [recorder.submit(hit_at(site, clock.now(), f"w{i}")) for i in range(MAX_BATCH + 1)]
    assert len(writes) == 1  # the full run, before this tick ends; the last hit waits for it
    assert writes[0].count(b"EVALSHA") == 1
    await asyncio.gather(*futures)
    assert len(writes) == 2
    assert await pageviews(client) == MAX_BATCH + 2


@pytest.mark.parametrize(
    "raised",
    [RuntimeError("a receiver with a bug"), asyncio.CancelledError()],
    ids=["an-error", "a-cancellation"],  # a BaseException, not an Exception
)
async def test_hit_receivers_are_each_told_once_and_one_that_raises_stops_nothing(
    client, clock, caplog, raised
):
    recorder = client.app[K.RECORDER]
    site = client.app[K.SITES].get("caobang")
    pipe = client.app[K.PIPE]
    assert (await send(client)).status == 204
    conn = pipe._conn
    told: list[tuple[str, object, object]] = []
    done = asyncio.Event()

    def receiver(who: str) -> Any:
        def on_outcome(outcome: object, error: object) -> None:
            told.append((who, outcome, error))
            if who == "r0":
                raise raised
            if len(told) == 3:
                done.set()

        return on_outcome

    for i in range(3):
        recorder.submit_with(hit_at(site, clock.now(), f"r{i}"), receiver(f"r{i}"))
    await asyncio.wait_for(done.wait(), 5)
    assert [who for who, _, _ in told] == ["r0", "r1", "r2"]
    assert all(outcome[0] == 1 and error is None for _, outcome, error in told)
    assert "a hit's receiver failed" in caplog.text
    assert (await send(client, ip="203.0.113.9")).status == 204
    assert pipe._conn is conn  # the same connection: nothing escaped into it
    assert await pageviews(client) == 5  # the first beacon, the three hits, the last beacon


async def test_a_flush_after_close_opens_no_connection(stores):
    pipe = GroupCommit(stores.redis_url, timeout=2.0)
    await pipe.execute(pack(b"PING"))
    await pipe.aclose()
    refused = pipe.call(pack(b"PING"))
    pipe.flush()
    with pytest.raises(ConnectionError):
        await refused
    await asyncio.sleep(0.05)
    assert pipe._conn is None
    assert pipe._connecting is None

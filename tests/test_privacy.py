"""Privacy: no client address or user agent in Redis, PostgreSQL or the logs; daily salts random,
rotated at the site's local midnight and gone 48 h after their day began, in Redis and in memory.

The search runs the real service (`analytics serve`, debug logging and the access log on) and
sends it beacons from recognisable addresses and user agents: through the trusted proxy (IPv4 and
IPv6 in X-Forwarded-For), directly from an untrusted loopback address, by the pixel, as a bot,
past the rate limit, malformed, and as requests too absurd for the HTTP parser. Then it reads every
key under the service's prefix (by type, and its DUMP), every row of every PostgreSQL table and
the whole log, looking for them in every form it could take. What is stored by design (an article
id, a title, an access-log line) is searched for the same way and must be found, so a search that
cannot see is a failing test, not a passing one.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
from dataclasses import dataclass
from datetime import date
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from aggregations.counters import Salts
from aggregations.keys import SiteKeys
from analytics import appkeys as K
from collectors.screening import is_bot
from tests.conftest import BROWSER, add_site, at, send
from tests.processes import Service, clean_env
from tests.stores import sync_redis

TOKEN = "privacy-admin-token-" + secrets.token_hex(8)
LONDON = ZoneInfo("Europe/London")


@dataclass(frozen=True)
class Marks:
    """Recognisable values, random per run so that nothing else can contain them by chance."""

    v4: str
    v6: str
    peer: str  # a loopback address of its own: the untrusted client connecting directly
    ua_token: str
    referrer: str
    article: str  # stored by design: a canary
    title: str  # stored by design: a canary

    @classmethod
    def new(cls) -> Marks:
        n = [secrets.randbelow(250) + 2 for _ in range(6)]
        tag = secrets.token_hex(6)
        return cls(
            v4=f"198.18.{n[0]}.{n[1]}",
            v6=f"2001:db8:{n[2]:x}{n[3]:02x}:{tag[:4]}::{tag[4:8]}",
            peer=f"127.{n[3]}.{n[4]}.{n[5]}",
            ua_token=f"Sentinel{tag}",
            referrer=f"https://ref-{tag}.example/search?q=my+name",
            article=f"art-{tag}",
            title=f"Tin tức {tag} ở Cao Bằng",
        )

    @property
    def user_agent(self) -> str:
        return f"{BROWSER} {self.ua_token}/1.0"

    def secrets(self) -> dict[str, bytes]:
        """Every form in which an address or user agent could be kept, by name."""
        v6 = IPv6Address(self.v6)
        net64 = f"{v6.exploded.rsplit(':', 4)[0]}"
        forms = {
            "IPv4 address": self.v4,
            "IPv6 address": self.v6,
            "IPv6 address, exploded": v6.exploded,
            "IPv6 /64, exploded": net64,
            "IPv6 /64": self.v6.rsplit("::", 1)[0] + "::/64",
            "untrusted peer address": self.peer,
            "user agent": self.ua_token,
            "referrer": self.referrer.split("/")[2],
            "admin token": TOKEN,
        }
        found = {name: value.encode() for name, value in forms.items()}
        found |= {name + ", hex": value.encode().hex().encode() for name, value in forms.items()}
        return found


def request(
    service: Service,
    method: str,
    path: str,
    body: Any = None,
    source: str | None = None,
    **headers: str,
) -> int:
    """One request; from the loopback address `source` when given, else via 127.0.0.1."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", service.port, timeout=10, source_address=(source, 0) if source else None
    )
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def raw(service: Service, data: bytes, source: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", service.port, source_address=(source, 0))
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.sendall(data)
        return conn.sock.recv(200)
    finally:
        conn.close()


def beacon(marks: Marks, **extra: Any) -> dict[str, Any]:
    return {
        "site": "caobang",
        "url": "https://caobang.gov.vn/tin-tuc/" + marks.article,
        "referrer": marks.referrer,
        "article": marks.article,
        "title": marks.title,
        **extra,
    }


def exercise(service: Service, m: Marks) -> None:
    """Every path a beacon from these clients can take, honest and not."""
    admin = {"Authorization": f"Bearer {TOKEN}"}
    site = {"domains": ["caobang.gov.vn"], "name": "Cao Bằng"}
    assert request(service, "PUT", "/api/v1/sites/caobang", site, **admin) == 201
    browser = {"User-Agent": m.user_agent, "Origin": "https://caobang.gov.vn"}
    via_v4 = {**browser, "X-Forwarded-For": m.v4}
    via_v6 = {**browser, "X-Forwarded-For": f"203.0.113.1, {m.v6}"}
    # counted: through the proxy over IPv4 and IPv6, directly, and by the pixel
    assert request(service, "POST", "/collect", beacon(m), **via_v4) == 204
    assert request(service, "POST", "/collect?counters=1", beacon(m), **via_v6) == 200
    forged = {**browser, "X-Forwarded-For": "192.0.2.1"}
    assert request(service, "POST", "/collect", beacon(m), source=m.peer, **forged) == 204
    pixel = (
        "/collect.gif?site=caobang&url=https%3A%2F%2Fcaobang.gov.vn%2F&article="
        + m.article
        + "&referrer="
        + m.referrer.replace(":", "%3A").replace("/", "%2F")
    )
    headers = {"User-Agent": m.user_agent, "Referer": "https://caobang.gov.vn/"}
    assert request(service, "GET", pixel, **headers, **{"X-Forwarded-For": m.v4}) == 200
    # past the rate limit (a burst of 3 in this service): refused
    assert request(service, "POST", "/collect", beacon(m), **via_v4) == 204
    assert request(service, "POST", "/collect", beacon(m), **via_v4) == 429
    # dropped or refused for what they are
    bot = {**via_v6, "User-Agent": f"Googlebot/2.1 {m.ua_token}"}
    assert request(service, "POST", "/collect", beacon(m), **bot) == 204
    assert request(service, "POST", "/collect", beacon(m, article="a b"), **via_v6) == 400
    foreign = {**via_v6, "Origin": "https://evil.example"}
    assert request(service, "POST", "/collect", beacon(m), **foreign) == 403
    assert request(service, "POST", "/collect", beacon(m, site="nowhere"), **via_v6) == 404
    big = beacon(m, title="x" * 9000)
    assert request(service, "POST", "/collect", big, source=m.peer, **browser) == 413
    # too absurd for the HTTP parser, from the untrusted peer
    line = raw(service, b"POST /collect HTTP/1.1\r\nUser-Agent: " + b"Sentinel" * 1500, m.peer)
    assert line.startswith(b"HTTP/1.0 400"), line
    head = f"GET /collect.gif?site=caobang&q={m.ua_token * 1000} HTTP/1.1\r\n\r\n"
    assert raw(service, head.encode(), m.peer).startswith(b"HTTP/1.0 400")
    # the admin token anywhere but in Authorization is refused (and must not be logged)
    assert request(service, "GET", f"/api/v1/sites?token={TOKEN}", source=m.peer) == 401
    assert request(service, "GET", "/api/v1/sites", **admin) == 200


def redis_dump(url: str, prefix: str) -> dict[bytes, bytes]:
    """Every key under `prefix` with everything it holds, read by type (sound: DUMP's format may
    compress values, so a search in it alone could miss what it holds) and its DUMP."""
    client = sync_redis(url)
    try:
        found: dict[bytes, bytes] = {}
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = client.type(key)
            if kind == b"string":
                parts = [client.get(key)]
            elif kind == b"hash":
                parts = [x for kv in client.hgetall(key).items() for x in kv]
            elif kind == b"set":
                parts = list(client.smembers(key))
            elif kind == b"zset":
                parts = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == b"list":
                parts = client.lrange(key, 0, -1)
            else:
                raise AssertionError(f"{key!r} is a {kind!r}: read it here too")
            found[key] = b"\n".join([key, *(p or b"" for p in parts), client.dump(key) or b""])
        return found
    finally:
        client.close()


async def table_dump(db: asyncpg.Connection) -> dict[str, str]:
    """Every row of every table of the database, as PostgreSQL writes it (bytea as hex)."""
    tables = await db.fetch(
        "SELECT table_schema, table_name FROM information_schema.tables"
        " WHERE table_type = 'BASE TABLE'"
        " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
    )
    assert len(tables) >= 8
    found = {}
    for schema, name in tables:
        rows = await db.fetch(f'SELECT t::text AS row FROM "{schema}"."{name}" t')
        found[f"{schema}.{name}"] = "\n".join(r["row"] for r in rows)
    return found


def where(needle: bytes, haystacks: dict[Any, bytes]) -> list[Any]:
    return [name for name, hay in haystacks.items() if needle.lower() in hay.lower()]


async def test_no_address_or_user_agent_is_kept_in_redis_postgres_or_logs(
    stores, prefix, db, tmp_path: Path
):
    marks = Marks.new()
    assert not is_bot(marks.user_agent)
    env = clean_env(
        ANALYTICS_REDIS_URL=stores.redis_url,
        ANALYTICS_DATABASE_URL=stores.database_url,
        ANALYTICS_REDIS_PREFIX=prefix,
        ANALYTICS_ADMIN_TOKEN=TOKEN,
        ANALYTICS_TRUSTED_PROXIES="127.0.0.1",
        ANALYTICS_RATE_LIMIT_PER_MINUTE="1",
        ANALYTICS_RATE_LIMIT_BURST="3",
        ANALYTICS_LOG_LEVEL="DEBUG",
        ANALYTICS_ACCESS_LOG="true",
        ANALYTICS_ROLLUP_INTERVAL="3600",
    )
    service = Service(env, tmp_path / "service.log")
    await asyncio.to_thread(service.start)
    try:
        await asyncio.to_thread(exercise, service, marks)
    finally:
        assert await asyncio.to_thread(service.stop) == 0, service.output()  # final rollup

    in_redis = redis_dump(stores.redis_url, prefix)
    in_postgres = {k: v.encode() for k, v in (await table_dump(db)).items()}
    log = service.output()
    in_log = {"log": log.encode()}

    # the canaries: what is kept by design is found by the very same search
    assert where(marks.article.encode(), in_redis)
    assert where(marks.article.encode(), in_postgres)
    assert where(marks.title.encode(), in_postgres) == ["public.articles"]
    assert "POST /collect 204" in log  # the access log was on
    assert "refused a request that is not valid HTTP: LineTooLong (400)" in log
    views = await db.fetchval("SELECT views FROM articles WHERE article = $1", marks.article)
    assert views == 3  # three people: the IPv4 one (thrice, one visit), the IPv6 one, the peer

    leaks = {
        name: {"redis": where(secret, in_redis), "postgres": where(secret, in_postgres)}
        | {"log": where(secret, in_log)}
        for name, secret in marks.secrets().items()
    }
    assert {n: w for n, w in leaks.items() if any(w.values())} == {}


async def test_what_identifies_a_visitor_expires(client, settings):
    """The salt, the recent-visitor set, a visit's articles and the rate buckets all expire:
    nothing derived from a visitor is kept without a time limit."""
    await send(client, article="1")
    r = sync_redis(settings.redis_url)
    try:
        keys = [k.decode() for k in r.scan_iter(match=f"{settings.redis_prefix}:*")]
        kinds = (":salt:", ":seen", ":va:", ":rl")
        per_visitor = [k for k in keys if any(kind in k for kind in kinds)]
        # the rate bucket lives seconds (real ones): on a slow machine it may be gone already
        assert {kind for kind in kinds for k in per_visitor if kind in k} >= set(kinds[:3]), keys
        for key in per_visitor:
            ttl = r.pttl(key)
            assert ttl == -2 or 0 < ttl <= 48 * 3600 * 1000, (key, ttl)  # -1 would be forever
    finally:
        r.close()


async def test_the_salt_rotates_at_the_sites_local_midnight(client, clock, settings):
    """A London site: its salt (and so every visitor id) changes at midnight in London, not in
    Hanoi; each salt lives until 48 h after its London day began."""
    await add_site(client, "london", domains=[], timezone="Europe/London")
    r = sync_redis(settings.redis_url)
    keys = SiteKeys(settings.redis_prefix, "london")
    url = "https://example.co.uk/"
    try:
        clock.set(at("2026-11-27 23:59:30", LONDON))  # 06:59:30 on the 28th in Hanoi
        await send(client, "london", url=url)
        first = r.get(keys.salt(date(2026, 11, 27)))
        assert first is not None
        assert r.get(keys.salt(date(2026, 11, 28))) is None
        assert 24 * 3600 + 25 <= r.ttl(keys.salt(date(2026, 11, 27))) <= 24 * 3600 + 30
        clock.advance(60)  # 00:00:30 in London
        await send(client, "london", url=url)
        second = r.get(keys.salt(date(2026, 11, 28)))
        assert second is not None
        assert second != first
        assert 48 * 3600 - 35 <= r.ttl(keys.salt(date(2026, 11, 28))) <= 48 * 3600 - 30
    finally:
        r.close()
    body = await (await client.get("/api/v1/sites/london/counters")).json()
    # one person a minute apart, but two salts: two visitors (and two visits) this week
    assert body["this_week"] == {"pageviews": 2, "visits": 2, "visitors": 2}
    assert body["today"] == {"pageviews": 1, "visits": 1, "visitors": 1}


async def test_a_process_forgets_old_salts_too(client, clock):
    recorder = client.server.app[K.RECORDER]
    for day in ("2026-11-27", "2026-11-28", "2026-11-29"):
        clock.set(at(f"{day} 10:00:00"))
        assert (await send(client)).status == 204
    assert recorder.salts.days() == {date(2026, 11, 28), date(2026, 11, 29)}


def test_salts_are_random_and_forgotten_two_days_on():
    salts = Salts()
    day = date(2026, 11, 27)
    first = salts.get("caobang", day)
    assert len(first) == 32
    assert salts.get("caobang", day) == first
    assert Salts().get("caobang", day) != first
    salts.get("backan", date(2026, 11, 28))
    assert salts.days() == {day, date(2026, 11, 28)}
    salts.get("caobang", date(2026, 11, 29))
    assert salts.days() == {date(2026, 11, 28), date(2026, 11, 29)}

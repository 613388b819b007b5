"""Bad input gets a clear JSON error and counts nothing; bots and prefetches count nothing."""

from __future__ import annotations

import pytest

from tests.conftest import BROWSER, send


async def assert_nothing_counted(client):
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["total"] == {"pageviews": 0, "visits": 0, "visitors": 0}
    assert body["online"] == 0


async def post_raw(client, body, content_type="text/plain;charset=UTF-8", **headers):
    return await client.post(
        "/collect",
        data=body,
        headers={"Content-Type": content_type, "User-Agent": BROWSER, **headers},
    )


async def error_of(resp, status):
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) <= {"error", "detail", "field"}
    assert body["detail"]
    return body


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[1, 2]", None),
        (b'"caobang"', None),
        (b"\xff\xfe{}", None),
        (b'{"site": "caobang", "url": "https://caobang.gov.vn/\xff"}', None),
        (b'{"url": "https://caobang.gov.vn/"}', "site"),
        (b'{"site": "caobang"}', "url"),
        (b'{"site": 7, "url": "https://caobang.gov.vn/"}', "site"),
        (b'{"site": "Cao Bang", "url": "https://caobang.gov.vn/"}', "site"),
        (b'{"site": "-caobang", "url": "https://caobang.gov.vn/"}', "site"),
        (b'{"site": "caobang", "url": "caobang.gov.vn/tin-tuc"}', "url"),
        (b'{"site": "caobang", "url": "javascript:alert(1)"}', "url"),
        (b'{"site": "caobang", "url": ""}', "url"),
        (b'{"site": "caobang", "url": "https://caobang.gov.vn/", "article": ""}', "article"),
        (b'{"site": "caobang", "url": "https://caobang.gov.vn/", "article": "a b"}', "article"),
        (b'{"site": "caobang", "url": "https://caobang.gov.vn/", "article": 123}', "article"),
        (
            b'{"site": "caobang", "url": "https://caobang.gov.vn/", "article": "1\'; DROP TABLE'
            b' articles; --"}',
            "article",
        ),
        (b'{"site": "caobang", "url": "https://caobang.gov.vn/", "title": 5}', "title"),
    ],
)
async def test_malformed_beacons_are_400_with_field(client, raw, field):
    body = await error_of(await post_raw(client, raw), 400)
    assert body["error"] == "invalid"
    assert body.get("field") == field
    await assert_nothing_counted(client)


async def test_long_fields_are_refused(client):
    long_url = "https://caobang.gov.vn/" + "a" * 2000
    body = await error_of(await send(client, url=long_url), 400)
    assert body["field"] == "url"
    body = await error_of(await send(client, title="t" * 301), 400)
    assert body["field"] == "title"
    body = await error_of(await send(client, article="x" * 129), 400)
    assert body["field"] == "article"
    await assert_nothing_counted(client)


async def test_json_content_type_is_accepted(client):
    raw = b'{"site": "caobang", "url": "https://caobang.gov.vn/"}'
    assert (await post_raw(client, raw, "application/json")).status == 204


async def test_the_same_body_again_is_judged_again(client):
    """Bodies are parsed through a cache: a bad one is refused every time, and a good one
    counts every time, with its title cleaned as the first time."""
    bad = b'{"site": "caobang", "url": "caobang.gov.vn/tin-tuc"}'
    for _ in range(2):
        assert (await error_of(await post_raw(client, bad), 400))["field"] == "url"
    good = (
        b'{"site": "caobang", "url": "https://caobang.gov.vn/tin-tuc/7", "article": "7",'
        b' "title": "Th\\u00f4ng b\\u00e1o\\n\\t s\\u1ed1 7 "}'
    )
    for ip in ("203.0.113.7", "203.0.113.8"):
        resp = await post_raw(client, good, **{"X-Forwarded-For": ip})
        assert resp.status == 204, await resp.text()
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["total"]["pageviews"] == 2
    assert body["total"]["visitors"] == 2
    top = await (await client.get("/api/v1/sites/caobang/top?period=today")).json()
    assert top["articles"][0]["article"] == "7"
    assert top["articles"][0]["views"] == 2
    assert top["articles"][0]["title"] == "Thông báo  s\u1ed1 7"  # the controls: one space


async def test_unknown_site_is_404(client):
    body = await error_of(await send(client, "lamdong", url="https://lamdong.gov.vn/"), 404)
    assert body == {
        "error": "unknown_site",
        "detail": "site 'lamdong' is not configured here",
        "field": "site",
    }


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://caobang.gov.vn.evil.example",
        "https://notcaobang.gov.vn",
        "null",
    ],
)
async def test_foreign_origin_is_403(client, origin):
    body = await error_of(await send(client, headers={"Origin": origin}), 403)
    assert body["error"] == "origin_not_allowed"
    await assert_nothing_counted(client)


@pytest.mark.parametrize(
    "origin",
    [
        "https://caobang.gov.vn",
        "http://caobang.gov.vn:8080",
        "https://www.caobang.gov.vn",
        "https://sogd.caobang.gov.vn",
    ],
)
async def test_own_origins_and_subdomains_count(client, origin):
    url = origin + "/tin-tuc/1"
    assert (await send(client, url=url, headers={"Origin": origin})).status == 204


async def test_no_origin_header_is_not_refused(client):
    resp = await client.post(
        "/collect",
        json={"site": "caobang", "url": "https://caobang.gov.vn/"},
        headers={"User-Agent": BROWSER},
    )
    assert resp.status == 204


async def test_url_outside_the_site_is_403(client):
    body = await error_of(await send(client, url="https://evil.example/page"), 403)
    assert body["field"] == "url"
    await assert_nothing_counted(client)


async def test_body_over_8_kib_is_413(client):
    raw = b'{"site": "caobang", "url": "https://caobang.gov.vn/", "title": "' + b"x" * 9000 + b'"}'
    body = await error_of(await post_raw(client, raw), 413)
    assert body["error"] == "too_large"
    await assert_nothing_counted(client)


async def test_chunked_body_over_8_kib_is_413_without_reading_it_all(client):
    """The server answers 413 while the client is still sending: it never waits for the rest."""
    import asyncio

    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /collect HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\nUser-Agent: " + BROWSER.encode() + b"\r\n\r\n"
    )
    for _ in range(9):
        writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")  # 9 KiB, and no last chunk
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    await assert_nothing_counted(client)


@pytest.mark.parametrize(
    "ua",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
        " HeadlessChrome/131.0.0.0 Safari/537.36",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Zalo-Bot",
        "curl/8.5.0",
        "python-requests/2.32.3",
        "UptimeRobot/2.0",
        "",
    ],
)
async def test_bots_answer_204_and_count_nothing(client, ua):
    resp = await send(client, ua=ua, article="123")
    assert resp.status == 204
    await assert_nothing_counted(client)


@pytest.mark.parametrize(
    "header",
    [{"Sec-Purpose": "prefetch"}, {"Sec-Purpose": "prefetch;prerender"}, {"Purpose": "prefetch"}],
)
async def test_prefetch_answers_204_and_counts_nothing(client, header):
    assert (await send(client, headers=header)).status == 204
    await assert_nothing_counted(client)


async def test_counters_come_back_even_when_the_beacon_is_dropped(client):
    await send(client)
    resp = await send(client, ua="Googlebot/2.1", query="?counters=1")
    assert resp.status == 200
    assert (await resp.json())["today"]["pageviews"] == 1


async def test_dnt_is_honoured_only_where_the_site_asks(client):
    from tests.conftest import add_site

    assert (await send(client, headers={"DNT": "1"})).status == 204
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["today"]["pageviews"] == 1
    await add_site(client, domains=["caobang.gov.vn"], respect_dnt=True)
    assert (await send(client, headers={"DNT": "1"})).status == 204
    assert (await send(client, headers={"Sec-GPC": "1"})).status == 204
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["today"]["pageviews"] == 1


async def test_forged_forwarded_for_from_untrusted_peer_is_ignored(make_client, settings):
    import dataclasses

    from tests.conftest import add_site

    client = await make_client(settings=dataclasses.replace(settings, trusted_proxies=()))
    await add_site(client)
    for i in range(5):
        await send(client, ip=f"198.51.100.{i}")
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    # every beacon came from the loopback peer: one visitor, one visit
    assert body["today"] == {"pageviews": 5, "visits": 1, "visitors": 1}
    # the honest path of the same deployment: another browser there is another visitor
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
    assert (await send(client, ua=firefox)).status == 204
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["today"] == {"pageviews": 6, "visits": 2, "visitors": 2}


async def test_pixel_counts_and_refusals_still_answer_with_the_gif(client):
    query = "site=caobang&url=https%3A%2F%2Fcaobang.gov.vn%2Ftin-tuc%2F1&article=77"
    resp = await client.get(
        "/collect.gif?" + query,
        headers={"User-Agent": BROWSER, "Referer": "https://caobang.gov.vn/tin-tuc/1"},
    )
    assert resp.status == 200
    assert resp.content_type == "image/gif"
    assert resp.headers["Cache-Control"] == "no-store"
    assert (await resp.read()).startswith(b"GIF89a")
    views = await (await client.get("/api/v1/sites/caobang/articles/77")).json()
    assert views["views"] == 1

    bad = await client.get("/collect.gif?site=caobang", headers={"User-Agent": BROWSER})
    assert bad.status == 400
    assert bad.headers["X-Analytics-Error"] == "invalid"
    assert (await bad.read()).startswith(b"GIF89a")
    foreign = await client.get(
        "/collect.gif?" + query, headers={"User-Agent": BROWSER, "Referer": "https://evil.example/"}
    )
    assert foreign.status == 403
    assert foreign.headers["X-Analytics-Error"] == "origin_not_allowed"
    views = await (await client.get("/api/v1/sites/caobang/articles/77")).json()
    assert views["views"] == 1


async def test_tracker_script_is_served_cacheable(client):
    resp = await client.get("/t.js")
    assert resp.status == 200
    assert resp.content_type == "application/javascript"
    assert "max-age" in resp.headers["Cache-Control"]
    assert "sendBeacon" in await resp.text()
    again = await client.get("/t.js", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304
    raw = await client.get("/t.js", headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    zipped = await client.get("/t.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(await zipped.read()) < 1024 < len(await raw.read())


async def test_unknown_routes_and_methods_answer_json(client):
    body = await error_of(await client.get("/nope"), 404)
    assert body["error"] == "not_found"
    body = await error_of(await client.delete("/collect"), 405)
    assert body["error"] == "method_not_allowed"

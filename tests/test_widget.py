"""The widget's routes over HTTP: `/widget.js`, the iframe page, the badge; the read endpoints'
CORS and caching; the sizes of both scripts. (What they do in a browser: test_browser.)"""

from __future__ import annotations

import dataclasses
import gzip
from html.parser import HTMLParser
from typing import Any
from xml.etree import ElementTree

import pytest
from aiohttp.test_utils import TestClient

from analytics.routes import ROUTE_NAMES
from analytics.settings import Settings
from analytics.widget import badge_svg, group, online_minutes, text_width
from tests.conftest import ADMIN_TOKEN, MakeClient, add_site, send

SVG = "{http://www.w3.org/2000/svg}"
READS = [
    "/api/v1/sites/caobang/counters",
    "/api/v1/sites/caobang/articles/123",
    "/api/v1/sites/caobang/articles?ids=123,456",
    "/api/v1/sites/caobang/top?period=all",
    "/api/v1/sites/caobang/daily?from=2026-11-20&to=2026-11-27",
    "/widget/caobang",
    "/badge/caobang/123.svg",
]


async def with_baseline(client: TestClient[Any, Any]) -> None:
    """Two page views (one of article 123) on top of counts from an older counter."""
    await send(client, article="123")
    await send(client, ip="198.51.100.9")
    resp = await client.post(
        "/api/v1/sites/caobang/baseline",
        json={"total": {"pageviews": 4512301, "visits": 1234567}, "articles": {"123": 703}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize(
    ("n", "vi", "en"),
    [
        (0, "0", "0"),
        (999, "999", "999"),
        (1000, "1.000", "1,000"),
        (1234567, "1.234.567", "1,234,567"),
        (4512301000, "4.512.301.000", "4,512,301,000"),
    ],
)
def test_numbers_grouped_as_each_language_writes_them(n: int, vi: str, en: str) -> None:
    assert group(n, "vi") == vi
    assert group(n, "en") == en


def test_online_window_in_minutes() -> None:
    assert online_minutes(300) == "5"
    assert online_minutes(90) == "1.5"


def test_text_width_ignores_diacritics_and_grows_with_text() -> None:
    assert text_width("Lượt xem") == text_width("Luot xem")
    assert text_width("1.234") < text_width("12.345") < text_width("123.456")
    assert text_width("mmm") > text_width("iii")


def test_badge_parts_add_up() -> None:
    svg = ElementTree.fromstring(badge_svg("Lượt xem", "1.234"))
    rects = svg.findall(f"{SVG}g/{SVG}rect")
    assert int(rects[0].attrib["width"]) + int(rects[1].attrib["width"]) == int(svg.attrib["width"])
    assert int(rects[1].attrib["x"]) == int(rects[0].attrib["width"])


async def test_widget_script(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/widget.js", headers={"Accept-Encoding": "identity"})
    assert resp.status == 200
    assert resp.content_type == "application/javascript"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert resp.headers["Cache-Control"] == "public, max-age=3600"
    assert "Content-Encoding" not in resp.headers
    body = await resp.read()
    text = body.decode()
    assert "__CONFIG__" not in text
    assert "Thống kê truy cập" in text
    assert "Visitor statistics" in text
    assert '"minutes":"5"' in text
    assert ".an-box{" in text  # the styles come inside: one request

    resp = await client.get(
        "/widget.js", headers={"If-None-Match": resp.headers["ETag"], "Accept-Encoding": "identity"}
    )
    assert resp.status == 304


async def test_widget_script_gzipped_under_3_kb(client: TestClient[Any, Any]) -> None:
    resp = await client.get(
        "/widget.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    zipped = await resp.read()
    assert len(zipped) < 3 * 1024
    plain = await (await client.get("/widget.js", headers={"Accept-Encoding": "identity"})).read()
    assert gzip.decompress(zipped) == plain
    etag = resp.headers["ETag"]
    resp = await client.get(
        "/widget.js", headers={"If-None-Match": etag, "Accept-Encoding": "gzip"}
    )
    assert resp.status == 304


async def test_tracker_under_1_kb_gzipped(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/t.js")).read()
    assert len(gzip.compress(body, 9)) < 1024


async def test_online_window_comes_from_the_settings(
    make_client: MakeClient, settings: Settings
) -> None:
    client = await make_client(settings=dataclasses.replace(settings, online_window=120))
    await add_site(client)
    assert '"minutes":"2"' in await (await client.get("/widget.js")).text()
    page = await (await client.get("/widget/caobang")).text()
    assert "trong 2 phút qua" in page


class BoxParser(HTMLParser):
    """The rows of the box as [(class, title, label, number)], and the script tag's data."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.script: dict[str, str | None] = {}
        self.title = ""
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "div" and "an-r" in (a.get("class") or ""):
            self.rows.append([a["class"] or "", a.get("title") or ""])
        elif tag in ("dt", "dd") or (tag == "div" and a.get("class") == "an-h"):
            self._in = tag
        elif tag == "script":
            self.script = a

    def handle_data(self, data: str) -> None:
        if self._in == "div":
            self.title += data
        elif self._in:
            self.rows[-1].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


async def box_page(client: TestClient[Any, Any], query: str = "") -> BoxParser:
    resp = await client.get("/widget/caobang" + query)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/html"
    assert "X-Frame-Options" not in resp.headers  # it is meant to be framed
    parser = BoxParser()
    parser.feed(await resp.text())
    return parser


async def test_iframe_page_in_vietnamese(client: TestClient[Any, Any]) -> None:
    await with_baseline(client)
    page = await box_page(client)
    assert page.title == "Thống kê truy cập"
    assert page.rows == [
        ["an-r an-online", "Số người truy cập trong 5 phút qua", "Đang truy cập", "2"],
        [
            "an-r an-today",
            "2 lượt truy cập · 2 lượt xem trang · 2 người truy cập",
            "Hôm nay",
            "2",
        ],
        [
            "an-r an-yesterday",
            "0 lượt truy cập · 0 lượt xem trang · 0 người truy cập",
            "Hôm qua",
            "0",
        ],
        [
            "an-r an-week",
            "2 lượt truy cập · 2 lượt xem trang · 2 người truy cập",
            "Trong tuần",
            "2",
        ],
        [
            "an-r an-month",
            "2 lượt truy cập · 2 lượt xem trang · 2 người truy cập",
            "Trong tháng",
            "2",
        ],
        [
            "an-r an-total",
            "1.234.569 lượt truy cập · 4.512.303 lượt xem trang · 2 người truy cập",
            "Tổng lượt truy cập",
            "1.234.569",
        ],
    ]
    # the script takes over from there, refreshing the same box
    assert page.script == {
        "defer": None,
        "src": "../widget.js",
        "data-site": "caobang",
        "data-lang": "vi",
        "data-target": "#an",
    }


async def test_iframe_page_in_english(client: TestClient[Any, Any]) -> None:
    await with_baseline(client)
    page = await box_page(client, "?lang=en")
    assert page.title == "Visitor statistics"
    assert [r[2:] for r in page.rows] == [
        ["Online now", "2"],
        ["Today", "2"],
        ["Yesterday", "0"],
        ["This week", "2"],
        ["This month", "2"],
        ["Total visits", "1,234,569"],
    ]
    assert page.rows[0][1] == "Visitors in the last 5 minutes"
    assert page.rows[5][1] == "1,234,569 visits · 4,512,303 page views · 2 visitors"
    assert page.script["data-lang"] == "en"


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/widget/caobang?lang=fr", 400, "lang"),
        ("/widget/nowhere", 404, "site"),
        ("/widget/Bad!", 400, "site"),
        ("/badge/caobang/123.svg?lang=de", 400, "lang"),
        ("/badge/nowhere/123.svg", 404, "site"),
        ("/badge/caobang/a%20b.svg", 400, "article"),
    ],
)
async def test_widget_refusals_name_the_field(
    client: TestClient[Any, Any], path: str, status: int, field: str
) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert (await resp.json())["field"] == field


async def badge(client: TestClient[Any, Any], path: str) -> dict[str, Any]:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "image/svg+xml"
    svg = ElementTree.fromstring(await resp.read())
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    return {"label": svg.attrib["aria-label"], "texts": texts, "width": int(svg.attrib["width"])}


async def test_badge_shows_the_article_views(client: TestClient[Any, Any]) -> None:
    await with_baseline(client)
    found = await badge(client, "/badge/caobang/123.svg")
    assert found["label"] == "Lượt xem: 704"
    assert found["texts"] == ["Lượt xem", "Lượt xem", "704", "704"]  # shadow, then text

    await client.post(
        "/api/v1/sites/caobang/baseline",
        json={"articles": {"123": 1234566}},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    wide = await badge(client, "/badge/caobang/123.svg?lang=en")
    assert wide["texts"][2:] == ["1,234,567", "1,234,567"]
    assert wide["label"] == "Views: 1,234,567"
    vi = await badge(client, "/badge/caobang/123.svg")
    assert vi["texts"][2] == "1.234.567"
    assert vi["width"] > found["width"]


async def test_badge_of_an_article_never_seen_is_zero(client: TestClient[Any, Any]) -> None:
    found = await badge(client, "/badge/caobang/tin-moi.123.svg")
    assert found["label"] == "Lượt xem: 0"


@pytest.mark.parametrize("path", READS)
async def test_reads_are_public_short_lived_and_validated(
    client: TestClient[Any, Any], path: str
) -> None:
    await send(client, article="123")
    resp = await client.get(path, headers={"Origin": "https://elsewhere.example"})
    assert resp.status == 200, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    assert resp.headers["Cache-Control"] == "public, max-age=2"
    assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
    etag = resp.headers["ETag"]
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert again.headers["ETag"] == etag
    assert again.headers["Access-Control-Allow-Origin"] == "*"
    assert await again.read() == b""


@pytest.mark.parametrize(
    "path",
    [p.partition("?")[0] for p in READS if p.startswith("/api/")],
)
async def test_reads_answer_a_cors_preflight(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.options(
        path,
        headers={
            "Origin": "https://elsewhere.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert "If-None-Match" in resp.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_every_route_is_named_from_the_fixed_set(client: TestClient[Any, Any]) -> None:
    names = {r.name for r in client.app.router.resources() if r.name}
    assert names <= set(ROUTE_NAMES)
    assert {"widget_js", "widget_page", "badge", "read_preflight"} <= names

"""End to end in a real browser: a portal on another origin (localhost) embeds `t.js` and
`widget.js` from the service (127.0.0.1), and a person's Chromium reads it. The statistics box,
the article's "Lượt xem", one request per page view, the listing's batched read, either script
order or only one of them, the refresh while visible, Do Not Track, the iframe and the badge.

The service runs on the injected clock; the browser's own timers, where they matter, on
Playwright's fake clock. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Page, expect
from prometheus_client import CollectorRegistry

from aggregations.clock import ManualClock
from analytics.app import create_app
from analytics.lifecycle import rollup_pass
from analytics.pages import static_bytes
from analytics.settings import Settings
from tests.browser import Browser, chromium, screenshot
from tests.conftest import ADMIN_TOKEN, ServiceTestServer, add_site, send
from tests.portal import LISTING_IDS

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TOTAL_VISITS = 1234567
ARTICLE_1 = 703


@dataclass
class Stack:
    service: str  # http://127.0.0.1:P1
    portal: str  # http://localhost:P2, another origin
    admin: TestClient[Any, Any]
    registry: CollectorRegistry
    clock: ManualClock

    def sample(self, name: str, **labels: str) -> int:
        return int(self.registry.get_sample_value(name, labels) or 0)

    def served(self, route: str) -> int:
        return self.sample("analytics_http_requests_total", route=route, status="2xx")

    def beacons(self, result: str, reason: str) -> int:
        return self.sample("analytics_beacons_total", result=result, reason=reason)

    async def until_beacons(self, result: str, reason: str, n: int) -> None:
        """Wait (bounded) for a beacon that no page element reports, such as sendBeacon's."""
        for _ in range(200):
            if self.beacons(result, reason) >= n:
                break
            await asyncio.sleep(0.025)
        assert self.beacons(result, reason) == n

    async def counters(self) -> dict[str, Any]:
        resp = await self.admin.get("/api/v1/sites/caobang/counters")
        body: dict[str, Any] = await resp.json()
        return body

    async def site(self, **body: Any) -> None:
        await add_site(self.admin, domains=["localhost"], **body)

    async def visitor(self, n: int, article: str = "1") -> None:
        """Another person (the n-th, each from an address of their own) reads an article."""
        resp = await send(
            self.admin,
            ip=f"198.51.100.{n}",
            article=article,
            url=f"{self.portal}/tin-tuc/{article}",
            headers={"Origin": self.portal},
        )
        assert resp.status == 204, await resp.text()


@pytest.fixture
async def stack(
    aiohttp_server: Any, aiohttp_client: Any, settings: Settings, clock: ManualClock
) -> Stack:
    from tests.portal import portal_app

    registry = CollectorRegistry()
    server = ServiceTestServer(create_app(settings, clock=clock, registry=registry))
    admin: TestClient[Any, Any] = await aiohttp_client(server)
    await add_site(admin, domains=["localhost"])
    resp = await admin.post(
        "/api/v1/sites/caobang/baseline",
        json={
            "total": {"pageviews": 4512301, "visits": TOTAL_VISITS},
            "articles": {"1": ARTICLE_1, "bai-5": 12, "bai-120": 1500},
        },
        headers=ADMIN,
    )
    assert resp.status == 200, await resp.text()
    assert await rollup_pass(server.app, wait=True)  # builds the live counters, baseline in
    service = f"http://127.0.0.1:{server.port}"
    portal: TestServer = await aiohttp_server(portal_app(service))
    return Stack(service, f"http://localhost:{portal.port}", admin, registry, clock)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with chromium(tmp_path / "profile") as b:
        yield b


async def box(page: Page, frame: str | None = None) -> dict[str, tuple[str, str | None]]:
    """The statistics box as {label: (number, tooltip)}."""
    scope: Any = page.frame_locator(frame) if frame else page
    rows = await scope.locator(".an-box .an-r").all()
    found = {}
    for row in rows:
        found[await row.locator("dt").inner_text()] = (
            await row.locator("dd").inner_text(),
            await row.get_attribute("title"),
        )
    return found


def grouped(n: int, lang: str) -> str:
    return f"{n:,}".replace(",", "." if lang == "vi" else ",")


LABELS = {
    "vi": (
        "Đang truy cập",
        "Hôm nay",
        "Hôm qua",
        "Trong tuần",
        "Trong tháng",
        "Tổng lượt truy cập",
    ),
    "en": ("Online now", "Today", "Yesterday", "This week", "This month", "Total visits"),
}
TIPS = {
    "vi": (
        "Số người truy cập trong 5 phút qua",
        "lượt truy cập",
        "lượt xem trang",
        "người truy cập",
    ),
    "en": ("Visitors in the last 5 minutes", "visits", "page views", "visitors"),
}


def expected_box(lang: str, pageviews: int, visits: int) -> dict[str, tuple[str, str | None]]:
    """The box after `pageviews` page views in `visits` visits by one person, all today."""
    online, *words = TIPS[lang]

    def tip(v: int, pv: int, people: int) -> str:
        return " · ".join(
            f"{grouped(n, lang)} {w}" for n, w in zip((v, pv, people), words, strict=True)
        )

    total = tip(TOTAL_VISITS + visits, 4512301 + pageviews, 1)
    today = tip(visits, pageviews, 1)
    numbers = [
        ("1", online),
        (str(visits), today),
        ("0", tip(0, 0, 0)),
        (str(visits), today),
        (str(visits), today),
        (grouped(TOTAL_VISITS + visits, lang), total),
    ]
    return dict(zip(LABELS[lang], numbers, strict=True))


async def read_articles(stack: Stack, browser: Browser, lang: str) -> Page:
    """Article 1, article 2, back to article 1 by the portal's links, and article 1 again once
    the visit has ended: what each page shows, and that each page view is one request."""
    page = await browser.page(http_cache=False)
    query = "?lang=en" if lang == "en" else ""
    pageviews = TIPS[lang][2]

    async def settled(article: str, views: int, pv: int, visits: int, others: str) -> None:
        await expect(page.locator("#stats .an-today")).to_have_attribute(
            "title", re.compile(rf"· {pv} {pageviews} ·")
        )
        assert await page.locator("#views").inner_text() == grouped(views, "vi")
        assert await box(page) == expected_box(lang, pv, visits)
        assert await browser.requests(page) == [
            "POST /collect?counters=1",
            f"GET /api/v1/sites/caobang/articles?ids={others}",
        ]
        assert page.url == f"{stack.portal}/tin-tuc/{article}{query}"

    await page.goto(f"{stack.portal}/tin-tuc/1{query}")
    await settled("1", ARTICLE_1 + 1, pv=1, visits=1, others="2,3")

    stack.clock.advance(60)
    await page.click("nav >> text=Tin 2")
    await settled("2", 1, pv=2, visits=1, others="1,3")
    await expect(page.locator('[data-analytics-views="1"]')).to_have_text(str(ARTICLE_1 + 1))

    stack.clock.advance(60)
    await page.click('.other a[href^="/tin-tuc/1"]')
    # the same visit: article 1 does not count again
    await settled("1", ARTICLE_1 + 1, pv=3, visits=1, others="2,3")
    await expect(page.locator('[data-analytics-views="2"]')).to_have_text("1")
    await screenshot(page, f"portal-{lang}.png")
    await screenshot(page, f"widget-{lang}.png", "#stats")

    stack.clock.advance(31 * 60)  # past the visit timeout: a new visit reads it again
    await page.reload()
    await settled("1", ARTICLE_1 + 2, pv=4, visits=2, others="2,3")

    assert stack.served("collect") == 4
    assert stack.served("counters") == 0  # every number came with the beacon's answer
    today = (await stack.counters())["today"]
    assert today == {"pageviews": 4, "visits": 2, "visitors": 1}
    assert browser.errors == []
    return page


async def test_article_pages_in_vietnamese(stack: Stack, browser: Browser) -> None:
    page = await read_articles(stack, browser, "vi")
    assert await page.locator("#stats .an-box").get_attribute("lang") == "vi"
    assert await page.locator("#stats .an-h").inner_text() == "THỐNG KÊ TRUY CẬP"


async def test_article_pages_in_english(stack: Stack, browser: Browser) -> None:
    page = await read_articles(stack, browser, "en")
    assert await page.locator("#stats .an-box").get_attribute("lang") == "en"
    assert await page.locator("#stats .an-h").inner_text() == "VISITOR STATISTICS"


async def test_listing_fills_every_count_with_batched_reads(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/danh-muc")
    await expect(page.locator('[data-analytics-views="bai-120"]')).to_have_text("1.500")
    await expect(page.locator('[data-analytics-views="bai-5"]')).to_have_text("12")
    texts = await page.locator("[data-analytics-views]").all_inner_texts()
    assert len(texts) == len(LISTING_IDS) == 130
    assert sorted(texts) == sorted(["0"] * 128 + ["12", "1.500"])
    # 130 ids: two reads of at most 100, not one read per element
    assert await browser.requests(page) == [
        "POST /collect?counters=1",
        "GET /api/v1/sites/caobang/articles?ids=" + ",".join(LISTING_IDS[:100]),
        "GET /api/v1/sites/caobang/articles?ids=" + ",".join(LISTING_IDS[100:]),
    ]
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    assert browser.errors == []


@pytest.mark.parametrize(
    "order", ["tw", "wt", "tw-slow-widget", "wt-slow-tracker", "tw-slow-widget-no-timing"]
)
async def test_one_request_whichever_script_comes_first(
    stack: Stack, browser: Browser, order: str
) -> None:
    """Both deferred; one of them slow to arrive or not: the tracker waits for the widget. Also
    where the page's timing cannot tell whether DOMContentLoaded has come (performance.timing
    gone, as in a browser that drops it or under a faked clock)."""
    page = await browser.page()
    order, no_timing, _ = order.partition("-no-timing")
    if no_timing:
        await page.add_init_script(NO_TIMING)
    slow = order.partition("-slow-")[2]
    if slow:

        async def late(route: Any) -> None:
            await asyncio.sleep(0.4)
            await route.continue_()

        await page.route(f"**/{'widget' if slow == 'widget' else 't'}.js", late)
    await page.goto(f"{stack.portal}/tin-tuc/1?order={order[:2]}")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 1))
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    assert await browser.requests(page) == [
        "POST /collect?counters=1",
        "GET /api/v1/sites/caobang/articles?ids=2,3",
    ]
    assert stack.served("counters") == 0
    assert browser.errors == []


async def test_widget_alone_reads_and_counts_nothing(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/tin-tuc/1?order=w")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1))
    await expect(page.locator("#stats .an-total dd")).to_have_text(grouped(TOTAL_VISITS, "vi"))
    assert await browser.requests(page) == [
        "GET /api/v1/sites/caobang/counters",
        "GET /api/v1/sites/caobang/articles?ids=1,2,3",
    ]
    assert await page.locator("#stats .an-today dd").inner_text() == "0"
    assert stack.served("collect") == 0
    assert browser.errors == []


async def test_tracker_alone_counts(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/tin-tuc/1?order=t")
    await stack.until_beacons("counted", "none", 1)
    assert await browser.requests(page) == ["BEACON /collect"]
    assert await page.locator("#views").inner_text() == "…"  # nothing fills it without the widget
    assert (await stack.counters())["today"]["pageviews"] == 1
    assert browser.errors == []


NO_TIMING = """Object.defineProperty(Performance.prototype, "timing",
  {get: () => undefined, configurable: true});"""

HIDE = """hidden => {
  Object.defineProperty(document, "hidden", {value: hidden, configurable: true});
  Object.defineProperty(document, "visibilityState",
    {value: hidden ? "hidden" : "visible", configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


async def test_refreshes_every_30_s_while_visible_and_not_while_hidden(
    stack: Stack, browser: Browser
) -> None:
    """The page's timers run on Playwright's fake clock; a headless tab is never really hidden,
    so the test sets document.hidden and sends visibilitychange as a browser does."""
    page = await browser.page(http_cache=False)
    await page.clock.install()
    await page.goto(f"{stack.portal}/tin-tuc/1")
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    # stop the page's time a second ahead (seconds here), well before the first refresh is due
    await page.clock.pause_at(await page.evaluate("Date.now() / 1000 + 1"))
    assert len(await browser.requests(page)) == 2
    reads = [
        "GET /api/v1/sites/caobang/counters",
        "GET /api/v1/sites/caobang/articles?ids=1,2,3",
    ]

    await stack.visitor(1)
    await page.clock.run_for(25_000)
    assert len(await browser.requests(page)) == 2  # not yet: 26 s and the load since the hook
    await page.clock.run_for(5_000)
    assert (await browser.requests_until(page, 4))[2:] == reads
    await expect(page.locator("#stats .an-today dd")).to_have_text("2")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 2))

    await page.clock.run_for(10_000)
    await page.evaluate(HIDE, True)
    await stack.visitor(2)
    await page.clock.run_for(5 * 60_000)
    assert len(await browser.requests(page)) == 4  # nothing while hidden
    assert await page.locator("#stats .an-today dd").inner_text() == "2"

    await page.evaluate(HIDE, False)  # back in view, long due: at once
    assert (await browser.requests_until(page, 6))[4:] == reads
    await expect(page.locator("#stats .an-today dd")).to_have_text("3")
    await page.clock.run_for(30_000)
    assert (await browser.requests_until(page, 8))[6:] == reads
    assert browser.errors == []


async def test_do_not_track_counts_out_only_where_the_site_asks(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    """t.js sends regardless; the browser's DNT header reaches the service with the beacon, and
    the service drops it for a site with respect_dnt. The widget still shows the numbers."""
    async with chromium(tmp_path / "dnt", {"enable_do_not_track": True}) as dnt_browser:
        page = await dnt_browser.page()
        await page.goto(f"{stack.portal}/tin-tuc/1")
        assert await page.evaluate("navigator.doNotTrack") == "1"
        await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 1))  # site: no flag

        await stack.site(respect_dnt=True)
        await page.goto(f"{stack.portal}/tin-tuc/2")
        await expect(page.locator("#views")).to_have_text("0")
        assert await page.locator("#stats .an-today dd").inner_text() == "1"
        assert stack.beacons("dropped", "dnt") == 1

        await page.goto(f"{stack.portal}/tin-tuc/3?order=t")  # the tracker alone
        await stack.until_beacons("dropped", "dnt", 2)
        assert await dnt_browser.requests(page) == ["BEACON /collect"]
        assert dnt_browser.errors == []

    page = await browser.page()  # a person who has not asked: counted on the same site
    await page.goto(f"{stack.portal}/tin-tuc/2")
    await expect(page.locator("#views")).to_have_text("1")
    today = (await stack.counters())["today"]
    assert today["pageviews"] == 2
    assert today["visitors"] == 1  # same address and user agent: the same person to the service
    assert browser.errors == []


async def test_iframe_box_and_badge_render(stack: Stack, browser: Browser) -> None:
    """The ways in without a script on the portal: the box in an iframe, the badge in an img."""
    await stack.visitor(1)
    page = await browser.page()
    await page.goto(f"{stack.portal}/nhung/1")
    frame = page.frame_locator("#frame")
    await expect(frame.locator(".an-total dd")).to_have_text(grouped(TOTAL_VISITS + 1, "vi"))
    assert await box(page, "#frame") == expected_box("vi", 1, 1)
    badge = page.locator("#badge")
    await expect(badge).to_have_js_property("complete", True)
    size = await badge.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    resp = await stack.admin.get("/badge/caobang/1.svg")
    svg = ElementTree.fromstring(await resp.read())
    assert size == [int(svg.attrib["width"]), 20]
    assert svg.attrib["aria-label"] == f"Lượt xem: {ARTICLE_1 + 1}"
    await screenshot(page, "portal-embeds.png")
    # the iframe's page came with its numbers: its script waits 30 s before reading again
    iframe = next(f for f in page.frames if "/widget/caobang" in f.url)
    assert await iframe.evaluate("window.__requests") == []
    assert browser.errors == []


async def test_demo_page(stack: Stack, browser: Browser) -> None:
    """The embedded default's page at `/` (served here by the test, as the service serves it
    only when it runs its own stores) shows the box, the article's views and the badge."""
    await add_site(stack.admin, "demo", domains=[])
    page = await browser.page()
    demo = static_bytes("demo.html")

    async def serve_demo(route: Any) -> None:
        await route.fulfill(body=demo, content_type="text/html; charset=utf-8")

    await page.route(f"{stack.service}/", serve_demo)
    await page.goto(f"{stack.service}/")
    await expect(page.locator('[data-analytics-views="demo-article"]')).to_have_text("1")
    await expect(page.locator('[data-analytics-views="demo-other"]')).to_have_text("0")
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    await expect(page.locator("img")).to_have_js_property("complete", True)
    assert await page.locator("img").evaluate("img => img.naturalWidth") > 50
    await screenshot(page, "demo.png")
    assert browser.errors == []


async def test_box_after_the_tag_without_a_target(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/tin-tuc/1?place=here")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 1))
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    after = "document.querySelector('#stats script').nextElementSibling.className"
    assert await page.evaluate(after) == "an-box"
    assert await page.locator(".an-box").count() == 1
    assert (await browser.requests(page))[0] == "POST /collect?counters=1"
    assert browser.errors == []


async def test_views_only_when_the_target_is_not_there(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/tin-tuc/1?place=nowhere")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 1))
    assert await page.locator(".an-box").count() == 0
    assert await browser.requests(page) == [
        "POST /collect?counters=1",
        "GET /api/v1/sites/caobang/articles?ids=2,3",
    ]
    assert browser.errors == []


SPA_NAVIGATE = """() => {
  const meta = document.createElement("meta");
  meta.name = "analytics:article";
  meta.content = "3";
  document.head.appendChild(meta);
  document.querySelector("#views").setAttribute("data-analytics-views", "3");
  history.pushState({}, "", "/tin-tuc/3");
}"""


async def test_single_page_navigation_is_one_request_too(stack: Stack, browser: Browser) -> None:
    page = await browser.page(http_cache=False)
    await page.goto(f"{stack.portal}/tin-tuc/1")
    await expect(page.locator("#views")).to_have_text(str(ARTICLE_1 + 1))
    await page.evaluate(SPA_NAVIGATE)
    await expect(page.locator("#views")).to_have_text("1")
    await expect(page.locator("#stats .an-today")).to_have_attribute(
        "title", re.compile(r"· 2 lượt xem trang ·")
    )
    assert (await browser.requests(page))[2:] == [
        "POST /collect?counters=1",
        "GET /api/v1/sites/caobang/articles?ids=2",
    ]
    assert stack.served("counters") == 0
    assert browser.errors == []


async def test_css_variables_restyle_the_box(stack: Stack, browser: Browser) -> None:
    page = await browser.page()
    await page.goto(f"{stack.portal}/tin-tuc/1")
    await expect(page.locator("#stats .an-today dd")).to_have_text("1")
    head = page.locator("#stats .an-h")
    assert await head.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(11, 83, 148)"
    await page.add_style_tag(
        content=":root { --an-accent: #b3191e; --an-size: 16px } #stats { --an-live: #e67e22 }"
    )
    assert await head.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(179, 25, 30)"
    assert await head.evaluate("e => getComputedStyle(e).fontSize") == "16px"
    total = page.locator("#stats .an-total dd")
    assert await total.evaluate("e => getComputedStyle(e).color") == "rgb(179, 25, 30)"
    dot = "e => getComputedStyle(e, '::before').backgroundColor"
    assert await page.locator("#stats .an-online dt").evaluate(dot) == "rgb(230, 126, 34)"
    # the portal's own rules (portal.css) win over the box's, which go first in <head>
    border = "e => getComputedStyle(e).borderTopColor"
    assert await page.locator(".an-box").evaluate(border) == "rgb(207, 216, 227)"
    await screenshot(page, "widget-restyled.png", "#stats")
    assert browser.errors == []

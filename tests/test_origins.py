"""Origins: a beacon is counted only when its Origin (the pixel: its Referer) and its url are on
one of the site's domains or their subdomains, `www.` and the bare domain being one site. The
cases here complement tests/test_intake.py (foreign origins, own origins, pixel Referer)."""

from __future__ import annotations

import pytest

from aggregations.sites import host_allowed, normalize_domain
from tests.abuse_helpers import pageviews
from tests.conftest import BROWSER, add_site, send

DOMAINS = ("caobang.gov.vn", "congbao.vn")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("caobang.gov.vn", True),
        ("www.caobang.gov.vn", True),
        ("WWW.CaoBang.Gov.VN", True),
        ("caobang.gov.vn.", True),
        ("sogd.caobang.gov.vn", True),
        ("www.sogd.caobang.gov.vn", True),
        ("congbao.vn", True),
        ("evil.example", False),
        ("notcaobang.gov.vn", False),
        ("caobang.gov.vn.evil.example", False),
        ("caobang-gov.vn", False),
        ("gov.vn", False),
        ("", False),
        (None, False),
    ],
)
def test_host_allowed(host, allowed):
    assert host_allowed(host, DOMAINS) is allowed


def test_a_site_without_domains_allows_any_host():
    assert host_allowed("anything.example", ())


@pytest.mark.parametrize(
    "configured", ["caobang.gov.vn", "www.caobang.gov.vn", "https://WWW.caobang.gov.vn/"]
)
def test_www_and_bare_are_one_domain(configured):
    assert normalize_domain(configured) == "caobang.gov.vn"


@pytest.mark.parametrize("origin", ["https://caobang.gov.vn", "https://www.caobang.gov.vn"])
async def test_a_site_configured_with_www_counts_both(client, origin):
    await add_site(client, domains=["www.caobang.gov.vn"])
    resp = await send(client, url=origin + "/tin-tuc/1", headers={"Origin": origin})
    assert resp.status == 204
    foreign = await send(client, headers={"Origin": "https://www.caobang.gov.vn.evil.example"})
    assert foreign.status == 403
    assert await pageviews(client) == 1


@pytest.mark.parametrize(
    "url",
    [
        "https://caobang.gov.vn@evil.example/tin-tuc/1",
        "https://caobang.gov.vn.evil.example/tin-tuc/1",
        "https://evil.example/?u=https://caobang.gov.vn/",
        "https://evil.example/caobang.gov.vn",
        "https://xcaobang.gov.vn/",
    ],
)
async def test_a_url_outside_the_domains_is_refused(client, url):
    resp = await send(client, url=url)
    assert resp.status == 403
    assert (await resp.json())["field"] == "url"
    assert await pageviews(client) == 0
    assert (await send(client)).status == 204  # the same beacon with the page's own url
    assert await pageviews(client) == 1


async def test_origin_is_checked_even_when_the_url_is_the_sites(client):
    resp = await send(client, headers={"Origin": "https://evil.example"})
    assert resp.status == 403
    assert await pageviews(client) == 0


async def test_a_site_without_domains_counts_from_anywhere(client):
    await add_site(client, "backan", domains=[])
    resp = await send(
        client, "backan", url="https://mirror.example/", headers={"Origin": "https://x.example"}
    )
    assert resp.status == 204
    assert await pageviews(client, "backan") == 1


PIXEL = "/collect.gif?site=caobang&url={url}"
OWN_URL = "https%3A%2F%2Fcaobang.gov.vn%2Ftin-tuc%2F1"


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [
        # the page embedding the pixel is the Referer
        (OWN_URL, {"Referer": "https://www.caobang.gov.vn/tin-tuc/1"}, 200),
        # a no-referrer policy sends none: the url is still checked
        (OWN_URL, {}, 200),
        ("https%3A%2F%2Fevil.example%2F", {}, 403),
        (OWN_URL, {"Referer": "https://evil.example/copy-of-the-page"}, 403),
        (OWN_URL, {"Referer": "https://caobang.gov.vn.evil.example/"}, 403),
        # an Origin (a fetch of the pixel) wins over the Referer
        (OWN_URL, {"Origin": "https://evil.example", "Referer": "https://caobang.gov.vn/"}, 403),
    ],
)
async def test_pixel_origin(client, url, headers, status):
    resp = await client.get(
        PIXEL.format(url=url),
        headers={"User-Agent": BROWSER, "X-Forwarded-For": "203.0.113.3"} | headers,
    )
    assert resp.status == status
    assert (await resp.read()).startswith(b"GIF89a")
    assert await pageviews(client) == (1 if status == 200 else 0)

"""Screening: bots, link previewers, monitoring probes, absurd user agents and prefetches count
nothing and are visible by reason in metrics, while browsers (Vietnamese in-app ones included)
count."""

from __future__ import annotations

import pytest

from aggregations.sites import Site
from collectors import screening
from collectors.screening import MAX_USER_AGENT, is_bot, is_prefetch, screen
from tests.abuse_helpers import metric
from tests.conftest import BROWSER, send

CRAWLERS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; coccocbot-web/1.0; +http://help.coccoc.com/searchengine)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.0)",
    "Mozilla/5.0 (compatible;PetalBot;+https://webmaster.petalsearch.com/site/petalbot)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
]
HEADLESS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " HeadlessChrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/119.0.0.0 Mobile Safari/537.36 Chrome-Lighthouse",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko)"
    " PhantomJS/2.1.1 Safari/538.1",
]
PREVIEWERS = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Twitterbot/1.0",
    "TelegramBot (like TwitterBot)",
    "WhatsApp/2.23.20.0 A",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5",
    "Zalo-Bot",
]
PROBES = [
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
    "Site24x7",
    "Datadog/Synthetics",
    "Amazon-Route53-Health-Check-Service (ref 1234; report http://amzn.to/1vsZADi)",
    "kube-probe/1.29",
    "GoogleStackdriverMonitoring-UptimeChecks(https://cloud.google.com/monitoring)",
    "check_http/v2.3.3 (nagios-plugins 2.3.3)",
    "Blackbox Exporter/0.24.0",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
]
ABSURD = ["", "-", "Mozilla", "12345678", "Mozilla/5.0", "Mozilla/5.0 " + "x" * 8000]
PEOPLE = [
    BROWSER,
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " coc_coc_browser/117.0.0 Chrome/111.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-A536E Build/TP1A.220624.014; wv) AppleWebKit/537.36"
    " (KHTML, like Gecko) Version/4.0 Chrome/119.0.6045.193 Mobile Safari/537.36 Zalo"
    " android/12100000 ZaloTheme/light ZaloLanguage/vi",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/442.0.0.38.109;FBBV/550123456;FBDV/iPhone14,5;"
    "FBMD/iPhone;FBSN/iOS;FBSV/17.1.2;FBSS/3;FBID/phone;FBLC/vi_VN;FBOP/5;FBRV/0]",
    "Mozilla/5.0 (Linux; Android 10; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko)"
    " SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
]


@pytest.mark.parametrize("ua", CRAWLERS + HEADLESS + PREVIEWERS + PROBES + ABSURD)
def test_bots_are_bots(ua):
    assert is_bot(ua)


@pytest.mark.parametrize("ua", PEOPLE)
def test_browsers_are_people(ua):
    assert not is_bot(ua)


def test_absurd_user_agents_never_reach_the_patterns(monkeypatch):
    """Pattern matching costs time in proportion to the length: past MAX_USER_AGENT it never
    runs, so an 8 KiB user agent costs a length check (see bench/user_agents.py for figures)."""

    def patterns(ua: str) -> bool:
        raise AssertionError(f"patterns ran over {len(ua)} characters")

    monkeypatch.setattr(screening.crawleruseragents, "is_crawler", patterns)
    monkeypatch.setattr(screening, "EXTRA_BOTS", None)
    for n in (MAX_USER_AGENT + 1, 8 * 1024, 64 * 1024):
        assert is_bot(BROWSER + "x" * (n - len(BROWSER)))


def test_long_but_plausible_user_agents_are_classified_not_refused():
    padded = BROWSER + " " + "Extension/1.0 " * ((MAX_USER_AGENT - len(BROWSER)) // 14)
    assert len(padded) <= MAX_USER_AGENT
    assert not is_bot(padded)
    assert is_bot(padded[: MAX_USER_AGENT - 20] + " Googlebot/2.1")


def test_user_agents_are_classified_once(monkeypatch):
    screening._classify.cache_clear()
    calls = []
    real = screening.crawleruseragents.is_crawler

    def counting(ua: str) -> bool:
        calls.append(ua)
        return bool(real(ua))

    monkeypatch.setattr(screening.crawleruseragents, "is_crawler", counting)
    for _ in range(3):
        assert not is_bot(BROWSER)
    assert calls == [BROWSER]


@pytest.mark.parametrize(
    ("headers", "prefetch"),
    [
        ({"Sec-Purpose": "prefetch"}, True),
        ({"Sec-Purpose": "prefetch;prerender"}, True),
        ({"Purpose": "prefetch"}, True),
        ({"X-Purpose": "preview, prefetch"}, True),
        ({"X-Moz": "prefetch"}, True),
        ({"Sec-Purpose": "Prerender"}, True),
        ({}, False),
        ({"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}, False),
    ],
)
def test_prefetch_headers(headers, prefetch):
    assert is_prefetch(headers) is prefetch


def test_screen_reasons():
    site = Site("caobang", respect_dnt=True)
    assert screen(site, BROWSER, {}) is None
    assert screen(site, "curl/8.5.0", {}).value == "bot"
    assert screen(site, BROWSER, {"Sec-Purpose": "prefetch"}).value == "prefetch"
    assert screen(site, BROWSER, {"DNT": "1"}).value == "dnt"
    assert screen(Site("caobang"), BROWSER, {"DNT": "1"}) is None


async def test_every_kind_of_bot_counts_nothing_and_shows_in_metrics(client):
    bots = [CRAWLERS[0], HEADLESS[0], PREVIEWERS[0], PREVIEWERS[4], PROBES[1], "", ABSURD[-1]]
    for i, ua in enumerate(bots):
        resp = await send(client, ip=f"198.51.100.{i}", ua=ua, article="42")
        assert resp.status == 204, ua
    for i, header in enumerate([{"Sec-Purpose": "prefetch;prerender"}, {"Purpose": "prefetch"}]):
        assert (await send(client, ip=f"198.51.100.{50 + i}", headers=header)).status == 204
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["total"] == {"pageviews": 0, "visits": 0, "visitors": 0}
    assert await metric(client, "bot") == len(bots)
    assert await metric(client, "prefetch") == 2

    # the honest path: the same browser request without the bot's user agent counts
    assert (await send(client, article="42")).status == 204
    body = await (await client.get("/api/v1/sites/caobang/counters")).json()
    assert body["total"] == {"pageviews": 1, "visits": 1, "visitors": 1}
    views = await (await client.get("/api/v1/sites/caobang/articles/42")).json()
    assert views["views"] == 1
    assert await metric(client, "none", "counted") == 1

"""Screening: a closed set of reasons for which a well-formed beacon counts nowhere.

Bots by user agent (the maintained `crawler-user-agents` patterns plus a few headless, preview and
monitoring tools it leaves out), cached per user agent; prefetch and prerender requests by their
headers; Do Not Track where the site asks for it to be honoured.

An absurd user agent (empty, without a letter, or longer than any browser sends) is a bot without
running a pattern over it: the patterns cost time in proportion to the length, so the length is
capped before they run, and an 8 KiB user agent costs a length check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import crawleruseragents
from multidict import istr

from aggregations.metrics import Drop
from aggregations.sites import Site

# not in the shared list at the time of writing, but never a person reading a page
EXTRA_BOTS = re.compile(
    r"Lighthouse|PTST|HeadlessChrome|PhantomJS|Puppeteer|Playwright|Selenium|"
    r"Prerender|Google-InspectionTool|Chrome-Lighthouse|SpeedCurve|GTmetrix|Pingdom|"
    r"monitor|probe|check_http|zgrab|masscan|nmap|scanner|Synthetics|Health-?Check|"
    r"Prometheus|Blackbox|^Java/|^Mozilla/[\d.]+$|"
    # anything calling itself a bot, crawler or spider (but Cubot, a phone maker)
    r"(?<!cu)bot\b|crawler|spider",
    re.IGNORECASE,
)
# The longest user agents browsers send are in-app browsers with their build details, about
# 400 characters; twice the next power of two above that is no person's.
MAX_USER_AGENT = 1024
CACHEABLE = 512  # longer user agents are classified every time instead of filling the cache
# case-insensitive keys made once: a header lookup by a plain str lowercases it every time
PREFETCH_HEADERS = tuple(istr(h) for h in ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"))
DNT, GPC = istr("DNT"), istr("Sec-GPC")


def absurd(user_agent: str) -> bool:
    """Empty, too short, without a letter, or longer than a browser's: a script, not a person."""
    n = len(user_agent)
    return n < 8 or n > MAX_USER_AGENT or not any(c.isalpha() for c in user_agent)


@lru_cache(maxsize=8192)
def _classify(user_agent: str) -> bool:
    return (
        absurd(user_agent)
        or bool(EXTRA_BOTS.search(user_agent))
        or crawleruseragents.is_crawler(user_agent)
    )


def is_bot(user_agent: str) -> bool:
    if len(user_agent) > CACHEABLE:  # classified every time; past MAX_USER_AGENT by its length
        return _classify.__wrapped__(user_agent)
    return _classify(user_agent)


def is_prefetch(headers: Mapping[str, str]) -> bool:
    for name in PREFETCH_HEADERS:
        value = headers.get(name)
        if value and ("prefetch" in value.lower() or "prerender" in value.lower()):
            return True
    return False


def screen(site: Site, user_agent: str, headers: Mapping[str, str]) -> Drop | None:
    if is_prefetch(headers):
        return Drop.PREFETCH
    if is_bot(user_agent):
        return Drop.BOT
    if site.respect_dnt and (headers.get(DNT) == "1" or headers.get(GPC) == "1"):
        return Drop.DNT
    return None

"""Screening: a closed set of reasons for which a well-formed beacon counts nowhere.

Bots by user agent (the maintained `crawler-user-agents` patterns plus a few headless and
auditing tools it leaves out), cached per user agent; prefetch and prerender requests by their
headers; Do Not Track where the site asks for it to be honoured.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

import crawleruseragents

from aggregations.metrics import Drop
from aggregations.sites import Site

# not in the shared list at the time of writing, but never a person reading a page
EXTRA_BOTS = re.compile(
    r"Lighthouse|PTST|HeadlessChrome|PhantomJS|Puppeteer|Playwright|"
    r"Prerender|Google-InspectionTool|Chrome-Lighthouse|SpeedCurve|GTmetrix|Pingdom|"
    r"monitor|probe|check_http|zgrab|masscan|nmap|scanner|"
    # anything calling itself a bot, crawler or spider (but Cubot, a phone maker)
    r"(?<!cu)bot\b|crawler|spider",
    re.IGNORECASE,
)
CACHEABLE = 512  # longer user agents are classified every time instead of filling the cache


@lru_cache(maxsize=8192)
def _classify(user_agent: str) -> bool:
    if len(user_agent) < 8 or not any(c.isalpha() for c in user_agent):
        return True
    return bool(EXTRA_BOTS.search(user_agent)) or crawleruseragents.is_crawler(user_agent)


def is_bot(user_agent: str) -> bool:
    if len(user_agent) > CACHEABLE:
        return _classify.__wrapped__(user_agent)
    return _classify(user_agent)


def is_prefetch(headers: Mapping[str, str]) -> bool:
    for name in ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz"):
        value = headers.get(name)
        if value and ("prefetch" in value.lower() or "prerender" in value.lower()):
            return True
    return False


def screen(site: Site, user_agent: str, headers: Mapping[str, str]) -> Drop | None:
    if is_prefetch(headers):
        return Drop.PREFETCH
    if is_bot(user_agent):
        return Drop.BOT
    if site.respect_dnt and (headers.get("DNT") == "1" or headers.get("Sec-GPC") == "1"):
        return Drop.DNT
    return None

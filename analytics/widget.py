"""The portal widget, the read side's face: the statistics box as a script (`/widget.js`), the
same box as a page for an `<iframe>` (`/widget/{site}`), and an article's views as an SVG badge
for pages without JavaScript (`/badge/{site}/{article}.svg`).

Labels and number grouping live here once: the script gets them from the service, and the page
and the badge are rendered with them on the server.
"""

from __future__ import annotations

import re
import unicodedata
from html import escape
from typing import Any

import msgspec
from aiohttp import web

from aggregations.errors import InvalidInput
from aggregations.sites import check_article_id
from analytics import appkeys as K
from analytics.api import site_of
from analytics.pages import static_bytes
from analytics.responses import cached
from collectors.assets import ScriptAsset

ROWS = ("online", "today", "yesterday", "this_week", "this_month", "total")
LANGS = ("vi", "en")
LABELS: dict[str, dict[str, str]] = {
    "vi": {
        "title": "Thống kê truy cập",
        "online": "Đang truy cập",
        "today": "Hôm nay",
        "yesterday": "Hôm qua",
        "this_week": "Trong tuần",
        "this_month": "Trong tháng",
        "total": "Tổng lượt truy cập",
        "online_tip": "Số người truy cập trong {minutes} phút qua",
        "visits": "lượt truy cập",
        "pageviews": "lượt xem trang",
        "visitors": "người truy cập",
        "views": "Lượt xem",
    },
    "en": {
        "title": "Visitor statistics",
        "online": "Online now",
        "today": "Today",
        "yesterday": "Yesterday",
        "this_week": "This week",
        "this_month": "This month",
        "total": "Total visits",
        "online_tip": "Visitors in the last {minutes} minutes",
        "visits": "visits",
        "pageviews": "page views",
        "visitors": "visitors",
        "views": "Views",
    },
}
SEPARATORS = {"vi": ".", "en": ","}
SCRIPT_MAX_AGE = 3600


def group(n: int, lang: str) -> str:
    """A whole number grouped by thousands as the language writes it: 1.234.567 or 1,234,567."""
    return f"{n:,}".replace(",", SEPARATORS[lang])


def online_minutes(online_window: float) -> str:
    """ANALYTICS_ONLINE_WINDOW as the tooltip says it: 5, or 1.5."""
    minutes = online_window / 60
    return str(int(minutes)) if minutes == int(minutes) else f"{minutes:.1f}"


def check_lang(raw: str | None) -> str:
    if raw is None or raw == "":
        return "vi"
    if raw not in LANGS:
        raise InvalidInput(f"lang must be one of {', '.join(LANGS)}", "lang")
    return raw


def minify_css(css: str) -> str:
    """Comments and spaces out: safe for widget.css, where no selector has a space before ':'."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    css = re.sub(r"\s+", " ", css)
    return re.sub(r" ?([{}:;,>]) ?", r"\1", css).replace(";}", "}").strip()


def strip_script(js: str) -> str:
    """Drop indentation and whole-line comments: safe for widget.js, which has no string
    or template that spans lines."""
    lines = (line.strip() for line in js.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("//")) + "\n"


def tooltip(period: dict[str, int], lang: str) -> str:
    words = LABELS[lang]
    return " · ".join(
        f"{group(period[m], lang)} {words[m]}" for m in ("visits", "pageviews", "visitors")
    )


def box_html(counters: dict[str, Any], lang: str, minutes: str) -> str:
    """The box exactly as widget.js builds it, with the numbers filled in."""
    words = LABELS[lang]
    rows = []
    for name in ROWS:
        if name == "online":
            value, tip = counters["online"], words["online_tip"].format(minutes=minutes)
        else:
            value, tip = counters[name]["visits"], tooltip(counters[name], lang)
        rows.append(
            f'<div class="an-r an-{name.removeprefix("this_")}" title="{escape(tip)}">'
            f"<dt>{escape(words[name])}</dt><dd>{group(value, lang)}</dd></div>"
        )
    return (
        f'<section class="an-box" lang="{lang}" aria-label="{escape(words["title"])}"'
        f' data-as-of="{escape(counters["as_of"])}">'
        f'<div class="an-h">{escape(words["title"])}</div><dl>{"".join(rows)}</dl></section>'
    )


# Verdana at 11 px, the badge's font: advance widths of the characters a badge shows
NARROW = dict.fromkeys("ijl.,:;!|' ", 3.6) | dict.fromkeys("frtI()[]", 4.6)
WIDE = dict.fromkeys("mwMW", 10.2) | dict.fromkeys("ABCDGHKNOQRUVXY", 7.8)


def text_width(text: str) -> float:
    """About how wide `text` is in the badge's font; the SVG then fits it exactly (textLength)."""
    width = 0.0
    for char in unicodedata.normalize("NFD", text):
        if unicodedata.combining(char):
            continue
        width += NARROW.get(char) or WIDE.get(char) or (7.0 if char.isdigit() else 6.6)
    return width


def badge_svg(label: str, value: str, color: str = "#0b5394") -> str:
    lw, vw = round(text_width(label)) + 12, round(text_width(value)) + 12
    total = lw + vw
    parts = []
    for x, text, width in ((lw / 2, label, lw - 12), (lw + vw / 2, value, vw - 12)):
        for y, extra in ((15, ' fill="#010101" fill-opacity=".3"'), (14, "")):
            parts.append(
                f'<text x="{x:g}" y="{y}" textLength="{width}"{extra}>{escape(text)}</text>'
            )
    title = escape(f"{label}: {value}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img"'
        f' aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb"'
        ' stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{color}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif"'
        f' font-size="11">{"".join(parts)}</g></svg>'
    )


class WidgetViews:
    """The widget's routes. The script, with the styles and labels inlined, is built once."""

    def __init__(self, online_window: float) -> None:
        self.minutes = online_minutes(online_window)
        self.css = minify_css(static_bytes("widget.css").decode())
        config = {"css": self.css, "minutes": self.minutes, "labels": LABELS}
        script = strip_script(static_bytes("widget.js").decode())
        self.script = ScriptAsset(
            script.replace("__CONFIG__", msgspec.json.encode(config).decode()).encode(),
            SCRIPT_MAX_AGE,
        )

    async def script_js(self, request: web.Request) -> web.Response:
        return self.script.response(request)

    async def page(self, request: web.Request) -> web.Response:
        app = request.app
        site = site_of(request, app)
        lang = check_lang(request.query.get("lang"))
        counters = await app[K.READER].counters(site, app[K.CLOCK].now())
        body = PAGE.format(
            lang=lang,
            title=escape(LABELS[lang]["title"]),
            css=self.css,
            box=box_html(counters, lang, self.minutes),
            site=site.id,
        )
        return cached(request, body.encode(), "text/html", charset="utf-8")

    async def badge(self, request: web.Request) -> web.Response:
        app = request.app
        site = site_of(request, app)
        article = check_article_id(request.match_info["article"])
        lang = check_lang(request.query.get("lang"))
        found = await app[K.READER].articles(site, [article], app[K.CLOCK].now())
        svg = badge_svg(LABELS[lang]["views"], group(found[0]["views"], lang))
        return cached(request, svg.encode(), "image/svg+xml", charset="utf-8")


PAGE = """<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style id="an-css">{css}html,body{{margin:0;background:transparent}}
body{{font-family:Arial,"Liberation Sans",Helvetica,sans-serif}}.an-box{{margin:0}}</style>
</head>
<body>
<div id="an">{box}</div>
<script defer src="../widget.js" data-site="{site}" data-lang="{lang}" data-target="#an"></script>
</body>
</html>
"""

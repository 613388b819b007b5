"""A stand-in provincial portal for the browser tests, served from another origin than the
service: article pages, a listing, and pages that embed only one of the two scripts.

Its layout follows the reference portal page (shared/reference/portal-page-example.txt): a
sidebar with "Thông tin mới nhất" and the statistics box, "Lượt xem" under the headline, and
"Tin khác" with more articles.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from aiohttp import web

ARTICLES = {
    "1": "Khối thi đua II tổng kết công tác thi đua khen thưởng năm 2017",
    "2": "Cao Bằng đẩy mạnh chuyển đổi số trong cơ quan nhà nước",
    "3": "Hội nghị triển khai nhiệm vụ phát triển kinh tế - xã hội năm 2018",
}
LISTING_IDS = [f"bai-{i}" for i in range(1, 131)]

STYLE = (Path(__file__).parent / "portal.css").read_text(encoding="utf-8")


def page(title: str, body: str, head: str = "", query: str = "") -> str:
    links = " ".join(f'<a href="/tin-tuc/{i}{query}">Tin {i}</a>' for i in ARTICLES)
    return f"""<!doctype html>
<html lang="vi">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>{escape(title)}</title>
<style>{STYLE}</style>
{head}
</head>
<body>
<header><b>CỔNG THÔNG TIN ĐIỆN TỬ TỈNH CAO BẰNG</b><small>Trang thử nghiệm</small></header>
<nav><a href="/">Trang chủ</a> {links} <a href="/danh-muc">Tin tức</a></nav>
<div class="wrap">
<main>{body}</main>
<aside>
  <div class="side"><h3>Thông tin mới nhất</h3><ul>
    <li>Lịch tiếp công dân tháng 12</li><li>Thông báo tuyển dụng viên chức</li></ul></div>
  <div id="stats"><p>Đang tải thống kê…</p></div>
</aside>
</div>
</body>
</html>
"""


STATS = '<div id="stats"><p>Đang tải thống kê…</p></div>'


def widget_tag(service: str, lang: str = "vi", target: str | None = "#stats") -> str:
    to = f' data-target="{target}"' if target else ""
    src = f"{service}/widget.js"
    return f'<script defer src="{src}" data-site="caobang"{to} data-lang="{lang}"></script>'


def scripts(service: str, article: str | None, lang: str = "vi", order: str = "tw") -> str:
    """The two script tags a portal adds; `order` 'tw' puts the tracker first, 'wt' the widget,
    't' or 'w' only one of them."""
    art = f' data-article="{article}"' if article else ""
    tags = {
        "t": f'<script defer src="{service}/t.js" data-site="caobang"{art}></script>',
        "w": widget_tag(service, lang),
    }
    return "\n".join(tags[c] for c in order)


def article_page(
    service: str, article: str, lang: str, order: str, query: str, place: str = "target"
) -> str:
    """`place`: 'target' (the box into #stats), 'here' (the widget's tag in the sidebar, no
    target: the box right after it), 'nowhere' (a target that is not on the page)."""
    others = "".join(
        f'<li><a href="/tin-tuc/{i}{query}">{escape(t)}</a>'
        f' <small>(<span data-analytics-views="{i}">…</span> lượt xem)</small></li>'
        for i, t in ARTICLES.items()
        if i != article
    )
    body = f"""
<h1>{escape(ARTICLES[article])}</h1>
<p class="meta">Ngày 15/01/2018 · Lượt xem:
<span id="views" data-analytics-views="{article}">…</span></p>
<p>Ngày 15/01/2018, Khối thi đua II tỉnh Cao Bằng đã tổ chức Hội nghị tổng kết công tác thi đua
khen thưởng năm 2017 và triển khai nhiệm vụ năm 2018.</p>
<p>Hội nghị đã tiến hành đánh giá kết quả triển khai kế hoạch công tác thi đua khen thưởng năm
2017 của Khối trong việc hưởng ứng phong trào thi đua yêu nước.</p>
<h3>Tin khác</h3><ul class="other">{others}</ul>
"""
    if place == "target":
        return page(ARTICLES[article], body, scripts(service, article, lang, order), query)
    text = page(ARTICLES[article], body, scripts(service, article, lang, "t"), query)
    if place == "here":
        return text.replace(STATS, f'<div id="stats">{widget_tag(service, lang, None)}</div>')
    return text.replace("</body>", widget_tag(service, lang, "#missing") + "\n</body>")


def listing_page(service: str) -> str:
    items = "".join(
        f'<li>Bài viết {i} <small>(<span data-analytics-views="{i}">…</span>)</small></li>'
        for i in LISTING_IDS
    )
    body = f'<h1>Tin tức</h1><ul class="other">{items}</ul>'
    return page("Tin tức", body, head=scripts(service, None))


def embeds_page(service: str, article: str) -> str:
    """The no-JavaScript ways in: the box in an iframe and the views badge."""
    body = f"""
<h1>{escape(ARTICLES[article])}</h1>
<p class="badge"><img id="badge" alt="Lượt xem" src="{service}/badge/caobang/{article}.svg"></p>
"""
    frame = (
        f'<iframe id="frame" title="Thống kê truy cập" src="{service}/widget/caobang?lang=vi"'
        ' style="width:100%;height:290px;border:0"></iframe>'
    )
    return page(ARTICLES[article], body).replace(STATS, f'<div id="stats">{frame}</div>')


def portal_app(service: str) -> web.Application:
    """The portal: `/tin-tuc/{id}?lang=&order=&place=`, `/danh-muc`, `/nhung/{id}`."""

    async def article(request: web.Request) -> web.Response:
        art = request.match_info["id"]
        if art not in ARTICLES:
            raise web.HTTPNotFound()
        lang = request.query.get("lang", "vi")
        order = request.query.get("order", "tw")
        query = escape(f"?{request.query_string}") if request.query_string else ""
        place = request.query.get("place", "target")
        return html(article_page(service, art, lang, order, query, place))

    async def listing(request: web.Request) -> web.Response:
        return html(listing_page(service))

    async def embeds(request: web.Request) -> web.Response:
        return html(embeds_page(service, request.match_info["id"]))

    app = web.Application()
    app.router.add_get("/tin-tuc/{id}", article)
    app.router.add_get("/danh-muc", listing)
    app.router.add_get("/nhung/{id}", embeds)
    return app


def html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})

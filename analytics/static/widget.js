/* Visitor analytics widget: the portal's statistics box and live article view counts. */
(function (w, d) {
  var s = d.currentScript;
  if (!s || !w.fetch) return;
  var site = s.getAttribute("data-site");
  if (!site) return;
  // the service fills this in: {css, minutes (the online window), labels: {vi: {...}, en: {...}}}
  var C = __CONFIG__;
  var lang = s.getAttribute("data-lang") == "en" ? "en" : "vi";
  var L = C.labels[lang];
  var api = s.getAttribute("data-api") || s.src.replace(/\/widget\.js(?:[?#].*)?$/, "");
  var base = api + "/api/v1/sites/" + site;
  var sel = s.getAttribute("data-target");
  var ROWS = ["online", "today", "yesterday", "this_week", "this_month", "total"];
  var EVERY = 30000;
  var pt = w.performance && performance.timing;
  var box, timer, last = 0;

  function fmt(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, lang == "en" ? "," : ".");
  }

  function json(r) {
    if (r.ok) return r.json();
  }

  function get(path, then) {
    fetch(base + path, { credentials: "omit" }).then(json).then(function (j) {
      if (j) then(j);
    })["catch"](function () {});
  }

  function build() {
    var h = '<div class="an-h">' + L.title + "</div><dl>";
    for (var i = 0; i < ROWS.length; i++)
      h += '<div class="an-r an-' + ROWS[i].replace("this_", "") + '"><dt>' + L[ROWS[i]] + "</dt><dd>–</dd></div>";
    box = d.createElement("section");
    box.className = "an-box";
    box.lang = lang;
    box.setAttribute("aria-label", L.title);
    box.innerHTML = h + "</dl>";
    box.firstChild.nextSibling.firstChild.title = L.online_tip.replace("{minutes}", C.minutes);
  }

  function show(c) {
    var dd = box ? box.getElementsByTagName("dd") : [];
    for (var i = 0; i < dd.length; i++) {
      var v = c[ROWS[i]];
      if (i) dd[i].parentNode.title = [fmt(v.visits) + " " + L.visits, fmt(v.pageviews) + " " + L.pageviews, fmt(v.visitors) + " " + L.visitors].join(" · ");
      dd[i].textContent = fmt(i ? v.visits : v);
    }
    if (c.article) views(c.article);
  }

  function views(a) {
    var els = d.querySelectorAll('[data-analytics-views="' + a.article + '"]');
    for (var i = 0; i < els.length; i++) els[i].textContent = fmt(a.views);
  }

  // every [data-analytics-views] on the page but `skip`, in as few reads as the API allows
  function batch(skip) {
    var els = d.querySelectorAll("[data-analytics-views]"), seen = {}, ids = [], len = 0;
    for (var i = 0; i <= els.length; i++) {
      var id = i < els.length ? els[i].getAttribute("data-analytics-views") : "";
      if (ids.length && (!id || ids.length == 100 || len + id.length > 1800)) {
        get("/articles?ids=" + ids.join(","), function (r) { r.articles.forEach(views); });
        ids = [];
        len = 0;
      }
      if (id && id != skip && !seen[id] && /^[\w.:-]{1,128}$/.test(id)) {
        seen[id] = ids.push(id);
        len += id.length + 1;
      }
    }
  }

  function refresh() {
    last = Date.now();
    get("/counters", show);
    batch();
  }

  // the tracker hands the page view over: one request counts it and answers the counters
  function hook(data, body) {
    if (body.site != site) return refresh();
    last = Date.now();
    fetch(api + "/collect?counters=1", { method: "POST", body: data, keepalive: true, credentials: "omit" })
      .then(json)
      .then(function (c) { c ? show(c) : refresh(); }, refresh);
    batch(body.article);
    return true;
  }

  // every 30 s while the page is visible; on coming back into view, at once if that is due
  function tick() {
    clearTimeout(timer);
    if (d.hidden) return;
    var wait = last + EVERY - Date.now();
    if (wait <= 0) {
      refresh();
      wait = EVERY;
    }
    timer = setTimeout(tick, wait);
  }

  function start() {
    var t = sel ? d.querySelector(sel) : s.parentNode;
    box = t && t.querySelector(".an-box");
    var fresh = box && box.hasAttribute("data-as-of");
    if (t && !box) {
      build();
      if (sel) {
        t.textContent = "";
        t.appendChild(box);
      } else t.insertBefore(box, s.nextSibling);
    }
    if (!d.getElementById("an-css")) {
      var st = d.createElement("style");
      st.id = "an-css";
      st.textContent = C.css;
      d.head.insertBefore(st, d.head.firstChild);
    }
    var A = w.__analytics;
    if (A && A.hooks && !A.last) {
      A.hooks.push(hook);
      last = Date.now();
    } else if (fresh) last = Date.now();
    else refresh();
    d.addEventListener("visibilitychange", tick);
    tick();
  }

  // once DOMContentLoaded has come, by which every deferred script (the tracker, if any) has
  // run; where the timing cannot tell whether it has, the first of it and load
  var t = pt && pt.domContentLoadedEventStart, on = 0;
  function once() { if (!on++) start(); }
  if (d.readyState != "complete" && !t) {
    d.addEventListener("DOMContentLoaded", once);
    w.addEventListener("load", once);
  } else start();
})(window, document);

/* Visitor analytics tracker: one beacon per page view, no cookies, no storage. */
(function (w, d) {
  var s = d.currentScript;
  if (!s || w.__analytics) return;
  var site = s.getAttribute("data-site");
  if (!site) return;
  var api = s.getAttribute("data-api") || s.src.replace(/\/t\.js(?:[?#].*)?$/, "");
  var art = s.getAttribute("data-article");
  var first = 1;
  var A = (w.__analytics = { api: api, site: site, hooks: [] });
  var pt = w.performance && performance.timing;

  function meta(name) {
    var m = d.querySelector('meta[name="analytics:' + name + '"]');
    return m && m.getAttribute("content");
  }

  function send() {
    var url = location.href;
    if (url === A.last) return;
    A.last = url;
    var article = (first ? art : null) || meta("article");
    var body = { site: site, url: url };
    if (d.referrer && first) body.referrer = d.referrer;
    if (article) body.article = article;
    if (d.title) body.title = d.title.slice(0, 300);
    first = 0;
    var data = JSON.stringify(body);
    // a widget on the page may send it with ?counters=1 instead
    for (var i = 0; i < A.hooks.length; i++) if (A.hooks[i](data, body)) return;
    var end = api + "/collect";
    if (!(navigator.sendBeacon && navigator.sendBeacon(end, data)) && w.fetch)
      fetch(end, { method: "POST", body: data, keepalive: true, credentials: "omit" })["catch"](function () {});
  }

  A.send = send;
  function later() { setTimeout(send, 0); }
  // not prerendered; after DOMContentLoaded (a deferred widget hooks in by then), or load if unsure
  function start() {
    if (d.prerendering) return d.addEventListener("prerenderingchange", start);
    if ((pt && pt.domContentLoadedEventStart) || d.readyState == "complete") return later();
    d.addEventListener("DOMContentLoaded", later);
    w.addEventListener("load", later);
  }
  var h = w.history;
  ["pushState", "replaceState"].forEach(function (m) {
    var orig = h[m];
    h[m] = function () { var r = orig.apply(this, arguments); later(); return r; };
  });
  w.addEventListener("popstate", later);
  start();
})(window, document);

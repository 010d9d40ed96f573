// Refreshes the /ops/ panels without a reload: fetch the server-rendered fragment, swap it in.
// Two triggers (ADR 0055): a poll every data-refresh-ms (always — outbox, queues and circuits move without
// partner events), and the operators' live feed (/ops/events/stream, Server-Sent Events of every partner's
// events): an event refreshes the panels within a second (at most one refresh a second however many arrive)
// and is listed in "Live events". Without a feed (a WSGI server: the page leaves data-src empty) or when it is
// refused, the poll carries on alone.
// No library and no third-party request (the page's CSP allows 'self' only).
(function () {
  "use strict";
  var root = document.getElementById("panels");
  if (!root) { return; }
  var every = parseInt(root.getAttribute("data-refresh-ms"), 10) || 5000;
  var url = root.getAttribute("data-src");
  var stamp = document.getElementById("refreshed");
  var busy = false;
  var again = false;
  var lastRefresh = Date.now();
  var soon = null;
  var MIN_GAP_MS = 1000;

  function refresh() {
    if (document.hidden) { return; }
    if (busy) { again = true; return; }
    busy = true;
    lastRefresh = Date.now();
    fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (response.redirected || !response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        root.innerHTML = html;
        root.setAttribute("data-refreshed", String(Date.now()));
        if (stamp) { stamp.textContent = new Date().toLocaleTimeString(); stamp.className = ""; }
      })
      .catch(function () {
        if (stamp) { stamp.textContent = "refresh failed, retrying"; stamp.className = "bad"; }
      })
      .then(function () {
        busy = false;
        if (again) { again = false; refreshSoon(); }
      });
  }

  function refreshSoon() {
    if (soon !== null) { return; }
    var wait = Math.max(0, lastRefresh + MIN_GAP_MS - Date.now());
    soon = window.setTimeout(function () { soon = null; refresh(); }, wait);
  }

  window.setInterval(refresh, every);

  var feed = document.getElementById("live-feed");
  var list = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  if (!feed || !list || !feed.getAttribute("data-src") || !window.EventSource) { return; }
  var types = (feed.getAttribute("data-types") || "").split(",");
  var keep = parseInt(feed.getAttribute("data-keep"), 10) || 15;
  var count = 0;

  function setStatus(text, bad) {
    if (status) { status.textContent = text; status.className = bad ? "bad" : ""; }
  }

  function onEvent(message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    var item = document.createElement("li");
    var time = new Date(event.timestamp);
    item.textContent = (isNaN(time) ? "" : time.toLocaleTimeString() + " · ") + event.type + " · partner " +
      event.partner + (event.employer ? " · employer " + event.employer : "") +
      (event.object ? " · " + event.object.type + " " + event.object.id : "");
    list.insertBefore(item, list.firstChild);
    while (list.children.length > keep) { list.removeChild(list.lastChild); }
    count += 1;
    feed.setAttribute("data-received", String(count));
    refreshSoon();
  }

  var source = new EventSource(feed.getAttribute("data-src"));
  source.onopen = function () { setStatus("live", false); };
  source.onerror = function () {
    // CLOSED: refused (403/503); the browser will not retry, the poll goes on. Otherwise it reconnects by
    // itself with Last-Event-ID, so nothing committed meanwhile is lost.
    setStatus(source.readyState === EventSource.CLOSED ? "polling only" : "reconnecting", true);
  };
  types.forEach(function (type) { if (type) { source.addEventListener(type, onEvent); } });
})();

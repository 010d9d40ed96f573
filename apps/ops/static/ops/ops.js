// Refreshes the /ops/ panels without a reload: fetch the server-rendered fragment, swap it in.
// No library and no third-party request (the page's CSP allows 'self' only).
(function () {
  "use strict";
  var root = document.getElementById("panels");
  if (!root) { return; }
  var every = parseInt(root.getAttribute("data-refresh-ms"), 10) || 5000;
  var url = root.getAttribute("data-src");
  var stamp = document.getElementById("refreshed");
  var busy = false;
  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
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
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, every);
})();

// The console's one script, served from the binary (the CSP allows only
// scripts from this origin, none inline).
// - Countdowns: every element with data-expires (ms since the epoch, by the
//   server's clock; data-now is the server's clock when the page was made)
//   shows the time left, once a second.
// - Live inbox: on a page with a #live-inbox element, reload when the set of
//   pending approvals changes (server-sent events from /events).
"use strict";
(function () {
  var clocks = document.querySelectorAll("[data-expires]");
  if (clocks.length) {
    var serverNow = Number(document.body.getAttribute("data-now")) || Date.now();
    var skew = Date.now() - serverNow;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    var show = function (ms) {
      var s = Math.floor(ms / 1000);
      if (s <= 0) { return "expired"; }
      if (s < 3600) { return Math.floor(s / 60) + "m " + pad(s % 60) + "s"; }
      return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    };
    var tick = function () {
      var now = Date.now() - skew;
      for (var i = 0; i < clocks.length; i++) {
        clocks[i].textContent = show(Number(clocks[i].getAttribute("data-expires")) - now);
      }
    };
    tick();
    window.setInterval(tick, 1000);
  }
  if (document.getElementById("live-inbox") && window.EventSource) {
    var source = new EventSource("/events");
    var reloading = false;
    source.addEventListener("changed", function () {
      if (reloading) { return; }
      reloading = true;
      window.location.reload();
    });
  }
})();

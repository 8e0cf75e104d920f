// Live inbox: reload when the set of pending approvals changes (server-sent
// events from /events). Served from the binary; the page's CSP allows only
// scripts from this origin.
"use strict";
(function () {
  if (!window.EventSource) { return; }
  var source = new EventSource("/events");
  var reloading = false;
  source.addEventListener("changed", function () {
    if (reloading) { return; }
    reloading = true;
    window.location.reload();
  });
})();

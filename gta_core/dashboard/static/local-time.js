// Rewrites every <time datetime="..."> (UTC, ISO 8601) in the viewer's time zone, on load and
// in every part a live update brings (window.gtaLocalTime). Without JavaScript the UTC text
// stays, which is correct, only less convenient. Also asks before a form with data-confirm.
"use strict";
(function () {
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  window.gtaLocalTime = function (root) {
    root.querySelectorAll("time[datetime]").forEach(function (element) {
      var moment = new Date(element.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        element.title = element.textContent;
        element.textContent = format.format(moment);
      }
    });
  };
  document.addEventListener("DOMContentLoaded", function () { window.gtaLocalTime(document); });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute && form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
})();

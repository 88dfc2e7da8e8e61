// Live updates: every few seconds, while the tab is visible, ask /live/<this page> for the
// parts of the page that changed and put them in place (see gta_core/dashboard/live.py).
// A part that holds the keyboard focus is left alone until the focus leaves it. A button in
// the header pauses and resumes the updates (remembered for the tab). Without JavaScript
// the page is as it was served: reload it to see what changed.
"use strict";
(function () {
  var every = 3000, timer = null, digests = {}, failures = 0;
  var main, state, toggle;
  var paused = window.sessionStorage && sessionStorage.getItem("gta-live") === "off";

  function say(text) { if (state) { state.textContent = text; } }

  function schedule(delay) {
    window.clearTimeout(timer);
    if (!paused) { timer = window.setTimeout(update, delay); }
  }

  function known() {
    return Object.keys(digests).map(function (name) { return name + "=" + digests[name]; }).join(",");
  }

  function apply(answer) {
    every = answer.every || every;
    Object.keys(answer.parts).forEach(function (name) {
      var part = main.querySelector('[data-part="' + name + '"]');
      if (!part) { return; }
      if (part.contains(document.activeElement) && document.activeElement !== document.body) {
        return;  // keep the focus where the keyboard left it; its digest stays old, so it comes again
      }
      part.innerHTML = answer.parts[name];
      digests[name] = answer.digests[name];
      if (window.gtaLocalTime) { window.gtaLocalTime(part); }
    });
    Object.keys(answer.digests).forEach(function (name) {
      if (!(name in answer.parts)) { digests[name] = answer.digests[name]; }
    });
  }

  function update() {
    if (document.visibilityState === "hidden") { schedule(every); return; }
    fetch(main.getAttribute("data-live"), {headers: {"X-GTA-Parts": known()}, credentials: "same-origin"})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        failures = 0;
        apply(answer);
        say("live: updated " + new Date().toLocaleTimeString());
        schedule(every);
      })
      .catch(function (error) {
        failures += 1;
        say("live: no update (" + error.message + "), trying again");
        schedule(Math.min(60000, every * Math.pow(2, failures)));
      });
  }

  function setPaused(value) {
    paused = value;
    if (window.sessionStorage) { sessionStorage.setItem("gta-live", paused ? "off" : "on"); }
    toggle.setAttribute("aria-pressed", paused ? "false" : "true");
    toggle.textContent = paused ? "Live: paused" : "Live: on";
    say(paused ? "live updates paused" : "live updates on");
    if (paused) { window.clearTimeout(timer); } else { schedule(0); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    main = document.querySelector("main[data-live]");
    state = document.querySelector(".live-state");
    if (!main) { return; }
    main.querySelectorAll("[data-part]").forEach(function (part) {
      digests[part.getAttribute("data-part")] = part.getAttribute("data-digest") || "";
    });
    toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "live-toggle";
    toggle.title = "Update this page every few seconds";
    toggle.addEventListener("click", function () { setPaused(!paused); });
    document.querySelector("header").appendChild(toggle);
    setPaused(paused);
  });
})();

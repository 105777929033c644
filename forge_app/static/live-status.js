/* Anvil FORGE — the publish status page updates itself as heartbeats arrive.
   Polls the page's JSON (data-live-status) every 2 seconds while the tab is visible and
   rebuilds the instance rows with DOM methods (text only, never HTML from the server).
   Without JavaScript the page shows the state at load time and a Reload link. */
(function () {
  "use strict";
  var INTERVAL = 2000;
  var MAX_BACKOFF = 30000;
  var GIVE_UP_AFTER = 60 * 60 * 1000; // an hour-old tab stops polling; a reload starts it again
  var LABELS = { applied: "Applied", pending: "Pending", error: "Error", superseded: "Superseded" };

  function Problem(message) { this.message = message; } // a failure worth its own words

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function ago(iso) {
    if (!iso) return "—";
    var then = Date.parse(iso);
    if (isNaN(then)) return iso;
    var seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    if (seconds < 60) return "just now";
    var plural = function (n, noun) { return n + " " + noun + (n === 1 ? "" : "s") + " ago"; };
    if (seconds < 3600) return plural(Math.floor(seconds / 60), "minute");
    if (seconds < 86400) return plural(Math.floor(seconds / 3600), "hour");
    return plural(Math.floor(seconds / 86400), "day");
  }

  function row(item) {
    var tr = el("tr", item.stale ? "is-stale" : (item.state === "error" ? "needs-attention" : ""));
    tr.setAttribute("data-instance", item.instance_id);
    tr.setAttribute("data-state", item.state);

    var who = el("td");
    // The short id is for the eye; screen readers get the whole id.
    var id = el("code", "instance-id", item.instance_id.slice(0, 8));
    id.title = item.instance_id;
    id.setAttribute("aria-hidden", "true");
    who.appendChild(id);
    who.appendChild(el("span", "visually-hidden", "Instance id " + item.instance_id + ", "));
    who.appendChild(el("span", "instance-host", item.hostname || "unknown host"));
    tr.appendChild(who);

    var mode = el("td");
    if (item.mode === "frozen") mode.appendChild(el("span", "flag flag-frozen", "FROZEN"));
    else mode.appendChild(el("span", "small", "ACCEPTING"));
    tr.appendChild(mode);

    var serves = el("td");
    if (item.version) {
      serves.appendChild(el("strong", null, item.version));
      serves.appendChild(document.createTextNode(" "));
      serves.appendChild(el("span", "muted small", "seq " + item.sequence));
    } else {
      serves.appendChild(el("span", "muted", "nothing yet"));
    }
    tr.appendChild(serves);

    tr.appendChild(el("td", null, item.expected_version || "—"));

    var state = el("td");
    state.appendChild(el("span", "state state-" + item.state, LABELS[item.state] || item.state));
    // Separators a screen reader reads (", "), so the state, flags and note do not run together.
    var sep = function () { state.appendChild(el("span", "visually-hidden", ", ")); state.appendChild(document.createTextNode(" ")); };
    if (item.revoked) {
      sep();
      state.appendChild(el("span", "flag flag-revoked", "Revoked token"));
    }
    if (item.stale) {
      sep();
      state.appendChild(el("span", "flag flag-stale", "Silent"));
    }
    if (item.note) {
      sep();
      state.appendChild(el("span", item.state === "error" ? "instance-error" : "instance-note", item.note));
    }
    tr.appendChild(state);

    var seen = el("td", "nowrap");
    var time = el("time", null, ago(item.last_seen_at));
    time.setAttribute("datetime", item.last_seen_at || "");
    time.title = item.last_seen_at || "";
    seen.appendChild(time);
    tr.appendChild(seen);
    return tr;
  }

  function setUp(root) {
    var url = root.getAttribute("data-live-status");
    var part = window.AnvilForge.parts(root, ["rows", "table", "empty", "progress", "updated", "superseded", "latest"]);
    var started = Date.now();
    var failures = 0;
    var timer = null;
    var inFlight = false;

    function render(data) {
      root.querySelectorAll("[data-count]").forEach(function (node) {
        var key = node.getAttribute("data-count");
        if (data.summary && key in data.summary) node.textContent = String(data.summary[key]);
      });
      if (part.progress) {
        part.progress.max = Math.max(1, data.summary.total);
        part.progress.value = data.summary.applied;
        part.progress.textContent = data.summary.applied + " of " + data.summary.total;
      }
      if (part.superseded) part.superseded.hidden = !!data.publication.current;
      if (part.latest) part.latest.textContent = String(data.publication.latest_sequence);
      var rows = document.createDocumentFragment();
      data.instances.forEach(function (item) { rows.appendChild(row(item)); });
      part.rows.replaceChildren(rows);
      if (part.table) part.table.hidden = data.instances.length === 0;
      if (part.empty) part.empty.hidden = data.instances.length !== 0;
      if (part.updated) {
        part.updated.classList.remove("is-error");
        part.updated.textContent = "Updated " + new Date().toLocaleTimeString() + " · refreshes every 2 seconds.";
      }
    }

    function schedule(delay) {
      window.clearTimeout(timer);
      timer = null;
      if (document.hidden) return; // resumes on visibilitychange
      if (Date.now() - started > GIVE_UP_AFTER) {
        if (part.updated) part.updated.textContent = "Live updates stopped after an hour; reload the page to resume.";
        return;
      }
      timer = window.setTimeout(poll, delay);
    }

    function fail(message) {
      failures += 1;
      if (part.updated) {
        part.updated.classList.add("is-error");
        part.updated.textContent = message;
      }
      schedule(Math.min(MAX_BACKOFF, INTERVAL * Math.pow(2, failures)));
    }

    function poll() {
      if (inFlight) return;
      inFlight = true;
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (response) {
          var type = response.headers.get("Content-Type") || "";
          if (response.status === 401 || type.indexOf("application/json") === -1) {
            throw new Problem("Your session has ended; sign in again to see live updates.");
          }
          if (!response.ok) throw new Problem("Live updates paused: the FORGE answered " + response.status + "; retrying.");
          return response.json();
        })
        .then(function (data) {
          inFlight = false;
          failures = 0;
          render(data);
          schedule(INTERVAL);
        })
        .catch(function (error) {
          inFlight = false;
          fail(error instanceof Problem ? error.message : "Live updates paused: the FORGE cannot be reached; retrying.");
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden && timer === null) poll();
    });
    root.classList.add("is-live");
    poll();
  }

  window.AnvilForge.ready(function () {
    document.querySelectorAll("[data-live-status]").forEach(setUp);
  });
})();

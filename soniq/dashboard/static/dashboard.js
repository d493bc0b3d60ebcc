// soniq dashboard: live job statuses over server-sent events, and writes by fetch.
// Served from the package; no inline script anywhere (the CSP forbids it).
"use strict";
(function () {
  var base = document.querySelector('meta[name="soniq-base"]').content;
  var csrf = document.querySelector('meta[name="soniq-csrf"]').content;

  function setStatus(id, status, attempts) {
    document.querySelectorAll('[data-status-of="' + id + '"]').forEach(function (el) {
      if (el.textContent === status) return;
      el.textContent = status;
      el.className = "status s-" + status;
      document.querySelectorAll('[data-stale-of="' + id + '"]').forEach(function (note) {
        note.hidden = false;
      });
    });
    if (attempts !== undefined) {
      document.querySelectorAll('[data-attempts-of="' + id + '"]').forEach(function (el) {
        el.textContent = String(attempts);
      });
    }
    // offer only the buttons that apply to the new status
    document.querySelectorAll('form[data-job="' + id + '"]').forEach(function (form) {
      var when = (form.getAttribute("data-show-when") || "").split(" ");
      form.hidden = when.indexOf(status) < 0;
    });
  }

  function watched() {
    var ids = {};
    document.querySelectorAll("[data-job-id]").forEach(function (el) {
      ids[el.getAttribute("data-job-id")] = true;
    });
    return Object.keys(ids);
  }

  function listen() {
    if (!window.EventSource) return;
    var ids = watched();
    var url = base + "/events?ids=" + encodeURIComponent(ids.join(","));
    var source = new EventSource(url);
    var dot = document.getElementById("live");
    source.onopen = function () { if (dot) dot.className = "live on"; };
    source.onerror = function () { if (dot) dot.className = "live off"; };
    source.addEventListener("job", function (ev) {
      var job = JSON.parse(ev.data);
      setStatus(job.id, job.status, job.attempts);
    });
    source.addEventListener("queues", function (ev) {
      var queues = JSON.parse(ev.data);
      document.querySelectorAll("tr[data-queue]").forEach(function (row) {
        var q = queues[row.getAttribute("data-queue")] || {queued: 0, processing: 0, dead_letter: 0};
        row.querySelectorAll("[data-count]").forEach(function (cell) {
          var v = q[cell.getAttribute("data-count")];
          cell.textContent = v === undefined || v === null ? "0" : String(v);
        });
      });
    });
  }

  function post(form) {
    var body = new URLSearchParams(new FormData(form));
    return fetch(form.action, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {"Accept": "application/json", "X-CSRF-Token": csrf}
    }).then(function (r) {
      return r.json().catch(function () { return {ok: false, error: r.status + " " + r.statusText}; });
    });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var action = form.getAttribute("data-action");
    if (!action) return;
    ev.preventDefault();
    if ((action === "delete" || action === "abort") && !window.confirm(action + " this job?")) return;
    post(form).then(function (res) {
      if (res.replayed_from) { window.location.href = base + "/jobs/" + res.id; return; }
      if (res.queue !== undefined || (action === "delete" && res.ok)) { window.location.reload(); return; }
      if (res.id && res.status) {
        setStatus(res.id, res.status);
        window.location.reload();
        return;
      }
      window.alert(res.error || ("could not " + action + " this job"));
    });
  });

  listen();
})();

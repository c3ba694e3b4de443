// metalhall console: confirmations, actions without a reload, and live
// updates from the page's server-sent event stream. No framework, no build.
"use strict";
(function () {
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.content : "";
  var dialog = document.getElementById("confirm");

  // confirm shows the page's dialog and calls then() on Confirm. The dialog
  // is modal: focus stays in it, Escape cancels.
  function confirmThen(text, then) {
    if (!dialog || typeof dialog.showModal !== "function") {
      if (window.confirm(text)) then();
      return;
    }
    document.getElementById("confirm-text").textContent = text;
    dialog.returnValue = "";
    dialog.onclose = function () { if (dialog.returnValue === "ok") then(); };
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  }

  function say(text, ok) {
    var el = document.getElementById("action-result");
    if (!el) return;
    el.textContent = text;
    el.className = ok ? "ok" : "error";
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      confirmThen(form.dataset.confirm, function () {
        var body = new URLSearchParams(new FormData(form));
        // getAttribute: form.action would be the power form's field named "action".
        fetch(form.getAttribute("action"), {
          method: "POST", body: body, credentials: "same-origin",
          headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
        }).then(function (r) { return r.json(); })
          .then(function (res) { say(res.message, res.ok); })
          .catch(function (e) { say("The request failed: " + e, false); });
      });
    });
  });

  // Live updates: the server sends a snapshot whenever it changes.
  var live = document.body.dataset.live;
  if (!live || !window.EventSource) return;
  var status = document.getElementById("live-status");
  var src = new EventSource("/ui/live?" + live);
  // setAttribute works on HTML and SVG elements alike (className does not).
  function setState(el, prefix, state) {
    el.setAttribute("class", swap(el.getAttribute("class"), prefix, state));
  }
  function swap(classes, prefix, state) {
    return (classes || "").split(/\s+/).filter(function (c) { return c && c.indexOf(prefix) !== 0; }).concat([prefix + state]).join(" ");
  }
  // The jobs page: rows follow their job; a job the page has no row for,
  // or a row whose job has ended, says the list itself has changed.
  function showJobs(jobs) {
    var changed = false;
    var byId = function (attr, id) { return document.querySelector('[' + attr + '="' + CSS.escape(id) + '"]'); };
    Object.keys(jobs).forEach(function (id) {
      var j = jobs[id];
      if (!byId("data-job", id)) { changed = true; return; }
      var st = byId("data-job-state", id);
      if (st) { st.textContent = j.state; setState(st, "st-", j.state); }
      var step = byId("data-job-step", id);
      if (step) step.textContent = j.step || "—";
      var p = byId("data-job-progress", id);
      if (p) { p.max = j.total || 1; p.value = j.done; p.textContent = j.done + " of " + j.total; }
      var pos = byId("data-job-position", id);
      if (pos && j.queue_position) pos.textContent = j.queue_position;
      if (j.state === "running" && pos) changed = true; // it left the queue
    });
    document.querySelectorAll("tr[data-job]").forEach(function (row) {
      if (!jobs[row.dataset.job]) {
        changed = true;
        var st = byId("data-job-state", row.dataset.job);
        if (st) { st.textContent = "ended"; setState(st, "st-", "ended"); }
      }
    });
    var news = document.getElementById("jobs-news");
    if (news && changed) news.hidden = false;
  }
  src.onopen = function () { status.textContent = "Live"; status.dataset.live = "open"; };
  src.onerror = function () { status.textContent = "Reconnecting…"; status.dataset.live = "error"; };
  src.addEventListener("signedout", function () { src.close(); status.textContent = "Signed out: reload to sign in again."; });
  src.addEventListener("gone", function () { src.close(); status.textContent = "This page no longer exists."; });
  src.onmessage = function (ev) {
    var snap = JSON.parse(ev.data);
    var ms = snap.machines || {};
    Object.keys(ms).forEach(function (name) {
      var m = ms[name];
      document.querySelectorAll('[data-machine="' + CSS.escape(name) + '"]').forEach(function (el) {
        el.dataset.state = m.state;
        setState(el.querySelector("rect") || el, "st-", m.state);
        if (el.hasAttribute("aria-label") && el.dataset.unit === undefined) el.setAttribute("aria-label", name + ", " + m.state);
      });
      document.querySelectorAll('[data-machine-state="' + CSS.escape(name) + '"]').forEach(function (el) { el.textContent = m.state; });
      document.querySelectorAll('[data-machine-power="' + CSS.escape(name) + '"]').forEach(function (el) { el.textContent = m.power || "unknown"; });
    });
    if (snap.jobs) showJobs(snap.jobs);
    var j = snap.job;
    if (j) {
      var box = document.getElementById("job");
      if (box) box.hidden = false;
      var none = document.getElementById("no-job");
      if (none) none.hidden = true;
      var set = function (id, text) { var el = document.getElementById(id); if (el) el.textContent = text; };
      set("job-kind", j.kind); set("job-id", j.id); set("job-error", j.error || "");
      var st = document.getElementById("job-state");
      if (st) { st.textContent = j.state; setState(st, "st-", j.state); st.dataset.job = j.id; }
      var p = document.getElementById("job-progress");
      if (p) { p.max = j.total || 1; p.value = j.done; p.textContent = j.done + " of " + j.total; }
    }
    status.textContent = "Live · updated " + new Date().toLocaleTimeString();
  };
})();

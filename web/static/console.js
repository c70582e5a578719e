// Live parts of the console. Every page works without this script; it only saves reloads.
"use strict";
(function () {
  function follow() {
    var log = document.getElementById("log");
    if (!log || log.dataset.done === "true" || !window.EventSource) return;
    var es = new EventSource(log.dataset.events);
    var open = null; // the line whose next part is still to come
    es.addEventListener("line", function (ev) {
      var d = JSON.parse(ev.data);
      if (open && open.id === "L" + d.n) {
        open.insertAdjacentHTML("beforeend", d.html);
      } else {
        var span = document.createElement("span");
        span.className = "line";
        span.id = "L" + d.n;
        span.innerHTML = '<a href="#L' + d.n + '">' + d.n + "</a>" + d.html;
        log.appendChild(span);
        log.appendChild(document.createTextNode("\n"));
        open = span;
      }
      if (!d.more) open = null;
      if (window.innerHeight + window.scrollY >= document.body.offsetHeight - 80) window.scrollTo(0, document.body.scrollHeight);
    });
    es.addEventListener("failure", function (ev) {
      es.close();
      var p = document.createElement("p");
      p.className = "error";
      p.textContent = "The live log stopped: " + JSON.parse(ev.data).error;
      log.after(p);
    });
    es.addEventListener("done", function (ev) {
      es.close();
      log.dataset.done = "true";
      var st = document.getElementById("job-state");
      var d = JSON.parse(ev.data);
      if (st && d.state) { st.textContent = d.state; st.className = "chip s-" + d.state; }
    });
  }
  function live() {
    var page = document.body.dataset.page;
    if ((page !== "graph" && page !== "jobs") || !window.EventSource) return;
    var es = new EventSource("/events");
    var pending = false;
    es.addEventListener("changed", function () {
      if (pending) return;
      pending = true;
      setTimeout(function () {
        pending = false;
        var target = page === "graph" ? document.getElementById("graph") : document.getElementById("jobs");
        var src = page === "graph" ? target.dataset.src : "/jobs";
        fetch(src, { credentials: "same-origin" }).then(function (r) { return r.text(); }).then(function (t) {
          if (page === "graph") { target.innerHTML = t; return; }
          var doc = new DOMParser().parseFromString(t, "text/html");
          var fresh = doc.getElementById("jobs");
          if (fresh) target.replaceWith(fresh);
        });
      }, 300);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { follow(); live(); });
})();

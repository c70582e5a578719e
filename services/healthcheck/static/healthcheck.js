// Live progress of the runs going on: each section.progress asks its run's JSON every
// few seconds and shows what it says, until the run has finished.
(function () {
  const finished = { done: true, failed: true, cancelled: true };
  document.querySelectorAll("section.progress[data-api]").forEach(function (sec) {
    const set = function (sel, text) { const e = sec.querySelector(sel); if (e) e.textContent = text; };
    const poll = function () {
      fetch(sec.dataset.api, { headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (run) {
          const p = run.progress || {};
          set(".done", p.done || 0);
          set(".total", p.total || 0);
          set(".pct", p.total ? Math.floor(100 * (p.done || 0) / p.total) : 0);
          set(".eta", p.eta ? new Date(p.eta).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC") : "unknown");
          set(".status", run.status);
          const bar = sec.querySelector("progress");
          if (bar) { bar.max = p.total || 0; bar.value = p.done || 0; }
          sec.querySelectorAll("[data-state]").forEach(function (b) { b.textContent = (run.counts || {})[b.dataset.state] || 0; });
          if (!finished[run.status]) setTimeout(poll, 3000);
        })
        .catch(function () { setTimeout(poll, 10000); });
    };
    setTimeout(poll, 3000);
  });
})();

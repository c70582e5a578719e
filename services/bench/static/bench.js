// Draws the bench service's charts with uPlot and keeps the chosen range in the URL.
var kilnBench = (function () {
  "use strict";
  var palette = ["#1f6fd1", "#d73a2f", "#2e8b2e", "#e8740c", "#7b3fb0", "#00838f"];

  function urlRange() {
    var q = new URLSearchParams(location.search);
    var from = parseInt(q.get("from") || "", 10), to = parseInt(q.get("to") || "", 10);
    return { from: isNaN(from) ? null : from, to: isNaN(to) ? null : to };
  }

  function setURLRange(from, to) {
    var q = new URLSearchParams(location.search);
    if (from == null) { q.delete("from"); q.delete("to"); }
    else { q.set("from", String(Math.floor(from))); q.set("to", String(Math.ceil(to))); }
    var s = q.toString();
    history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
    updateTwin();
  }

  function updateTwin() {
    var a = document.getElementById("json-twin");
    if (!a) return;
    var q = new URLSearchParams(location.search);
    q.set("format", "json");
    a.href = location.pathname + "?" + q.toString();
  }

  // nearest is the series of c whose value at index i is nearest the cursor's height.
  function nearest(u, c, i) {
    var y = u.posToVal(u.cursor.top, "y"), best = -1, dist = Infinity;
    c.series.forEach(function (s, k) {
      var v = s.values[i];
      if (v != null && Math.abs(v - y) < dist) { dist = Math.abs(v - y); best = k; }
    });
    return best;
  }

  function draw(root, charts, repo) {
    var range = urlRange();
    var plots = [];
    updateTwin();
    var syncing = false;
    (charts || []).forEach(function (c, ci) {
      var box = document.createElement("div");
      box.className = "chart";
      box.dataset.title = c.title;
      var h = document.createElement("h3");
      h.textContent = c.title + (c.units ? " (" + c.units + ")" : "");
      var readout = document.createElement("div");
      readout.className = "readout";
      box.appendChild(h);
      root.appendChild(box);
      var data = [c.x];
      var series = [{}];
      var bands = [];
      c.series.forEach(function (s, i) {
        var col = palette[i % palette.length];
        var base = data.length;
        data.push(s.values, s.hi, s.lo);
        series.push({ label: s.label, stroke: col, width: 2, points: { show: true, size: 6 } });
        series.push({ label: s.label + " max", stroke: col, width: 0, points: { show: false } });
        series.push({ label: s.label + " min", stroke: col, width: 0, points: { show: false } });
        bands.push({ series: [base + 1, base + 2], fill: col + "22" });
      });
      var opts = {
        width: Math.max(400, root.clientWidth - 20), height: 260,
        series: series, bands: bands,
        legend: { show: true },
        cursor: { drag: { x: true, y: false } },
        scales: { x: { time: true } },
        hooks: {
          setCursor: [function (u) {
            var i = u.cursor.idx;
            if (i == null) { readout.textContent = ""; return; }
            var parts = ["commit " + (c.commits[i] || "").slice(0, 12) + (c.pr && c.pr[i] ? " (PR)" : "")];
            c.series.forEach(function (s) {
              if (s.values[i] != null) parts.push(s.label + " = " + s.values[i].toPrecision(5));
            });
            var k = nearest(u, c, i);
            if (k >= 0 && c.series[k].log && c.series[k].log[i]) parts.push("click: the log line that printed " + c.series[k].label);
            readout.textContent = parts.join(" · ");
          }],
          setSelect: [function (u) {
            if (u.select.width < 2) return;
            var from = u.posToVal(u.select.left, "x"), to = u.posToVal(u.select.left + u.select.width, "x");
            setURLRange(from, to);
          }],
          setScale: [function (u, key) {
            if (key !== "x" || syncing) return;
            syncing = true;
            plots.forEach(function (p) { if (p !== u) p.setScale("x", { min: u.scales.x.min, max: u.scales.x.max }); });
            syncing = false;
          }]
        }
      };
      var u = new uPlot(opts, data, box);
      box.appendChild(readout);
      // A click opens the job log line that printed the series nearest the cursor,
      // or the run's page when that is not known.
      u.over.addEventListener("click", function () {
        var i = u.cursor.idx;
        if (i == null || !c.runs[i]) return;
        var k = nearest(u, c, i);
        var log = k >= 0 && c.series[k].log ? c.series[k].log[i] : "";
        location.href = log || "/bench/r/" + repo + "/run/" + c.runs[i];
      });
      u.over.addEventListener("dblclick", function () { setURLRange(null, null); });
      plots.push(u);
    });
    if (range.from != null && range.to != null) {
      plots.forEach(function (p) { p.setScale("x", { min: range.from, max: range.to }); });
    }
    root.dataset.drawn = String(plots.length);
    window.kilnBenchPlots = plots;
    return plots;
  }

  return { draw: draw, urlRange: urlRange };
})();

// The console's live charts: poll the console's JSON every 2 s and redraw with uPlot
// (vendored: static/vendor).  Everything else on the pages is server-rendered.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  // labels: one per series; scales (optional): each series' y scale, the first scale's
  // axis on the left and a second one's on the right (messages/s beside bytes/s).
  function chart(elementId, labels, scales) {
    var element = document.getElementById(elementId);
    if (!element) return null;
    scales = scales || labels.map(function () { return "y"; });
    var series = [{}].concat(labels.map(function (label, i) {
      return {label: label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
              scale: scales[i]};
    }));
    var axes = [{}];
    scales.filter(function (s, i) { return scales.indexOf(s) === i; }).forEach(function (s, i) {
      axes.push({scale: s, size: 70, side: i === 0 ? 3 : 1, label: s === "y" ? "" : s,
                 grid: {show: i === 0}});
    });
    var data = [[]].concat(labels.map(function () { return []; }));
    var plot = new uPlot({
      width: Math.max(element.clientWidth, 300), height: 220,
      series: series, scales: {x: {time: true}}, axes: axes,
    }, data, element);
    element.dataset.ready = "1";
    return plot;
  }

  function getJson(url, onData) {
    fetch(url, {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(onData).catch(function () { /* the next poll tries again */ });
  }

  function liveMetrics(ids) {
    var throughput = chart(ids.throughput, ["messages in/s", "bytes in/s", "bytes out/s"],
                           ["messages/s", "bytes/s", "bytes/s"]);
    var latency = null, latencyApis = [];
    function poll() {
      getJson("/api/metrics", function (m) {
        if (throughput) {
          throughput.setData([m.t, m.messages_in, m.bytes_in, m.bytes_out]);
          document.getElementById(ids.throughput).dataset.points = String(m.t.length);
        }
        if (ids.latency) {
          // The busiest APIs (by their latest request rate), at most four.
          var apis = Object.keys(m.apis).sort(function (a, b) {
            var ra = m.apis[a].rate, rb = m.apis[b].rate;
            return (rb[rb.length - 1] || 0) - (ra[ra.length - 1] || 0);
          }).slice(0, 4);
          if (apis.join() !== latencyApis.join()) {
            if (latency) latency.destroy();
            latencyApis = apis;
            latency = chart(ids.latency, apis.map(function (a) { return a + " p99"; }));
          }
          if (latency) {
            latency.setData([m.t].concat(apis.map(function (a) { return m.apis[a].p99; })));
            document.getElementById(ids.latency).dataset.points = String(m.t.length);
          }
        }
      });
    }
    poll();
    setInterval(poll, POLL_MS);
  }

  function groupLag(elementId, url) {
    var plot = chart(elementId, ["total lag"]);
    var t = [], lag = [];
    function poll() {
      getJson(url, function (g) {
        if (g.error) return;
        t.push(Date.now() / 1000); lag.push(g.total_lag);
        if (t.length > 150) { t.shift(); lag.shift(); }
        if (plot) plot.setData([t, lag]);
        var total = document.getElementById("total-lag");
        if (total) total.textContent = String(g.total_lag);
        var state = document.getElementById("group-state");
        if (state) state.textContent = g.state;
        g.partitions.forEach(function (p) {
          var row = document.querySelector(
            "#lags tr[data-partition='" + CSS.escape(p.topic + "/" + p.partition) + "']");
          if (!row) return;
          ["committed", "end", "lag"].forEach(function (key) {
            row.querySelector("." + key).textContent = p[key] === null ? "\u2013" : String(p[key]);
          });
        });
        document.getElementById(elementId).dataset.points = String(t.length);
      });
    }
    poll();
    setInterval(poll, POLL_MS);
  }

  window.pystreamConsole = {liveMetrics: liveMetrics, groupLag: groupLag};
})();

/* siftkit report plots: inline SVG from the JSON block #siftkit-data. No dependencies, no network.
   All text goes through textContent / attributes, never innerHTML. */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var POOL = "#94a3b8", SEL = "#2563eb", AXIS = "#475569", GRID = "#e2e8f0";
  window.addEventListener("error", function (e) {
    document.body.setAttribute("data-js-error", String(e.message || e));
  });
  var DATA = JSON.parse(document.getElementById("siftkit-data").textContent);

  function el(tag, attrs, parent, text) {
    var n = document.createElementNS(NS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) n.setAttribute(k, attrs[k]);
    if (text !== undefined) n.textContent = text;
    if (parent) parent.appendChild(n);
    return n;
  }
  function svg(w, h) {
    return el("svg", { viewBox: "0 0 " + w + " " + h, width: "100%", role: "img",
      preserveAspectRatio: "xMidYMid meet", "font-family": "inherit", "font-size": "11" });
  }
  function fmt(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toPrecision(3) + "G";
    if (a >= 1e6) return +(v / 1e6).toPrecision(3) + "M";
    if (a >= 1e3) return +(v / 1e3).toPrecision(3) + "k";
    if (a === 0) return "0";
    if (a < 0.01) return v.toExponential(1);
    return String(+v.toPrecision(3));
  }
  function pct(v) { return v === 0 ? "0%" : (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)) + "%"; }
  function niceStep(span, n) {
    var raw = span / Math.max(n, 1), p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
  }
  function niceTicks(lo, hi, n, integer) {
    if (!(hi > lo)) return [lo];
    var step = niceStep(hi - lo, n);
    if (integer) step = Math.max(1, Math.round(step));
    var out = [], start = Math.ceil(lo / step - 1e-9) * step;
    for (var v = start; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }
  function logTicks(lo, hi) {   // ticks in value space for a log10(1+v) axis
    var decades = Math.log10(1 + hi) - Math.log10(1 + lo), mult = decades <= 2.5 ? [1, 2, 5] : [1];
    var out = lo <= 0 ? [0] : [];
    for (var p = 0; p <= 12; p++) {
      for (var i = 0; i < mult.length; i++) {
        var t = mult[i] * Math.pow(10, p);
        if (t >= lo && t <= hi) out.push(t);
      }
    }
    return out;
  }
  function legend(g, x, items) {
    items.forEach(function (it) {
      el("rect", { x: x, y: 2, width: 10, height: 10, rx: 2, fill: it[1], "fill-opacity": it[2] }, g);
      var t = el("text", { x: x + 14, y: 11, fill: AXIS, class: "legend" }, g, it[0]);
      x += 22 + 6.2 * it[0].length;
      return t;
    });
  }
  function axes(s, m, w, h, xt, yt, xpos, ypos, xlab, ylab) {
    yt.forEach(function (v) {
      var y = ypos(v);
      el("line", { x1: m.l, x2: w - m.r, y1: y, y2: y, stroke: GRID }, s);
      el("text", { x: m.l - 6, y: y + 3.5, "text-anchor": "end", fill: AXIS, class: "tick" }, s, yt.fmt(v));
    });
    el("line", { x1: m.l, x2: w - m.r, y1: h - m.b, y2: h - m.b, stroke: AXIS }, s);
    var last = -1e9;
    xt.forEach(function (v) {
      var x = xpos(v);
      if (x - last < 26) return;   // keep tick labels from overlapping
      last = x;
      el("line", { x1: x, x2: x, y1: h - m.b, y2: h - m.b + 4, stroke: AXIS }, s);
      el("text", { x: x, y: h - m.b + 15, "text-anchor": "middle", fill: AXIS, class: "tick" }, s, fmt(v));
    });
    el("text", { x: (m.l + w - m.r) / 2, y: h - 4, "text-anchor": "middle", fill: AXIS, class: "axis-label" },
      s, xlab);
    el("text", { x: 12, y: (m.t + h - m.b) / 2, "text-anchor": "middle", fill: AXIS, class: "axis-label",
      transform: "rotate(-90 12 " + (m.t + h - m.b) / 2 + ")" }, s, ylab);
  }

  function drawHist(div, h) {
    var w = 520, ht = 260, m = { l: 54, r: 14, t: 24, b: 42 }, s = svg(w, ht);
    var bars = 0;
    legend(s, m.l, [["pool (n=" + h.n_pool.toLocaleString("en-US") + ")", POOL, 0.75],
      ["selected (n=" + h.n_sel.toLocaleString("en-US") + ")", SEL, 0.6]]);
    if (!h.edges.length) {
      el("text", { x: w / 2, y: ht / 2, "text-anchor": "middle", fill: AXIS }, s, "no finite values");
      div.appendChild(s); return { bars: 0 };
    }
    var T = h.log ? function (v) { return Math.log10(1 + Math.max(v, 0)); } : function (v) { return v; };
    var e = h.edges, x0 = T(e[0]), x1 = T(e[e.length - 1]);
    var share = function (c, n) { return n ? 100 * c / n : 0; };
    var ymax = 0;
    for (var i = 0; i < h.pool.length; i++) {
      ymax = Math.max(ymax, share(h.pool[i], h.n_pool), share(h.sel[i], h.n_sel));
    }
    var ystep = niceStep(ymax || 1, 4), ytop = Math.ceil((ymax || 1) / ystep - 1e-9) * ystep;
    var yt = niceTicks(0, ytop, Math.round(ytop / ystep), false);
    var ydec = Math.max(0, -Math.floor(Math.log10(ystep) + 1e-9));
    yt.fmt = function (v) { return v.toFixed(ydec) + "%"; };
    var xpos = function (v) { return m.l + (T(v) - x0) / ((x1 - x0) || 1) * (w - m.l - m.r); };
    var ypos = function (v) { return ht - m.b - v / ytop * (ht - m.t - m.b); };
    var xt = h.log ? logTicks(e[0], e[e.length - 1]) : niceTicks(e[0], e[e.length - 1], 6, h.integer);
    if (h.log && xt.length < 2) xt = [e[0], e[e.length - 1]];
    axes(s, m, w, ht, xt, yt, xpos, ypos, h.name + (h.log ? " (log scale)" : ""), "% of records");
    [["pool", h.pool, h.n_pool, POOL, 0.75], ["sel", h.sel, h.n_sel, SEL, 0.55]].forEach(function (sr) {
      for (var i = 0; i < sr[1].length; i++) {
        if (!sr[1][i]) continue;
        var xa = xpos(e[i]), xb = xpos(e[i + 1]), v = share(sr[1][i], sr[2]), y = ypos(v);
        var r = el("rect", { class: "bar " + sr[0], x: xa + 0.5, y: y, width: Math.max(xb - xa - 1, 0.8),
          height: ht - m.b - y, fill: sr[3], "fill-opacity": sr[4] }, s);
        el("title", {}, r, (sr[0] === "sel" ? "selected" : "pool") + " [" + fmt(e[i]) + ", " + fmt(e[i + 1]) +
          "): " + sr[1][i].toLocaleString("en-US") + " records, " + pct(v));
        bars++;
      }
    });
    div.appendChild(s);
    return { bars: bars };
  }

  function drawSources(div, d) {
    var n = d.sources.length, row = 30, m = { l: 150, r: 60, t: 24, b: 36 };
    var w = 640, ht = m.t + m.b + Math.max(n, 1) * row, s = svg(w, ht), bars = 0;
    legend(s, m.l, [["pool share", POOL, 0.75], ["selected share", SEL, 0.8]]);
    var shares = function (arr, tot) { return arr.map(function (c) { return tot ? 100 * c / tot : 0; }); };
    var ps = shares(d.pool, d.n_pool), ss = shares(d.sel, d.n_sel);
    var xmax = Math.max.apply(null, ps.concat(ss).concat([1]));
    var xt = niceTicks(0, xmax, 5, false), xtop = Math.max(xt[xt.length - 1], xmax);
    var xpos = function (v) { return m.l + v / xtop * (w - m.l - m.r); };
    xt.forEach(function (v) {
      el("line", { x1: xpos(v), x2: xpos(v), y1: m.t, y2: ht - m.b, stroke: GRID }, s);
      el("text", { x: xpos(v), y: ht - m.b + 15, "text-anchor": "middle", fill: AXIS, class: "tick" }, s, pct(v));
    });
    el("text", { x: (m.l + w - m.r) / 2, y: ht - 4, "text-anchor": "middle", fill: AXIS, class: "axis-label" },
      s, "% of records");
    d.sources.forEach(function (name, i) {
      var y = m.t + i * row + 4, label = name.length > 22 ? name.slice(0, 21) + "\u2026" : name;
      var t = el("text", { x: m.l - 8, y: y + 15, "text-anchor": "end", fill: "#0f172a", class: "src" }, s, label);
      el("title", {}, t, name);
      [[ps[i], d.pool[i], POOL, 0.75, 0, "pool"], [ss[i], d.sel[i], SEL, 0.8, 11, "sel"]].forEach(function (b) {
        if (!b[1]) return;
        var r = el("rect", { class: "bar " + b[5], x: m.l, y: y + b[4], width: Math.max(xpos(b[0]) - m.l, 1),
          height: 10, rx: 1.5, fill: b[2], "fill-opacity": b[3] }, s);
        el("title", {}, r, name + ": " + b[1].toLocaleString("en-US") + " records (" + pct(b[0]) + " of " +
          (b[5] === "sel" ? "selection" : "pool") + ")");
        el("text", { x: xpos(b[0]) + 4, y: y + b[4] + 9, fill: AXIS, class: "val" }, s, pct(b[0]));
        bars++;
      });
    });
    el("line", { x1: m.l, x2: m.l, y1: m.t, y2: ht - m.b, stroke: AXIS }, s);
    div.appendChild(s);
    return { bars: bars };
  }

  function drawScatter(div, d) {
    var w = 520, ht = 400, m = { l: 54, r: 14, t: 24, b: 42 }, s = svg(w, ht), pts = 0;
    legend(s, m.l, [["pool (n=" + d.n_pool.toLocaleString("en-US") + ")", POOL, 0.6],
      ["selected (n=" + d.n_sel.toLocaleString("en-US") + ")", SEL, 0.8]]);
    var xs = d.pool.x.concat(d.sel.x), ys = d.pool.y.concat(d.sel.y);
    if (!xs.length) {
      el("text", { x: w / 2, y: ht / 2, "text-anchor": "middle", fill: AXIS }, s, "no points");
      div.appendChild(s); return { points: 0 };
    }
    var lo = function (a) { return Math.min.apply(null, a); }, hi = function (a) { return Math.max.apply(null, a); };
    var xl = lo(xs), xh = hi(xs), yl = lo(ys), yh = hi(ys);
    if (xh === xl) { xl -= 1; xh += 1; }
    if (yh === yl) { yl -= 1; yh += 1; }
    var xt = niceTicks(xl, xh, 6, false), yt = niceTicks(yl, yh, 5, false);
    yt.fmt = fmt;
    var xpos = function (v) { return m.l + (v - xl) / (xh - xl) * (w - m.l - m.r); };
    var ypos = function (v) { return ht - m.b - (v - yl) / (yh - yl) * (ht - m.t - m.b); };
    axes(s, m, w, ht, xt, yt, xpos, ypos, d.xlabel || "x", d.ylabel || "y");
    [[d.pool, POOL, 0.45, 1.6, "pool"], [d.sel, SEL, 0.8, 2.2, "sel"]].forEach(function (sr) {
      var g = el("g", { fill: sr[1], "fill-opacity": sr[2] }, s);
      for (var i = 0; i < sr[0].x.length; i++) {
        el("circle", { class: "pt " + sr[4], cx: xpos(sr[0].x[i]).toFixed(1), cy: ypos(sr[0].y[i]).toFixed(1),
          r: sr[3] }, g);
        pts++;
      }
    });
    div.appendChild(s);
    return { points: pts };
  }

  var draw = { hist: function (d, k) { return drawHist(d, DATA.hists[k]); },
    sources: function (d) { return drawSources(d, DATA.sources); },
    scatter: function (d, k) { return drawScatter(d, DATA.scatters[k]); } };
  var divs = document.querySelectorAll("div.plot[data-kind]");
  for (var i = 0; i < divs.length; i++) {
    var div = divs[i];
    try {
      var res = draw[div.getAttribute("data-kind")](div, +div.getAttribute("data-key"));
      if (res.bars !== undefined) div.setAttribute("data-bars", String(res.bars));
      if (res.points !== undefined) div.setAttribute("data-points", String(res.points));
      div.setAttribute("data-rendered", "1");
    } catch (err) {
      div.setAttribute("data-error", String(err));
      div.textContent = "plot failed: " + err;
    }
  }
  document.body.setAttribute("data-report-ready", "1");
})();

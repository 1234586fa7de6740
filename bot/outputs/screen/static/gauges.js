// livebot screen: hand-made SVG charts (a half-circle gauge and the 5-minute timeline).
// Drawn as SVG so nothing heavy has to load on a tablet; redrawn on each 2 Hz snapshot.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = { green: "#35d07f", amber: "#ffb224", red: "#ff5d5d", blue: "#4da3ff", track: "#2c313d",
                   grey: "#596173", muted: "#9aa3b2" };

  function svg(tag, attrs) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }

  // Point on the gauge arc for fraction f in [0, 1] (0 = left end, 1 = right end).
  function polar(cx, cy, r, f) {
    const a = Math.PI * (1 - f);
    return [cx + r * Math.cos(a), cy - r * Math.sin(a)];
  }

  function arcPath(cx, cy, r, f0, f1) {
    const [x0, y0] = polar(cx, cy, r, f0);
    const [x1, y1] = polar(cx, cy, r, f1);
    // A half-circle gauge never sweeps more than 180°, so the large-arc flag is always 0.
    return `M ${x0.toFixed(2)} ${y0.toFixed(2)} A ${r} ${r} 0 0 1 ${x1.toFixed(2)} ${y1.toFixed(2)}`;
  }

  // gauge(svgEl, {fraction, zones: [[untilFraction, color]], labels: [left, right]}); fraction null = no data.
  function gauge(target, opts) {
    const W = 220, H = 128, cx = 110, cy = 112, r = 88;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    let from = 0;
    for (const [until, color] of opts.zones) {
      root.appendChild(svg("path", { d: arcPath(cx, cy, r, from, until), stroke: color, "stroke-width": 18,
                                      fill: "none", opacity: 0.35 }));
      from = until;
    }
    const f = opts.fraction;
    if (f !== null && f !== undefined) {
      const clamped = Math.max(0, Math.min(1, f));
      let color = opts.zones[opts.zones.length - 1][1];
      for (const [until, c] of opts.zones) { if (clamped <= until) { color = c; break; } }
      if (clamped > 0.004) {
        root.appendChild(svg("path", { d: arcPath(cx, cy, r, 0, clamped), stroke: color, "stroke-width": 18,
                                        fill: "none", "stroke-linecap": "butt" }));
      }
      const [nx, ny] = polar(cx, cy, r - 30, clamped);
      root.appendChild(svg("line", { x1: cx, y1: cy, x2: nx.toFixed(2), y2: ny.toFixed(2), stroke: "#eef0f4",
                                      "stroke-width": 5, "stroke-linecap": "round" }));
    }
    root.appendChild(svg("circle", { cx, cy, r: 8, fill: f === null || f === undefined ? COLORS.grey : "#eef0f4" }));
    if (opts.labels) {
      const [left, right] = opts.labels;
      const tl = svg("text", { x: cx - r, y: H - 1, "text-anchor": "middle", class: "axis-text" });
      tl.textContent = left;
      const tr = svg("text", { x: cx + r, y: H - 1, "text-anchor": "middle", class: "axis-text" });
      tr.textContent = right;
      root.append(tl, tr);
    }
    target.replaceChildren(root);
  }

  // timeline(box, points): bars = comments per 10 s, lines = negative share and confusion rate (%).
  function timeline(box, points) {
    const W = Math.max(200, box.clientWidth), H = Math.max(60, box.clientHeight);  // fill the box, as short as it gets
    const padL = 44, padR = 48, padT = 10, padB = 26;
    const iw = W - padL - padR, ih = H - padT - padB;
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H });
    const n = points.length || 1;
    // Round axis tops so the quarter gridlines land on round numbers.
    const rawMax = Math.max(4, ...points.map((p) => p.comments));
    const steps = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000];
    const maxC = 4 * (steps.find((st) => st * 4 >= rawMax) || Math.ceil(rawMax / 4));
    const shares = points.map((p) => ({
      neg: p.analyzed ? p.neg / p.analyzed : null,
      conf: p.analyzed ? p.confused / p.analyzed : null,
    }));
    const maxShare = Math.max(0.2, ...shares.flatMap((s) => [s.neg || 0, s.conf || 0]));
    const shareTop = Math.min(1, Math.ceil(maxShare / 0.2 - 1e-9) * 0.2);
    // grid + axes
    for (let i = 0; i <= 4; i++) {
      const y = padT + ih - (ih * i) / 4;
      root.appendChild(svg("line", { x1: padL, x2: W - padR, y1: y, y2: y, stroke: COLORS.track, "stroke-width": 1 }));
      if (ih < 80 && i % 2) continue;  // a short chart labels every other gridline so the numbers don't overlap
      const lc = svg("text", { x: padL - 6, y: y + 4, "text-anchor": "end", class: "axis-text" });
      lc.textContent = String(Math.round((maxC * i) / 4));
      const rc = svg("text", { x: W - padR + 6, y: y + 4, "text-anchor": "start", class: "axis-text" });
      rc.textContent = `${Math.round((shareTop * 100 * i) / 4)}%`;
      root.append(lc, rc);
    }
    const bw = iw / n;
    points.forEach((p, i) => {
      const h = (ih * p.comments) / maxC;
      root.appendChild(svg("rect", { x: (padL + i * bw + bw * 0.12).toFixed(1), y: (padT + ih - h).toFixed(1),
                                      width: (bw * 0.76).toFixed(1), height: Math.max(0, h).toFixed(1),
                                      fill: COLORS.blue, opacity: 0.55, rx: 2 }));
    });
    function line(key, color) {
      let d = "";
      shares.forEach((s, i) => {
        const v = s[key];
        if (v === null) return;
        const x = padL + i * bw + bw / 2;
        const y = padT + ih - (ih * Math.min(v, shareTop)) / shareTop;
        d += `${d ? "L" : "M"} ${x.toFixed(1)} ${y.toFixed(1)} `;
      });
      if (d) root.appendChild(svg("path", { d, stroke: color, "stroke-width": 3, fill: "none",
                                            "stroke-linejoin": "round" }));
    }
    line("neg", COLORS.red);
    line("conf", COLORS.amber);
    // x labels: minutes ago
    for (let m = 5; m >= 0; m--) {
      const x = padL + iw - (iw * m) / 5;
      const t = svg("text", { x, y: H - 6, "text-anchor": m === 0 ? "end" : m === 5 ? "start" : "middle",
                              class: "axis-text" });
      t.textContent = m === 0 ? "现在" : `−${m} 分`;
      root.appendChild(t);
    }
    box.replaceChildren(root);
  }

  return { gauge, timeline, COLORS };
})();

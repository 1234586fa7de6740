// livebot outcome analytics on the screens (snapshot.rooms[room].analytics, see bot.analytics.LiveAnalytics.view):
// host view: need match as one big number, the compact funnel and buying intent per minute;
// control view: before/after of accepted suggestions and the benchmark (watch_only) rooms next to ours.
"use strict";

const LBAnalytics = (() => {
  const { el, pct, num, clock, topicZh } = LB;
  const KIND_ZH = { script_switch: "切换话术", coupon: "发券", prompt: "互动口令" };
  const METRICS = [
    // [key, label, share (deltas in percentage points), higher is bad]
    ["comments_per_min", "弹幕/分", false, false],
    ["topic_confusion", "疑问率", true, true],
    ["negative_share", "负面", true, true],
    ["intent_per_min", "意向/分", false, false],
    ["online", "在线", false, false],
  ];
  const NEED_LOW = 0.4;

  function analyticsOf(room) {
    return room && room.analytics && typeof room.analytics === "object" ? room.analytics : null;
  }

  function fixed(x, digits) {
    if (x === null || x === undefined) return "—";
    return Number.isInteger(x) ? num(x) : Number(x).toFixed(digits === undefined ? 1 : digits);
  }

  // Replace a node's children only when what it shows changed (2 Hz snapshots, no flicker).
  function show(node, key, build) {
    if (node.dataset.key === key) return;
    node.dataset.key = key;
    node.replaceChildren(...[].concat(build()).filter(Boolean));
  }

  function ensure(parent, id, tag, cls) {
    let node = document.getElementById(id);
    if (!node) {
      node = el(tag, { id, class: cls });
      parent.appendChild(node);
    }
    return node;
  }

  // ---- host ----
  function renderHost(room) {
    const card = document.getElementById("gauges-card");
    const a = analyticsOf(room);
    if (!card) return;
    const strip = ensure(card, "analytics-strip", "div", "an-strip");
    strip.hidden = !a;
    if (!a) return;
    const need = a.need_match;
    const f = a.funnel || {};
    const minute = a.minute || {};
    const key = JSON.stringify([need, f.viewers, f.active_rate, f.interaction_rate, f.follow_rate,
                                a.intent_per_min, f.likes_per_viewer, f.long_share, minute.interaction_rate]);
    show(strip, key, () => {
      let value = "—";
      let tone = "";
      let detail = need ? "近 60 秒暂无可归类的提问" : "未加载话术, 无法计算";
      if (need && need.share !== null && need.share !== undefined) {
        value = pct(need.share);
        tone = need.share < NEED_LOW ? "tone-bad" : need.share < 0.6 ? "tone-warn" : "tone-good";
        detail = `${need.answered}/${need.questions} 个提问「${need.segment}」能回答`;
        if (need.missing && need.missing.length) {
          detail += ` · 没答: ${need.missing.slice(0, 2).map(([t, n]) => `${topicZh(t)} ${n}`).join("、")}`;
        }
      }
      const step = (n, label) => el("span", { class: "an-step" }, [el("b", { text: n }), label]);
      return [
        el("div", { class: "an-need" }, [
          el("span", { id: "need-match", class: `an-need-value ${tone}`, text: value }),
          el("span", { class: "an-label", text: "需求匹配" }),
          el("span", { id: "need-detail", class: "an-detail", text: detail }),
        ]),
        el("div", { id: "funnel", class: "an-funnel", title: "停留: 30 秒后还在或有任何操作; 互动: 评论/点赞/送礼/分享" }, [
          step(num(f.viewers), "观众"), el("i", { text: "→" }),
          step(pct(f.active_rate), "停留"), el("i", { text: "→" }),
          step(pct(f.interaction_rate), "互动"), el("i", { text: "→" }),
          step(pct(f.follow_rate), "关注"),
        ]),
        el("div", { id: "funnel-line", class: "an-line",
                    text: `意向 ${num(a.intent_per_min)}/分 · 上一分钟互动率 ${pct(minute.interaction_rate)}`
                      + ` · 人均点赞 ${fixed(f.likes_per_viewer)} · 停留超 5 分钟 ${pct(f.long_share)}` }),
      ];
    });
  }

  // ---- control ----
  function deltaText(key, share, v) {
    if (v === null || v === undefined) return "";
    const sign = v > 0 ? "+" : v < 0 ? "−" : "±";
    const abs = Math.abs(v);
    return share ? `${sign}${(abs * 100).toFixed(1)} 个百分点` : `${sign}${fixed(abs)}`;
  }

  function outcomeItem(o, now) {
    const rows = METRICS.map(([key, label, share, bad]) => {
      const b = o.before[key];
      const a = o.after[key];
      if ((b === null || b === undefined) && (a === null || a === undefined)) return null;
      const d = o.delta[key];
      const tone = d === null || d === undefined || d === 0 ? "" : (d > 0) === bad ? "tone-bad" : "tone-good";
      const fmt = (x) => (share ? pct(x, 1) : fixed(x));
      const name = key === "topic_confusion" && o.topic ? `${topicZh(o.topic)}疑问率` : label;
      return el("div", { class: "an-row" }, [
        el("span", { class: "an-k", text: name }),
        el("span", { class: "an-v", text: `${fmt(b)} → ${fmt(a)}` }),
        el("span", { class: `an-d ${tone}`, text: deltaText(key, share, d) }),
      ]);
    });
    const left = o.complete ? "" : `统计中 · 还需 ${clock(Math.max(0, o.effect_ts + 120000 - now) / 1000)}`;
    return el("div", { class: "an-outcome", "data-id": o.id }, [
      el("div", { class: "sugg-head" }, [
        el("span", { class: `badge kind-${o.kind}`, text: KIND_ZH[o.kind] || o.kind }),
        el("span", { class: "an-label-text", text: o.label }),
        el("span", { class: "muted", text: `${LB.hhmmss(o.effect_ts)} 生效${left ? " · " + left : ""}` }),
      ]),
      ...rows,
    ]);
  }

  function benchmarkTable(rows) {
    const head = el("tr", {}, [el("th", { text: "" }), ...rows.map((r) =>
      el("th", { text: r.watch_only ? `${r.room}（对标）` : `${r.room}（我们）` }))]);
    const line = (label, f) => el("tr", {}, [el("th", { text: label }), ...rows.map((r) => el("td", { text: f(r) }))]);
    return el("table", { class: "an-bench" }, [
      el("thead", {}, [head]),
      el("tbody", {}, [
        line("弹幕/分", (r) => fixed(r.comments_per_min)),
        line("好评 / 差评", (r) => `${pct(r.positive_share)} / ${pct(r.negative_share)}`),
        line("热门问题", (r) => (r.questions || []).map((q) => `${q.example}×${q.count}`).join("；") || "—"),
        line("促销节奏", (r) => r.promo_cadence_min ? `约每 ${fixed(r.promo_cadence_min)} 分钟` : `${r.promo_moments} 次`),
      ]),
    ]);
  }

  function renderControl(room) {
    const side = document.getElementById("side");
    const a = analyticsOf(room);
    if (!side) return;
    const card = ensure(side, "outcomes-card", "section", "card");
    card.hidden = !a || a.watch_only;
    if (a && !a.watch_only) {
      const outcomes = a.outcomes || [];
      const now = LB.serverNow();
      show(card, JSON.stringify(outcomes) + Math.floor(now / 5000), () => [
        el("h2", {}, ["采纳效果 ", el("span", { class: "sub", text: "采纳前后各 2 分钟" })]),
        el("div", { class: "an-note", text: "前后对比，不是对照实验：同一时段的其他变化也会算进差值。" }),
        outcomes.length ? el("div", { id: "outcomes", class: "an-outcomes" }, outcomes.map((o) => outcomeItem(o, now)))
          : el("div", { class: "empty-note", text: "还没有已采纳的建议" }),
      ]);
    }
    const bench = ensure(side, "benchmark-card", "section", "card");
    const rows = a && !a.watch_only ? a.benchmarks || [] : [];
    bench.hidden = !rows.length;
    if (rows.length) {
      show(bench, JSON.stringify(rows), () => [
        el("h2", {}, ["对标直播间 ", el("span", { class: "sub", text: "近 60 秒" })]),
        benchmarkTable(rows),
        el("div", { class: "an-note", text: "促销节奏从观众反应估计（优惠券话题和购买意向弹幕突增的分钟）。" }),
      ]);
    }
  }

  return { renderHost, renderControl };
})();

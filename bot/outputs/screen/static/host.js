// livebot host view: one current suggestion in big type, gauges, questions, coupon/prompt cadence.
"use strict";

(() => {
  const { $, el, setText, pct, num, clock, topicZh, state } = LB;
  let shownId = null;
  let lastTimeline = null;

  function advisorOf(room) {
    return room && room.advisor && typeof room.advisor === "object" ? room.advisor : null;
  }

  // ---- top bar ----
  function renderTop(room) {
    setText("room-name", room.room);
    LB.renderRoomPicker($("room-select"), renderAll);
    $("room-name").hidden = state.rooms.length > 1;
    $("live-dot").classList.toggle("on", room.live === true);
    setText("online", room.online === null || room.online === undefined ? "—" : num(room.online));
    const w60 = room.windows["60"];
    setText("rate", w60 ? num(w60.comments_per_min) : "—");
    const adv = advisorOf(room);
    const seg = (adv && adv.segment) || room.segment;
    setText("segment", seg ? String(typeof seg === "object" ? seg.name || seg.id : seg) : "—");
    LB.renderSources($("sources"), room, { onlyLate: true });
  }

  // ---- gauges ----
  function renderGauges(room) {
    const w = room.windows["60"];
    const s = w.sentiment;
    const opinionated = s.pos + s.neg;
    let fraction = null;
    let verdict = "样本不足";
    let tone = "";
    if (opinionated >= 5) {
      fraction = s.pos / opinionated;
      if (fraction >= 0.65) { verdict = "气氛好"; tone = "tone-good"; }
      else if (fraction >= 0.4) { verdict = "平稳"; tone = "tone-warn"; }
      else { verdict = "负面偏多"; tone = "tone-bad"; }
    }
    Charts.gauge($("sentiment-gauge"), {
      fraction,
      zones: [[0.4, Charts.COLORS.red], [0.65, Charts.COLORS.amber], [1, Charts.COLORS.green]],
      labels: ["负面", "正面"],
    });
    const sv = $("sentiment-value");
    sv.className = `value ${tone}`;
    setText("sentiment-value", verdict);
    setText("sentiment-detail", w.analyzed ? `好评 ${pct(w.positive_share)} · 差评 ${pct(w.negative_share)}` : "近 60 秒无弹幕");

    const rate = w.confusion_rate;
    const scale = 0.4;  // the dial tops out at 40 %: above that the room is lost anyway
    const ctone = !w.analyzed ? "" : rate >= 0.2 ? "tone-bad" : rate >= 0.1 ? "tone-warn" : "tone-good";
    Charts.gauge($("confusion-gauge"), {
      fraction: w.analyzed ? rate / scale : null,
      zones: [[0.25, Charts.COLORS.green], [0.5, Charts.COLORS.amber], [1, Charts.COLORS.red]],
      labels: ["0", "40%"],
    });
    $("confusion-value").className = `value ${ctone}`;
    setText("confusion-value", w.analyzed ? pct(rate) : "—");
    setText("confusion-detail", w.analyzed ? `${Math.round(rate * w.analyzed)}/${w.analyzed} 条在提问` : "");
    setText("mini-intent", num(w.buying_intent));
    setText("mini-likes", num(w.likes));
    setText("mini-gifts", num(w.gifts));
    setText("mini-follows", num(w.follows));
  }

  // ---- questions grouped by topic ----
  function renderQuestions(room) {
    const groups = new Map();
    for (const q of room.questions || []) {
      const g = groups.get(q.topic) || { topic: q.topic, total: 0, items: [] };
      g.total += q.count;
      g.items.push(q);
      groups.set(q.topic, g);
    }
    const byTopic = room.windows["60"].confused_by_topic || {};
    // "other" is the least actionable topic: it goes last whatever its count.
    const ordered = [...groups.values()]
      .sort((a, b) => (a.topic === "other") - (b.topic === "other") || b.total - a.total)
      .slice(0, 4);
    const box = $("questions");
    if (!ordered.length) {
      box.replaceChildren(el("div", { class: "empty-note", text: "暂无集中提问" }));
      return;
    }
    box.replaceChildren(...ordered.map((g) => {
      const n = Math.max(g.total, byTopic[g.topic] || 0);
      const lines = g.items.slice(0, 2).map((q) =>
        el("div", { class: "qline", title: q.examples.join(" / ") }, [
          q.examples[0] || q.key,
          el("span", { class: "times", text: q.count > 1 ? `×${q.count}` : "" }),
        ]));
      return el("div", { class: "qgroup" }, [
        el("div", { class: "qtopic" }, [topicZh(g.topic), el("span", { class: "n", text: `${n} 条` })]),
        ...lines,
      ]);
    }));
  }

  // ---- coupon and prompt cadence (present once the advisor engine runs) ----
  function renderAdvisor(room) {
    const adv = advisorOf(room);
    const coupon = adv && adv.coupon;
    const prompts = adv && adv.prompts;
    $("coupon-card").hidden = !coupon;
    $("prompts-card").hidden = !prompts;
    $("grid").classList.toggle("no-advisor", !coupon && !prompts);
    if (coupon) {
      const budget = coupon.budget_left;
      setText("coupon-budget", budget === null || budget === undefined ? "—"
        : coupon.budget_total ? `${budget}/${coupon.budget_total} 张` : `${budget} 张`);
      setText("coupon-reason", coupon.reason || "");
    }
    if (prompts) {
      const target = prompts.target_per_min;
      const got = prompts.achieved_per_min;
      setText("prompts-target", target === null || target === undefined ? "—" : Number(target).toFixed(1));
      setText("prompts-achieved", got === null || got === undefined ? "—" : Number(got).toFixed(1));
      const low = target && got !== null && got !== undefined && got < target * 0.75;
      $("prompts-achieved").className = `big-number ${low ? "tone-warn" : "tone-good"}`;
      const note = $("prompts-note");
      note.className = `reason-line${prompts.paused ? " paused" : ""}`;
      const next = prompts.next_in_s;
      setText("prompts-note", prompts.paused ? "已暂停（场控操作）"
        : next !== null && next !== undefined ? (next > 0 ? `距下一次口令约 ${clock(next)}` : "该发口令了") : "");
    }
    tickAdvisor();
  }

  function tickAdvisor() {
    const room = LB.roomSnapshot();
    const coupon = advisorOf(room) && advisorOf(room).coupon;
    if (!coupon) return;
    const left = LB.couponLeft(coupon);
    if (left === null) { setText("coupon-next", "待定"); return; }
    setText("coupon-next", left <= 0 ? "现在" : clock(left));
    $("coupon-next").className = `big-number ${left <= 15 ? "tone-bad" : left <= 60 ? "tone-warn" : ""}`;
  }

  // ---- the current suggestion ----
  function renderSuggestion() {
    const active = LB.activeSuggestions({ forHost: true });
    const s = active[0] || null;
    const card = $("suggestion-card");
    setText("sugg-more", active.length > 1 ? `还有 ${active.length - 1} 条待处理` : "");
    const key = s ? `${s.id}|${s.state}|${s.text}` : null;
    if (key !== shownId) {
      shownId = key;
      card.className = `card suggestion ${s ? `sev-${s.severity || "info"}` : "empty"}`;
      card.dataset.id = s ? s.id : "";
      const kind = $("sugg-kind");
      kind.hidden = !s;
      if (s) {
        kind.className = `badge kind-${s.kind}`;
        kind.textContent = LB.KIND_ZH[s.kind] || s.kind;
      }
      $("sugg-review").hidden = !(s && s.needs_review);
      setText("sugg-text", s ? s.text : "暂无建议 · 按节奏继续");
      setText("sugg-reason", s ? s.reason || "" : "");
      $("sugg-examples").replaceChildren(...(s ? (s.examples || []).slice(0, 3) : []).map((t) =>
        el("span", { class: "ex", text: `“${t}”` })));
    }
    renderTalkingPoints(s);
    tickSuggestion(s);
  }

  // With no suggestion the big card shows the current segment's talking points from the run-sheet.
  function renderTalkingPoints(s) {
    const room = LB.roomSnapshot();
    const adv = advisorOf(room);
    // A merged multi-platform room: each platform present gets its own variant (runsheet.js).
    const groups = !s && adv ? LBRunsheet.pointGroups(adv) : [];
    const points = groups.flatMap((g) => g.points);
    const key = JSON.stringify(groups) + (adv ? adv.segment : "");
    const box = $("sugg-points");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.hidden = !points.length;
    $("sugg-points-title").textContent = adv && adv.segment ? `「${adv.segment}」话术要点` : "话术要点";
    $("sugg-points-list").replaceChildren(...groups.flatMap((g) => [
      g.label ? el("li", { class: "platform-head", text: g.label }) : null,
      ...g.points.map((p) => el("li", { text: p })),
    ]).filter(Boolean));
  }

  function tickSuggestion(s) {
    const box = $("sugg-countdown");
    if (!s) { box.hidden = true; return; }
    const now = LB.serverNow();
    const due = s.data && s.data.due_ts;
    const end = due && due > now ? due : s.expires_ts;
    if (!end) { box.hidden = true; return; }
    box.hidden = false;
    const total = Math.max(1, end - (s.created_ts || now));
    const left = Math.max(0, end - now);
    const fill = $("sugg-fill");
    fill.style.width = `${Math.min(100, (100 * left) / total).toFixed(1)}%`;
    fill.classList.toggle("low", left < 15000);
    const action = s.kind === "coupon" ? "发券" : "执行";
    const text = clock(left / 1000);
    setText("sugg-left", due && due > now ? `${text}${text.endsWith("秒") ? "" : " "}后${action}` : `剩余 ${text}`);
  }

  function renderTimeline(room) {
    lastTimeline = room.timeline || [];
    Charts.timeline($("timeline"), lastTimeline);
  }

  function renderAll() {
    const room = LB.roomSnapshot();
    if (!room) return;
    renderTop(room);
    renderGauges(room);
    renderQuestions(room);
    renderAdvisor(room);
    renderTimeline(room);
    LBAnalytics.renderHost(room);
    LBRunsheet.renderHost(room);
    renderSuggestion();
  }

  // Redraw when the box changes size, not only the window: the page is fitted to the screen, so a longer
  // suggestion or an extra card row changes the timeline's height.
  let drawnSize = "";
  new ResizeObserver(([entry]) => {
    const size = `${Math.round(entry.contentRect.width)}x${Math.round(entry.contentRect.height)}`;
    if (size === drawnSize) return;
    drawnSize = size;
    if (lastTimeline) Charts.timeline($("timeline"), lastTimeline);
  }).observe($("timeline"));

  LB.connect({
    snapshot: renderAll,
    suggestion: renderSuggestion,
    tick: () => { renderSuggestion(); tickAdvisor(); LBRunsheet.tickHost(LB.roomSnapshot()); },
  });
})();

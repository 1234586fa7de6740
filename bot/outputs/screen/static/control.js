// livebot control view: field control accepts / dismisses / snoozes suggestions, marks coupons,
// pauses prompts and switches segments. Every button sends one action over the same websocket.
"use strict";

(() => {
  const { $, el, setText, pct, num, clock, state } = LB;
  const ACTION_ZH = {
    accept: "采纳", dismiss: "忽略", snooze: "稍后提醒", coupon_dropped: "已发券",
    pause_prompts: "暂停口令", resume_prompts: "恢复口令", set_segment: "切换段落",
    check_item: "开场清单",
  };
  const SNOOZE_S = 120;
  const inflight = new Map();  // req → {action, id, label}
  let listKey = null;
  let conn = null;

  function send(action, extra, label) {
    if (!state.canControl) return;
    const msg = Object.assign({ type: "action", action, room: state.room }, extra || {});
    const req = conn.send(msg);
    if (!req) {
      log(false, `${ACTION_ZH[action]}：未连接，操作未发送`);
      return;
    }
    inflight.set(req, { action, id: msg.id, label });
    setBusy(msg.id, true);
  }

  function setBusy(id, busy) {
    if (!id) return;
    for (const b of document.querySelectorAll(`[data-for="${CSS.escape(id)}"] button`)) b.disabled = busy;
  }

  function log(ok, text) {
    const list = $("log");
    list.prepend(el("li", { class: ok ? "ok" : "fail" }, [
      el("span", { class: "time", text: LB.hhmmss(Date.now()) }), text,
    ]));
    while (list.children.length > 12) list.lastChild.remove();
  }

  function onResult(msg) {
    const sent = msg.req ? inflight.get(msg.req) : null;
    if (msg.req) inflight.delete(msg.req);
    if (sent) setBusy(sent.id, false);
    const name = ACTION_ZH[msg.action] || (sent && ACTION_ZH[sent.action]) || "操作";
    const what = sent && sent.label ? `「${sent.label}」` : msg.segment ? `「${msg.segment}」` : "";
    if (msg.type === "error") {
      log(false, `操作被拒绝：${msg.message || msg.error}`);
    } else if (msg.ok) {
      log(true, `${name}${what}`);
    } else {
      log(false, `${name}${what}失败：${msg.message || msg.error}`);
    }
    renderPending();
  }

  // ---- pending suggestions ----
  function renderPending() {
    const items = LB.activeSuggestions({ includeSnoozed: true });
    setText("pending-count", items.length ? `${items.length} 条` : "");
    const key = items.map((s) => `${s.id}:${s.state}:${(s.data && s.data.snoozed_until) || ""}`).join("|")
      + `|${state.canControl}`;
    if (key !== listKey) {
      listKey = key;
      const box = $("pending");
      if (!items.length) {
        box.replaceChildren(el("div", { class: "empty-note", text: "暂无待处理建议" }));
      } else {
        box.replaceChildren(...items.map(item));
      }
    }
    tickPending(items);
  }

  function item(s) {
    const label = s.text.length > 14 ? `${s.text.slice(0, 14)}…` : s.text;
    const disabled = !state.canControl;
    const kind = LB.KIND_ZH[s.kind] || s.kind;
    return el("div", { class: `pitem sev-${s.severity || "info"}`, "data-for": s.id, "data-id": s.id }, [
      el("div", { class: "sugg-head" }, [
        el("span", { class: `badge kind-${s.kind}`, text: kind }),
        s.needs_review ? el("span", { class: "badge review", text: "待确认" }) : null,
      ]),
      el("div", { class: "ptext", text: s.text }),
      el("div", { class: "preason", text: s.reason || "" }),
      el("div", { class: "pmeta", "data-role": "meta" }),
      el("div", { class: "buttons" }, [
        // Answer cards: copy into the platform's chat (counts as used), or have the host read it out.
        s.kind === "answer_card" ? el("button", { class: "accept copy", type: "button", disabled, text: "复制",
                       onclick: () => LBRunsheet.copy(s, () => send("accept", { id: s.id }, label)) }) : null,
        el("button", { class: "accept", type: "button", disabled,
                       text: s.kind === "answer_card" ? "口播" : "采纳",
                       onclick: () => send("accept", { id: s.id }, label) }),
        el("button", { class: "dismiss", type: "button", disabled, text: "忽略",
                       onclick: () => send("dismiss", { id: s.id }, label) }),
        el("button", { class: "snooze", type: "button", disabled, text: `稍后（${SNOOZE_S / 60} 分钟）`,
                       onclick: () => send("snooze", { id: s.id, seconds: SNOOZE_S }, label) }),
      ]),
    ]);
  }

  function tickPending(items) {
    const now = LB.serverNow();
    for (const s of items) {
      const node = document.querySelector(`[data-for="${CSS.escape(s.id)}"]`);
      if (!node) continue;
      const snoozed = s.data && s.data.snoozed_until && s.data.snoozed_until > now;
      node.classList.toggle("snoozed", !!snoozed);
      const parts = [`#${s.id}`];
      if (snoozed) parts.push(`稍后提醒：${clock((s.data.snoozed_until - now) / 1000)}`);
      const due = s.data && s.data.due_ts;
      if (due && due > now) parts.push(`${clock((due - now) / 1000)}后${s.kind === "coupon" ? "发券" : "执行"}`);
      if (s.expires_ts) parts.push(`剩余 ${clock((s.expires_ts - now) / 1000)}`);
      if (s.confidence !== undefined && s.confidence < 1) parts.push(`置信度 ${pct(s.confidence)}`);
      const meta = node.querySelector('[data-role="meta"]');
      const text = parts.join(" · ");
      if (meta.textContent !== text) meta.textContent = text;
    }
  }

  // ---- room stats, segment, coupon, prompts ----
  function renderRoom() {
    const room = LB.roomSnapshot();
    if (!room) return;
    setText("room-name", room.room);
    LB.renderRoomPicker($("room-select"), () => { listKey = null; renderRoom(); });
    $("room-name").hidden = state.rooms.length > 1;
    $("live-dot").classList.toggle("on", room.live === true);
    const w = room.windows["60"];
    setText("online", room.online === null || room.online === undefined ? "—" : num(room.online));
    setText("rate", num(w.comments_per_min));
    setText("neg", w.analyzed ? pct(w.negative_share) : "—");
    setText("confusion", w.analyzed ? pct(w.confusion_rate) : "—");
    LB.renderSources($("sources"), room);
    $("readonly").hidden = state.canControl;

    const adv = room.advisor && typeof room.advisor === "object" ? room.advisor : null;
    const seg = (adv && adv.segment) || room.segment;
    const segName = seg ? String(typeof seg === "object" ? seg.name || seg.id : seg) : "";
    setText("segment", segName || "—");
    renderSegments(adv && Array.isArray(adv.segments) ? adv.segments : [], segName);

    const coupon = adv && adv.coupon;
    const couponInfo = [];
    if (coupon) {
      const left = LB.couponLeft(coupon);
      if (left !== null) couponInfo.push(`下一张 ${left <= 0 ? "现在" : clock(left)}`);
      if (coupon.budget_left !== null && coupon.budget_left !== undefined) couponInfo.push(`剩余 ${coupon.budget_left} 张`);
      if (coupon.reason) couponInfo.push(coupon.reason);
    }
    setText("coupon-info", coupon ? couponInfo.join(" · ") || "—" : "建议引擎未启用");
    $("coupon-dropped").disabled = !state.canControl || !coupon;

    const prompts = adv && adv.prompts;
    let promptText = "建议引擎未启用";
    if (prompts) {
      const t = prompts.target_per_min, a = prompts.achieved_per_min;
      promptText = `目标 ${t === undefined || t === null ? "—" : Number(t).toFixed(1)}/分 · 实际 ${
        a === undefined || a === null ? "—" : Number(a).toFixed(1)}/分${prompts.paused ? " · 已暂停" : ""}`;
    }
    setText("prompts-info", promptText);
    $("prompts-pause").disabled = !state.canControl || !prompts || !!prompts.paused;
    $("prompts-resume").disabled = !state.canControl || !prompts || !prompts.paused;
    $("segment-form").querySelector("button").disabled = !state.canControl;
  }

  function renderSegments(segments, current) {
    const box = $("segment-buttons");
    const norm = segments.map((s) => (typeof s === "object" && s ? { id: s.id || s.name, name: s.name || s.id }
                                                                : { id: String(s), name: String(s) }));
    const key = norm.map((s) => s.id).join("|") + `|${current}|${state.canControl}`;
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.hidden = !norm.length;
    box.replaceChildren(...norm.map((s) => el("button", {
      type: "button", class: `segment-btn${s.name === current || s.id === current ? " current" : ""}`,
      disabled: !state.canControl, text: s.name,
      onclick: () => send("set_segment", { segment: s.id }, s.name),
    })));
  }

  $("segment-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("segment-input").value.trim();
    if (!value) return;
    send("set_segment", { segment: value }, value);
    $("segment-input").value = "";
  });
  $("coupon-dropped").addEventListener("click", () => {
    const room = LB.roomSnapshot();
    const coupon = room && room.advisor && room.advisor.coupon;
    // Confirms the pending drop when there is one; otherwise records the host's own drop.
    send("coupon_dropped", coupon && coupon.pending_id ? { id: coupon.pending_id } : {}, "");
  });
  $("prompts-pause").addEventListener("click", () => send("pause_prompts", {}, ""));
  $("prompts-resume").addEventListener("click", () => send("resume_prompts", {}, ""));

  conn = LB.connect({
    snapshot: () => {
      renderRoom(); renderPending(); LBAnalytics.renderControl(LB.roomSnapshot());
      LBRunsheet.renderControl(LB.roomSnapshot(), send);
    },
    suggestion: renderPending,
    status: (msg) => {
      if (msg.hello) { listKey = null; renderPending(); }
      if (msg.message) log(msg.level !== "error", msg.message);
    },
    result: onResult,
    tick: renderPending,
  });
})();

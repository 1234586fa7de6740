// livebot screen: the websocket connection, the suggestion registry and shared formatting.
// Plain browser JavaScript, no build step and no external assets (CSP: script-src 'self').
"use strict";

const LB = (() => {
  const TOPIC_ZH = {
    price: "价格", size_fit: "尺码", shipping: "发货", quality: "质量", link_howto: "链接",
    after_sales: "售后", coupon: "优惠券", stock: "库存", usage: "用法", host: "主播", other: "其他",
  };
  const PLATFORM_ZH = {
    douyin: "抖音", taobao: "淘宝", kuaishou: "快手", bilibili: "B站", channels: "视频号", xiaohongshu: "小红书",
    jd: "京东", pinduoduo: "拼多多", tiktok: "TikTok", custom: "其他平台",
  };
  const KIND_ZH = { script_switch: "切换话术", coupon: "发券", prompt: "互动口令", alert: "预警", answer_card: "答疑卡" };
  const SOURCE_ZH = {
    idle: "未启动", connecting: "连接中", connected: "正常", reconnecting: "重连中",
    stopped: "已停止", finished: "已播完", failed: "失败",
  };
  const SOURCE_TONE = {
    connected: "ok", finished: "ok", connecting: "warn", reconnecting: "warn", idle: "warn",
    stopped: "bad", failed: "bad",
  };
  const DELAY_TONE = { ok: "ok", slow: "warn", late: "bad" };
  const SEVERITY_RANK = { critical: 2, warning: 1, info: 0 };
  const STALE_MS = 3000;

  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";

  // ---- small DOM helpers (textContent only: comment text is never parsed as HTML) ----
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of [].concat(children || [])) {
      if (c === null || c === undefined) continue;
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }
  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }
  function pct(x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return "—";
    return (x * 100).toFixed(digits === undefined ? 0 : digits) + "%";
  }
  function num(x) {
    if (x === null || x === undefined) return "—";
    if (x >= 100000) return (x / 10000).toFixed(1) + "万";
    return String(Math.round(x));
  }
  function clock(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    const m = Math.floor(s / 60);
    return m > 0 ? `${m}:${String(s % 60).padStart(2, "0")}` : `${s} 秒`;
  }
  function hhmmss(ms) {
    const d = new Date(ms);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((v) => String(v).padStart(2, "0")).join(":");
  }
  function topicZh(topic) { return TOPIC_ZH[topic] || topic || "其他"; }
  function platformZh(p) { return PLATFORM_ZH[p] || p; }

  // ---- state shared by both views ----
  const state = {
    snapshot: null,          // last snapshot message
    lastSnapshotAt: 0,       // Date.now() when it arrived
    offsetMs: 0,             // server clock − page clock
    suggestions: new Map(),  // id → suggestion JSON (latest state)
    rooms: [],
    room: params.get("room") || localStorage.getItem("livebot.room") || null,
    canControl: false,
    connected: false,
  };

  function serverNow() { return Date.now() + state.offsetMs; }

  function pickRoom(rooms) {
    state.rooms = rooms;
    if (!state.room || !rooms.includes(state.room)) state.room = rooms[0] || null;
    return state.room;
  }

  function setRoom(room) {
    state.room = room;
    try { localStorage.setItem("livebot.room", room); } catch (e) { /* private mode: keep it in memory */ }
  }

  // Seconds until the coupon countdown ends: absolute due time when given, else relative to the snapshot.
  function couponLeft(coupon) {
    if (!coupon) return null;
    if (coupon.next_due_ts) return (coupon.next_due_ts - serverNow()) / 1000;
    if (coupon.next_in_s === null || coupon.next_in_s === undefined || !state.snapshot) return null;
    return coupon.next_in_s - (serverNow() - state.snapshot.server_ms) / 1000;
  }

  function roomSnapshot() {
    const snap = state.snapshot;
    return snap && state.room ? snap.rooms[state.room] || null : null;
  }

  function rememberSuggestion(s) {
    if (!s || !s.id) return;
    state.suggestions.set(s.id, s);
    if (state.suggestions.size > 300) {
      const oldest = state.suggestions.keys().next().value;
      state.suggestions.delete(oldest);
    }
  }

  // Pending, unexpired, unsnoozed suggestions of the current room: most severe first, then newest.
  // The host view leaves out alerts below critical: those are for field control (and the chat robots).
  // It leaves out answer cards too (runsheet.js shows them next to the questions).
  function activeSuggestions({ includeSnoozed, forHost } = {}) {
    const now = serverNow();
    const out = [];
    const seen = new Set();
    const room = roomSnapshot();
    const fromEngine = room && room.advisor && Array.isArray(room.advisor.pending) ? room.advisor.pending : [];
    for (const s of fromEngine) {
      if (!state.suggestions.has(s.id)) rememberSuggestion(s);
    }
    for (const s of state.suggestions.values()) {
      if (seen.has(s.id) || s.room !== state.room) continue;
      seen.add(s.id);
      if ((s.state || "pending") !== "pending") continue;
      if (forHost && s.kind === "alert" && s.severity !== "critical") continue;
      // Answer cards sit under their topic's questions on the host view, not in the big card.
      if (forHost && s.kind === "answer_card") continue;
      if (s.expires_ts && s.expires_ts <= now) continue;
      const snoozedUntil = s.data && s.data.snoozed_until;
      if (!includeSnoozed && snoozedUntil && snoozedUntil > now) continue;
      out.push(s);
    }
    out.sort((a, b) =>
      (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) || b.created_ts - a.created_ts);
    return out;
  }

  // ---- the connection: reconnect with backoff, stale detection ----
  function connect(handlers) {
    let ws = null;
    let attempt = 0;
    let retryAt = 0;
    let timer = null;
    let reqSeq = 0;

    function wsUrl() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const q = token ? `?token=${encodeURIComponent(token)}` : "";
      return `${proto}//${location.host}/ws${q}`;
    }

    function open() {
      timer = null;
      try {
        ws = new WebSocket(wsUrl());
      } catch (e) {
        schedule();
        return;
      }
      ws.onopen = () => {
        state.connected = true;
        handlers.conn && handlers.conn("open");
      };
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        dispatch(msg);
      };
      ws.onclose = (ev) => {
        state.connected = false;
        ws = null;
        schedule(ev.code);
      };
      ws.onerror = () => { /* onclose follows and schedules the retry */ };
    }

    function schedule(code) {
      // 0.5 s, 1, 2, 4, 8, then every 10 s, with ±20 % jitter so 50 tablets don't reconnect in step.
      const base = Math.min(10000, 500 * Math.pow(2, attempt));
      const delay = base * (0.8 + Math.random() * 0.4);
      attempt += 1;
      retryAt = Date.now() + delay;
      handlers.conn && handlers.conn("retry", code);
      timer = setTimeout(open, delay);
    }

    function dispatch(msg) {
      switch (msg.type) {
        case "snapshot":
          state.snapshot = msg;
          state.lastSnapshotAt = Date.now();
          state.offsetMs = msg.server_ms - Date.now();
          pickRoom(Object.keys(msg.rooms || {}));
          attempt = 0;  // a good message resets the backoff
          handlers.snapshot && handlers.snapshot(msg);
          refreshFreshness();  // the banner goes with the first data, not up to one tick later
          break;
        case "suggestion":
          rememberSuggestion(msg);
          handlers.suggestion && handlers.suggestion(msg);
          break;
        case "status":
          if (msg.hello) {
            state.canControl = !!msg.can_control;
            if (Array.isArray(msg.rooms) && msg.rooms.length) pickRoom(msg.rooms);
          }
          handlers.status && handlers.status(msg);
          break;
        case "action_result":
        case "error":
          handlers.result && handlers.result(msg);
          break;
        default:
          break;
      }
    }

    function send(message) {
      if (!ws || ws.readyState !== WebSocket.OPEN) return null;
      const req = `r${++reqSeq}`;
      ws.send(JSON.stringify(Object.assign({ req }, message)));
      return req;
    }

    // Stale banner: nothing newer than STALE_MS means what the host sees may be wrong.
    function refreshFreshness() {
      const age = state.lastSnapshotAt ? Date.now() - state.lastSnapshotAt : Infinity;
      const stale = age > STALE_MS;
      document.body.classList.toggle("stale", stale);
      const banner = $("stale");
      if (banner) {
        banner.hidden = !stale;
        if (stale) {
          const waited = Number.isFinite(age) ? `${Math.floor(age / 1000)} 秒未更新` : "尚未收到数据";
          const retry = state.connected ? "等待数据" : `正在重连${retryAt > Date.now() ? `（${Math.ceil((retryAt - Date.now()) / 1000)} 秒后）` : ""}`;
          banner.textContent = `⚠ 数据已过期：${waited} · ${retry}`;
        }
      }
      const conn = $("conn");
      if (conn) {
        conn.className = "conn " + (state.connected && !stale ? "ok" : "bad");
        conn.textContent = state.connected ? (stale ? "已连接 · 无数据" : "实时") : "连接中断";
      }
      handlers.tick && handlers.tick();
    }
    setInterval(refreshFreshness, 250);

    open();
    return { send };
  }

  function renderRoomPicker(select, onChange) {
    if (!select) return;
    const rooms = state.rooms;
    select.hidden = rooms.length < 2;
    const key = rooms.join("\n");
    if (select.dataset.rooms !== key) {
      select.dataset.rooms = key;
      select.replaceChildren(...rooms.map((r) => el("option", { value: r, text: r })));
      if (!select.dataset.bound) {
        select.dataset.bound = "1";
        select.addEventListener("change", () => { setRoom(select.value); onChange(); });
      }
    }
    if (state.room && select.value !== state.room) select.value = state.room;
  }

  // onlyLate: the host view shows a platform's delay only once it is slow (60 % of the alert threshold, 3 s of
  // the default 5 s: a problem to know about); field control sees every platform's figure.
  function renderSources(container, room, { onlyLate = false } = {}) {
    if (!container) return;
    const chips = [];
    for (const [name, src] of Object.entries(room.sources || {})) {
      const tone = SOURCE_TONE[src.state] || "warn";
      const label = SOURCE_ZH[src.state] || src.state;
      const age = src.last_message_age_s;
      const late = src.state === "connected" && age !== null && age > 10;
      const text = `${src.platform || name} ${late ? `${Math.round(age)} 秒无消息` : label}`;
      chips.push(el("span", { class: `chip ${late ? "warn" : tone}`, text, title: src.last_error || "" }));
    }
    // How late each platform's comments arrive (median of the last minute, from the platform's own time):
    // over the alert threshold (5 s by default) its viewers get answers, prompts and countdowns noticeably
    // late. The server grades it (RoomState: DelayThresholds.level), so a chip turns red when the alert fires.
    for (const [platform, d] of Object.entries(room.platform_delay || {})) {
      if (!d || !d.level) continue;
      if (onlyLate && d.level === "ok") continue;
      const s = d.median_ms / 1000;
      const tone = DELAY_TONE[d.level] || "warn";
      chips.push(el("span", { class: `chip ${tone} delay`, "data-platform": platform,
                              text: `${platformZh(platform)} 延迟 ${s.toFixed(1)} 秒`,
                              title: `近 60 秒 ${d.comments} 条弹幕 · 90% 分位 ${(d.p90_ms / 1000).toFixed(1)} 秒` }));
    }
    if (room.degraded) chips.push(el("span", { class: "chip degraded", text: "分析降级" }));
    container.replaceChildren(...chips);
  }

  return {
    TOPIC_ZH, PLATFORM_ZH, KIND_ZH, SOURCE_ZH, state, $, el, setText, pct, num, clock, hhmmss, topicZh, platformZh,
    serverNow,
    setRoom, roomSnapshot, couponLeft, activeSuggestions, rememberSuggestion, connect, renderRoomPicker, renderSources,
  };
})();

// livebot run-sheet tools on the screens (snapshot.rooms[room].advisor: timing, platforms, votes; answer cards).
// host view: the segment's time against its limit (the overrun nudge), the opening deadline and checklist, the
// session against its planned length, live vote counts, answer cards under the questions, per-platform points;
// control view: the opening checklist to tick off (action check_item), the same timing line, vote counts and
// the copy button of answer cards.
"use strict";

const LBRunsheet = (() => {
  const { el, clock, topicZh, state, platformZh } = LB;

  function advisorOf(room) {
    return room && room.advisor && typeof room.advisor === "object" ? room.advisor : null;
  }


  // Replace a node's children only when what it shows changed (no flicker at 2 Hz).
  function show(node, key, build) {
    if (node.dataset.key === key) return;
    node.dataset.key = key;
    node.replaceChildren(...[].concat(build()).filter(Boolean));
  }

  function ensure(parent, id, tag, cls, before) {
    let node = document.getElementById(id);
    if (!node) {
      node = el(tag, { id, class: cls });
      if (before && before.parentNode === parent) parent.insertBefore(node, before);
      else parent.appendChild(node);
    }
    return node;
  }

  // Seconds that passed on the server since the snapshot was taken (readings tick between snapshots).
  function sinceSnapshot() {
    return state.snapshot ? Math.max(0, (LB.serverNow() - state.snapshot.server_ms) / 1000) : 0;
  }

  // ---- talking points: one group per platform present when any platform has its own variant ----
  function pointGroups(adv) {
    const base = Array.isArray(adv.talking_points) ? adv.talking_points : [];
    const platforms = Array.isArray(adv.platforms) ? adv.platforms : [];
    if (platforms.some((p) => p.variant)) {
      return platforms.map((p) => ({
        label: p.variant ? platformZh(p.platform) : `${platformZh(p.platform)}（通用）`,
        points: (p.talking_points || []).slice(0, 3),
      }));
    }
    return base.length ? [{ label: null, points: base.slice(0, 4) }] : [];
  }

  // ---- timing: segment against max dwell, opening deadline, session length ----
  function timingChips(t) {
    const d = sinceSnapshot();
    const chips = [];
    const elapsed = t.elapsed_s + d;
    let segText = `「${t.segment}」${clock(elapsed)}`;
    let segTone = "";
    if (t.max_dwell_s) {
      const over = elapsed - t.max_dwell_s;
      if (over >= 0) {
        segTone = "tone-bad";
        segText = `「${t.segment}」超时 ${clock(over)}` + (t.next_segment ? ` → 切到「${t.next_segment}」` : " → 收尾");
      } else {
        segTone = elapsed >= 0.8 * t.max_dwell_s ? "tone-warn" : "";
        segText += ` / ${clock(t.max_dwell_s)}`;
      }
    }
    if (t.rhythm && t.rhythm.due && segTone !== "tone-bad") {
      segTone = "tone-warn";
      segText += " · 该换节奏了";
    }
    chips.push(el("span", { id: "rs-segment-time", class: `rs-chip ${segTone}`, "data-state": t.state, text: segText }));
    const o = t.opening;
    if (o && o.active && o.segment === t.segment) {
      const left = o.left_s - d;
      const items = (o.checklist || []).map((c) =>
        el("span", { class: `rs-item ${c.done ? "done" : ""}`, text: `${c.done ? "✓" : "○"}${c.name}` }));
      chips.push(el("span", { id: "rs-opening", class: `rs-chip ${left <= 0 ? "tone-bad" : left <= 60 ? "tone-warn" : ""}` }, [
        left > 0 ? `开场剩 ${clock(left)}` : `开场超时 ${clock(-left)}`, ...items,
      ]));
    }
    const se = t.session;
    if (se) {
      const elapsedS = se.elapsed_s + d;
      const tone = elapsedS >= se.planned_s ? "tone-bad" : se.state === "near" ? "tone-warn" : "";
      chips.push(el("span", { id: "rs-session", class: `rs-chip ${tone}`,
                              text: `本场 ${clock(elapsedS)} / ${clock(se.planned_s)}` }));
    }
    return chips;
  }

  // ---- votes ----
  function voteBox(votes) {
    const v = votes && votes[0];
    if (!v) return [];
    const d = sinceSnapshot() * 1000;
    const left = Math.max(0, (v.ends_ts - (state.snapshot ? state.snapshot.server_ms : 0) - d) / 1000);
    const top = Math.max(1, ...v.options.map((o) => o.count));
    const head = v.closed
      ? `投票结果 · ${v.total} 票${v.leader ? ` · 领先「${v.leader}」` : ""}`
      : `投票中 · ${v.total} 票 · 剩 ${clock(left)}`;
    return [
      el("div", { class: "rs-vote-head", text: head }),
      ...v.options.map((o) => {
        const fill = el("i");
        fill.style.width = `${Math.round((100 * o.count) / top)}%`;  // CSSOM: the CSP forbids style attributes
        return el("div", { class: `rs-vote-row${v.closed && o.label === v.leader ? " lead" : ""}` }, [
          el("span", { class: "rs-vote-label", text: o.label }),
          el("span", { class: "rs-vote-bar" }, fill),
          el("b", { class: "rs-vote-count", text: String(o.count) }),
        ]);
      }),
    ];
  }

  // ---- answer cards (pending suggestions of kind answer_card) ----
  function pendingCards() {
    return LB.activeSuggestions({}).filter((s) => s.kind === "answer_card");
  }

  // ---- host ----
  function renderHost(room) {
    const adv = advisorOf(room);
    const card = document.getElementById("suggestion-card");
    if (card) {
      const strip = ensure(card, "rs-timing", "div", "rs-timing");
      strip.hidden = !(adv && adv.timing);
      if (adv && adv.timing) tickHost(room);
    }
    const prompts = document.getElementById("prompts-card");
    if (prompts) {
      const box = ensure(prompts, "rs-vote-host", "div", "rs-vote");
      const votes = adv ? adv.votes || [] : [];
      box.hidden = !votes.length;
      show(box, JSON.stringify(votes), () => voteBox(votes));
    }
    const questions = document.getElementById("questions-card");
    if (questions) {
      const box = ensure(questions, "rs-cards-host", "div", "rs-cards");
      const cards = pendingCards();
      box.hidden = !cards.length;
      show(box, cards.map((s) => s.id).join("|"), () => cards.slice(0, 2).map((s) =>
        el("div", { class: "rs-card", "data-id": s.id }, [
          el("span", { class: "rs-card-title", text: `${topicZh(s.topic)} · ${(s.data && s.data.title) || ""}` }),
          el("span", { class: "rs-card-answer", text: (s.data && s.data.answer) || s.text }),
        ])));
    }
  }

  // Once a second between snapshots: the timing chips count on.
  function tickHost(room) {
    const adv = advisorOf(room);
    const strip = document.getElementById("rs-timing");
    if (!strip || !adv || !adv.timing) return;
    const chips = timingChips(adv.timing);
    show(strip, chips.map((c) => c.className + c.textContent).join("|"), () => chips);
  }

  // ---- control ----
  function renderControl(room, send) {
    const adv = advisorOf(room);
    const side = document.getElementById("side");
    const segmentCard = document.getElementById("segment-card");
    if (side && segmentCard) {
      const t = adv && adv.timing;
      const o = t && t.opening;
      const opening = ensure(side, "opening-card", "section", "card", segmentCard);
      opening.hidden = !(o && o.total);
      if (o && o.total) {
        const left = o.left_s - sinceSnapshot();
        const key = JSON.stringify([o.checklist, o.active, Math.ceil(left), state.canControl]);
        show(opening, key, () => [
          el("h2", {}, ["开场清单 ", el("span", { class: "sub", text: `${o.done}/${o.total}` + (
            o.active ? (left > 0 ? ` · 剩 ${clock(left)}` : ` · 超时 ${clock(-left)}`) : "") })]),
          el("div", { id: "checklist", class: "buttons" }, o.checklist.map((c) => el("button", {
            type: "button", class: `check-item${c.done ? " done" : ""}`, disabled: !state.canControl,
            title: c.hint || "", "data-item": c.name, text: `${c.done ? "✓ " : ""}${c.name}`,
            onclick: () => send("check_item", { item: c.name, done: !c.done }, c.name),
          }))),
          o.checklist.some((c) => c.hint && !c.done)
            ? el("div", { class: "stats-line muted", text: o.checklist.filter((c) => !c.done && c.hint)
              .map((c) => `${c.name}: ${c.hint}`).join(" · ") }) : null,
        ]);
      }
      const line = ensure(segmentCard, "rs-timing-control", "div", "rs-timing", segmentCard.querySelector("#segment-buttons"));
      line.hidden = !t;
      if (t) {
        const chips = timingChips(t);
        show(line, chips.map((c) => c.className + c.textContent).join("|"), () => chips);
      }
    }
    const prompts = document.getElementById("prompts-card");
    if (prompts) {
      const box = ensure(prompts, "rs-vote-control", "div", "rs-vote");
      const votes = adv ? adv.votes || [] : [];
      box.hidden = !votes.length;
      show(box, JSON.stringify(votes) + Math.ceil(sinceSnapshot()), () => voteBox(votes));
    }
  }

  // ---- copy an answer card: the async clipboard API, else a selected textarea (older browsers) ----
  async function copy(s, done) {
    const text = (s.data && s.data.answer) || s.text;
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      const area = el("textarea", { class: "rs-copy-area", readonly: true });
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (e2) { ok = false; }
      area.remove();
    }
    if (ok) done();
    const button = document.querySelector(`[data-for="${CSS.escape(s.id)}"] button.copy`);
    if (button) button.textContent = ok ? "已复制" : "复制失败";
  }

  return { pointGroups, renderHost, tickHost, renderControl, copy, platformZh };
})();

"""AdvisorEngine: runs every advisor of one room on each tick and owns their memory and suggestions.

The engine is the only place that changes suggestion state: pending → accepted / dismissed / expired, from
host and field-control actions (DESIGN.md *Interfaces*, host screen actions) or from time. New suggestions
are returned by `tick()`; state changes are collected for `drain_changes()`. Both are also recorded in
`RoomState.suggestions`, which screens and reports read.

Live, a `LiveTicker` calls `tick()` every `advisors.tick_s` seconds of wall time; replay calls it on event
time through a `VirtualTicker` with `follow=True`, which assumes the host follows every suggestion
(switches the segment, drops the coupon), so a replay shows what the show would have looked like.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.advisors import votes
from bot.advisors.alerts import AlertAdvisor
from bot.advisors.answer_cards import AnswerCardAdvisor
from bot.advisors.base import Severity, Suggestion, SuggestionKind, SuggestionState
from bot.advisors.common import HOUR_MS, MINUTE_MS, PAUSED_FOREVER, AdvisorMemory, clock_text, make
from bot.advisors.coupons import CouponAdvisor
from bot.advisors.prompts import PromptAdvisor
from bot.advisors.script_switch import ScriptSwitchAdvisor
from bot.advisors.timing import TimingAdvisor
from bot.scripts import CheckLimits, RunSheet, load_run_sheet

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.config import AdvisorsConfig
    from bot.state import RoomState

log = logging.getLogger(__name__)

DEFAULT_SNOOZE_S = 60.0
PLATFORM_RECENT_MS = 10 * MINUTE_MS
"""A platform counts as present in a merged room while its events arrived within this long."""
_NOT_A_PLATFORM = frozenset({"generic", "simulator", "test", ""})
_KIND_ZH = {"script_switch": "切换话术", "coupon": "发券", "prompt": "互动口令", "answer_card": "答疑卡"}


class AdvisorEngine:
    """All advisors of one room, on one clock."""

    def __init__(
        self, room: str, plan: RunSheet, settings: AdvisorsConfig, clock: Clock | None = None, *,
        follow: bool = False, script_name: str = "",
    ) -> None:
        self.room = room
        self.plan = plan
        self.settings = settings
        self.clock = clock
        self.follow = follow
        self.script_name = script_name
        self.memory = AdvisorMemory()
        review = settings.review_below
        self.alerts = AlertAdvisor(room, settings.alerts, review_below=review)
        self.switch = ScriptSwitchAdvisor(
            room, plan, settings.script_switch, review_below=review, promo_per_min=settings.promo_per_min
        )
        self.coupons = CouponAdvisor(
            room, plan, settings.coupons, review_below=review, promo_per_min=settings.promo_per_min,
            prompt_gap_s=settings.prompts.coupon_gap_s, follow=follow,
        )
        self.prompts = PromptAdvisor(
            room, plan, settings.prompts, review_below=review, coupon_gap_s=settings.prompts.coupon_gap_s
        )
        self.timing = TimingAdvisor(
            room, plan, settings.timing, review_below=review, promo_per_min=settings.promo_per_min
        )
        self.cards = AnswerCardAdvisor(room, plan, settings.answer_cards, review_below=review)
        self._pending: dict[str, Suggestion] = {}
        self._changes: list[Suggestion] = []
        self._state: RoomState | None = None
        self.counts: Counter[str] = Counter()
        self.ticks = 0

    def bind(self, state: RoomState) -> None:
        """The RoomState this engine advises (also bound by the first `tick`): actions update it at once."""
        self._state = state

    def _now(self, now_ms: int | None) -> int:
        if now_ms is not None:
            return now_ms
        if self.clock is None:
            raise RuntimeError("AdvisorEngine has no clock: pass now_ms")
        return self.clock.now_ms()

    # -- ticking ----------------------------------------------------------------------------------

    def tick(self, state: RoomState, now_ms: int | None = None) -> list[Suggestion]:
        """Run every advisor at `now_ms`; returns the new suggestions (already recorded in `state`)."""
        now = self._now(now_ms)
        self._state = state
        self.ticks += 1
        state.advance(now)
        mem = self.memory
        if mem.started_ts is None:
            self._start(now)
        elif state.segment != mem.segment and self.plan.segment(state.segment or "") is not None:
            # Someone set the room's segment directly (e.g. the control view): follow it.
            self.switch.switched(mem, state.segment or "", now)
        self._expire(now)
        self._close_votes(state, now)
        out: list[Suggestion] = []
        out += self.alerts.advise(state, now, mem)
        out += self.switch.advise(state, now, mem)
        out += self.timing.advise(state, now, mem)
        out += self.cards.advise(state, now, mem)
        out += self.coupons.advise(state, now, mem)
        out += self.prompts.advise(state, now, mem)
        out += self._escalations(now)
        mem.forget_before(now - 2 * HOUR_MS)
        out = self._record(state, out, now)
        state.segment = mem.segment
        return out

    @property
    def started(self) -> bool:
        """The show has started (first tick, action or data)."""
        return self.memory.started_ts is not None

    def on_data(self, state: RoomState, now_ms: int | None = None) -> list[Suggestion]:
        """New analysed comments arrived: run the advisors that must answer within seconds (answer cards).

        Cheap when nothing relevant changed, so the pipeline may call it after every batch.
        """
        now = self._now(now_ms)
        self._state = state
        if self.memory.started_ts is None:
            self._start(now)  # questions before the first tick (e.g. a long tick interval) still count
            state.segment = self.memory.segment
        return self._record(state, self.cards.advise(state, now, self.memory, only_new=True), now)

    def _record(self, state: RoomState, out: list[Suggestion], now: int) -> list[Suggestion]:
        for i, s in enumerate(out):
            self.counts[str(s.kind)] += 1
            self._pending[s.id] = s
            state.record_suggestion(s)
            if s.kind is SuggestionKind.PROMPT:
                votes.register(self.memory, s, self.settings.prompts.response_s)
            if self.follow:
                out[i] = self._follow(s, now)
        return out

    def _escalations(self, now: int) -> list[Suggestion]:
        """Suggestions nobody decided on within `escalate_after_s` go to the field-control chat."""
        after = self.settings.escalate_after_s * 1000
        if after <= 0:
            return []
        kinds = set(self.settings.escalate_kinds)
        escalated = self.memory.escalated
        out: list[Suggestion] = []
        for s in self.pending:
            if str(s.kind) not in kinds or s.id in escalated or now - s.created_ts < after:
                continue
            waited = now - s.created_ts
            kind = _KIND_ZH.get(str(s.kind), str(s.kind))
            esc = make(
                room=self.room, kind=SuggestionKind.ALERT, now=now, ttl_s=0,
                expires_ts=max(s.expires_ts, now + 1000),
                text=f"主播 {clock_text(waited)} 未处理「{kind}」建议: {s.text}",
                reason=f"建议待处理已 {clock_text(waited)}; 原因: {s.reason}",
                key=f"escalation:{s.id}", review_below=self.settings.review_below, confidence=s.confidence,
                examples=s.examples, severity=Severity.WARNING, segment=s.segment, topic=s.topic,
                rule="escalation",
                data={"key": f"escalation:{s.id}", "original_id": s.id, "original_kind": str(s.kind),
                      "original_text": s.text, "waited_s": round(waited / 1000)},
            )
            escalated[s.id] = esc.id
            out.append(esc)
        return out

    def _close_votes(self, state: RoomState, now: int) -> None:
        for result in votes.close_due(state, self.memory, now):
            self._update(result["id"], now, vote=result)

    def _update(self, suggestion_id: str, now: int, **data: Any) -> Suggestion | None:
        """Add numbers to a suggestion whatever its state (a vote's result); the change goes to the sinks."""
        current = self._pending.get(suggestion_id)
        index = None
        if self._state is not None:
            sugs = self._state.suggestions
            for i in range(len(sugs) - 1, -1, -1):
                if sugs[i].id == suggestion_id:
                    index = i
                    current = current or sugs[i]
                    break
        if current is None:
            return None
        new = dataclasses.replace(current, data={**current.data, **data})
        if suggestion_id in self._pending:
            self._pending[suggestion_id] = new
        if index is not None and self._state is not None:
            self._state.suggestions[index] = new
        self._changes.append(new)
        return new

    def _start(self, now: int) -> None:
        """The show starts at the first tick (or action): in the room's segment, else the first one."""
        mem = self.memory
        current = self._state.segment if self._state is not None else None
        first = self.plan.segment(current or "") or self.plan.segments[0]
        mem.started_ts = now
        mem.segment = first.name
        mem.segment_since = now

    def _follow(self, s: Suggestion, now: int) -> Suggestion:
        accepted = self.accept(s.id, now)
        self._changes.pop()  # a replay reports the accepted suggestion once, as new
        return accepted if accepted is not None else s

    def _expire(self, now: int) -> None:
        for s in sorted(self._pending.values(), key=lambda x: (x.expires_ts, x.id)):
            if s.expires_ts > now or s.id not in self._pending:
                continue
            if s.kind is SuggestionKind.COUPON and s.data.get("mode") == "auto":
                self._resolve(s, SuggestionState.ACCEPTED, now)  # auto drop happened at the countdown
                continue
            if s.kind is SuggestionKind.SCRIPT_SWITCH:
                self.switch.resolved(self.memory, s.id)
            elif s.kind is SuggestionKind.COUPON:
                self.coupons.cancelled(self.memory, s.id, now)
            self._resolve(s, SuggestionState.EXPIRED, now)

    def _resolve(self, s: Suggestion, state: SuggestionState, now: int, **data: Any) -> Suggestion:
        s = self._pending.get(s.id, s)  # the latest version (a vote may have added its count)
        escalation = self._pending.get(self.memory.escalated.get(s.id, ""))
        if escalation is not None:
            # The host acted (or the advice lapsed): the chat's escalation is settled the same way.
            self._resolve(escalation, state, now, resolved_by=s.id)
        new = dataclasses.replace(s, state=state, data={**s.data, "state_ts": now, **data})
        self._pending.pop(s.id, None)
        self._changes.append(new)
        if self._state is not None:
            sugs = self._state.suggestions
            for i in range(len(sugs) - 1, -1, -1):
                if sugs[i].id == s.id:
                    sugs[i] = new
                    break
        if s.kind is SuggestionKind.ANSWER_CARD:
            self.cards.resolved(self.memory, s)
        return new

    def drain_changes(self) -> list[Suggestion]:
        """Suggestions whose state changed since the last call (for sinks: store, screen)."""
        out, self._changes = self._changes, []
        return out

    @property
    def pending(self) -> list[Suggestion]:
        return sorted(self._pending.values(), key=lambda s: (s.created_ts, s.id))

    # -- actions (host screen / control view) ----------------------------------------------------

    def accept(self, suggestion_id: str, now_ms: int | None = None) -> Suggestion | None:
        """Accept a pending suggestion; None if it is unknown or no longer pending."""
        s = self._pending.get(suggestion_id)
        if s is None:
            return None
        now = self._now(now_ms)
        mem = self.memory
        if s.kind is SuggestionKind.SCRIPT_SWITCH and s.segment is not None:
            self.switch.resolved(mem, s.id)
            self.switch.switched(mem, s.segment, now)
            if self._state is not None:
                self._state.segment = mem.segment
        elif s.kind is SuggestionKind.COUPON:
            self.coupons.accepted(mem, s.id)
        return self._resolve(s, SuggestionState.ACCEPTED, now)

    def dismiss(self, suggestion_id: str, now_ms: int | None = None) -> Suggestion | None:
        s = self._pending.get(suggestion_id)
        if s is None:
            return None
        now = self._now(now_ms)
        self._cancel(s, now, snooze_s=None)
        return self._resolve(s, SuggestionState.DISMISSED, now)

    def snooze(
        self, suggestion_id: str, seconds: float = DEFAULT_SNOOZE_S, now_ms: int | None = None
    ) -> Suggestion | None:
        """Not now: dismiss it and hold the same advice back for `seconds`."""
        s = self._pending.get(suggestion_id)
        if s is None:
            return None
        now = self._now(now_ms)
        until = now + round(seconds * 1000)
        self._cancel(s, now, snooze_s=seconds)
        return self._resolve(s, SuggestionState.DISMISSED, now, snoozed_until=until)

    def _cancel(self, s: Suggestion, now: int, *, snooze_s: float | None) -> None:
        mem = self.memory
        if s.kind is SuggestionKind.SCRIPT_SWITCH:
            self.switch.resolved(mem, s.id)
            if s.data.get("promotional"):
                mem.remove_promo(s.created_ts)  # never announced
            if snooze_s is not None and s.segment is not None:
                self.switch.snoozed(mem, s.segment, now + round(snooze_s * 1000))
        elif s.kind is SuggestionKind.COUPON:
            self.coupons.cancelled(mem, s.id, now, snooze_s=snooze_s)
        elif s.kind is SuggestionKind.PROMPT:
            self.prompts.dismissed(mem, s.id)
            if snooze_s is not None:
                self.pause_prompts(now, seconds=snooze_s)
        elif s.kind is SuggestionKind.ALERT and snooze_s is not None:
            key = s.data.get("key") or s.rule or ""
            self.alerts.muted(mem, key, now + round(snooze_s * 1000))

    def coupon_dropped(
        self, suggestion_id: str | None = None, now_ms: int | None = None
    ) -> Suggestion | None:
        """A coupon went out now: confirms the pending drop (or records the host's own drop)."""
        now = self._now(now_ms)
        pending = self.memory.coupons.pending
        self.coupons.dropped(self.memory, suggestion_id, now)
        if pending is not None and suggestion_id in (None, pending.id):
            s = self._pending.get(pending.id)
            if s is not None:
                return self._resolve(s, SuggestionState.ACCEPTED, now, dropped_ts=now)
        return None

    def resume(
        self, started_ts: int, suggestions: Sequence[Mapping[str, Any]], marks: Sequence[Mapping[str, Any]],
    ) -> dict[str, int]:
        """Continue a stored session after a restart: coupon drops (the budget and cadence go on from them),
        the segment the room is in, and the opening checklist. Pending suggestions of the old run are not
        taken over (their countdowns belong to a process that is gone). Returns what was restored.
        """
        mem = self.memory
        if mem.started_ts is None:
            self._start(started_ts)
        steps: list[tuple[int, int, str, str]] = []
        for s in suggestions:
            if s.get("state") != str(SuggestionState.ACCEPTED):
                continue
            data = s.get("data") or {}
            if s.get("kind") == str(SuggestionKind.COUPON):
                at = data.get("dropped_ts") or data.get("due_ts") or s["created_ts"]
                steps.append((int(at), 0, "coupon", ""))
            elif s.get("kind") == str(SuggestionKind.SCRIPT_SWITCH) and s.get("segment"):
                steps.append((int(data.get("state_ts") or s["created_ts"]), 1, "segment", str(s["segment"])))
        for m in marks:
            kind, key, ts = str(m.get("kind")), str(m.get("key") or ""), int(m["ts"])
            if kind in ("coupon", "segment"):
                steps.append((ts, 0 if kind == "coupon" else 1, kind, key))
            elif kind == "checklist":
                done = bool((m.get("data") or {}).get("done", True))
                steps.append((ts, 2, "check" if done else "uncheck", key))
        counts = {"coupons": 0, "segments": 0, "checklist": 0}
        for ts, _, kind, key in sorted(steps):
            if kind == "coupon":
                self.coupons.dropped(mem, None, ts)
                counts["coupons"] += 1
            elif kind == "segment" and self.plan.segment(key) is not None:
                self.switch.switched(mem, key, ts)
                counts["segments"] += 1
            elif kind in ("check", "uncheck"):
                try:
                    self.timing.check_item(mem, key, ts, done=kind == "check")
                    counts["checklist"] += 1
                except ValueError:
                    pass  # the run-sheet changed since: an item it no longer has
        if self._state is not None:
            self._state.segment = mem.segment
        return counts

    def pause_prompts(self, now_ms: int | None = None, *, seconds: float | None = None) -> None:
        now = self._now(now_ms)
        self.memory.prompts.paused_until = PAUSED_FOREVER if seconds is None else now + round(seconds * 1000)

    def resume_prompts(self, now_ms: int | None = None) -> None:
        self.memory.prompts.paused_until = None

    def check_item(self, item: str, now_ms: int | None = None, *, done: bool = True) -> None:
        """Field control ticked (done=False: unticked) an item of the opening checklist.

        Raises:
            ValueError: the run-sheet's checklist has no such item (nothing changes).
        """
        self.timing.check_item(self.memory, item, self._now(now_ms), done=done)

    def set_segment(self, name: str, now_ms: int | None = None) -> None:
        """The host moved to segment `name` on their own; a pending switch to it counts as accepted.

        Raises:
            ValueError: the run-sheet has no such segment (nothing changes).
        """
        if self.plan.segment(name) is None:
            sheet = self.script_name or self.plan.show.name
            raise ValueError(f"no segment named {name!r} in run-sheet {sheet}")
        now = self._now(now_ms)
        mem = self.memory
        if mem.started_ts is None:
            self._start(now)
        target = mem.switch.pending_target
        pending_id = mem.switch.pending_id
        self.switch.switched(mem, name, now)
        if self._state is not None:
            self._state.segment = name
        if pending_id is not None and target == name and pending_id in self._pending:
            self.switch.resolved(mem, pending_id)
            self._resolve(self._pending[pending_id], SuggestionState.ACCEPTED, now)

    # -- numbers for screens and reports ----------------------------------------------------------

    def status(self, now_ms: int | None = None) -> dict[str, Any]:
        """What the host screen shows besides suggestions: segment, countdowns, prompt cadence."""
        now = self._now(now_ms)
        mem = self.memory
        seg = self.plan.segment(mem.segment or "")
        p = self.prompts.stats(mem, now)
        last = mem.prompts.last_ts
        return {
            "script": self.script_name,
            "show": self.plan.show.name,
            "segment": mem.segment,
            "segment_since_ms": mem.segment_since,
            "talking_points": list(seg.talking_points) if seg is not None else [],
            "coupon": self.coupons.status(mem, now),
            "prompts": {
                "paused": p["paused"],
                "last_ts": last,
                "next_in_s": None if last is None else max(
                    0, round((last + MINUTE_MS / self.settings.prompts.target_per_min - now) / 1000)
                ),
                "achieved_per_min": p["last_5min_per_min"],
                "target_per_min": p["target_per_min"],
            },
            "pending": [s.to_json() for s in self.pending],
            "timing": self.timing.status(mem, now),
            "platforms": self._platform_points(seg, now),
            "votes": votes.live(self._state, mem, now) if self._state is not None else [],
        }

    def platforms(self, now: int) -> list[str]:
        """Platforms present in the room: events within the last 10 minutes, or a source's platform."""
        st = self._state
        if st is None:
            return []
        seen = {p for p, ts in st.platforms.items() if now - ts <= PLATFORM_RECENT_MS}
        seen |= {src.platform for src in st.sources.values()}
        return sorted(seen - _NOT_A_PLATFORM)

    def _platform_points(self, seg: Any, now: int) -> list[dict[str, Any]]:
        """Talking points per platform present (a merged room shows each platform's variant)."""
        if seg is None:
            return []
        return [
            {"platform": p, "talking_points": list(seg.talking_points_for(p)), "variant": p in seg.variants}
            for p in self.platforms(now)
        ]

    def stats(self, now_ms: int | None = None) -> dict[str, Any]:
        """Achieved vs target for reports: prompts/min, coupon intervals, promotional pushes/min."""
        now = self._now(now_ms)
        mem = self.memory
        drops = mem.coupons.drops
        intervals = [round((b - a) / 1000) for a, b in zip(drops, drops[1:], strict=False)]
        promos = mem.promos
        peak = 0
        for i, t in enumerate(promos):
            j = i
            while j < len(promos) and promos[j] < t + MINUTE_MS:
                j += 1
            peak = max(peak, j - i)
        return {
            "suggestions": dict(sorted(self.counts.items())),
            "prompts": self.prompts.stats(mem, now),
            "coupons": {
                "drops": len(drops),
                "drop_ts": list(drops),
                "intervals_s": intervals,
                "cadence_s": self.coupons.s.cadence_s,
                "budget": self.coupons.s.budget,
                "per_hour": self.coupons.s.per_hour,
            },
            "promo_pushes_max_per_min": peak,
            "promo_cap_per_min": self.settings.promo_per_min,
            "segment_switches": [{"ts": t, "from": a, "to": b} for t, a, b in mem.switch.switches],
        }


def build_engine(
    room: str, settings: AdvisorsConfig, *, script: str = "", clock: Clock | None = None, follow: bool = False
) -> AdvisorEngine:
    """An engine for `room` with its run-sheet (`script`, else `settings.script`); ScriptError if invalid."""
    loaded = load_run_sheet(script or settings.script, limits=check_limits(settings))
    for w in loaded.warnings:
        log.warning("room=%s run-sheet warning: %s", room, w)
    return AdvisorEngine(room, loaded.sheet, settings, clock, follow=follow, script_name=loaded.name)


def check_limits(settings: AdvisorsConfig) -> CheckLimits:
    """Run-sheet check thresholds and coupon defaults of a config ([advisors.checks], [advisors.coupons])."""
    from bot.errors import ConfigError
    from nlp.compliance import ComplianceLexicon

    c = settings.checks
    lexicon = None
    if c.compliance_lexicon:
        try:
            lexicon = ComplianceLexicon.load(c.compliance_lexicon)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load compliance lexicon {c.compliance_lexicon}: {e}",
                              key="advisors.checks.compliance_lexicon") from None
    return CheckLimits(
        max_discount=c.max_discount, max_concurrent_offers=c.max_concurrent_offers,
        coupon_cadence_s=settings.coupons.cadence_s, coupon_budget=settings.coupons.budget,
        coupon_per_hour=settings.coupons.per_hour, compliance=lexicon,
    )

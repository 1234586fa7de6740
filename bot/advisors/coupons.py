"""Coupon drops: a base cadence, pulled forward by the room, never past the caps.

The plan (run-sheet `coupons`, defaults from `[advisors.coupons]`) sets a base cadence (default every 5
minutes). Three triggers pull the next drop forward: price hesitation (negative or confused comments about
price or coupons), a falling viewer count, and comment milestones (盲盒 after 100 comments). A trigger latches
until the drop it pulled happens, so a hesitation that fades during the cooldown still gets its drop.

Every drop is announced `lead_s` before it is due (the countdown on the host screen). Caps, all checked at
the due time: the session budget, the per-hour cap (any hour), the cooldown between drops, and at most
`promo_per_min` promotional pushes (drops + product/price announcements) in any minute. The due time also
keeps `prompts.coupon_gap_s` clear of the last interaction prompt, so the two never collide.

`confirm` mode waits for the host to mark the drop as done (`coupon_dropped`); `auto` mode counts it as
dropped at its due time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.common import (
    HOUR_MS,
    MINUTE_MS,
    AdvisorMemory,
    PendingDrop,
    clock_text,
    count_in,
    evidence_confidence,
    fits_cap,
    make,
    pct,
    pick_examples,
    recent,
)
from bot.scripts import Milestone, RunSheet

if TYPE_CHECKING:
    from bot.config import CouponsConfig
    from bot.state import RoomState

_PRICE_TOPICS = frozenset({"price", "coupon"})


@dataclass(frozen=True, slots=True)
class CouponPlanSettings:
    """The effective coupon plan: run-sheet values over config defaults."""

    mode: str
    cadence_s: int
    budget: int
    per_hour: int
    cooldown_s: int
    lead_s: int
    ttl_s: int
    items: tuple[str, ...]
    milestones: tuple[Milestone, ...]
    hesitation_share: float
    hesitation_window_s: int
    hesitation_min_comments: int
    viewer_drop_share: float
    viewer_drop_window_s: int
    viewer_drop_min_online: int

    @classmethod
    def merge(cls, cfg: CouponsConfig, plan: RunSheet) -> CouponPlanSettings:
        p = plan.coupons
        return cls(
            mode=p.mode or cfg.mode,
            cadence_s=p.cadence_s if p.cadence_s is not None else cfg.cadence_s,
            budget=p.budget if p.budget is not None else cfg.budget,
            per_hour=p.per_hour if p.per_hour is not None else cfg.per_hour,
            cooldown_s=p.cooldown_s if p.cooldown_s is not None else cfg.cooldown_s,
            lead_s=cfg.lead_s,
            ttl_s=cfg.ttl_s,
            items=p.items or cfg.items or ("优惠券",),
            milestones=p.milestones,
            hesitation_share=cfg.hesitation_share,
            hesitation_window_s=cfg.hesitation_window_s,
            hesitation_min_comments=cfg.hesitation_min_comments,
            viewer_drop_share=cfg.viewer_drop_share,
            viewer_drop_window_s=cfg.viewer_drop_window_s,
            viewer_drop_min_online=cfg.viewer_drop_min_online,
        )


class CouponAdvisor:
    def __init__(
        self, room: str, plan: RunSheet, cfg: CouponsConfig, *, review_below: float, promo_per_min: int,
        prompt_gap_s: int, follow: bool = False,
    ) -> None:
        self.room = room
        self.s = CouponPlanSettings.merge(cfg, plan)
        self.review_below = review_below
        self.promo_per_min = promo_per_min
        self.prompt_gap_ms = prompt_gap_s * 1000
        self.auto = self.s.mode == "auto" or follow

    # -- triggers ---------------------------------------------------------------------------------

    def _hesitation(self, state: RoomState, now: int) -> dict[str, Any] | None:
        s = self.s
        w = state.window(s.hesitation_window_s, now)
        if w.analyzed < s.hesitation_min_comments:
            return None
        hesitant = [
            c for c in recent(state, s.hesitation_window_s, now)
            if _PRICE_TOPICS.intersection(c.topics) and (c.confusion or c.sentiment == "neg")
        ]
        share = len(hesitant) / w.analyzed
        if share < s.hesitation_share:
            return None
        return {
            "count": len(hesitant), "comments": w.analyzed, "share": round(share, 4),
            "low_confidence": w.low_confidence, "strength": share / s.hesitation_share,
            "examples": pick_examples(c.text for c in reversed(hesitant)),
        }

    def _viewer_drop(self, state: RoomState, now: int) -> dict[str, Any] | None:
        s = self.s
        lo = now - s.viewer_drop_window_s * 1000
        samples = [online for ts, online in state.online_history if lo < ts <= now]
        if len(samples) < 2:
            return None
        peak, current = max(samples), samples[-1]
        if peak < s.viewer_drop_min_online:
            return None
        drop = (peak - current) / peak
        if drop < s.viewer_drop_share:
            return None
        return {"peak": peak, "online": current, "drop": round(drop, 4), "samples": len(samples),
                "strength": drop / s.viewer_drop_share}

    def _milestone(self, state: RoomState, memory: AdvisorMemory) -> tuple[int, Milestone] | None:
        mem = memory.coupons
        for i, m in enumerate(self.s.milestones):
            at = mem.milestone_next.setdefault(i, m.comments)
            if at > 0 and state.totals.comments >= at:
                return i, m
        return None

    # -- the tick ---------------------------------------------------------------------------------

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        mem = memory.coupons
        s = self.s
        mem.upcoming_due = None
        if mem.next_due is None:
            mem.next_due = now + s.cadence_s * 1000
        if mem.pending is not None:
            return []
        if s.budget <= 0 or len(mem.drops) >= s.budget:
            return []
        snoozed = now < mem.snoozed_until

        milestone = None if snoozed else self._milestone(state, memory)
        if mem.pull is None and not snoozed:
            # Only evidence gathered entirely after the last drop may pull the next one forward: viewers
            # who still hesitate right after a coupon are not a reason for another one at once.
            since = now - mem.drops[-1] if mem.drops else None
            hes = None
            if since is None or since >= s.hesitation_window_s * 1000:
                hes = self._hesitation(state, now)
            if hes is not None:
                mem.pull = ("price_hesitation", now, hes)
            elif since is None or since >= s.viewer_drop_window_s * 1000:
                drop = self._viewer_drop(state, now)
                if drop is not None:
                    mem.pull = ("viewer_drop", now, drop)

        if milestone is not None:
            trigger, target = "milestone", now + s.lead_s * 1000
        elif mem.pull is not None:
            trigger, target = mem.pull[0], max(mem.pull[1], now) + s.lead_s * 1000
            target = min(target, max(mem.next_due, now + s.lead_s * 1000))
        else:
            trigger, target = "cadence", mem.next_due
        due = max(target, now + s.lead_s * 1000)
        if mem.drops:
            due = max(due, mem.drops[-1] + s.cooldown_s * 1000)
        last_prompt = memory.prompts.last_ts
        if last_prompt is not None:
            due = max(due, last_prompt + self.prompt_gap_ms)
        if snoozed:
            due = max(due, mem.snoozed_until + s.lead_s * 1000)
        # Caps are judged at the due time: that is when the push reaches viewers.
        if not fits_cap(mem.drops, due, HOUR_MS, s.per_hour):
            return []
        if not fits_cap(memory.promos, due, MINUTE_MS, self.promo_per_min):
            return []
        if now < due - s.lead_s * 1000:
            # Only timing holds the drop back: prompts keep clear of this due time, so they cannot
            # keep pushing it away (prompts come more often than the gap they must leave).
            mem.upcoming_due = due
            return []
        mem.upcoming_due = None
        return [self._announce(state, now, due, trigger, milestone, memory)]

    def _announce(
        self, state: RoomState, now: int, due: int, trigger: str, milestone: tuple[int, Milestone] | None,
        memory: AdvisorMemory,
    ) -> Suggestion:
        mem = memory.coupons
        s = self.s
        planned = mem.next_due if mem.next_due is not None else due
        if milestone is not None:
            item = milestone[1].item
        else:
            item = s.items[mem.item_index % len(s.items)]
        countdown_s = round((due - now) / 1000)
        when = f"{countdown_s}秒后" if countdown_s > 0 else "现在"
        text = f"{when}{'自动' if s.mode == 'auto' else ''}发券「{item}」"
        examples: tuple[str, ...] = ()
        confidence = 1.0
        evidence: dict[str, Any] = {}
        if trigger == "milestone" and milestone is not None:
            reason = f"弹幕已达 {state.totals.comments} 条 (里程碑 {milestone[1].comments} 条), 发「{item}」"
        elif trigger == "price_hesitation" and mem.pull is not None:
            evidence = mem.pull[2]
            examples = evidence["examples"]
            reason = (
                f"价格犹豫: 近{s.hesitation_window_s}秒 {evidence['count']}/{evidence['comments']} 条弹幕"
                f"对价格/优惠有疑问或不满 ({pct(evidence['share'])})"
            )
            confidence = evidence_confidence(
                comments=evidence["comments"], min_comments=s.hesitation_min_comments,
                low_confidence=evidence["low_confidence"], strength=evidence["strength"],
            )
        elif trigger == "viewer_drop" and mem.pull is not None:
            evidence = mem.pull[2]
            reason = (
                f"在线人数从 {evidence['peak']} 降到 {evidence['online']} "
                f"(-{pct(evidence['drop'])}), 发券留人"
            )
            confidence = 0.9 if evidence["samples"] >= 3 else 0.8
        else:
            since = f"距上次发券 {clock_text(now - mem.drops[-1])}" if mem.drops else "本场第一次发券"
            reason = f"按节奏每 {clock_text(s.cadence_s * 1000)} 发一次券, {since}"
        if trigger != "cadence" and due < planned:
            reason += f", 比原计划提前 {clock_text(planned - due)}"
        used = len(mem.drops)
        hour = count_in(mem.drops, due - HOUR_MS, due)
        reason += f" (本场已发 {used}/{s.budget}, 近1小时 {hour}/{s.per_hour})"
        sug = make(
            room=self.room, kind=SuggestionKind.COUPON, now=now, ttl_s=0, text=text, reason=reason,
            key=f"{used}:{item}", review_below=self.review_below, confidence=confidence, examples=examples,
            topic="price" if trigger == "price_hesitation" else None,
            expires_ts=due if self.auto else due + s.ttl_s * 1000,
            data={
                "due_ts": due,
                "countdown_s": countdown_s,
                "trigger": trigger,
                "item": item,
                "mode": s.mode,
                "planned_due_ts": planned,
                "pulled_forward_s": max(0, round((planned - due) / 1000)),
                "budget_used": used,
                "budget": s.budget,
                "hour_used": hour,
                "per_hour": s.per_hour,
                "evidence": {k: v for k, v in evidence.items() if k != "examples"},
            },
        )
        mem.issued.append((now, due))
        del mem.issued[:-50]
        memory.add_promo(due)
        if milestone is not None:
            i, m = milestone
            mem.milestone_next[i] = (state.totals.comments // m.comments + 1) * m.comments if m.repeat else 0
        else:
            mem.item_index += 1
        if self.auto:
            self._dropped(memory, due)
        else:
            mem.pending = PendingDrop(sug.id, now, due, item, trigger)
        return sug

    # -- actions (called by the engine) -----------------------------------------------------------

    def _dropped(self, memory: AdvisorMemory, at: int) -> None:
        mem = memory.coupons
        mem.drops.append(at)
        mem.drops.sort()
        mem.pull = None
        mem.next_due = at + self.s.cadence_s * 1000

    def dropped(self, memory: AdvisorMemory, suggestion_id: str | None, now: int) -> None:
        """The host dropped a coupon at `now` (confirming `suggestion_id`, or on their own)."""
        mem = memory.coupons
        if mem.pending is not None and suggestion_id in (None, mem.pending.id):
            memory.remove_promo(mem.pending.due_ts)
            mem.pending = None
        memory.add_promo(now)
        self._dropped(memory, now)

    def accepted(self, memory: AdvisorMemory, suggestion_id: str) -> None:
        """The host accepted the countdown: the drop happens at its due time."""
        mem = memory.coupons
        if mem.pending is not None and mem.pending.id == suggestion_id:
            due = mem.pending.due_ts
            mem.pending = None
            self._dropped(memory, due)

    def cancelled(
        self, memory: AdvisorMemory, suggestion_id: str, now: int, *, snooze_s: float | None = None
    ) -> None:
        """Dismissed, expired or snoozed: nothing dropped; plan the next one."""
        mem = memory.coupons
        if mem.pending is None or mem.pending.id != suggestion_id:
            return
        memory.remove_promo(mem.pending.due_ts)
        mem.pending = None
        if snooze_s is not None:
            mem.snoozed_until = now + round(snooze_s * 1000)
            mem.next_due = mem.snoozed_until + self.s.lead_s * 1000
        else:
            mem.pull = None
            mem.next_due = now + self.s.cadence_s * 1000

    def status(self, memory: AdvisorMemory, now: int) -> dict[str, Any]:
        """The countdown for the host screen."""
        mem = memory.coupons
        s = self.s
        if mem.pending is not None:
            due, reason = mem.pending.due_ts, mem.pending.trigger
        elif mem.drops and mem.drops[-1] > now:
            due, reason = mem.drops[-1], "auto"
        else:
            due = mem.next_due if mem.next_due is not None else now + s.cadence_s * 1000
            reason = mem.pull[0] if mem.pull is not None else "cadence"
        return {
            "next_due_ts": due,
            "countdown_s": max(0, round((due - now) / 1000)),
            "reason": reason,
            "pending_id": mem.pending.id if mem.pending is not None else None,
            "mode": s.mode,
            "budget_used": len(mem.drops),
            "budget": s.budget,
            "hour_used": count_in(mem.drops, now - HOUR_MS, now),
            "per_hour": s.per_hour,
            "cadence_s": s.cadence_s,
        }

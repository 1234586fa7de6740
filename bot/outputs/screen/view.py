"""What the screen shows of an advisor engine: its status reshaped into the page's `advisor` block.

The host page reads one documented shape (``snapshot.rooms[room].advisor``) whatever the engine keeps
internally; this module is the only place that knows both sides.
"""

from __future__ import annotations

from typing import Any, Protocol

COUPON_REASON_ZH = {
    "cadence": "按节奏",
    "price_hesitation": "价格犹豫，提前发",
    "viewer_drop": "在线人数下滑，提前发",
    "milestone": "弹幕里程碑",
    "auto": "自动发券中",
}


class _Segment(Protocol):
    @property
    def name(self) -> str: ...


class _Plan(Protocol):
    @property
    def segments(self) -> tuple[_Segment, ...]: ...


class EngineStatusLike(Protocol):
    """What bot.advisors.engine.AdvisorEngine offers a screen."""

    @property
    def plan(self) -> _Plan: ...

    def status(self, now_ms: int | None = None) -> dict[str, Any]: ...


def advisor_view(engine: EngineStatusLike, now_ms: int) -> dict[str, Any]:
    """The `advisor` block of a room snapshot.

    Keys: segment, segments (run-sheet order), talking_points, script, show,
    coupon {next_in_s, next_due_ts, budget_left, budget_total, reason, mode, pending_id},
    prompts {target_per_min, achieved_per_min, paused, next_in_s}, pending [Suggestion JSON],
    timing {segment, elapsed_s, min_dwell_s, max_dwell_s, over_s, state ok|near|over, next_segment,
    session {elapsed_s, planned_s, left_s, state}, rhythm {same_segment_s, due, after_s},
    opening {segment, active, deadline_s, left_s, checklist [{name, hint, done, done_ts}], done, total}},
    platforms [{platform, talking_points, variant}] (a merged room: each platform's talking points),
    votes [{id, prompt, ts, ends_ts, closed, total, options [{label, count, share}], leader}].
    """
    st = engine.status(now_ms)
    out: dict[str, Any] = {
        "script": st.get("script"),
        "show": st.get("show"),
        "segment": st.get("segment"),
        "segment_since_ms": st.get("segment_since_ms"),
        "talking_points": list(st.get("talking_points") or []),
        "segments": [s.name for s in engine.plan.segments],
        "pending": list(st.get("pending") or []),
        "platforms": list(st.get("platforms") or []),
        "votes": list(st.get("votes") or []),
    }
    timing = st.get("timing")
    if isinstance(timing, dict):
        out["timing"] = timing
    coupon = st.get("coupon")
    if isinstance(coupon, dict):
        budget = coupon.get("budget")
        used = coupon.get("budget_used")
        reason = str(coupon.get("reason") or "")
        out["coupon"] = {
            "next_in_s": coupon.get("countdown_s"),
            "next_due_ts": coupon.get("next_due_ts"),
            "budget_left": None if budget is None or used is None else max(0, int(budget) - int(used)),
            "budget_total": budget,
            "reason": COUPON_REASON_ZH.get(reason, reason),
            "mode": coupon.get("mode"),
            "pending_id": coupon.get("pending_id"),
        }
    prompts = st.get("prompts")
    if isinstance(prompts, dict):
        out["prompts"] = {
            "target_per_min": prompts.get("target_per_min"),
            "achieved_per_min": prompts.get("achieved_per_min"),
            "paused": bool(prompts.get("paused")),
            "next_in_s": prompts.get("next_in_s"),
        }
    return out

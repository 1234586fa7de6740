"""Script switch: suggest the run-sheet segment that answers what viewers are asking now.

A segment is a candidate when one of its triggers fires (`bot.scripts.Trigger`). Four rules keep the
suggestion from flapping between segments:

1. nothing is suggested before the current segment has run its `min_dwell_s`;
2. a candidate must keep firing for `hold_s` seconds;
3. hysteresis: while a trigger of the current segment still reads `exit_ratio` × its threshold, a candidate
   must beat the current segment by that same margin (enter at 15 %, stay while ≥ 9 %);
4. a pending suggestion is never duplicated, and a target that was ignored or dismissed waits `resuggest_s`.

Need match is a second input: when no trigger has a candidate and, for `need_match_hold_s`, fewer than
`need_match_below` of the last minute's questions are about topics the current segment answers
(bot.analytics, `answers_topics`), the segment that answers most of them is suggested, if it answers at
least that share.

A switch into a promotional segment (价格, 逼单) is a product/price announcement, so it also needs room under
the promotional-push cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.common import (
    MINUTE_MS,
    TOPIC_LABELS,
    AdvisorMemory,
    clock_text,
    evidence_confidence,
    fits_cap,
    make,
    pct,
    pick_examples,
    recent_newest_first,
)
from bot.analytics import NEED_WINDOW_S, NeedMatch, match_questions, recent_question_topics
from bot.scripts import Measurement, Metric, RunSheet, Segment, Trigger

if TYPE_CHECKING:
    from bot.config import ScriptSwitchConfig
    from bot.state import RecentComment, RoomState, WindowStats


@dataclass(frozen=True, slots=True)
class _Candidate:
    segment: Segment
    index: int
    trigger: Trigger
    measurement: Measurement
    window: WindowStats


def describe(trigger: Trigger, m: Measurement) -> str:
    """The reading in host words: 近60秒 18% 的弹幕在问尺码."""
    w = f"近{trigger.window_s}秒"
    label = TOPIC_LABELS.get(trigger.topic or "", trigger.topic or "")
    phrases = {
        Metric.TOPIC_CONFUSION_RATE: f"{w} {pct(m.value)} 的弹幕在问{label}",
        Metric.TOPIC_SHARE: f"{w} {pct(m.value)} 的弹幕在聊{label}",
        Metric.TOPIC_NEGATIVE_RATE: f"{w} {pct(m.value)} 的弹幕对{label}不满",
        Metric.CONFUSION_RATE: f"{w} {pct(m.value)} 的弹幕带着疑问",
        Metric.NEGATIVE_SHARE: f"{w} {pct(m.value)} 的弹幕是负面的",
        Metric.POSITIVE_SHARE: f"{w} {pct(m.value)} 的弹幕是正面的",
        Metric.BUYING_INTENT_RATE: f"{w} {pct(m.value)} 的弹幕有购买意向",
        Metric.COMMENTS_PER_MIN: f"{w} 弹幕 {m.value:.0f} 条/分",
    }
    return phrases[trigger.metric]


def _threshold_text(trigger: Trigger) -> str:
    if trigger.metric is Metric.COMMENTS_PER_MIN:
        return f"{trigger.op} {trigger.value:g} 条/分"
    return f"{trigger.op} {pct(trigger.value)}"


def _hold_ratio(trigger: Trigger, w: WindowStats) -> float:
    """How strongly the current segment's trigger still holds: value/threshold (inverted for < ops)."""
    m = trigger.measure(w)
    if m.comments < trigger.min_comments:
        return 0.0
    if trigger.op in (">=", ">"):
        return m.value / trigger.value if trigger.value > 0 else 0.0
    return trigger.value / m.value if m.value > 0 else 2.0


def _examples(state: RoomState, now: int, trig: Trigger) -> tuple[str, ...]:
    """Comments that back the reading: the top merged questions for confusion, matching comments otherwise."""
    if trig.metric is Metric.TOPIC_CONFUSION_RATE:
        groups = [g for g in state.questions(trig.window_s, now, limit=50) if g.topic == trig.topic]
        return tuple(g.examples[0] for g in groups[:3])
    if trig.metric is Metric.CONFUSION_RATE:
        return tuple(g.examples[0] for g in state.questions(trig.window_s, now, limit=3))
    keep: Callable[[RecentComment], bool] = {
        Metric.TOPIC_SHARE: lambda c: trig.topic in c.topics,
        Metric.TOPIC_NEGATIVE_RATE: lambda c: trig.topic in c.topics and c.sentiment == "neg",
        Metric.NEGATIVE_SHARE: lambda c: c.sentiment == "neg",
        Metric.POSITIVE_SHARE: lambda c: c.sentiment == "pos",
    }.get(trig.metric, lambda c: False)
    return pick_examples(c.text for c in recent_newest_first(state, trig.window_s, now) if keep(c))


class ScriptSwitchAdvisor:
    def __init__(self, room: str, plan: RunSheet, cfg: ScriptSwitchConfig, *, review_below: float,
                 promo_per_min: int) -> None:
        self.room = room
        self.plan = plan
        self.cfg = cfg
        self.review_below = review_below
        self.promo_per_min = promo_per_min

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        mem = memory.switch
        current = self.plan.segment(memory.segment or "") or self.plan.segments[0]
        windows: dict[int, WindowStats] = {}

        def window(seconds: int) -> WindowStats:
            if seconds not in windows:
                windows[seconds] = state.window(seconds, now)
            return windows[seconds]

        candidates: list[_Candidate] = []
        for index, seg in enumerate(self.plan.segments):
            if seg.name == current.name or not seg.triggers:
                continue
            best: _Candidate | None = None
            for trig in seg.triggers:
                w = window(trig.window_s)
                m = trig.measure(w)
                if m.fired and (best is None or m.strength > best.measurement.strength):
                    best = _Candidate(seg, index, trig, m, w)
            if best is None:
                mem.firing_since.pop(seg.name, None)
            else:
                mem.firing_since.setdefault(seg.name, now)
                candidates.append(best)
        mem.firing_since.pop(current.name, None)
        need_reading = self._need_reading(state, now, current)
        if need_reading is None:
            mem.need_low_since = None
        elif mem.need_low_since is None:
            mem.need_low_since = now

        if mem.pending_id is not None:
            return []
        if now - memory.segment_since < current.min_dwell_s * 1000:
            return []
        hold = max((_hold_ratio(t, window(t.window_s)) for t in current.triggers), default=0.0)
        need = 1.0 if hold < self.cfg.exit_ratio else hold / self.cfg.exit_ratio
        eligible = [
            c for c in candidates
            if now - mem.firing_since[c.segment.name] >= self.cfg.hold_s * 1000
            and c.measurement.strength > need - 1e-9
            and now >= mem.suppressed_until.get(c.segment.name, 0)
            and now - mem.last_suggested.get(c.segment.name, -(10**15)) >= self.cfg.resuggest_s * 1000
            and (not c.segment.promotional or fits_cap(memory.promos, now, MINUTE_MS, self.promo_per_min))
        ]
        if not eligible:
            if (need_reading is not None and hold < self.cfg.exit_ratio and mem.need_low_since is not None
                    and now - mem.need_low_since >= self.cfg.need_match_hold_s * 1000
                    and self._may_suggest(memory, need_reading[1], now)):
                return [self._suggest_need(state, now, memory, current, *need_reading, hold)]
            return []
        best = max(eligible, key=lambda c: (c.measurement.strength, -c.index))
        return [self._suggest(state, now, memory, current, best, hold)]

    def _may_suggest(self, memory: AdvisorMemory, seg: Segment, now: int) -> bool:
        mem = memory.switch
        return (
            now >= mem.suppressed_until.get(seg.name, 0)
            and now - mem.last_suggested.get(seg.name, -(10**15)) >= self.cfg.resuggest_s * 1000
            and (not seg.promotional or fits_cap(memory.promos, now, MINUTE_MS, self.promo_per_min))
        )

    def _need_reading(
        self, state: RoomState, now: int, current: Segment
    ) -> tuple[NeedMatch, Segment, NeedMatch] | None:
        """(current match, better segment, its match) when the current segment misses what viewers ask."""
        cfg = self.cfg
        topics = recent_question_topics(state, now, NEED_WINDOW_S)
        cur = match_questions(topics, current.answers_topics, current.name)
        share = cur.share
        if share is None or cur.questions < cfg.need_match_min_questions or share >= cfg.need_match_below:
            return None
        best: tuple[Segment, NeedMatch] | None = None
        for seg in self.plan.segments:
            if seg.name == current.name or not seg.answers_topics:
                continue
            m = match_questions(topics, seg.answers_topics, seg.name)
            if best is None or m.answered > best[1].answered:
                best = (seg, m)
        if best is None or (best[1].share or 0.0) < cfg.need_match_below:
            return None  # no segment answers them much better: switching would not help
        return cur, best[0], best[1]

    def _suggest_need(
        self, state: RoomState, now: int, memory: AdvisorMemory, current: Segment, cur: NeedMatch,
        seg: Segment, alt: NeedMatch, hold: float,
    ) -> Suggestion:
        share, alt_share = cur.share or 0.0, alt.share or 0.0
        topic = next((t for t, _ in cur.missing if t in seg.answers_topics), None)
        groups = [g for g in state.questions(NEED_WINDOW_S, now, limit=50) if g.topic in seg.answers_topics]
        examples = tuple(g.examples[0] for g in groups[:3])
        text = f"切到「{seg.name}」: 近{NEED_WINDOW_S}秒 只有 {pct(share)} 的提问是「{current.name}」能回答的"
        if examples:
            text += f", 例: {examples[0]}"
        since = memory.switch.need_low_since or now
        floor = pct(self.cfg.need_match_below)
        reason = (
            f"需求匹配 {pct(share)} ({cur.answered}/{cur.questions} 个提问, 低于 {floor}, "
            f"已持续 {clock_text(now - since)}); 「{seg.name}」能回答 {pct(alt_share)} "
            f"({alt.answered}/{alt.questions}); "
            f"当前「{current.name}」已进行 {clock_text(now - memory.segment_since)}"
        )
        w = state.window(NEED_WINDOW_S, now)
        low = round(w.low_confidence * cur.questions / w.analyzed) if w.analyzed else 0
        confidence = evidence_confidence(
            comments=cur.questions, min_comments=self.cfg.need_match_min_questions, low_confidence=low,
            strength=self.cfg.need_match_below / share if share > 0 else 2.0,
        )
        s = make(
            room=self.room, kind=SuggestionKind.SCRIPT_SWITCH, now=now, ttl_s=self.cfg.ttl_s, text=text,
            reason=reason, key=seg.name, review_below=self.review_below, confidence=confidence,
            examples=examples, segment=seg.name, topic=topic,
            data={
                "from_segment": current.name,
                "metric": "need_match",
                "value": round(share, 4),
                "threshold": self.cfg.need_match_below,
                "op": "<",
                "window_s": NEED_WINDOW_S,
                "count": cur.answered,
                "comments": cur.questions,
                "alternative_share": round(alt_share, 4),
                "missing": [list(x) for x in cur.missing],
                "current_hold": round(hold, 4),
                "talking_points": list(seg.talking_points),
                "promotional": seg.promotional,
            },
        )
        self._register(s, seg, memory, now)
        return s

    def _suggest(
        self, state: RoomState, now: int, memory: AdvisorMemory, current: Segment, c: _Candidate, hold: float
    ) -> Suggestion:
        trig, m, seg = c.trigger, c.measurement, c.segment
        examples = _examples(state, now, trig)
        reading = describe(trig, m)
        text = f"切到「{seg.name}」: {reading}"
        if examples:
            text += f", 例: {examples[0]}"
        if trig.metric is Metric.COMMENTS_PER_MIN:
            evidence = f"{m.comments} 条分析"
        else:
            evidence = f"{m.count}/{m.comments} 条"
        reason = (
            f"{reading} ({evidence}, 阈值 {_threshold_text(trig)}, 已持续 "
            f"{clock_text(now - memory.switch.firing_since[seg.name])}); "
            f"当前「{current.name}」已进行 {clock_text(now - memory.segment_since)}"
        )
        confidence = evidence_confidence(
            comments=m.comments, min_comments=max(trig.min_comments, 1),
            low_confidence=c.window.low_confidence, strength=m.strength,
        )
        s = make(
            room=self.room, kind=SuggestionKind.SCRIPT_SWITCH, now=now, ttl_s=self.cfg.ttl_s, text=text,
            reason=reason, key=seg.name, review_below=self.review_below, confidence=confidence,
            examples=examples, segment=seg.name, topic=trig.topic,
            data={
                "from_segment": current.name,
                "metric": str(trig.metric),
                "value": round(m.value, 4),
                "threshold": trig.value,
                "op": trig.op,
                "window_s": trig.window_s,
                "count": m.count,
                "comments": m.comments,
                "current_hold": round(hold, 4),
                "talking_points": list(seg.talking_points),
                "promotional": seg.promotional,
            },
        )
        self._register(s, seg, memory, now)
        return s

    def _register(self, s: Suggestion, seg: Segment, memory: AdvisorMemory, now: int) -> None:
        mem = memory.switch
        mem.pending_id = s.id
        mem.pending_target = seg.name
        mem.last_suggested[seg.name] = now
        if seg.promotional:
            memory.add_promo(now)

    # -- actions (called by the engine) -----------------------------------------------------------

    def switched(self, memory: AdvisorMemory, target: str, now: int) -> None:
        """The room is now in `target` (accepted suggestion, host's own choice, or replay follow)."""
        if target == memory.segment:
            return
        memory.switch.switches.append((now, memory.segment or "", target))
        memory.segment = target
        memory.segment_since = now
        memory.switch.firing_since.pop(target, None)
        memory.switch.need_low_since = None

    def resolved(self, memory: AdvisorMemory, suggestion_id: str) -> None:
        if memory.switch.pending_id == suggestion_id:
            memory.switch.pending_id = None
            memory.switch.pending_target = None

    def snoozed(self, memory: AdvisorMemory, target: str, until: int) -> None:
        memory.switch.suppressed_until[target] = until

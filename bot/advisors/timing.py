"""Time limits of a show: segment overruns, the opening's deadline and checklist, session length, rhythm.

- **Overrun**: a segment with `max_dwell_s` that has run longer gets one switch suggestion per stint, to the
  next segment in running order (product explanation cut from 5 to 2 minutes raised conversion in the seed
  cases). It shares the script-switch memory, so it never doubles a pending trigger-based switch, and it
  stands back while another segment's trigger fires (that switch is the way out).
- **Opening**: still in the opening segment at its deadline (`opening.deadline_s`, default 3 minutes) →
  one alert (rule `opening_deadline`) naming the checklist items field control has not ticked off.
- **Session length**: `session_warn_before_min` before the run-sheet's planned length and again at it →
  alert rule `session_length` (retention is best around 90 minutes in the seed material).
- **Rhythm**: every `rhythm_after_min` in the same segment → alert rule `rhythm` (attention falls after
  30 minutes of the same content).

`status()` gives the host screen the same readings as numbers, so the page can show the overrun as it grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.advisors.base import Severity, Suggestion, SuggestionKind
from bot.advisors.common import MINUTE_MS, AdvisorMemory, clock_text, fits_cap, make
from bot.scripts import RunSheet, Segment

if TYPE_CHECKING:
    from bot.config import TimingConfig
    from bot.state import RoomState

RULES = ("opening_deadline", "session_length", "rhythm")


class TimingAdvisor:
    def __init__(self, room: str, plan: RunSheet, cfg: TimingConfig, *, review_below: float,
                 promo_per_min: int) -> None:
        self.room = room
        self.plan = plan
        self.cfg = cfg
        self.review_below = review_below
        self.promo_per_min = promo_per_min

    @property
    def opening_deadline_s(self) -> int:
        return self.plan.opening.deadline_s or self.cfg.opening_deadline_s

    def next_segment(self, current: Segment) -> Segment | None:
        names = [s.name for s in self.plan.segments]
        i = names.index(current.name) if current.name in names else -1
        return self.plan.segments[i + 1] if 0 <= i < len(names) - 1 else None

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        if memory.started_ts is None:
            return []
        current = self.plan.segment(memory.segment or "") or self.plan.segments[0]
        out: list[Suggestion] = []
        overrun = self._overrun(now, memory, current)
        if overrun is not None:
            out.append(overrun)
        out += self._opening(now, memory, current)
        out += self._session(now, memory)
        out += self._rhythm(now, memory, current)
        return out

    # -- rules ------------------------------------------------------------------------------------

    def _overrun(self, now: int, memory: AdvisorMemory, current: Segment) -> Suggestion | None:
        mem = memory.timing
        limit = current.max_dwell_s
        elapsed = now - memory.segment_since
        if limit is None or elapsed < limit * 1000 or mem.overrun_stint == memory.segment_since:
            return None
        if memory.switch.pending_id is not None:
            return None  # a switch is already on the screen; the overrun waits until it is decided
        if memory.switch.firing_since:
            # Viewers are asking for a particular segment: that switch (held back by dwell, snooze or
            # resuggest) is the way out, not the next one in running order. The screen still shows the
            # overrun.
            return None
        target = self.next_segment(current)
        if target is None:
            mem.overrun_stint = memory.segment_since  # the last segment: the status shows the overrun
            return None
        if target.promotional and not fits_cap(memory.promos, now, MINUTE_MS, self.promo_per_min):
            return None
        over = elapsed - limit * 1000
        text = (f"「{current.name}」已讲 {clock_text(elapsed)}, 超过上限 {clock_text(limit * 1000)}: "
                f"切到「{target.name}」")
        reason = (f"段落上限 {clock_text(limit * 1000)} (运行单 max_dwell_s), 已超时 {clock_text(over)}; "
                  "讲解压短、节奏更紧时转化更高")
        s = make(
            room=self.room, kind=SuggestionKind.SCRIPT_SWITCH, now=now, ttl_s=self.cfg.ttl_s, text=text,
            reason=reason, key=f"overrun:{target.name}", review_below=self.review_below, segment=target.name,
            data={
                "from_segment": current.name,
                "metric": "max_dwell",
                "elapsed_s": round(elapsed / 1000),
                "max_dwell_s": limit,
                "over_s": round(over / 1000),
                "talking_points": list(target.talking_points),
                "variants": {k: list(v) for k, v in target.variants.items()},
                "promotional": target.promotional,
            },
        )
        mem.overrun_stint = memory.segment_since
        sw = memory.switch
        sw.pending_id = s.id
        sw.pending_target = target.name
        sw.last_suggested[target.name] = now
        if target.promotional:
            memory.add_promo(now)
        return s

    def _alert(self, now: int, rule: str, key: str, severity: Severity, text: str, reason: str,
               data: dict[str, Any]) -> Suggestion:
        return make(
            room=self.room, kind=SuggestionKind.ALERT, now=now, ttl_s=self.cfg.ttl_s, text=text,
            reason=reason, key=key, review_below=self.review_below, severity=severity, rule=rule,
            data={"key": key, **data},
        )

    def _opening(self, now: int, memory: AdvisorMemory, current: Segment) -> list[Suggestion]:
        mem = memory.timing
        opening = self.plan.opening_segment
        started = memory.started_ts or now
        deadline = self.opening_deadline_s
        if mem.opening_warned or current.name != opening.name or now - started < deadline * 1000:
            return []
        mem.opening_warned = True
        missing = [c.name for c in self.plan.opening.checklist if c.name not in mem.checked]
        text = f"开场已 {clock_text(now - started)}, 该进入正题了"
        if missing:
            text += f"; 还没讲到: {' / '.join(missing)}"
        reason = f"开场时限 {clock_text(deadline * 1000)}"
        if self.plan.opening.checklist:
            done = len(self.plan.opening.checklist) - len(missing)
            reason += f"; 开场清单完成 {done}/{len(self.plan.opening.checklist)}"
        nxt = self.next_segment(opening)
        if nxt is not None:
            reason += f"; 下一段「{nxt.name}」"
        return [self._alert(now, "opening_deadline", "opening_deadline",
                            Severity.WARNING if missing else Severity.INFO, text, reason,
                            {"deadline_s": deadline, "missing": missing, "segment": opening.name})]

    def _session(self, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        mem = memory.timing
        started = memory.started_ts or now
        elapsed = now - started
        planned = self.plan.show.planned_minutes * MINUTE_MS
        warn_at = planned - self.cfg.session_warn_before_min * MINUTE_MS
        last = self.plan.segments[-1].name
        if elapsed >= planned and "over" not in mem.session_warned:
            mem.session_warned |= {"near", "over"}
            text = f"已到计划时长 {self.plan.show.planned_minutes} 分钟: 进入「{last}」, 预告下一场"
            reason = (f"本场已播 {clock_text(elapsed)}, 计划 {self.plan.show.planned_minutes} 分钟 "
                      "(留存在 90 分钟左右最好, 拖长后观众流失)")
            return [self._alert(now, "session_length", "session_length:over", Severity.WARNING, text, reason,
                                {"elapsed_s": round(elapsed / 1000),
                                 "planned_min": self.plan.show.planned_minutes, "stage": "over"})]
        if elapsed >= max(0, warn_at) and "near" not in mem.session_warned and elapsed < planned:
            mem.session_warned.add("near")
            left = planned - elapsed
            text = f"距计划时长还有 {clock_text(left)}: 安排最后一轮福利和逼单, 准备「{last}」"
            reason = f"本场已播 {clock_text(elapsed)}, 计划 {self.plan.show.planned_minutes} 分钟"
            return [self._alert(now, "session_length", "session_length:near", Severity.INFO, text, reason,
                                {"elapsed_s": round(elapsed / 1000),
                                 "planned_min": self.plan.show.planned_minutes, "stage": "near"})]
        return []

    def _rhythm(self, now: int, memory: AdvisorMemory, current: Segment) -> list[Suggestion]:
        mem = memory.timing
        every = self.cfg.rhythm_after_min * MINUTE_MS
        elapsed = now - memory.segment_since
        stint, done = mem.rhythm_stint if mem.rhythm_stint else (None, 0)
        if stint != memory.segment_since:
            done = 0
        if elapsed < (done + 1) * every:
            mem.rhythm_stint = (memory.segment_since, done)
            return []
        mem.rhythm_stint = (memory.segment_since, done + 1)
        text = f"「{current.name}」已连续 {clock_text(elapsed)}: 换个节奏 (福利互动、抽奖、换品或试穿)"
        reason = (f"同一段落超过 {self.cfg.rhythm_after_min} 分钟, 观众注意力明显下降; "
                  "节奏变化能把人留住")
        return [self._alert(now, "rhythm", f"rhythm:{current.name}", Severity.INFO, text, reason,
                            {"segment": current.name, "same_for_s": round(elapsed / 1000)})]

    # -- actions and numbers ----------------------------------------------------------------------

    def check_item(self, memory: AdvisorMemory, name: str, now: int, *, done: bool = True) -> None:
        """Field control ticked (or unticked) an opening checklist item.

        Raises:
            ValueError: the run-sheet's checklist has no such item.
        """
        names = [c.name for c in self.plan.opening.checklist]
        if name not in names:
            raise ValueError(f"no checklist item {name!r}; the run-sheet lists: {', '.join(names) or 'none'}")
        if done:
            memory.timing.checked.setdefault(name, now)
        else:
            memory.timing.checked.pop(name, None)

    def status(self, memory: AdvisorMemory, now: int) -> dict[str, Any]:
        """The timing block of the host screen (seconds; None where a limit is not set)."""
        started = memory.started_ts if memory.started_ts is not None else now
        current = self.plan.segment(memory.segment or "") or self.plan.segments[0]
        elapsed = max(0, now - (memory.segment_since if memory.started_ts is not None else now))
        limit = current.max_dwell_s
        over = None if limit is None else max(0, elapsed - limit * 1000)
        if limit is not None and elapsed >= limit * 1000:
            seg_state = "over"
        elif limit is not None and elapsed >= 0.8 * limit * 1000:
            seg_state = "near"
        else:
            seg_state = "ok"
        nxt = self.next_segment(current)
        planned = self.plan.show.planned_minutes * MINUTE_MS
        show_elapsed = now - started
        if show_elapsed >= planned:
            session_state = "over"
        elif show_elapsed >= planned - self.cfg.session_warn_before_min * MINUTE_MS:
            session_state = "near"
        else:
            session_state = "ok"
        opening = self.plan.opening_segment
        deadline = self.opening_deadline_s
        checked = memory.timing.checked
        items = [{"name": c.name, "hint": c.hint, "done": c.name in checked, "done_ts": checked.get(c.name)}
                 for c in self.plan.opening.checklist]
        rhythm_every = self.cfg.rhythm_after_min * MINUTE_MS
        return {
            "segment": current.name,
            "elapsed_s": round(elapsed / 1000),
            "min_dwell_s": current.min_dwell_s,
            "max_dwell_s": limit,
            "over_s": None if over is None else round(over / 1000),
            "state": seg_state,
            "next_segment": nxt.name if nxt is not None else None,
            "session": {
                "elapsed_s": round(show_elapsed / 1000),
                "planned_s": planned // 1000,
                "left_s": round((planned - show_elapsed) / 1000),
                "state": session_state,
            },
            "rhythm": {"same_segment_s": round(elapsed / 1000), "due": elapsed >= rhythm_every,
                       "after_s": rhythm_every // 1000},
            "opening": {
                "segment": opening.name,
                "active": current.name == opening.name and memory.timing.opening_warned is False,
                "deadline_s": deadline,
                "left_s": round((started + deadline * 1000 - now) / 1000),
                "checklist": items,
                "done": sum(1 for i in items if i["done"]),
                "total": len(items),
            },
        }

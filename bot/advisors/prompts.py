"""Interaction prompts (扣1, 点赞到1万, 想要的打「想要」) at a target rate, measured.

Regular prompts aim at `target_per_min` (default 4, the 3–5 of leading rooms): one every 60/target seconds,
once at least `min_chat_lines` comments came in since the last prompt (as chat-bot timers do); when the
rate achieved over the last minutes falls behind, the interval shortens to 60/`max_per_min` to catch up.
When the room goes quiet for `idle_after_s`, an idle prompt warms it up. Prompts are drawn in run-sheet
order without repeating one within `no_repeat_s`, never land within `coupon_gap_s` of a coupon drop, and
each is measured: comments matching its keywords within `response_s` are its response.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.common import MINUTE_MS, AdvisorMemory, PromptRecord, make
from bot.scripts import Prompt, RunSheet

if TYPE_CHECKING:
    from bot.config import PromptsConfig
    from bot.state import RoomState

_NOT_WORD = re.compile(r"[\W_]+")
_CATCH_UP_HORIZON_MS = 5 * MINUTE_MS


def _whole_comment_keyword(keyword: str) -> bool:
    # 1 / 2 / S / 在: as substrings they would match 160斤 or 在哪买, so they must be the whole comment.
    return len(keyword) == 1 or (keyword.isascii() and len(keyword) <= 3)


def matches(text: str, keywords: Sequence[str]) -> bool:
    """Is this comment a response to a prompt with these keywords? (rules in scripts_library/README.md)"""
    low = text.lower()
    bare = _NOT_WORD.sub("", low)
    for k in keywords:
        k = k.lower()
        if not k:
            continue
        if _whole_comment_keyword(k):
            if bare and not bare.replace(k, ""):
                return True
        elif k in low:
            return True
    return False


def _vote_data(prompt: Prompt, response_s: int) -> dict[str, Any]:
    """The options of a vote prompt (bot.advisors.votes counts them), or nothing for a plain prompt."""
    if not prompt.options:
        return {}
    return {
        "options": [{"label": o.label, "keywords": list(o.keywords)} for o in prompt.options],
        "vote_window_s": prompt.window_s or response_s,
    }


class PromptAdvisor:
    def __init__(self, room: str, plan: RunSheet, cfg: PromptsConfig, *, review_below: float,
                 coupon_gap_s: int) -> None:
        self.room = room
        self.plan = plan
        self.cfg = cfg
        self.review_below = review_below
        self.gap_ms = coupon_gap_s * 1000

    # -- measuring --------------------------------------------------------------------------------

    def _measure(self, state: RoomState, now: int, memory: AdvisorMemory) -> None:
        window = self.cfg.response_s * 1000
        # Records are measured in order, so the unmeasured ones are the tail of the history.
        tail: list[PromptRecord] = []
        for rec in reversed(memory.prompts.history):
            if rec.responses is not None:
                break
            tail.append(rec)
        for rec in reversed(tail):
            if now < rec.ts + window:
                break
            responses = total = 0
            for c in reversed(state.recent_comments):
                if c.ts <= rec.ts:
                    break
                if c.ts <= rec.ts + window:
                    total += 1
                    if matches(c.text, rec.keywords):
                        responses += 1
            rec.responses = responses
            rec.window_comments = total

    def rate(self, memory: AdvisorMemory, now: int, horizon_ms: int) -> float:
        """Prompts per minute achieved over the last `horizon_ms` (dismissed ones don't count)."""
        start = memory.started_ts if memory.started_ts is not None else now
        span = min(horizon_ms, now - start)
        if span <= 0:
            return 0.0
        return self._count_since(memory, now - span, now) * MINUTE_MS / span

    @staticmethod
    def _count_since(memory: AdvisorMemory, lo: int, now: int) -> int:
        n = 0
        for r in reversed(memory.prompts.history):
            if r.ts <= lo:
                break
            if r.ts <= now and not r.dismissed:
                n += 1
        return n

    # -- the tick ---------------------------------------------------------------------------------

    def _near_coupon(self, memory: AdvisorMemory, now: int) -> bool:
        c = memory.coupons
        times = [due for _, due in c.issued] + c.drops[-5:]
        if c.pending is not None:
            times.append(c.pending.due_ts)
        if c.upcoming_due is not None:
            times.append(c.upcoming_due)
        return any(abs(now - t) < self.gap_ms for t in times)

    def _interval_ms(self, memory: AdvisorMemory, now: int) -> float:
        cfg = self.cfg
        base = MINUTE_MS / cfg.target_per_min
        start = memory.started_ts if memory.started_ts is not None else now
        horizon = min(now - start, _CATCH_UP_HORIZON_MS)
        if horizon >= MINUTE_MS and self.rate(memory, now, horizon) < cfg.target_per_min - 0.25:
            return MINUTE_MS / cfg.max_per_min
        return base

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        mem = memory.prompts
        cfg = self.cfg
        self._measure(state, now, memory)
        if not self.plan.prompt_pools:
            return []
        if mem.paused_until is not None:
            if now < mem.paused_until:
                return []
            mem.paused_until = None
        start = memory.started_ts if memory.started_ts is not None else now
        last = mem.last_ts if mem.last_ts is not None else start
        if self._near_coupon(memory, now):
            return []
        in_last_minute = self._count_since(memory, now - MINUTE_MS, now)
        if in_last_minute >= math.floor(cfg.max_per_min):
            return []
        last_chat = state.recent_comments[-1].ts if state.recent_comments else start
        quiet_ms = now - max(last_chat, last)
        if quiet_ms >= cfg.idle_after_s * 1000:
            return self._issue(state, now, memory, idle=True, quiet_ms=quiet_ms)
        lines = state.totals.comments - mem.comments_at_last
        if now - last >= self._interval_ms(memory, now) and lines >= cfg.min_chat_lines:
            return self._issue(state, now, memory, idle=False, quiet_ms=0, lines=lines)
        return []

    def _choose(self, memory: AdvisorMemory, now: int, idle: bool) -> tuple[str, Prompt] | None:
        seg = self.plan.segment(memory.segment or "")
        names = seg.prompt_pools if seg is not None else ()
        pools = self.plan.pools(idle=idle, names=names) or self.plan.pools(idle=not idle, names=names)
        items = [(pool.name, p) for pool in pools for p in pool.prompts]
        if not items:
            return None
        mem = memory.prompts
        key = ("idle:" if idle else "regular:") + ",".join(p.name for p in pools)
        cursor = mem.cursor.get(key, 0)
        horizon = self.cfg.no_repeat_s * 1000
        chosen = None
        for k in range(len(items)):
            i = (cursor + k) % len(items)
            used = mem.last_used.get(items[i][1].text)
            if used is None or now - used >= horizon:
                chosen = i
                break
        if chosen is None:  # every prompt ran recently: the least recently used one
            chosen = min(range(len(items)), key=lambda i: (mem.last_used.get(items[i][1].text, 0), i))
        mem.cursor[key] = chosen + 1
        return items[chosen]

    def _issue(self, state: RoomState, now: int, memory: AdvisorMemory, *, idle: bool, quiet_ms: int,
               lines: int = 0) -> list[Suggestion]:
        picked = self._choose(memory, now, idle)
        if picked is None:
            return []
        pool, prompt = picked
        mem = memory.prompts
        cfg = self.cfg
        achieved = self.rate(memory, now, _CATCH_UP_HORIZON_MS)
        if idle:
            reason = f"直播间已 {round(quiet_ms / 1000)} 秒没有新弹幕, 用互动口令暖场"
        else:
            since = round((now - (mem.last_ts if mem.last_ts is not None else now)) / 1000)
            reason = (
                (f"距上次互动 {since} 秒, 期间弹幕 {lines} 条; " if mem.last_ts is not None else "")
                + f"目标每分钟 {cfg.target_per_min:g} 次, 近5分钟实际 {achieved:.1f} 次/分"
            )
        s = make(
            room=self.room, kind=SuggestionKind.PROMPT, now=now, ttl_s=cfg.ttl_s, text=f"互动: {prompt.text}",
            reason=reason, key=prompt.text, review_below=self.review_below, segment=memory.segment,
            data={
                "prompt": prompt.text,
                "pool": pool,
                "idle": idle,
                "keywords": list(prompt.keywords),
                "response_window_s": cfg.response_s,
                "achieved_per_min": round(achieved, 2),
                "target_per_min": cfg.target_per_min,
                **_vote_data(prompt, cfg.response_s),
            },
        )
        mem.history.append(PromptRecord(s.id, now, prompt.text, prompt.keywords, idle, pool))
        mem.last_ts = now
        mem.comments_at_last = state.totals.comments
        mem.last_used[prompt.text] = now
        return [s]

    # -- actions and numbers ----------------------------------------------------------------------

    def dismissed(self, memory: AdvisorMemory, suggestion_id: str) -> None:
        for rec in reversed(memory.prompts.history):
            if rec.id == suggestion_id:
                rec.dismissed = True
                return

    def stats(self, memory: AdvisorMemory, now: int) -> dict[str, Any]:
        hist = [r for r in memory.prompts.history if not r.dismissed]
        measured = [r for r in hist if r.responses is not None]
        start = memory.started_ts if memory.started_ts is not None else now
        minutes = (now - start) / MINUTE_MS
        return {
            "prompts": len(hist),
            "idle_prompts": sum(1 for r in hist if r.idle),
            "achieved_per_min": round(len(hist) / minutes, 2) if minutes > 0 else 0.0,
            "last_5min_per_min": round(self.rate(memory, now, _CATCH_UP_HORIZON_MS), 2),
            "target_per_min": self.cfg.target_per_min,
            "range_per_min": [self.cfg.min_per_min, self.cfg.max_per_min],
            "paused": memory.prompts.paused_until is not None and now < memory.prompts.paused_until,
            "responses": sum(r.responses or 0 for r in measured),
            "mean_responses": (
                round(sum(r.responses or 0 for r in measured) / len(measured), 2) if measured else None
            ),
            "per_prompt": [
                {"id": r.id, "ts": r.ts, "text": r.text, "idle": r.idle, "responses": r.responses,
                 "window_comments": r.window_comments}
                for r in list(hist)[-50:]
            ],
        }

"""Alert rules for field control: surges, collapses, distrust words, compliance quotes and dead sources, never
spammy.

Each rule (per topic for confusion, per source for source_down) sends at most one alert per `cooldown_s`.
Firings during the cooldown are not lost: they are aggregated (episodes, peak reading, examples) into the
next alert, which goes out when the cooldown ends, even if the rule has gone quiet by then.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.advisors.base import SEVERITY_ORDER, Severity, Suggestion, SuggestionKind
from bot.advisors.common import (
    TOPIC_LABELS,
    AdvisorMemory,
    AlertRuleMemory,
    clock_text,
    evidence_confidence,
    make,
    pct,
    pick_examples,
    recent_newest_first,
)
from bot.events import platform_label
from bot.sources.base import SourceState
from bot.state import DelayThresholds

if TYPE_CHECKING:
    from bot.config import AlertRulesConfig
    from bot.state import RecentComment, RoomState

RULES = ("negative_surge", "confusion_surge", "rate_collapse", "distrust", "source_down", "compliance",
         "platform_lag")
_MAX_EXAMPLES = 5


@dataclass(slots=True)
class Firing:
    """A rule that holds at this tick."""

    rule: str
    key: str
    severity: Severity
    value: float
    """The reading the rule compares (share, rate or seconds), for `peak` aggregation."""
    text: str
    reason: str
    confidence: float = 1.0
    topic: str | None = None
    examples: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)


class AlertAdvisor:
    def __init__(self, room: str, cfg: AlertRulesConfig, *, review_below: float) -> None:
        self.room = room
        self.cfg = cfg
        self.review_below = review_below

    # -- rules ------------------------------------------------------------------------------------

    def _rules(self, state: RoomState, now: int) -> list[Firing]:
        cfg = self.cfg
        out: list[Firing] = []
        w = state.window(60, now)
        if w.analyzed >= cfg.min_comments and w.negative_share >= cfg.negative_share:
            share = w.negative_share
            examples = pick_examples(c.text for c in recent_newest_first(state, 60, now) if c.sentiment == "neg")
            out.append(Firing(
                rule="negative_surge", key="negative_surge",
                severity=(Severity.CRITICAL if share >= min(1.0, cfg.negative_share * 1.5)
                          else Severity.WARNING),
                value=share,
                text="负面弹幕激增, 先安抚情绪、正面回应" + (f": 「{examples[0]}」" if examples else ""),
                reason=(f"近60秒 {w.neg}/{w.analyzed} 条弹幕是负面的 "
                        f"({pct(share)}, 阈值 {pct(cfg.negative_share)})"),
                confidence=evidence_confidence(comments=w.analyzed, min_comments=cfg.min_comments,
                                               low_confidence=w.low_confidence,
                                               strength=share / cfg.negative_share),
                examples=examples, data={"neg": w.neg, "comments": w.analyzed, "share": round(share, 4)},
            ))
        if w.analyzed >= cfg.min_comments:
            for topic, n in sorted(w.topic_confused.items()):
                rate = n / w.analyzed
                if topic == "other" or n < 3 or rate < cfg.confusion_rate:
                    continue
                label = TOPIC_LABELS.get(topic, topic)
                groups = [g for g in state.questions(60, now, limit=50) if g.topic == topic]
                examples = tuple(g.examples[0] for g in groups[:_MAX_EXAMPLES])
                out.append(Firing(
                    rule="confusion_surge", key=f"confusion_surge:{topic}", topic=topic,
                    severity=Severity.WARNING, value=rate,
                    text=f"大量观众在问{label}, 建议集中解答" + (f": 「{examples[0]}」" if examples else ""),
                    reason=(f"近60秒 {n}/{w.analyzed} 条弹幕在问{label} "
                            f"({pct(rate)}, 阈值 {pct(cfg.confusion_rate)})"),
                    confidence=evidence_confidence(comments=w.analyzed, min_comments=cfg.min_comments,
                                                   low_confidence=w.low_confidence,
                                                   strength=rate / cfg.confusion_rate),
                    examples=examples, data={"confused": n, "comments": w.analyzed, "rate": round(rate, 4)},
                ))
        first = state.totals.first_ms
        if first is not None and now - first >= 300_000:
            before = (state.comment_count(300, now) - w.comments) / 4.0
            current = float(w.comments)
            if before >= cfg.collapse_min_per_min and current < cfg.collapse_ratio * before:
                out.append(Firing(
                    rule="rate_collapse", key="rate_collapse",
                    severity=Severity.CRITICAL if current == 0 else Severity.WARNING,
                    value=1 - current / before,
                    text="弹幕骤降: 检查画面和声音, 或马上上福利拉互动",
                    reason=(f"弹幕从每分钟 {before:.0f} 条降到 {current:.0f} 条 "
                            f"(低于之前的 {pct(cfg.collapse_ratio)})"),
                    data={"before_per_min": round(before, 1), "per_min": current},
                ))
        distrust: list[RecentComment] = []
        quoted: list[RecentComment] = []
        for c in recent_newest_first(state, 60, now):  # one pass for both rules, newest first
            if c.distrust:
                distrust.append(c)
            if c.compliance:
                quoted.append(c)
        if len(distrust) >= cfg.distrust_min:
            examples = pick_examples((c.text for c in distrust), _MAX_EXAMPLES)
            out.append(Firing(
                rule="distrust", key="distrust",
                severity=Severity.CRITICAL if len(distrust) >= 3 * cfg.distrust_min else Severity.WARNING,
                value=float(len(distrust)),
                text=f"出现质疑/维权弹幕, 场控请及时回应: 「{examples[0]}」",
                reason=(f"近60秒 {len(distrust)} 条弹幕含质疑/维权词 "
                        f"(骗/假货/退款…, 阈值 {cfg.distrust_min} 条)"),
                examples=examples, data={"count": len(distrust)},
            ))
        if len(quoted) >= cfg.compliance_min:
            terms = Counter(t for c in reversed(quoted) for t in c.compliance)  # oldest first: ties as before
            top = "、".join(f"「{t}」×{n}" if n > 1 else f"「{t}」" for t, n in terms.most_common(3))
            examples = pick_examples((c.text for c in quoted), _MAX_EXAMPLES)
            out.append(Firing(
                rule="compliance", key="compliance", severity=Severity.WARNING, value=float(len(quoted)),
                text=f"观众在复述{top}: 主播注意措辞, 场控核对话术和商品页",
                reason=(f"近60秒 {len(quoted)} 条弹幕引用了广告法绝对化用语或禁售类目词 "
                        f"(阈值 {cfg.compliance_min} 条)"),
                examples=examples, data={"count": len(quoted), "terms": dict(terms.most_common(10))},
            ))
        for name, st in sorted(state.sources.items()):
            down = st.down_since_ms
            long_down = down is not None and now - down >= cfg.source_down_s * 1000
            if st.state is SourceState.FAILED or long_down:
                seconds = (now - down) / 1000 if down is not None else 0.0
                out.append(Firing(
                    rule="source_down", key=f"source_down:{name}", severity=Severity.CRITICAL, value=seconds,
                    text=f"数据源「{name}」已断开, 弹幕分析暂停, 请检查网络或直播间",
                    reason=(f"{name} 状态 {st.state}, 已断开 {clock_text(round(seconds * 1000))}"
                            + (f", 最近错误: {st.last_error}" if st.last_error else "")),
                    data={"source": name, "state": str(st.state), "down_s": round(seconds, 1),
                          "reconnects": st.reconnects},
                ))
        out.extend(self._platform_lag(state, now))
        return out

    def _platform_lag(self, state: RoomState, now: int) -> list[Firing]:
        cfg = self.cfg
        lag = DelayThresholds.from_alerts(cfg)  # the rule the screens' chips and the status line follow
        delays = {p: d for p, d in state.platform_delays(60, now).items() if lag.level(d) is not None}
        if not delays:
            return []
        fastest = min(delays, key=lambda p: (delays[p].median_ms, p))
        out: list[Firing] = []
        for platform, d in sorted(delays.items()):
            if lag.level(d) != "late":
                continue
            name = platform_label(platform)
            gap = d.median_ms - delays[fastest].median_ms
            versus = (f", 比{platform_label(fastest)}慢 {gap / 1000:.1f} 秒"
                      if platform != fastest and gap >= 1000 else "")
            out.append(Firing(
                rule="platform_lag", key=f"platform_lag:{platform}",
                severity=Severity.CRITICAL if d.median_ms >= 2 * lag.late_ms else Severity.WARNING,
                value=d.median_ms / 1000,
                text=(f"{name}弹幕延迟 {d.median_ms / 1000:.1f} 秒{versus}: 场控检查{name}的网络和推流, "
                      f"主播回答{name}观众时先点名问题, 口令和倒计时多等几秒"),
                reason=(f"近60秒 {d.comments} 条{name}弹幕从发出到送达的延迟: 中位数 {d.median_ms / 1000:.1f} 秒, "
                        f"90% 分位 {d.p90_ms / 1000:.1f} 秒 (阈值 {cfg.platform_lag_s:g} 秒)"
                        + "".join(f"; {platform_label(p)} {o.median_ms / 1000:.1f} 秒"
                                  for p, o in sorted(delays.items()) if p != platform)),
                data={"platform": platform, "median_ms": d.median_ms, "p90_ms": d.p90_ms,
                      "comments": d.comments, "fastest": fastest,
                      "medians_ms": {p: o.median_ms for p, o in delays.items()}},
            ))
        return out

    # -- dedup and aggregation --------------------------------------------------------------------

    def advise(self, state: RoomState, now: int, memory: AdvisorMemory) -> list[Suggestion]:
        firing = {f.key: f for f in self._rules(state, now)}
        out: list[Suggestion] = []
        for key, f in firing.items():
            mem = memory.alerts.setdefault(key, AlertRuleMemory())
            if not mem.active:
                mem.episodes += 1
                mem.active = True
            mem.peak = max(mem.peak, f.value)
            if SEVERITY_ORDER[f.severity] > SEVERITY_ORDER[mem.severity]:
                mem.severity = f.severity
            for ex in reversed(f.examples):  # oldest first, so the newest ends up last
                if ex in mem.examples:
                    mem.examples.remove(ex)
                mem.examples.append(ex)
            del mem.examples[:-_MAX_EXAMPLES]
            mem.evidence = {"text": f.text, "reason": f.reason, "confidence": f.confidence, "topic": f.topic,
                            "rule": f.rule, "data": f.data}
            if self._due(mem, now):
                out.append(self._send(key, mem, now, active=True))
        # Quiet rules whose cooldown ended with firings still unreported: send the aggregate now.
        for key, mem in sorted(memory.alerts.items()):
            if key in firing:
                continue
            mem.active = False
            if mem.episodes > 0 and self._due(mem, now):
                out.append(self._send(key, mem, now, active=False))
        return out

    def _due(self, mem: AlertRuleMemory, now: int) -> bool:
        if now < mem.muted_until:
            return False
        return mem.last_sent is None or now - mem.last_sent >= self.cfg.cooldown_s * 1000

    def _send(self, key: str, mem: AlertRuleMemory, now: int, *, active: bool) -> Suggestion:
        ev = mem.evidence
        reason = ev["reason"]
        if mem.last_sent is not None:
            reason += f"; 距上次提醒 {clock_text(now - mem.last_sent)}, " + (
                f"期间又触发 {mem.episodes} 次" if mem.episodes else "一直未恢复"
            )
        if not active:
            reason += " (现已回落)"
        s = make(
            room=self.room, kind=SuggestionKind.ALERT, now=now, ttl_s=self.cfg.ttl_s, text=ev["text"],
            reason=reason, key=key, review_below=self.review_below, confidence=ev["confidence"],
            examples=tuple(reversed(mem.examples)),  # newest first
            severity=mem.severity, topic=ev["topic"], rule=ev["rule"],
            data={**ev["data"], "key": key, "episodes": mem.episodes, "peak": round(mem.peak, 4),
                  "active": active, "cooldown_s": self.cfg.cooldown_s},
        )
        mem.last_sent = now
        mem.episodes = 0
        mem.peak = 0.0
        mem.severity = Severity.INFO
        mem.examples = []
        return s

    def muted(self, memory: AdvisorMemory, key: str, until: int) -> None:
        memory.alerts.setdefault(key, AlertRuleMemory()).muted_until = until

"""Outcome analytics of stored sessions: report sections, returning viewers and the trend page.

`SessionPass` rides along the report's single pass over a session's events (`build_session_report`'s
observers) and `extend_report` turns what it saw into extra timeline panels and sections: the funnel,
returning viewers, need match, "did it work?" (before/after of accepted suggestions), the benchmark
rooms (`watch_only`) next to ours, data coverage and the session score. `build_trend` / `render_trend`
put many sessions side by side (`livebot report --trend`). Definitions live in `bot.analytics`.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import json
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot import __version__
from bot.analytics import (
    COVERAGE_FLAG_BELOW,
    NEED_MATCH_LOW,
    OUTCOME_METRICS,
    OUTCOME_WINDOW_S,
    SCORE_COMPONENTS,
    UNCLASSIFIED_TOPICS,
    Coverage,
    CoverageTracker,
    Funnel,
    FunnelMinute,
    FunnelTracker,
    Outcome,
    OutcomeGroup,
    OutcomePass,
    PromoCues,
    aggregate_outcomes,
    effect_time,
    promo_cadence,
    score_parts,
    session_score,
)
from bot.events import Event, EventKind
from bot.outputs.store import Store, StoredAnalysis
from nlp.topics import TOPIC_LABELS

if TYPE_CHECKING:
    from bot.config import Config
    from bot.outputs.report_data import OutcomeSummary, SessionReport

MINUTE_MS = 60_000
MAX_OUTCOME_ROWS = 120
BENCHMARK_QUESTION_KEYS = 5000
"""Question keys counted per benchmark session (least asked evicted past this)."""

_KIND_ZH = {"script_switch": "切换话术", "coupon": "优惠券", "prompt": "互动口令"}
_BY_ZH = {"kind": "按类型", "segment": "按段落", "prompt": "按口令"}
BEFORE_AFTER_NOTE = (
    f"前后对比: 每条已采纳建议生效前 {OUTCOME_WINDOW_S // 60} 分钟与生效后 {OUTCOME_WINDOW_S // 60} "
    "分钟的数据相比。这不是对照实验: 同一时段里别的变化 (流量波动、主播临场发挥、其他建议) "
    "也会算进差值, 请把它当作线索而不是结论。"
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x * 100:.{digits}f}%"


def _num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "—"
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} 秒"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} 分 {s:02d} 秒"
    h, m = divmod(m, 60)
    return f"{h} 小时 {m:02d} 分"


def _signed(x: float | None, *, share: bool, digits: int = 1) -> str:
    if x is None:
        return "—"
    if share:
        return f"{x * 100:+.{digits}f} 个百分点"
    return f"{x:+,.{digits}f}"


def _topic(t: str) -> str:
    return TOPIC_LABELS.get(t, t)


# -- settings -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnalyticsSettings:
    """What the analytics need from the config: run-sheets per room and the benchmark rooms."""

    default_script: str = "apparel"
    room_scripts: Mapping[str, str] = field(default_factory=dict)
    watch_only: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: Config) -> AnalyticsSettings:
        return cls(
            default_script=cfg.advisors.script,
            room_scripts={r.name: r.script for r in cfg.rooms if r.script},
            watch_only=frozenset(r.name for r in cfg.rooms if r.watch_only),
        )

    def script_for(self, room: str, meta: Mapping[str, Any]) -> str:
        return str(meta.get("script") or self.room_scripts.get(room) or self.default_script)

    def is_watch_only(self, room: str, meta: Mapping[str, Any]) -> bool:
        return bool(meta.get("watch_only")) or room in self.watch_only


# -- segments over time -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentTimeline:
    """Which run-sheet segment ran when, and the topics each answers."""

    starts: tuple[int, ...]
    names: tuple[str, ...]
    answers: Mapping[str, frozenset[str]]

    def at(self, ts: int) -> str:
        return self.names[max(0, bisect.bisect_right(self.starts, ts) - 1)]


def segment_timeline(
    meta: Mapping[str, Any], suggestions: Sequence[Mapping[str, Any]], script: str
) -> SegmentTimeline | None:
    """Segments from the recorded `meta["segments"]`, else from accepted switches, else the first segment.

    None when nothing says the run-sheet was used (no recorded segments, no script in the session meta,
    no switch suggestion) or the run-sheet cannot be loaded: need match is then not computed.
    """
    from bot.errors import LivebotError
    from bot.scripts import load_run_sheet

    switches = [s for s in suggestions if s.get("kind") == "script_switch"]
    recorded = meta.get("segments")
    if not (recorded or switches or meta.get("script")):
        return None
    try:
        sheet = load_run_sheet(script).sheet
    except (LivebotError, OSError):
        return None
    answers = {s.name: frozenset(s.answers_topics) for s in sheet.segments}
    points: list[tuple[int, str]] = []
    if isinstance(recorded, list) and recorded:
        for r in recorded:
            if isinstance(r, Mapping) and isinstance(r.get("ts"), int) and r.get("name"):
                points.append((int(r["ts"]), str(r["name"])))
    else:
        accepted = sorted(
            ((effect_time(s), s) for s in switches if s.get("state") == "accepted" and s.get("segment")),
            key=lambda x: x[0] or 0,
        )
        first = accepted[0][1].get("data", {}).get("from_segment") if accepted else None
        points.append((-(2**62), str(first or sheet.segments[0].name)))
        points += [(int(t), str(s["segment"])) for t, s in accepted if t is not None]
    if not points:
        return None
    points.sort(key=lambda p: p[0])
    return SegmentTimeline(tuple(p[0] for p in points), tuple(p[1] for p in points), answers)


# -- the pass -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _NeedAcc:
    questions: int = 0
    answered: int = 0
    missing: Counter[str] = field(default_factory=Counter)


class SessionPass:
    """Analytics of one session, fed every event in receive order (a report observer)."""

    def __init__(
        self, start_ts: int, end_ts: int, *, suggestions: Sequence[Mapping[str, Any]] = (),
        timeline: SegmentTimeline | None = None, questions: bool = False,
    ) -> None:
        self.start_ts = start_ts
        self.n_minutes = max(1, (end_ts - start_ts) // MINUTE_MS + 1)
        self.funnel = FunnelTracker(start_ts)
        self.coverage = CoverageTracker()
        self.outcomes = OutcomePass(suggestions)
        self.promo = PromoCues(start_ts)
        self.timeline = timeline
        self.need_minutes = [[0, 0] for _ in range(self.n_minutes)]
        self.need_segments: dict[str, _NeedAcc] = {}
        self.intent_minutes = [0] * self.n_minutes
        self.comment_minutes = [0] * self.n_minutes
        self.comments = self.analyzed = self.negative = self.positive = self.intent = 0
        self.question_topics: Counter[str] = Counter()
        self.keep_questions = questions
        self.question_keys: Counter[str] = Counter()
        self.question_examples: dict[str, str] = {}

    def add(self, ev: Event, an: StoredAnalysis | None) -> None:
        self.funnel.add(ev)
        self.coverage.add(ev)
        if self.outcomes:
            self.outcomes.add(ev, an)
        if ev.kind is not EventKind.CHAT:
            return
        t = ev.received_ts
        mi = min(max(0, (t - self.start_ts) // MINUTE_MS), self.n_minutes - 1)
        self.comments += 1
        self.comment_minutes[mi] += 1
        self.promo.add(t, an)
        if an is None:
            return
        self.analyzed += 1
        if an.sentiment == "neg":
            self.negative += 1
        elif an.sentiment == "pos":
            self.positive += 1
        if an.buying_intent:
            self.intent += 1
            self.intent_minutes[mi] += 1
        if an.confusion:
            self._question(ev, an, t, mi)

    def _question(self, ev: Event, an: StoredAnalysis, t: int, mi: int) -> None:
        topic = an.topics[0] if an.topics else "other"
        self.question_topics[topic] += 1
        if self.keep_questions:
            from nlp.questions import question_key

            key = question_key(ev.text, topic).partition("|")[0]
            if key not in self.question_keys and len(self.question_keys) >= BENCHMARK_QUESTION_KEYS:
                for k, _ in self.question_keys.most_common()[-BENCHMARK_QUESTION_KEYS // 10:]:
                    del self.question_keys[k]
                    self.question_examples.pop(k, None)
            self.question_keys[key] += 1
            self.question_examples.setdefault(key, ev.text.strip()[:40])
        tl = self.timeline
        if tl is None:
            return
        known = [x for x in an.topics if x not in UNCLASSIFIED_TOPICS]
        if not known:
            return
        seg = tl.at(t)
        acc = self.need_segments.get(seg)
        if acc is None:
            acc = self.need_segments[seg] = _NeedAcc()
        acc.questions += 1
        self.need_minutes[mi][0] += 1
        if any(x in tl.answers.get(seg, frozenset()) for x in known):
            acc.answered += 1
            self.need_minutes[mi][1] += 1
        else:
            acc.missing[known[0]] += 1

    def finish(self, *, lost_lines: int = 0, input_events: int | None = None) -> SessionAnalytics:
        first = self.coverage.first_ms if self.coverage.first_ms is not None else self.start_ts
        last = self.coverage.last_ms if self.coverage.last_ms is not None else self.start_ts
        outcomes = self.outcomes.finish(first, last) if self.outcomes else []
        minutes = self.funnel.minutes()
        minutes += [FunnelMinute(i) for i in range(len(minutes), self.n_minutes)]
        questions = sum(a.questions for a in self.need_segments.values())
        answered = sum(a.answered for a in self.need_segments.values())
        return SessionAnalytics(
            funnel=self.funnel.funnel(), funnel_minutes=tuple(minutes[: self.n_minutes]),
            coverage=self.coverage.finish(lost_lines=lost_lines, input_events=input_events),
            outcomes=tuple(outcomes), groups=tuple(aggregate_outcomes(outcomes)),
            need_share=answered / questions if questions else None, need_questions=questions,
            need_segments=tuple(
                (name, a.questions, a.answered, tuple(a.missing.most_common(3)))
                for name, a in self.need_segments.items()
            ),
            need_minutes=tuple((q, a) for q, a in self.need_minutes),
            intent_minutes=tuple(self.intent_minutes), comment_minutes=tuple(self.comment_minutes),
            comments=self.comments, analyzed=self.analyzed, negative=self.negative, positive=self.positive,
            intent=self.intent, duration_s=(last - first) / 1000,
            promo_moments=tuple(self.promo.moments()),
            question_topics=tuple(self.question_topics.most_common()),
            top_questions=tuple(
                (self.question_examples.get(k, k), n) for k, n in self.question_keys.most_common(5)
            ),
        )


@dataclass(frozen=True, slots=True)
class SessionAnalytics:
    """Everything the analytics found in one session."""

    funnel: Funnel
    funnel_minutes: tuple[FunnelMinute, ...]
    coverage: Coverage
    outcomes: tuple[Outcome, ...]
    groups: tuple[OutcomeGroup, ...]
    need_share: float | None
    need_questions: int
    need_segments: tuple[tuple[str, int, int, tuple[tuple[str, int], ...]], ...]
    """(segment, questions, answered, most asked unanswered topics) in order of appearance."""
    need_minutes: tuple[tuple[int, int], ...]
    """(questions, answered) per minute."""
    intent_minutes: tuple[int, ...]
    comment_minutes: tuple[int, ...]
    comments: int
    analyzed: int
    negative: int
    positive: int
    intent: int
    duration_s: float
    promo_moments: tuple[int, ...]
    question_topics: tuple[tuple[str, int], ...]
    top_questions: tuple[tuple[str, int], ...] = ()
    """Most asked questions (example wording, times), kept for benchmark comparisons only."""

    @property
    def negative_share(self) -> float | None:
        return self.negative / self.analyzed if self.analyzed else None

    @property
    def positive_share(self) -> float | None:
        return self.positive / self.analyzed if self.analyzed else None

    @property
    def intent_share(self) -> float | None:
        return self.intent / self.comments if self.comments else None

    @property
    def intent_per_min(self) -> float | None:
        return self.intent / (self.duration_s / 60) if self.duration_s > 0 else None

    @property
    def comments_per_min(self) -> float | None:
        return self.comments / (self.duration_s / 60) if self.duration_s > 0 else None

    @property
    def promo_cadence_min(self) -> float | None:
        return promo_cadence(self.promo_moments)

    def score_values(self, returning_share: float | None) -> dict[str, float | None]:
        return {
            "interaction_rate": self.funnel.interaction_rate,
            "long_share": self.funnel.long_share,
            "returning_share": returning_share,
            "intent_share": self.intent_share,
            "need_match": self.need_share if self.need_questions >= 10 else None,
            "negative_share": self.negative_share,
        }


def _input_counts(meta: Mapping[str, Any], stored: int) -> tuple[int, int]:
    """(lost lines, input events) from the session meta: reader skips and store errors."""
    rs = meta.get("replay_stats") or {}
    pipeline = meta.get("pipeline") or {}
    skipped = sum(int(v) for v in (rs.get("skipped") or {}).values())
    lost = skipped + int(pipeline.get("store_errors") or 0)
    return lost, stored


def session_range(store: Store, session_id: str) -> tuple[int, int] | None:
    row = store.execute(
        "SELECT MIN(received_ts), MAX(received_ts) FROM events WHERE session_id = ?", (session_id,)
    )
    if not row or row[0][0] is None:
        return None
    return int(row[0][0]), int(row[0][1])


def analyse_session(
    store: Store, session_id: str, settings: AnalyticsSettings | None = None
) -> SessionAnalytics:
    """One pass over a stored session (without building its report)."""
    settings = settings or AnalyticsSettings()
    info = store.session(session_id)
    if info is None:
        raise KeyError(session_id)
    span = session_range(store, session_id) or (info.started_ts, info.started_ts)
    p = make_pass(store, session_id, span, settings, questions=True)
    for ev, an in store.iter_events(session_id, chunk=20_000):
        p.add(ev, an)
    lost, _ = _input_counts(info.meta, 0)
    return p.finish(lost_lines=lost, input_events=p.coverage.events)


def make_pass(
    store: Store, session_id: str, span: tuple[int, int], settings: AnalyticsSettings, *,
    questions: bool = False,
) -> SessionPass:
    info = store.session(session_id)
    meta = info.meta if info is not None else {}
    room = info.room if info is not None else ""
    suggestions = store.suggestions(session_id)
    timeline = segment_timeline(meta, suggestions, settings.script_for(room, meta))
    return SessionPass(span[0], span[1], suggestions=suggestions, timeline=timeline, questions=questions)


# -- returning viewers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReturningStats:
    """New vs returning viewers of one session among its room's stored sessions (in start order)."""

    session_id: str
    viewers: int
    returning: int
    """Viewers seen in any earlier session of the room."""
    streak3: int
    """Viewers also in each of the two previous sessions: three sessions in a row."""
    previous_sessions: int
    next_session: str | None = None
    retained: int | None = None
    """Viewers of this session who came back to the next one (None: no next session yet)."""

    @property
    def new(self) -> int:
        return self.viewers - self.returning

    @property
    def returning_share(self) -> float | None:
        """None for a room's first stored session (nobody can have returned yet)."""
        if not self.previous_sessions or not self.viewers:
            return None
        return self.returning / self.viewers

    @property
    def retention(self) -> float | None:
        if self.retained is None or not self.viewers:
            return None
        return self.retained / self.viewers


def _viewer_set(store: Store, session_id: str) -> set[str]:
    rows = store.execute(
        "SELECT DISTINCT user_id FROM events WHERE session_id = ? AND user_id IS NOT NULL", (session_id,)
    )
    return {r[0] for r in rows}


def returning_viewers(store: Store, session_ids: Iterable[str]) -> dict[str, ReturningStats]:
    """Returning-viewer figures for the given sessions, against every stored session of their rooms.

    Viewer ids are the salted hashes (DESIGN.md *Interfaces*): stable across sessions of one installation,
    so the same person in two shows is the same id. Sessions of a room are ordered by start time.
    """
    wanted = list(dict.fromkeys(session_ids))
    infos = {s.id: s for s in store.sessions()}
    rooms = {infos[sid].room for sid in wanted if sid in infos}
    out: dict[str, ReturningStats] = {}
    for room in sorted(rooms):
        sessions = [s.id for s in store.sessions(room)]
        targets = {sid for sid in wanted if sid in sessions}
        last_needed = max(sessions.index(sid) for sid in targets) + 1
        seen: set[str] = set()
        prev: list[set[str]] = []
        pending: tuple[str, set[str], ReturningStats] | None = None
        for i, sid in enumerate(sessions[: last_needed + 1]):
            viewers = _viewer_set(store, sid)
            if pending is not None:
                psid, pviewers, pstats = pending
                out[psid] = dataclasses.replace(pstats, next_session=sid, retained=len(pviewers & viewers))
                pending = None
            if sid in targets:
                streak = viewers & prev[-1] & prev[-2] if len(prev) >= 2 else set()
                stats = ReturningStats(
                    session_id=sid, viewers=len(viewers), returning=len(viewers & seen), streak3=len(streak),
                    previous_sessions=i,
                )
                out[sid] = stats
                pending = (sid, viewers, stats)
            seen |= viewers
            prev = (prev + [viewers])[-2:]
    return out


# -- benchmark rooms --------------------------------------------------------------------------------------


def benchmark_sessions(
    store: Store, room: str, start_ts: int, end_ts: int, settings: AnalyticsSettings
) -> list[str]:
    """Stored sessions of watch_only rooms (other than `room`) that overlap [start_ts, end_ts]."""
    out = []
    for s in store.sessions():
        if s.room == room or not settings.is_watch_only(s.room, s.meta):
            continue
        span = session_range(store, s.id)
        if span is not None and span[0] <= end_ts and span[1] >= start_ts:
            out.append(s.id)
    return out


# -- report extension ---------------------------------------------------------------------------------------


def extend_report(
    report: SessionReport, analytics: SessionAnalytics, *, returning: ReturningStats | None = None,
    benchmarks: Sequence[tuple[str, SessionAnalytics]] = (),
) -> SessionReport:
    """The report with the analytics panels and sections added (and a notice when coverage is low)."""
    from bot.outputs.report_data import HtmlSection, Series, SeriesPanel

    a = analytics
    n = len(report.minutes)

    def fit(values: Sequence[float | None]) -> tuple[float | None, ...]:
        return tuple(list(values[:n]) + [None] * (n - len(values)))

    panels = [
        SeriesPanel("funnel", "观众 / 分钟 (新观众、互动人数、互动率)", (
            Series("新观众", fit([m.new_viewers for m in a.funnel_minutes]), "#93c5fd", "bar"),
            Series("互动人数", fit([m.interacting for m in a.funnel_minutes]), "#7c3aed"),
            Series("互动率 %", fit([None if m.interaction_rate is None else round(100 * m.interaction_rate, 1)
                                 for m in a.funnel_minutes]), "#16a34a", secondary=True),
        )),
        SeriesPanel("intent", "购买意向 / 分钟", (
            Series("意向弹幕", fit(list(a.intent_minutes)), "#16a34a", "bar"),
            Series("占弹幕 %", fit([round(100 * i / c, 1) if c else None
                                  for i, c in zip(a.intent_minutes, a.comment_minutes, strict=True)]),
                   "#0f766e", secondary=True),
        )),
    ]
    if a.need_questions:
        panels.append(SeriesPanel("need", "需求匹配 (当前段落能回答的提问占比)", (
            Series("需求匹配", fit([q and ans / q for q, ans in a.need_minutes]), "#2563eb"),
            Series(f"{NEED_MATCH_LOW:.0%} 线", fit([NEED_MATCH_LOW] * n), "#dc2626", dash="dot"),
        ), percent=True))
    sections = [
        HtmlSection("score", "本场评分", _score_html(a, returning)),
        HtmlSection("funnel", "观众漏斗与停留", _funnel_html(a.funnel)),
        HtmlSection("returning", "回访观众", _returning_html(returning)),
        HtmlSection("need", "需求匹配", _need_html(a)),
        HtmlSection("outcomes", "建议效果 (前后对比)", _outcomes_html(a)),
    ]
    if benchmarks:
        sections.append(HtmlSection("benchmark", "对标直播间", _benchmark_html(report.room, a, benchmarks)))
    sections.append(HtmlSection("coverage", "数据完整度", _coverage_html(a.coverage)))
    notices = tuple(report.notices)
    if a.coverage.flagged:
        notices += (coverage_notice(a.coverage),)
    return dataclasses.replace(
        report, extra_panels=tuple(report.extra_panels) + tuple(panels),
        extra_sections=tuple(report.extra_sections) + tuple(sections), notices=notices,
        outcome=outcome_summary(a, returning, n),
    )


def outcome_summary(a: SessionAnalytics, returning: ReturningStats | None, minutes: int) -> OutcomeSummary:
    """The figures a comparison table and the CSV export carry, per-minute series cut to `minutes`."""
    from bot.outputs.report_data import OutcomeSummary

    values = a.score_values(returning.returning_share if returning else None)
    rows = []
    for i in range(minutes):
        m = a.funnel_minutes[i] if i < len(a.funnel_minutes) else None
        intent = a.intent_minutes[i] if i < len(a.intent_minutes) else 0
        rows.append((m.new_viewers, m.present, m.interacting, intent) if m else (0, 0, 0, intent))
    return OutcomeSummary(
        viewers=a.funnel.viewers, interaction_rate=a.funnel.interaction_rate, avg_watch_s=a.funnel.avg_watch_s,
        long_share=a.funnel.long_share, follow_rate=a.funnel.follow_rate,
        returning_share=values["returning_share"], need_match=values["need_match"],
        intent_per_min=a.intent_per_min, score=session_score(values), minutes=tuple(rows),
    )


def coverage_notice(c: Coverage) -> str:
    return (
        f"数据完整度 {_pct(c.share)}, 低于 {COVERAGE_FLAG_BELOW:.0%}: 采集有缺口 "
        f"(无数据的分钟 {c.gap_minutes} 个, 数据源断开 {_dur(c.down_ms / 1000)}, 丢失 {c.lost_lines} 行), "
        "本报告的数字偏低, 比较时请注意。"
    )


def _cards(items: Sequence[tuple[str, str, str]]) -> str:
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div>'
        + (f'<div class="d">{d}</div>' if d else "") + "</div>"
        for k, v, d in items
    ) + "</div>"


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int = 1) -> str:
    th = "".join(f'<th{" class=n" if i >= numeric_from else ""}>{_e(h)}</th>' for i, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=n" if i >= numeric_from else ""}>{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _score_html(a: SessionAnalytics, returning: ReturningStats | None) -> str:
    values = a.score_values(returning.returning_share if returning else None)
    score = session_score(values)
    rows = []
    for c, v, part in score_parts(values):
        target = f"0% 满分, {_pct(c.target, 0)} 及以上 0 分" if c.inverse else f"≥ {_pct(c.target, 0)} 满分"
        got = "—" if part is None else f"{part:.2f}"
        rows.append([_e(c.label), _pct(v), _e(target), _num(c.weight), got])
    return (
        f'<div class="cards"><div class="card"><div class="k">本场评分</div>'
        f'<div class="v">{"—" if score is None else f"{score:.1f}"} <span class="muted">/ 10</span></div>'
        '<div class="d">公式见下表</div></div></div>'
        f'<p class="note">{_e(SCORE_FORMULA_ZH)}</p>'
        + _table(["指标", "本场", "满分线", "权重", "得分 (0–1)"], rows)
    )


FIGURES_ZH = (
    "互动率 = 有评论/点赞/送礼/分享的观众 ÷ 观众; 停留超 5 分钟 = 首次到最后一次出现超过 5 分钟的观众占比; "
    "回访观众占比 = 本场观众中在更早场次出现过的占比; 购买意向占弹幕 = 已拍/扣1/上车等弹幕 ÷ 弹幕; "
    "需求匹配 = 提问中当前段落能回答的占比 (至少 10 个提问才计入); 负面占比 = 负面弹幕 ÷ 已分析弹幕。"
)
SCORE_FORMULA_ZH = (
    "评分 = 10 × Σ(权重 × 得分) ÷ Σ(有数据的权重)。得分 = min(1, 本场 ÷ 满分线); 负面占比反过来, "
    "得分 = max(0, 1 − 本场 ÷ 30%)。权重合计 10; 缺数据的指标 (库中第一场没有回访、"
    "提问不足 10 条没有需求匹配) 不计入, 其余按权重折算。互动率满分线 45% 取自头部直播间。"
)


def _component_formula(c: Any) -> str:
    if c.inverse:
        return f"越低越好: max(0, 1 − 本场 ÷ {_pct(c.target, 0)})"
    return f"min(1, 本场 ÷ {_pct(c.target, 0)})"


def _funnel_html(f: Funnel) -> str:
    stages = [("观众 (进入)", f.viewers, 1.0), ("停留 (≥30 秒或有任何操作)", f.active, f.active_rate),
              ("互动 (评论/点赞/送礼/分享)", f.interacted, f.interaction_rate),
              ("关注", f.followed, f.follow_rate)]
    bars = "".join(
        f'<tr><td>{_e(label)}</td><td class="n">{_num(n)}</td><td class="n">{_pct(share)}</td>'
        f'<td style="width:45%"><div class="bar" style="width:{(share or 0) * 100:.1f}%;opacity:.6">'
        "</div></td></tr>"
        for label, n, share in stages
    )
    hist_labels = ("< 1 分钟", "1–5 分钟", "5–15 分钟", "15–30 分钟", "≥ 30 分钟")
    hist = " · ".join(f"{lab} {_num(v)}" for lab, v in zip(hist_labels, f.watch_histogram, strict=True))
    platforms = _table(
        ["平台", "观众", "互动率", "平均停留 (估)", "超 5 分钟"],
        ([_e(p.platform), _num(p.viewers), _pct(p.interaction_rate), _dur(p.avg_watch_s), _pct(p.long_share)]
         for p in f.platforms),
    ) if len(f.platforms) > 1 else ""
    cards = _cards([
        ("互动率", _pct(f.interaction_rate), "互动观众 ÷ 观众; 常见 12%, 目标 20%, 头部 45%"),
        ("人均点赞", _num(f.likes_per_viewer, 2), f"点赞 {_num(f.likes)}"),
        ("平均停留 (估)", _dur(f.avg_watch_s), "首次出现 → 最后出现"),
        ("停留超 5 分钟", _pct(f.long_share), f"{_num(f.long_watchers)} 人; 转化约为其他观众 3 倍"),
    ])
    return (
        '<p class="note">观众按加盐哈希 ID 去重。停留时间是估计值: 观众只在进房、评论、点赞等时刻出现, '
        "所以从第一次出现算到最后一次出现, 偏保守。</p>"
        f"{cards}<table style=\"margin-top:12px\"><tbody>{bars}</tbody></table>"
        f'<p class="muted">停留分布: {_e(hist)}</p>{platforms}'
    )


def _returning_html(r: ReturningStats | None) -> str:
    if r is None:
        return '<p class="note">没有回访数据。</p>'
    if not r.previous_sessions:
        first = "这是本直播间在库中的第一场, 还没有可比的往场观众。"
    else:
        first = f"与本直播间库中更早的 {r.previous_sessions} 场比较。"
    retention = (f"{_pct(r.retention)} ({_num(r.retained)} 人来了下一场 {_e(r.next_session)})"
                 if r.retention is not None else "— (还没有下一场)")
    return (
        f'<p class="note">{_e(first)} 观众 ID 是加盐哈希, 同一观众跨场相同。</p>'
        + _cards([
            ("新观众", _num(r.new),
             f"占 {_pct(1 - r.returning_share) if r.returning_share is not None else '—'}"),
            ("回访观众", _num(r.returning), f"占 {_pct(r.returning_share)}"),
            ("连续 3 场都来", _num(r.streak3), "本场及前两场都出现 (常用发券条件)"),
            ("下一场留存", retention, ""),
        ])
    )


def _need_html(a: SessionAnalytics) -> str:
    if not a.need_questions:
        return ('<p class="note">没有段落记录或本场没有可归类的提问, 无法计算需求匹配。'
                "需求匹配 = 提问中当前段落能回答 (run-sheet 的 answers_topics) 的占比。</p>")
    rows = [
        [_e(seg), _num(q), _num(ans), _pct(ans / q if q else None),
         _e("、".join(f"{_topic(t)} {c}" for t, c in missing)) or "—"]
        for seg, q, ans, missing in a.need_segments
    ]
    low = sum(1 for q, ans in a.need_minutes if q >= 3 and ans / q < NEED_MATCH_LOW)
    return (
        f'<p class="note">提问 (带疑问、话题可归类的弹幕) 中, 提问时正在进行的段落能回答的占比。低于 '
        f"{NEED_MATCH_LOW:.0%} 说明话术没跟上观众, 直播时会喂给切换话术建议。</p>"
        + _cards([
            ("整场需求匹配", _pct(a.need_share), f"{_num(a.need_questions)} 个提问"),
            (f"低于 {NEED_MATCH_LOW:.0%} 的分钟", _num(low), "至少 3 个提问的分钟"),
        ])
        + _table(["段落", "提问", "能回答", "匹配", "没回答的话题"], rows)
    )


def _metric_cells(values: Mapping[str, float | None]) -> list[str]:
    out = []
    for key, _, share in OUTCOME_METRICS:
        v = values.get(key)
        out.append(_pct(v) if share else _num(v))
    return out


def _delta_cells(values: Mapping[str, float | None]) -> list[str]:
    out = []
    for key, _, share in OUTCOME_METRICS:
        v = values.get(key)
        cls = "" if v is None or v == 0 else " class=\"delta-up\"" if (v > 0) == (key in (
            "topic_confusion", "negative_share")) else " class=\"delta-down\""
        out.append(f"<span{cls}>{_signed(v, share=share)}</span>")
    return out


def _outcomes_html(a: SessionAnalytics) -> str:
    head_metrics = [label for _, label, _ in OUTCOME_METRICS]
    note = f'<p class="note"><b>{_e(BEFORE_AFTER_NOTE)}</b></p>'
    if not a.outcomes:
        return note + '<p class="muted">本场没有已采纳的优惠券、切换话术或互动口令建议。</p>'
    groups = [
        [_e(_BY_ZH[g.by]), _e(_KIND_ZH.get(g.kind, g.kind)), _e(g.key if g.by != "kind" else "全部"),
         _num(g.n), *_delta_cells(g.delta)]
        for g in a.groups
    ]
    agg = _table(["分组", "类型", "内容", "条数"] + [f"Δ {h}" for h in head_metrics], groups, numeric_from=3)
    rows = []
    for o in a.outcomes[:MAX_OUTCOME_ROWS]:
        from bot.outputs.report_data import format_datetime

        b = _metric_cells({k: getattr(o.before, k) for k, _, _ in OUTCOME_METRICS})
        af = _metric_cells({k: getattr(o.after, k) for k, _, _ in OUTCOME_METRICS})
        cells = [f"{x} → {y}" for x, y in zip(b, af, strict=True)]
        status = "" if o.complete else ' <span class="muted">(后窗口不完整)</span>'
        rows.append([format_datetime(o.effect_ts, seconds=True)[11:], _e(_KIND_ZH.get(o.kind, o.kind)),
                     _e(o.label) + status, _e(_topic(o.topic)) if o.topic else "全部", *cells])
    more = len(a.outcomes) - MAX_OUTCOME_ROWS
    tail = f'<p class="muted">另有 {more} 条未列出。</p>' if more > 0 else ""
    detail = _table(["生效", "类型", "内容", "疑问话题"] + [f"{h} 前 → 后" for h in head_metrics], rows,
                    numeric_from=4)
    return (note + "<h3>汇总 (平均变化; 疑问率、负面占比为百分点)</h3>" + agg
            + "<h3 style=\"margin-top:14px\">逐条</h3>" + detail + tail)


def _benchmark_html(room: str, ours: SessionAnalytics, others: Sequence[tuple[str, SessionAnalytics]]) -> str:
    def col(a: SessionAnalytics, coupons: str) -> list[str]:
        topics = "、".join(f"{_topic(t)} {n}" for t, n in a.question_topics[:3]) or "—"
        questions = "<br>".join(f"{_e(q)} ×{n}" for q, n in a.top_questions[:3]) or "—"
        return [
            _num(a.comments_per_min), _pct(a.positive_share), _pct(a.negative_share), _e(topics), questions,
            f"{len(a.promo_moments)} 次" + (f", 约每 {_num(a.promo_cadence_min)} 分钟" if a.promo_cadence_min
                                          else ""),
            coupons,
        ]

    coupon_ts = sorted(o.effect_ts for o in ours.outcomes if o.kind == "coupon")
    gaps = [(b - x) / MINUTE_MS for x, b in zip(coupon_ts, coupon_ts[1:], strict=False)]
    ours_coupons = f"{len(coupon_ts)} 次" + (f", 平均间隔 {_num(sum(gaps) / len(gaps))} 分钟" if gaps else "")
    columns = [(f"{room} (我们)", col(ours, ours_coupons))] + [(name, col(a, "—")) for name, a in others]
    labels = ["弹幕 / 分钟", "正面占比", "负面占比", "提问最多的话题", "热门问题", "促销时刻 (从弹幕估计)",
              "实际发券"]
    head = "".join(f"<th>{_e(n)}</th>" for n, _ in columns)
    body = "".join(
        f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{c[i]}</td>" for _, c in columns) + "</tr>"
        for i, label in enumerate(labels)
    )
    return (
        '<p class="note">对标直播间 (watch_only) 走同样的分析, 不给建议也不发提醒。促销时刻从观众反应估计: '
        f"某分钟里优惠券话题和购买意向弹幕至少 5 条且不少于整场中位数的 2 倍。</p>"
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _coverage_html(c: Coverage) -> str:
    verdict = (f'<p class="bad">⚠ {_e(coverage_notice(c))}</p>' if c.flagged
               else f'<p class="ok">数据完整度 {_pct(c.share)}, 不低于 {COVERAGE_FLAG_BELOW:.0%}。</p>')
    return verdict + _table(["项目", "数值"], [
        ["会话时长", _dur(c.span_ms / 1000)],
        ["无任何事件的分钟", _num(c.gap_minutes)],
        ["数据源断开 (source_down → source_up)", _dur(c.down_ms / 1000)],
        ["未覆盖时间 (以上合并)", f"{_dur(c.uncovered_ms / 1000)} · 时间覆盖 {_pct(c.time_share)}"],
        ["丢失的输入 (跳过的行 + 存储失败)", f"{_num(c.lost_lines)} / {_num(c.input_events + c.lost_lines)}"
                                      f" · 行覆盖 {_pct(c.line_share)}"],
        ["完整度 = 时间覆盖 × 行覆盖", _pct(c.share)],
    ], numeric_from=1)


def report_analytics(
    store: Store, session_id: str, settings: AnalyticsSettings
) -> tuple[SessionPass, Any] | None:
    """A SessionPass to observe `build_session_report`'s pass, and a finisher that extends the report."""
    info = store.session(session_id)
    span = session_range(store, session_id)
    if info is None or span is None:
        return None
    watched = ([] if settings.is_watch_only(info.room, info.meta)
               else benchmark_sessions(store, info.room, span[0], span[1], settings))
    p = make_pass(store, session_id, span, settings, questions=bool(watched))

    def finish(report: SessionReport) -> SessionReport:
        lost, _ = _input_counts(info.meta, 0)
        analytics = p.finish(lost_lines=lost, input_events=p.coverage.events)
        returning = returning_viewers(store, [session_id]).get(session_id)
        bench = []
        for sid in watched:
            other = store.session(sid)
            bench.append((other.room if other is not None else sid, analyse_session(store, sid, settings)))
        return extend_report(report, analytics, returning=returning, benchmarks=bench)

    return p, finish


# -- trend ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrendRow:
    session_id: str
    room: str
    start_ts: int
    watch_only: bool
    analytics: SessionAnalytics
    returning: ReturningStats | None

    @property
    def values(self) -> dict[str, float | None]:
        return self.analytics.score_values(self.returning.returning_share if self.returning else None)

    @property
    def score(self) -> float | None:
        return session_score(self.values)


def last_sessions(
    store: Store, n: int, room: str | None = None, settings: AnalyticsSettings | None = None
) -> list[str]:
    """The last `n` sessions (of `room`, else of every room that is not watch_only), oldest first."""
    settings = settings or AnalyticsSettings()
    sessions = [
        s for s in store.sessions(room)
        if room is not None or not settings.is_watch_only(s.room, s.meta)
    ]
    return [s.id for s in sessions[-n:]] if n > 0 else []


def build_trend(
    store: Store, session_ids: Sequence[str], settings: AnalyticsSettings | None = None
) -> list[TrendRow]:
    """Analytics of each session plus returning viewers, in start order.

    Raises:
        KeyError: a session is not in the store.
    """
    settings = settings or AnalyticsSettings()
    infos = []
    for sid in session_ids:
        info = store.session(sid)
        if info is None:
            raise KeyError(sid)
        infos.append(info)
    infos.sort(key=lambda s: (s.started_ts, s.id))
    returning = returning_viewers(store, [s.id for s in infos])
    return [
        TrendRow(s.id, s.room, (session_range(store, s.id) or (s.started_ts, 0))[0],
                 settings.is_watch_only(s.room, s.meta), analyse_session(store, s.id, settings),
                 returning.get(s.id))
        for s in infos
    ]


def _figure(element_id: str, fig: Mapping[str, Any]) -> str:
    payload = json.dumps(fig, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return (f'<div id="{_e(element_id)}" class="chart"></div>\n'
            f'<script type="application/json" data-figure="{_e(element_id)}">{payload}</script>')


_LAYOUT = {
    "height": 300, "margin": {"l": 56, "r": 56, "t": 28, "b": 70}, "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff", "hovermode": "x unified", "barmode": "stack",
    "font": {"family": '"PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC", "WenQuanYi Micro Hei", '
                       "sans-serif", "size": 12},
    "legend": {"orientation": "h", "y": 1.12, "x": 1, "xanchor": "right"},
    "xaxis": {"type": "category", "tickangle": -30},
}


def _trend_label(r: TrendRow) -> str:
    from bot.outputs.report_data import format_datetime

    return f"{format_datetime(r.start_ts)[5:]} {r.room}"


def render_trend(rows: Sequence[TrendRow]) -> str:
    """The trend page: score and figures per session, charts and the documented score formula."""
    from plotly.offline import get_plotlyjs

    from bot.outputs.report import TEMPLATE
    from bot.outputs.report_data import format_datetime

    x = [_trend_label(r) for r in rows]

    def pct_series(values: Iterable[float | None]) -> list[float | None]:
        return [None if v is None else round(100 * v, 1) for v in values]

    score_fig = {"data": [
        {"type": "bar", "name": "评分", "x": x, "y": [r.score for r in rows], "marker": {"color": "#2563eb"},
         "text": [("—" if r.score is None else f"{r.score:.1f}") for r in rows], "textposition": "outside",
         "hovertemplate": "%{y:.1f}<extra>评分</extra>"},
    ], "layout": {**_LAYOUT, "yaxis": {"range": [0, 10.5], "title": {"text": "0–10"}}}}
    viewers_fig = {"data": [
        {"type": "bar", "name": "新观众", "x": x,
         "y": [r.returning.new if r.returning else None for r in rows], "marker": {"color": "#93c5fd"}},
        {"type": "bar", "name": "回访观众", "x": x,
         "y": [r.returning.returning if r.returning else None for r in rows], "marker": {"color": "#2563eb"}},
        {"type": "scatter", "mode": "lines+markers", "name": "连续 3 场", "x": x,
         "y": [r.returning.streak3 if r.returning else None for r in rows], "line": {"color": "#d97706"}},
    ], "layout": {**_LAYOUT, "yaxis": {"rangemode": "tozero", "title": {"text": "人"}}}}
    rate_series = (
        ("互动率", [r.analytics.funnel.interaction_rate for r in rows], "#16a34a"),
        ("下一场留存", [r.returning.retention if r.returning else None for r in rows], "#7c3aed"),
        ("停留超 5 分钟", [r.analytics.funnel.long_share for r in rows], "#0891b2"),
        ("需求匹配", [r.values["need_match"] for r in rows], "#2563eb"),
        ("购买意向占弹幕", [r.analytics.intent_share for r in rows], "#d97706"),
        ("负面占比", [r.analytics.negative_share for r in rows], "#dc2626"),
    )
    rates_fig = {"data": [
        {"type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": pct_series(values),
         "line": {"color": color}, "connectgaps": True,
         "hovertemplate": "%{y:.1f}%<extra>" + name + "</extra>"}
        for name, values, color in rate_series
    ], "layout": {**_LAYOUT, "barmode": "group", "yaxis": {"ticksuffix": "%", "rangemode": "tozero"}}}

    table_rows = []
    for r in rows:
        a, ret = r.analytics, r.returning
        flag = ' <span class="bad" title="数据完整度低于 95%">⚠</span>' if a.coverage.flagged else ""
        table_rows.append(
            "<tr>"
            f"<td>{_e(format_datetime(r.start_ts))}</td>"
            f"<td>{_e(r.room)}{' (对标)' if r.watch_only else ''}</td>"
            f'<td class="n"><b>{"—" if r.score is None else f"{r.score:.1f}"}</b></td>'
            f'<td class="n">{_dur(a.duration_s)}</td><td class="n">{_num(a.funnel.viewers)}</td>'
            f'<td class="n">{_num(ret.new) if ret else "—"}</td>'
            f'<td class="n">{_num(ret.returning) if ret else "—"} '
            f'({_pct(ret.returning_share if ret else None)})</td>'
            f'<td class="n">{_num(ret.streak3) if ret else "—"}</td>'
            f'<td class="n">{_pct(ret.retention if ret else None)}</td>'
            f'<td class="n">{_pct(a.funnel.interaction_rate)}</td>'
            f'<td class="n">{_num(a.funnel.likes_per_viewer, 2)}</td>'
            f'<td class="n">{_dur(a.funnel.avg_watch_s)}</td><td class="n">{_pct(a.funnel.long_share)}</td>'
            f'<td class="n">{_num(a.intent_per_min, 2)} ({_pct(a.intent_share)})</td>'
            f'<td class="n">{_pct(r.values["need_match"])}</td><td class="n">{_pct(a.negative_share)}</td>'
            f'<td class="n">{_pct(a.coverage.share)}{flag}</td>'
            f'<td><code>{_e(r.session_id)}</code></td>'
            "</tr>"
        )
    head = ["开始", "直播间", "评分", "时长", "观众", "新观众", "回访", "连续 3 场", "下一场留存", "互动率",
            "人均点赞", "平均停留 (估)", "超 5 分钟", "意向 / 分钟 (占弹幕)", "需求匹配", "负面", "完整度",
            "会话"]
    # Figures are right-aligned, so are their headers; start, room and session id read left to right.
    th = "".join(f"<th>{_e(h)}</th>" if h in ("开始", "直播间", "会话") else f'<th class="n">{_e(h)}</th>'
                 for h in head)
    formula_rows = "".join(
        f"<tr><td>{_e(c.label)}</td><td class=\"n\">{_num(c.weight)}</td>"
        f"<td>{_e(_component_formula(c))}</td></tr>"
        for c in SCORE_COMPONENTS
    )
    flagged = [r for r in rows if r.analytics.coverage.flagged]
    warn = (f'<p class="bad">⚠ {len(flagged)} 场数据完整度低于 {COVERAGE_FLAG_BELOW:.0%}, 其数字偏低: '
            + "、".join(_e(_trend_label(r)) for r in flagged) + "</p>") if flagged else ""
    span = f"{format_datetime(rows[0].start_ts)} – {format_datetime(rows[-1].start_ts)}" if rows else ""
    body = (
        '<header class="top"><h1>直播趋势</h1>'
        f'<div class="sub">{len(rows)} 场 · {_e(span)}</div>'
        '<nav class="toc"><a href="#trend-score">评分</a><a href="#trend-viewers">观众与回访</a>'
        '<a href="#trend-rates">关键比率</a><a href="#trend-table">明细</a>'
        '<a href="#trend-formula">评分公式</a></nav>'
        "</header>"
        f'<section id="trend-score"><h2>每场评分 (0–10)</h2>{warn}{_figure("fig-score", score_fig)}</section>'
        '<section id="trend-viewers"><h2>新观众与回访观众</h2>'
        '<p class="note">回访 = 在本直播间库中更早的任一场出现过; 连续 3 场 = 本场及前两场都来了。'
        "观众 ID 是加盐哈希, 跨场稳定。</p>"
        f'{_figure("fig-viewers", viewers_fig)}</section>'
        f'<section id="trend-rates"><h2>关键比率</h2>{_figure("fig-rates", rates_fig)}</section>'
        '<section id="trend-table"><h2>明细</h2><div style="overflow-x:auto">'
        f'<table id="trend-rows"><thead><tr>{th}</tr></thead><tbody>{"".join(table_rows)}</tbody></table>'
        "</div></section>"
        '<section id="trend-formula"><h2>评分公式</h2>'
        f'<p class="note">{_e(SCORE_FORMULA_ZH)}</p>'
        f'<table><thead><tr><th>指标</th><th class="n">权重</th><th>得分 (0–1)</th></tr></thead>'
        f"<tbody>{formula_rows}</tbody></table>"
        f'<p class="muted">{_e(FIGURES_ZH)}</p>'
        "</section>"
    )
    template = string.Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(title="直播趋势 · livebot", plotly_js=get_plotlyjs(), body=body,
                               version=_e(__version__))


def write_trend(store: Store, session_ids: Sequence[str], out: str | Path,
                settings: AnalyticsSettings | None = None) -> list[TrendRow]:
    rows = build_trend(store, session_ids, settings)
    path = Path(out)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_trend(rows), encoding="utf-8")
    return rows

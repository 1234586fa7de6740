"""Scenario rooms for advisor tests: authored comment streams applied to a real RoomState with real
rules-classifier analyses, ticked second by second on event time (no sleeping)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.engine import AdvisorEngine
from bot.config import AdvisorsConfig
from bot.events import Event, EventKind
from bot.scripts import RunSheet, load_run_sheet
from bot.sources.base import SourceStatus
from bot.state import RoomState

START_MS = 1_767_268_800_000
ROOM = "demo"

# Background chat of a calm apparel room: greetings, praise, buying intent, small talk.
CHATTER = (
    "主播好", "来了来了", "好看", "这件颜色真好看", "已拍", "哈哈哈", "主播今天好美", "刚下班赶上了",
    "驼色好看", "喜欢", "关注了", "姐妹们冲", "上身效果不错", "好漂亮", "支持主播", "第一次来",
)
SIZE_QUESTIONS = (
    "160斤穿什么码", "身高165体重120穿M还是L", "偏大还是偏小", "150斤能穿吗", "有没有XL码", "170cm穿什么码",
    "腰围二尺二穿什么码", "肩宽的穿什么码", "尺码怎么选", "120斤穿S还是M",
)
PRICE_HESITATION = (
    "多少钱", "太贵了吧", "有优惠券吗", "能便宜点吗", "699还是贵", "有没有券", "价格多少啊", "贵了",
    "到手价多少", "还能再便宜吗",
)


@lru_cache(maxsize=1)
def analyzer():  # type: ignore[no-untyped-def]
    from nlp.analyzer import Analyzer

    return Analyzer("rules")


@lru_cache(maxsize=4096)
def analyse(text: str):  # type: ignore[no-untyped-def]
    return analyzer().analyze([text])[0]


def settings(**sections: dict[str, object]) -> AdvisorsConfig:
    """Default advisor settings with some keys changed: settings(coupons={"cadence_s": 120})."""
    base = AdvisorsConfig()
    data = base.model_dump()
    for name, values in sections.items():
        if isinstance(values, dict):
            data[name] = {**data[name], **values}
        else:
            data[name] = values
    return AdvisorsConfig.model_validate(data)


class Room:
    """A RoomState, an AdvisorEngine and event time, stepped one second at a time."""

    def __init__(self, engine: AdvisorEngine | None = None, *, script: str | RunSheet = "apparel",
                 cfg: AdvisorsConfig | None = None, follow: bool = True,
                 analysis_confidence: float | None = None) -> None:
        self.state = RoomState(ROOM)
        plan = load_run_sheet(script).sheet if isinstance(script, str) else script
        name = script if isinstance(script, str) else ""
        self.engine = engine or AdvisorEngine(
            ROOM, plan, cfg or AdvisorsConfig(), follow=follow, script_name=name
        )
        self.now = START_MS
        self.suggestions: list[Suggestion] = []
        self._ids = itertools.count()
        self.analysis_confidence = analysis_confidence
        """When set, every analysis carries this confidence (a classifier that is sure of itself)."""

    def chat(self, text: str, ts: int | None = None, *, platform: str = "test", delay_ms: int = 0) -> None:
        """`delay_ms`: the comment was sent (platform time) that long before it arrived."""
        t = self.now if ts is None else ts
        ev = Event(platform=platform, room=ROOM, kind=EventKind.CHAT, ts=t - delay_ms, received_ts=t,
                   msg_id=f"m{next(self._ids)}", user_id=f"u{next(self._ids) % 97}", text=text)
        a = analyse(text)
        if self.analysis_confidence is not None:
            a = dataclasses.replace(a, confidence=self.analysis_confidence)
        self.state.apply(ev, a)

    def online(self, n: int, ts: int | None = None) -> None:
        t = self.now if ts is None else ts
        self.state.apply(Event(platform="test", room=ROOM, kind=EventKind.STATS, ts=t, received_ts=t,
                               stats={"online": n}))

    def source(self, name: str = "test:0") -> SourceStatus:
        st = self.state.sources.get(name)
        if st is None:
            st = self.state.sources[name] = SourceStatus(name=name, platform="test", room=ROOM)
        return st

    def run(self, seconds: int, per_second: Callable[[int], Sequence[str]] | Sequence[str] = (),
            *, on_tick: Callable[[int], None] | None = None, tick_s: int = 1) -> list[Suggestion]:
        """Advance `seconds` seconds: each second, apply its comments spread over the second; tick the
        engine every `tick_s` seconds."""
        new: list[Suggestion] = []
        for step in range(1, seconds + 1):
            texts = per_second(self.now) if callable(per_second) else per_second
            for i, text in enumerate(texts):
                self.chat(text, self.now + (i * 1000) // max(1, len(texts)))
            if on_tick is not None:
                on_tick(self.now)
            self.now += 1000
            if step % tick_s == 0:
                new += self.engine.tick(self.state, self.now)
        self.suggestions += new
        return new

    def of(self, kind: SuggestionKind, items: Iterable[Suggestion] | None = None) -> list[Suggestion]:
        return [s for s in (self.suggestions if items is None else items) if s.kind is kind]


def cycle(texts: Sequence[str], per_second: float) -> Callable[[int], list[str]]:
    """A stream of `per_second` comments per second drawn in turn from `texts` (fractions accumulate)."""
    it = itertools.cycle(texts)
    acc = [0.0]

    def step(_now: int) -> list[str]:
        acc[0] += per_second
        n = int(acc[0])
        acc[0] -= n
        return [next(it) for _ in range(n)]

    return step


def mix(*streams: Callable[[int], list[str]]) -> Callable[[int], list[str]]:
    def step(now: int) -> list[str]:
        out: list[str] = []
        for s in streams:
            out += s(now)
        return out

    return step

"""The run-sheet tools on the real pages (Debian's chromium through Python playwright), on a ManualClock.

A real AdvisorEngine advises a RoomState fed with authored comments from two platforms; the ScreenServer
serves both views. The test ticks the checklist on /control and sees it on the host view, sees each
platform's talking points, copies an answer card to the clipboard (which accepts it in the store), follows
a vote's live count and watches the segment overrun. Time moves only when the test advances the clock;
every snapshot (2 Hz of clock time) is pushed by an `advance`, never by sleeping.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.advisors.base import Suggestion, SuggestionKind
from bot.advisors.engine import AdvisorEngine
from bot.clock import ManualClock
from bot.events import Event, EventKind
from bot.outputs.screen import RoomActions, ScreenServer
from bot.outputs.screen.view import advisor_view
from bot.outputs.store import Store
from bot.scripts import parse_run_sheet
from bot.state import RoomState
from tests.bot.advisors.scenario import analyse, settings
from tests.bot.outputs.test_screen_browser import DOCS
from tests.browser import needs_chromium

pytestmark = [
    pytest.mark.browser,
    needs_chromium,
]

ROOM = "demo"
T0 = 1_767_268_800_000
SHEET = parse_run_sheet("""\
show: {name: 秋冬女装专场, category: 服饰, planned_minutes: 60}
opening:
  deadline_s: 180
  checklist:
    - {name: 人设, hint: 主播 165 cm 100 斤}
    - {name: 场景, hint: 通勤约会}
    - {name: 核心卖点, hint: 双面羊毛}
segments:
  - name: 开场
    talking_points: [欢迎新进直播间的姐妹]
    max_dwell_s: 180
  - name: 价格
    talking_points: [日常价 990, 直播间到手价 699]
    variants:
      douyin: [点下方小黄车 1 号链接]
      taobao: [点宝贝口袋 1 号, 先领店铺券]
    max_dwell_s: 60
  - name: 收尾
prompt_pools:
  - name: 投票
    prompts:
      - text: 想要燕麦色扣1, 驼色扣2
        options:
          - {label: 燕麦色, match: ["1"]}
          - {label: 驼色, match: ["2"]}
        window_s: 60
coupons: {budget: 0}
answer_cards:
  - topic: size_fit
    title: 尺码怎么选
    answer: 100–110斤S, 110–125斤M, 125–140斤L
""", file="browser.yaml")


class Show:
    """RoomState + AdvisorEngine + store + ScreenServer on one ManualClock."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = ManualClock(T0)
        self.state = RoomState(ROOM)
        cfg = settings(prompts={"min_chat_lines": 0, "idle_after_s": 3600})
        self.engine = AdvisorEngine(ROOM, SHEET, cfg, self.clock)
        self.engine.bind(self.state)
        self.store = Store.open(tmp_path / "livebot.db")
        self.session = self.store.start_session(ROOM, T0, source="test")
        self.actions = RoomActions({ROOM: self.state}, clock=self.clock, store=self.store,
                                   sessions={ROOM: self.session}, engine_for=lambda room: self.engine)
        self.server = ScreenServer(host="127.0.0.1", port=0, snapshot_provider=self.snapshots,
                                   action_handler=self.actions, clock=self.clock)
        self.ids = itertools.count()

    def snapshots(self) -> dict[str, dict[str, Any]]:
        now = self.clock.now_ms()
        snap = self.state.snapshot(now)
        snap["advisor"] = advisor_view(self.engine, now)
        return {ROOM: snap}

    def publish(self, items: list[Suggestion]) -> None:
        for s in items:
            self.server.publish_suggestion(ROOM, s.to_json())
            if s.state == "pending":
                self.store.save_suggestion(self.session, s)

    def say(self, text: str, platform: str) -> None:
        now = self.clock.now_ms()
        ev = Event(platform, ROOM, EventKind.CHAT, now, now, msg_id=f"m{next(self.ids)}",
                   user_id=f"{next(self.ids):016x}", text=text)
        self.state.apply(ev, analyse(text))
        self.publish(self.engine.on_data(self.state, now))

    def tick(self, seconds: float = 0.5) -> None:
        """Advance the clock (pushing a snapshot) and run the advisors once."""
        self.clock.advance(seconds)
        self.publish(self.engine.tick(self.state, self.clock.now_ms()) + self.engine.drain_changes())


@pytest.fixture
async def show(tmp_path: Path) -> AsyncIterator[Show]:
    s = Show(tmp_path)
    await s.server.start()
    try:
        yield s
    finally:
        await s.server.stop()
        s.store.close()




def _has_text(selector: str, text: str) -> str:
    return f"() => (document.querySelector({selector!r}) || {{}}).textContent?.includes({text!r})"


async def test_runsheet_tools_on_host_and_control(show: Show, browser: Any) -> None:
    errors: list[str] = []
    await browser.grant_permissions(["clipboard-read", "clipboard-write"], origin=show.server.url.rstrip("/"))
    host = await browser.new_page()
    control = await browser.new_page()
    for page in (host, control):
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    show.say("主播好", "douyin")
    show.say("来了", "taobao")
    show.tick()
    await host.goto(show.server.url)
    await control.goto(show.server.control_url)

    # The opening: deadline and checklist on both views; field control ticks 人设 off.
    await host.wait_for_function(_has_text("#rs-opening", "开场剩"), timeout=10_000)
    item = control.locator('#checklist button[data-item="人设"]')
    await item.wait_for(timeout=10_000)
    await item.click()
    await control.wait_for_selector("#log li.ok", timeout=10_000)
    assert "人设" in show.engine.memory.timing.checked
    assert show.store.marks(show.session, "checklist")[0]["key"] == "人设"
    show.tick()
    await host.wait_for_function(_has_text("#rs-opening", "✓人设"), timeout=5_000)
    await control.wait_for_selector('#checklist button.done[data-item="人设"]', timeout=5_000)

    # A merged room in the price segment: each platform's own talking points in the big card.
    show.engine.set_segment("价格", show.clock.now_ms())
    show.tick()
    await host.wait_for_function(_has_text("#sugg-points-list", "淘宝"), timeout=5_000)
    points = await host.locator("#sugg-points-list li").all_text_contents()
    assert points == ["抖音", "点下方小黄车 1 号链接", "淘宝", "点宝贝口袋 1 号", "先领店铺券"]

    # Size questions pile up: the answer card is offered at once, under the host's questions and on /control.
    for q in ("160斤穿什么码", "150斤能穿吗", "有没有XL码"):
        show.say(q, "douyin")
    card = next(s for s in show.engine.pending if s.kind is SuggestionKind.ANSWER_CARD)
    show.tick()
    await host.wait_for_function(_has_text("#rs-cards-host", "尺码怎么选"), timeout=5_000)
    copy = control.locator(f'[data-for="{card.id}"] button.copy')
    await copy.wait_for(timeout=5_000)
    await control.screenshot(path=str(DOCS / "screenshot-runsheet-control.png"))
    await copy.click()
    # Copied, then accepted: the card leaves the pending list (and the store records it as used).
    await control.wait_for_selector(f'[data-for="{card.id}"]', state="detached", timeout=5_000)
    assert await control.evaluate("navigator.clipboard.readText()") == "100–110斤S, 110–125斤M, 125–140斤L"
    (row,) = [r for r in show.store.suggestions(show.session) if r["id"] == card.id]
    assert row["state"] == "accepted" and row["state_ts"] is not None

    # The vote prompt: its count runs live on both views.
    for _ in range(32):
        show.tick()
        if any(s.kind is SuggestionKind.PROMPT for s in show.engine.pending):
            break
    show.tick()  # viewers answer after the prompt
    for text, platform in (("1", "douyin"), ("2", "taobao"), ("2", "douyin"), ("22", "taobao")):
        show.say(text, platform)
    show.tick()
    await host.wait_for_function(_has_text("#rs-vote-host", "投票中 · 4 票"), timeout=5_000)
    counts = await host.locator("#rs-vote-host .rs-vote-count").all_text_contents()
    assert counts == ["1", "3"]
    await control.wait_for_function(_has_text("#rs-vote-control", "投票中 · 4 票"), timeout=5_000)

    # The price segment has run past its 60 s: the host's timing chip turns into the overrun nudge.
    for _ in range(100):
        show.tick()
        if show.engine.status(show.clock.now_ms())["timing"]["state"] == "over":
            break
    show.tick()
    await host.wait_for_function(_has_text("#rs-segment-time", "超时"), timeout=5_000)
    chip = host.locator("#rs-segment-time")
    assert "tone-bad" in (await chip.get_attribute("class") or "")
    assert "切到「收尾」" in (await chip.text_content() or "")
    await host.screenshot(path=str(DOCS / "screenshot-runsheet-host.png"))
    assert not errors, errors

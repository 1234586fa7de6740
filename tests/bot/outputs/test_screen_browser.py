"""The host screen in a real browser (Debian's chromium through Python playwright).

A real `App` runs the simulator room through the real pipeline, advisors and store; the test opens the
host view, waits for the advisors' first suggestion, accepts it from the control view and checks that
the store recorded the decision. It also saves the screenshots the README shows.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import App
from bot.config import parse_config
from tests.browser import needs_chromium

DOCS = Path(__file__).resolve().parents[3] / "docs"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    cfg = parse_config({
        "data_dir": str(tmp_path / "data"), "screen": {"port": 0}, "status": {"terminal": False},
        "rooms": [{"name": "demo", "sources": [{"kind": "simulator", "rate": 20}]}],
    })
    a = App(cfg, out=io.StringIO())
    task = asyncio.create_task(a.run())
    async with asyncio.timeout(20):
        while a.screen is None or not a.screen.running:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    try:
        yield a
    finally:
        a.request_stop()
        await task




# Function expressions, not bare expressions: the page's CSP forbids string eval (no 'unsafe-eval').
def _text_is(element_id: str, text: str) -> str:
    return f"() => document.getElementById({element_id!r}).textContent === {text!r}"


def _text_is_not(element_id: str, text: str) -> str:
    return f"() => document.getElementById({element_id!r}).textContent !== {text!r}"


async def _collect_errors(page: Any, errors: list[str]) -> None:
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)


async def test_host_page_shows_a_live_suggestion_and_control_accepts_it(app: App, browser: Any) -> None:
    assert app.screen is not None and app.store is not None
    errors: list[str] = []
    host = await browser.new_page()
    await _collect_errors(host, errors)
    await host.goto(app.screen.url)

    # Live data arrives: the stale banner goes away and the room's numbers fill in.
    await host.wait_for_selector("#stale", state="hidden", timeout=10_000)
    await host.wait_for_function(_text_is_not("online", "—"), timeout=20_000)

    # The advisors' first suggestion (from the simulated room) takes the big card.
    await host.wait_for_function(
        "() => document.getElementById('suggestion-card').dataset.id", timeout=60_000, polling=200
    )
    # Let the room run a little longer so the timeline and questions have something to show.
    await asyncio.sleep(15)
    await host.wait_for_function(
        "() => document.getElementById('suggestion-card').dataset.id", timeout=60_000, polling=200
    )
    shown = await host.eval_on_selector("#suggestion-card", "el => el.dataset.id")
    text = (await host.text_content("#sugg-text")) or ""
    assert text and text != "暂无建议 · 按节奏继续"
    # Chinese renders with a real CJK font (WenQuanYi here), not tofu boxes.
    assert await host.evaluate("() => document.fonts.check('20px \"WenQuanYi Micro Hei\"', '尺码')")
    DOCS.mkdir(exist_ok=True)
    await host.screenshot(path=str(DOCS / "screenshot-host.png"))
    await _fits_landscape_screens(host)

    control = await browser.new_page()
    await _collect_errors(control, errors)
    await control.goto(app.screen.control_url)
    item = control.locator(f'[data-for="{shown}"]')
    await item.wait_for(timeout=10_000)
    # The data that drew the item also clears the stale banner at once (not a tick later).
    assert await control.locator("#stale").is_hidden()
    await control.screenshot(path=str(DOCS / "screenshot-control.png"))
    await item.get_by_role("button", name="采纳").click()
    await control.wait_for_selector("#log li.ok", timeout=10_000)

    # The decision reached the store, the room state, and the host page (the card moves on).
    session = app.pipeline.sessions["demo"]
    rows = {r["id"]: r for r in app.store.suggestions(session)}
    assert rows[shown]["state"] == "accepted"
    assert rows[shown]["state_ts"] is not None
    assert any(s.id == shown and s.state == "accepted" for s in app.states["demo"].suggestions)
    await host.wait_for_function(
        f"() => document.getElementById('suggestion-card').dataset.id !== {shown!r}", timeout=5_000
    )

    assert not errors, errors

    # When the server goes away the page says so within about 3 s, and keeps trying to reconnect.
    app.request_stop()
    await host.wait_for_selector("#stale", state="visible", timeout=8_000)
    banner = (await host.text_content("#stale")) or ""
    assert "数据已过期" in banner


_FITS = """() => {
  const r = (s) => document.querySelector(s).getBoundingClientRect();
  return { page: document.scrollingElement.scrollHeight, view: innerHeight, sugg: r('#suggestion-card').bottom,
           timeline: r('#timeline').height, timelineBottom: r('#timeline-card').bottom,
           questions: r('#questions-card').bottom };
}"""


async def _fits_landscape_screens(page: Any) -> None:
    """A monitor beside the camera cannot scroll: on landscape screens (with the default run-sheet's extra
    rows showing) the whole page is the viewport, the suggestion is whole and the timeline chart fills its
    box; a portrait tablet stacks the cards and scrolls."""
    size = page.viewport_size
    for w, h in ((1920, 1080), (1366, 768), (1280, 720)):
        await page.set_viewport_size({"width": w, "height": h})
        await page.wait_for_function(
            # The chart was redrawn for the new box (clientHeight rounds the layout height: allow 1 px).
            "([h]) => Math.abs(document.querySelector('#timeline').getBoundingClientRect().height - "
            "Number(document.querySelector('#timeline svg').getAttribute('height'))) <= 1 && innerHeight === h",
            arg=[h], timeout=5_000,
        )
        m = await page.evaluate(_FITS)
        assert m["page"] <= h, (w, h, m)
        assert m["sugg"] <= h and m["timelineBottom"] <= h and m["questions"] <= h, (w, h, m)
        assert m["timeline"] >= 60, (w, h, m)
    await page.set_viewport_size({"width": 768, "height": 1024})
    await page.wait_for_function("() => document.scrollingElement.scrollHeight > innerHeight", timeout=5_000)
    await page.set_viewport_size(size)


async def test_page_reconnects_after_a_dropped_socket(app: App, browser: Any) -> None:
    assert app.screen is not None
    page = await browser.new_page()
    await page.goto(app.screen.url)
    await page.wait_for_selector("#stale", state="hidden", timeout=10_000)
    # Drop every socket server-side (as a network blip would); the page must come back on its own.
    await app.screen.hub.close_all(code=1011, reason="test drop")
    await page.wait_for_function(_text_is("conn", "连接中断"), timeout=5_000)
    await page.wait_for_function(_text_is("conn", "实时"), timeout=10_000)
    assert app.screen.clients == 1


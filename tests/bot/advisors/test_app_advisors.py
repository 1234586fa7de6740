from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.advisors.base import SuggestionKind
from bot.app import App
from bot.clock import ManualClock
from bot.config import parse_config
from bot.errors import ScriptError
from bot.outputs.store import Store

T0 = 1_800_000_000_000


async def _tick_once(app: App) -> None:
    """Wait for the live ticker (APScheduler, wall time) to tick the advisors once more."""
    engine = app.engines["demo"]
    seen = engine.ticks
    async with asyncio.timeout(10):
        while engine.ticks == seen:
            await asyncio.sleep(0.005)


async def test_live_app_ticks_advisors_and_stores_their_suggestions(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    cfg = parse_config({
        "data_dir": str(tmp_path), "status": {"terminal": False}, "screen": {"enabled": False},
        "advisors": {"tick_s": 0.1, "script": "beauty"},
        "rooms": [{"name": "demo", "sources": [{"kind": "simulator", "rate": 3}]}],
    })
    app = App(cfg, clock=clock)
    assert app.engines["demo"].script_name == "beauty"
    task = asyncio.create_task(app.run())
    try:
        await _tick_once(app)
        for _ in range(20):  # 40 s of show time, one advisor tick every 2 s of it
            clock.advance(2)
            await _tick_once(app)
        state = app.states["demo"]
        prompts = [s for s in state.suggestions if s.kind is SuggestionKind.PROMPT]
        assert prompts, "no interaction prompt after 40 s of a busy room"
        assert all(T0 <= s.created_ts <= clock.now_ms() for s in state.suggestions)
        view = app.screen_snapshots()["demo"]["advisor"]  # the host screen's countdowns come from the engine
        assert view["script"] == "beauty" and view["segment"] == "开场"
        assert view["coupon"]["mode"] == "confirm" and view["prompts"]["target_per_min"] == 4.0
    finally:
        app.request_stop()
        await task
    assert app.ticker.errors == {}
    with Store.open(cfg.store_path) as store:
        (session,) = store.sessions()
        rows = store.suggestions(session.id)
    assert {r["id"] for r in rows} >= {s.id for s in prompts}


def test_app_refuses_a_bad_run_sheet_before_opening_anything(tmp_path: Path) -> None:
    cfg = parse_config({"data_dir": str(tmp_path / "data"), "rooms": [{"name": "demo", "script": "nope"}]})
    with pytest.raises(ScriptError, match="no run-sheet named 'nope'"):
        App(cfg)
    assert not (tmp_path / "data").exists()


def test_app_without_advisors(tmp_path: Path) -> None:
    cfg = parse_config({
        "data_dir": str(tmp_path), "advisors": {"enabled": False}, "screen": {"enabled": False},
    })
    app = App(cfg)
    try:
        assert app.engines == {}
    finally:
        app.pipeline.close()
        if app.store is not None:
            app.store.close()

"""Time to accept per suggestion in the report, vote results in the suggestion table, and the store pieces
behind them: decisions keep their time and latest data, checklist marks, the schema migration."""

from __future__ import annotations

import csv
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

from bot.advisors.base import Suggestion, SuggestionKind, SuggestionState
from bot.dispatcher import StoreSink
from bot.events import Event, EventKind
from bot.outputs.report import render_report, time_to_decide_s, write_csv
from bot.outputs.report_data import build_session_report
from bot.outputs.store import _MIGRATIONS, SCHEMA_VERSION, Store

T0 = 1_767_268_800_000


def suggestion(kind: SuggestionKind, t_s: int, text: str, **kw: Any) -> Suggestion:
    ts = T0 + t_s * 1000
    return Suggestion(id=f"{kind}-{t_s}", room="shop", kind=kind, created_ts=ts, expires_ts=ts + 60_000,
                      text=text, reason="测试理由", **kw)


def decided(s: Suggestion, state: SuggestionState, after_s: int, **data: Any) -> Suggestion:
    at = s.created_ts + after_s * 1000
    return dataclasses.replace(s, state=state, data={**s.data, "state_ts": at, **data})


def live_session(tmp_path: Path) -> tuple[Store, str]:
    store = Store.open(tmp_path / "live.db")
    sid = store.start_session("shop", T0, source="douyin")
    events = [
        Event("douyin", "shop", EventKind.CHAT, T0 + t * 1000, T0 + t * 1000, user_id=f"u{t}", text="主播好")
        for t in range(0, 300, 10)
    ]
    store.write_batch(sid, events, [None] * len(events))
    return store, sid


def test_report_shows_time_to_accept_per_suggestion(tmp_path: Path) -> None:
    store, sid = live_session(tmp_path)
    sink = StoreSink(store, sid)
    switch = suggestion(SuggestionKind.SCRIPT_SWITCH, 30, "切到「尺码答疑」", segment="尺码答疑")
    coupon = suggestion(SuggestionKind.COUPON, 60, "30秒后发券")
    card = suggestion(SuggestionKind.ANSWER_CARD, 90, "答疑卡「发货时间」: 48小时内发出", topic="shipping")
    dismissed = suggestion(SuggestionKind.SCRIPT_SWITCH, 120, "切到「价格」", segment="价格")
    pending = suggestion(SuggestionKind.PROMPT, 150, "互动: 扣1")
    for s in (switch, coupon, card, dismissed, pending):
        sink.write_now(sid, s)  # new: pending
    for s in (decided(switch, SuggestionState.ACCEPTED, 12), decided(coupon, SuggestionState.ACCEPTED, 31),
              decided(card, SuggestionState.ACCEPTED, 4), decided(dismissed, SuggestionState.DISMISSED, 8)):
        sink.write_now(sid, s)  # the state change: UPDATE with state_ts
    report = build_session_report(store, sid)
    by_id = {s["id"]: s for s in report.suggestions}
    assert [time_to_decide_s(by_id[s.id]) for s in (switch, coupon, card, dismissed, pending)] == [
        12.0, 31.0, 4.0, 8.0, None,
    ]
    page = render_report(report)
    assert "<th title=\"从建议出现到采纳或忽略\">处理用时</th>" in page
    assert "采纳 3 条, 从建议到采纳中位 12 秒, 最长 31 秒。" in page
    assert '<td class="num">12 秒</td>' in page and '<td class="muted">8 秒</td>' in page
    assert '<span class="pill answer_card">答疑卡</span>' in page
    assert "回放按" not in page  # a live session: the times are real
    (path,) = [p for p in write_csv(report, tmp_path / "csv") if p.name.endswith("-suggestions.csv")]
    with path.open(encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    assert [r["处理用时(秒)"] for r in rows] == ["12.0", "31.0", "4.0", "8.0", ""]
    store.close()


def test_vote_result_is_stored_with_the_prompt_and_shown(tmp_path: Path) -> None:
    store, sid = live_session(tmp_path)
    sink = StoreSink(store, sid)
    prompt = suggestion(SuggestionKind.PROMPT, 30, "互动: 想要燕麦色扣1, 驼色扣2",
                        data={"options": [{"label": "燕麦色", "keywords": ["1"]},
                                          {"label": "驼色", "keywords": ["2"]}]})
    sink.write_now(sid, prompt)
    accepted = decided(prompt, SuggestionState.ACCEPTED, 2)
    sink.write_now(sid, accepted)
    vote = {"total": 9, "closed": True, "leader": "驼色",
            "options": [{"label": "燕麦色", "count": 3, "share": 0.3333},
                        {"label": "驼色", "count": 6, "share": 0.6667}]}
    sink.write_now(sid, dataclasses.replace(accepted, data={**accepted.data, "vote": vote}))
    (row,) = store.suggestions(sid)
    assert row["state"] == "accepted" and row["state_ts"] == T0 + 32_000 and row["data"]["vote"] == vote
    page = render_report(build_session_report(store, sid))
    assert "投票: 燕麦色 3 · 驼色 6 (共 9 票)" in page
    store.close()


def test_store_saves_decided_suggestions_with_their_time_and_checklist_marks(tmp_path: Path) -> None:
    store, sid = live_session(tmp_path)
    s = decided(suggestion(SuggestionKind.COUPON, 10, "发券"), SuggestionState.ACCEPTED, 5)
    store.save_suggestion(sid, s)  # first seen already decided (a replay that follows every suggestion)
    assert store.suggestions(sid)[0]["state_ts"] == T0 + 15_000
    assert store.set_suggestion_state(sid, s.id, "dismissed", T0 + 20_000, {"note": "x"})
    row = store.suggestions(sid)[0]
    assert (row["state"], row["state_ts"], row["data"]) == ("dismissed", T0 + 20_000, {"note": "x"})
    store.save_mark(sid, "checklist", "人设", T0 + 1_000, {"done": True})
    store.save_mark(sid, "checklist", "场景", T0 + 2_000, {"done": True})
    store.save_mark(sid, "checklist", "人设", T0 + 3_000, {"done": False})  # unticked: the latest wins
    assert store.marks(sid, "checklist") == [
        {"kind": "checklist", "key": "场景", "ts": T0 + 2_000, "data": {"done": True}},
        {"kind": "checklist", "key": "人设", "ts": T0 + 3_000, "data": {"done": False}},
    ]
    assert store.marks(sid, "other") == []
    store.close()


def test_an_older_store_gains_the_marks_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0] + "; PRAGMA user_version = 1;")  # a store from before marks
    conn.close()
    store = Store.open(path)  # forward migrations from 1
    sid = store.start_session("shop", T0, source="douyin")
    store.save_mark(sid, "checklist", "人设", T0, {"done": True})
    assert store.execute("PRAGMA user_version")[0][0] == SCHEMA_VERSION >= 2
    assert len(store.marks(sid)) == 1
    store.close()

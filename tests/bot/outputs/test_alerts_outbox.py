"""Outbox persistence, the sliding-window limiter, backoff and routing (no network)."""

from __future__ import annotations

import random
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bot.advisors.base import Severity, Suggestion, SuggestionKind
from bot.outputs.alerts.config import AlertsConfig, RobotConfig
from bot.outputs.alerts.outbox import DeliveryState, Outbox
from bot.outputs.alerts.routing import AlertRouter
from bot.outputs.alerts.sender import Backoff, SlidingWindowLimiter

CST = timezone(timedelta(hours=8))


def at(hh: int, mm: int) -> int:
    return int(datetime(2026, 1, 2, hh, mm, tzinfo=CST).timestamp() * 1000)


def sug(i: int, **kw: object) -> Suggestion:
    fields: dict[str, object] = {
        "id": f"{i:08x}",
        "room": "room1",
        "kind": SuggestionKind.ALERT,
        "created_ts": 1000 + i,
        "expires_ts": 2000 + i,
        "text": "看一下",
        "reason": f"第 {i} 条",
        "examples": ("例句",),
        "severity": Severity.WARNING,
        "rule": "negative_surge",
        "data": {"count": i},
    }
    fields.update(kw)
    return Suggestion(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ outbox


def test_outbox_round_trip_states_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "livebot.db"
    box = Outbox(path)
    box.open()
    assert box.enqueue(sug(1), ["a", "b"], 10) == ["a", "b"]
    assert box.enqueue(sug(1), ["a", "b"], 11) == []  # same alert again: nothing new
    assert box.enqueue(
        sug(2), ["a", "b"], 12, failed={"b": "robot disabled: code=310000 sign not match"}
    ) == ["a"]
    pending = box.pending("a")
    assert [d.alert_id for d in pending] == [sug(1).id, sug(2).id]
    assert pending[0].suggestion == sug(1)
    assert pending[0].suggestion.data == {"count": 1}

    box.mark_attempt([pending[0].seq], 20)
    box.mark_sent([pending[0].seq], 21, pending[0].alert_id)
    box.mark_attempt([pending[1].seq], 22)
    box.mark_retry([pending[1].seq], 5000, "code=network refused")
    box.close()

    again = Outbox(path)
    again.open()
    [left] = again.pending("a")
    assert (left.alert_id, left.attempts, left.next_attempt_ts, left.last_error) == (
        sug(2).id,
        1,
        5000,
        "code=network refused",
    )
    assert again.counts("b") == {
        DeliveryState.PENDING: 1,
        DeliveryState.SENT: 0,
        DeliveryState.FAILED_PERMANENT: 1,
    }
    assert again.recent_requests("a", 0) == [21]
    assert again.pending_robots() == {"a": 1, "b": 1}
    assert again.fail_pending("b", "robot disabled") == 1
    assert again.counts("b")[DeliveryState.FAILED_PERMANENT] == 2
    again.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 0  # the store owns user_version
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"alert_outbox", "alert_outbox_delivery"} <= tables


def test_outbox_prune_keeps_unfinished_alerts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    box.open()
    box.enqueue(sug(1), ["a"], 10)
    box.enqueue(sug(2), ["a"], 10)
    box.enqueue(sug(3), [], 10)  # quiet hours: stored, never delivered
    [first, _] = box.pending("a")
    box.mark_sent([first.seq], 11, first.alert_id)
    assert box.prune(100) == 2
    assert [d.alert_id for d in box.deliveries()] == [sug(2).id]
    box.close()


def test_outbox_misuse_is_a_clear_error(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db")
    with pytest.raises(RuntimeError, match="not open"):
        box.pending("a")
    box.open()
    with pytest.raises(RuntimeError, match="already open"):
        box.open()
    box.close()


# ------------------------------------------------------------------------------------------------ limiter


def test_sliding_window_limiter_feishu_windows() -> None:
    lim = SlidingWindowLimiter([(5, 1.0), (100, 60.0)])
    t = 0
    for _ in range(5):
        assert lim.available(t) > 0
        lim.record(t)
    assert lim.available(t) == 0
    assert lim.next_slot_ms(t) == 1000
    assert lim.available(999) == 0 and lim.available(1000) == 5
    # Fill the minute: 100 requests at 5 per second.
    sent = 5
    t = 1000
    while sent < 100:
        n = min(5, lim.available(t), 100 - sent)
        for _ in range(n):
            lim.record(t)
        sent += n
        t += 1000
    assert lim.available(t) == 0
    assert lim.next_slot_ms(t) == 60_000  # the first five leave the minute window at 60 s


def test_limiter_without_windows_is_unlimited() -> None:
    lim = SlidingWindowLimiter([])
    for _ in range(1000):
        lim.record(0)
    assert lim.available(0) > 1000


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rng = random.Random(7)
    b = Backoff(base_s=2.0, max_s=60.0, jitter=0.5)
    delays = [b.delay(n, rng) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(60.0, 2.0 * 2 ** (n - 1))
        assert ceiling / 2 <= d <= ceiling
    assert len({round(d, 6) for d in delays[-4:]}) == 4  # jitter spreads capped retries


# ------------------------------------------------------------------------------------------------ routing


def robot(name: str, **kw: object) -> RobotConfig:
    return RobotConfig(name=name, kind="webhook", url=f"http://127.0.0.1:9/{name}", **kw)  # type: ignore[arg-type]


def test_routing_by_rule_severity_room_and_kind() -> None:
    cfg = AlertsConfig(
        robots=(
            robot("all"),
            robot("neg-only", rules=("negative_surge",)),
            robot("critical", min_severity="critical"),  # type: ignore[arg-type]
            robot("room2", rooms=("room2",)),
            robot("coupons", rules=("coupon",)),
        ),
        rooms={"room3": {"min_severity": "critical"}, "room4": {"robots": ["neg-only"]}},  # type: ignore[dict-item]
    )
    router = AlertRouter(cfg, is_live=lambda room: True)
    assert router.route(sug(1), 0).robots == ("all", "neg-only")
    assert router.route(sug(1, rule="source_down"), 0).robots == ("all",)
    assert router.route(sug(1, severity=Severity.CRITICAL), 0).robots == ("all", "neg-only", "critical")
    assert router.route(sug(1, room="room2"), 0).robots == ("all", "neg-only", "room2")
    assert router.route(sug(1, room="room3"), 0).skipped == "not_routed"
    assert router.route(sug(1, room="room3", severity=Severity.CRITICAL), 0).robots == (
        "all",
        "neg-only",
        "critical",
    )
    assert router.route(sug(1, room="room4"), 0).robots == ("neg-only",)
    coupon = sug(1, kind=SuggestionKind.COUPON, rule=None)
    assert router.route(coupon, 0).robots == ("coupons",)  # "*" means every alert, not every suggestion
    assert router.route(sug(1, kind=SuggestionKind.PROMPT, rule=None), 0).skipped == "not_routed"


def test_quiet_hours_wrap_midnight_and_never_silence_a_live_room() -> None:
    live = {"live-room"}
    cfg = AlertsConfig(
        robots=(robot("ops"),),
        quiet_hours="23:30-08:00",
        rooms={"night-shift": {"quiet_hours": ""}},  # type: ignore[dict-item]
    )
    router = AlertRouter(cfg, is_live=lambda room: room in live)
    quiet = sug(1, room="ended-room")
    for when, expected in [
        (at(23, 29), ("ops",)),
        (at(23, 30), ()),
        (at(2, 0), ()),
        (at(7, 59), ()),
        (at(8, 0), ("ops",)),
        (at(14, 0), ("ops",)),
    ]:
        assert router.route(quiet, when).robots == expected, when
    assert router.route(quiet, at(2, 0)).skipped == "quiet_hours"
    assert router.route(sug(1, room="live-room"), at(2, 0)).robots == ("ops",)
    assert router.route(sug(1, room="night-shift"), at(2, 0)).robots == ("ops",)

"""AlertSink end to end against fake robots on 127.0.0.1 (tests/fakes/robots.py), driven by a ManualClock.

Time only moves when a test advances the clock, so backoff, rate windows and DingTalk's 10-minute throttle
are exercised without real sleeping; `sink.wait_idle()` waits until every sender has nothing due.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bot.advisors.base import Severity, Suggestion, SuggestionKind, make_suggestion_id
from bot.clock import ManualClock
from bot.outputs.alerts import AlertsConfig, AlertSink, DeliveryState, RobotConfig, send_test
from tests.fakes.robots import FakeRobot, wait_for

T0 = 1_767_268_800_000  # 2026-01-01 20:00:00 +08:00
SECRETS = {
    "wecom": None,
    "dingtalk": "SECfake0secret0for0tests",
    "feishu": "feishuFakeSecret01",
    "webhook": "hook-key-1",
}
KINDS = ["wecom", "dingtalk", "feishu", "webhook"]
LOGGER = "bot.outputs.alerts"


def make_alert(i: int, *, room: str = "room1", rule: str = "negative_surge", **kw: Any) -> Suggestion:
    fields: dict[str, Any] = {
        "id": make_suggestion_id(room, "alert", T0 + i, rule),
        "room": room,
        "kind": SuggestionKind.ALERT,
        "created_ts": T0 + i * 1000,
        "expires_ts": T0 + i * 1000 + 60_000,
        "text": "先安抚情绪，讲清售后保障",
        "reason": f"近60秒负面弹幕占比 {20 + i % 50}%，共 {40 + i} 条",
        "examples": ("骗人的吧", "假货"),
        "severity": Severity.WARNING,
        "rule": rule,
    }
    fields.update(kw)
    return Suggestion(**fields)


def sid(s: Suggestion) -> str:
    return s.id[:6]


def robot_for(
    fake: FakeRobot, *, name: str | None = None, secret: str | None = None, **kw: Any
) -> RobotConfig:
    return RobotConfig(
        name=name or f"{fake.kind}-ops",
        kind=fake.kind,  # type: ignore[arg-type]
        url=fake.url,
        secret=secret if secret is not None else fake.secret,
        **kw,
    )


def config(*robots: RobotConfig, **kw: Any) -> AlertsConfig:
    kw.setdefault("retry_base_s", 2.0)
    kw.setdefault("retry_max_s", 60.0)
    kw.setdefault("flush_timeout_s", 2.0)
    kw.setdefault("screen_url", "http://127.0.0.1:8080/control")
    return AlertsConfig(robots=robots, **kw)


def make_sink(cfg: AlertsConfig, path: Path, clock: ManualClock, **kw: Any) -> AlertSink:
    return AlertSink(cfg, outbox_path=path, clock=clock, rng=random.Random(1), **kw)


def fake(kind: str, clock: ManualClock, **kw: Any) -> FakeRobot:
    kw.setdefault("secret", SECRETS[kind])
    if kind in ("dingtalk", "feishu"):
        kw.setdefault("keywords", ("【场控】",))  # keyword security on, as most groups configure it
    return FakeRobot(kind, now_ms=clock.now_ms, **kw)


async def drain(
    sink: AlertSink, clock: ManualClock, step_s: float, *, until: Callable[[], bool], max_steps: int = 200
) -> None:
    """Advance time step by step until `until()` holds (each step lets senders finish what became due)."""
    await sink.wait_idle()
    for _ in range(max_steps):
        if until():
            return
        clock.advance(step_s)
        await sink.wait_idle()
    raise AssertionError("outbox never drained")


def assert_exactly_once_in_order(fake: FakeRobot, alerts: list[Suggestion]) -> None:
    delivered = fake.delivered_ids()
    assert delivered == [sid(s) for s in alerts], Counter(delivered).most_common(3)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "livebot.db"


# ------------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("kind", KINDS)
async def test_each_robot_gets_signed_alerts_in_order(kind: str, clock: ManualClock, db: Path) -> None:
    async with fake(kind, clock) as robot:
        alerts = [make_alert(i) for i in range(3)]
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            for s in alerts:
                await sink.send(s)
                await sink.wait_idle()
                clock.advance(1)
            assert [r.code for r in robot.requests] == ["0", "0", "0"]  # signature and keyword checks passed
            assert_exactly_once_in_order(robot, alerts)
            counts = sink.outbox.counts()
            assert counts[DeliveryState.SENT] == 3 and counts[DeliveryState.PENDING] == 0
            text = robot.text_of(robot.accepted[0].body or {})
            assert "骗人的吧" in text and "先安抚情绪" in text and "近60秒负面弹幕占比" in text


async def test_alert_is_written_to_the_outbox_before_any_request(clock: ManualClock, db: Path) -> None:
    async with fake("wecom", clock) as robot:
        robot.mode = "hang"
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            await sink.send(make_alert(0))
            await wait_for(lambda: len(robot.requests) == 1)
            [row] = sink.outbox.deliveries()
            assert (row.state, row.attempts) == (
                DeliveryState.PENDING,
                1,
            )  # stored, attempt counted, in flight
            robot.release()
            await sink.wait_idle()


# ------------------------------------------------------------------------------------------------ outage


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("outage", ["down", "503"])
async def test_outage_then_recovery_delivers_every_alert_once_in_order(
    kind: str, outage: str, clock: ManualClock, db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    alerts = [make_alert(i) for i in range(50)]
    async with fake(kind, clock) as robot:
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            if outage == "down":
                await robot.stop()
            else:
                robot.mode = "outage"
            for s in alerts:
                await sink.send(s)
                await sink.wait_idle()
                clock.advance(1)
            assert robot.delivered_ids() == []
            assert sink.outbox.counts()[DeliveryState.PENDING] == 50
            if outage == "down":
                await robot.start()
            else:
                robot.mode = "ok"
            await drain(sink, clock, 10, until=lambda: sink.outbox.counts()[DeliveryState.PENDING] == 0)

    assert_exactly_once_in_order(robot, alerts)
    assert all(r.code in ("0", "http 503") for r in robot.requests)  # never a rate-limit answer
    if kind == "webhook":
        assert len(robot.accepted) == 50  # no rate limit: one message each, no folding
    else:
        assert len(robot.accepted) < 10  # the backlog was folded into digests
        assert any(len(ids) > 1 for ids in robot.ids_per_message())
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "delivery failed" in r.getMessage()
    ]
    assert len(warnings) == 1  # one WARNING per outage, then quiet retries
    assert "delivering again" in caplog.text


# ------------------------------------------------------------------------------------------------ rate limits


@pytest.mark.parametrize(("kind", "windows"), [("wecom", [(20, 60_000)]), ("dingtalk", [(20, 60_000)])])
async def test_burst_respects_the_per_minute_limit(
    kind: str, windows: list[tuple[int, int]], clock: ManualClock, db: Path
) -> None:
    alerts = [make_alert(i) for i in range(120)]
    async with fake(kind, clock) as robot:
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            for s in alerts:  # 4 alerts per second for 30 s
                await sink.send(s)
                await sink.wait_idle()
                clock.advance(0.25)
            await drain(sink, clock, 1, until=lambda: sink.outbox.counts()[DeliveryState.PENDING] == 0)
    for limit, window in windows:
        assert robot.max_in_window(window) <= limit
    assert all(r.code == "0" for r in robot.requests)
    assert_exactly_once_in_order(robot, alerts)
    assert len(robot.requests) <= 25


async def test_feishu_burst_respects_5_per_second_and_100_per_minute(clock: ManualClock, db: Path) -> None:
    alerts = [make_alert(i) for i in range(300)]
    async with fake("feishu", clock) as robot:
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            for i, s in enumerate(alerts):
                await sink.send(s)
                if i % 3 == 0:  # bursts of three, 15 per second
                    await sink.wait_idle()
                    clock.advance(0.2)
            await drain(sink, clock, 0.5, until=lambda: sink.outbox.counts()[DeliveryState.PENDING] == 0)
    assert robot.max_in_window(1_000) <= 5
    assert robot.max_in_window(60_000) <= 100
    assert all(r.code == "0" for r in robot.requests)
    assert_exactly_once_in_order(robot, alerts)


async def test_rate_window_survives_a_restart(clock: ManualClock, db: Path) -> None:
    async with fake("wecom", clock) as robot:
        cfg = config(robot_for(robot))
        async with make_sink(cfg, db, clock) as sink:
            for i in range(20):
                await sink.send(make_alert(i))
                await sink.wait_idle()
        assert len(robot.requests) == 20
        async with make_sink(cfg, db, clock) as sink:
            await sink.send(make_alert(20))
            await sink.wait_idle()
            assert len(robot.requests) == 20  # the minute is full even though this process just started
            clock.advance(60)
            await sink.wait_idle()
            assert len(robot.requests) == 21
    assert robot.max_in_window(60_000) <= 20


async def test_dingtalk_throttle_answer_backs_off_ten_minutes(clock: ManualClock, db: Path) -> None:
    # A robot shared with another tool: the platform throttles us although our own count is below 20.
    async with fake("dingtalk", clock, limits=((3, 60_000),)) as robot:
        alerts = [make_alert(i) for i in range(4)]
        async with make_sink(config(robot_for(robot)), db, clock) as sink:
            for s in alerts:
                await sink.send(s)
                await sink.wait_idle()
                clock.advance(1)
            assert [r.code for r in robot.requests] == ["0", "0", "0", "130101"]
            clock.advance(590)
            await sink.wait_idle()
            assert len(robot.requests) == 4  # no hammering while the platform throttles
            await drain(sink, clock, 5, until=lambda: sink.outbox.counts()[DeliveryState.PENDING] == 0)
            assert robot.requests[-1].ts_ms - robot.requests[3].ts_ms >= 600_000
        assert_exactly_once_in_order(robot, alerts)


# ---------------------------------------------------------------------------------------- permanent errors


@pytest.mark.parametrize(
    ("kind", "break_it", "code", "requests"),
    [
        ("dingtalk", {"secret": "SECwrong0secret"}, "310000 sign not match", 1),
        ("dingtalk", {"keywords": ("告警",)}, "310000 keywords not in content", 1),
        ("wecom", {"token": "wrong-key-123456"}, "93000 invalid webhook url", 1),
        ("webhook", {"secret": "wrong-hook-key"}, "http 401", 1),
        # Feishu's 19021 may be clock skew: retried once with a fresh timestamp (spec §6), then final.
        ("feishu", {"secret": "wrongFeishuSecret"}, "19021 sign match fail", 2),
    ],
)
async def test_misconfigured_robot_reports_one_clear_error_without_a_retry_storm(
    kind: str,
    break_it: dict[str, Any],
    code: str,
    requests: int,
    clock: ManualClock,
    db: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    server_kw: dict[str, Any] = {k: v for k, v in break_it.items() if k == "keywords"}
    async with fake(kind, clock, **server_kw) as robot:
        client_secret = break_it.get("secret", robot.secret)
        client_url_robot = robot_for(robot, secret=client_secret)
        if "token" in break_it:
            client_url_robot = client_url_robot.model_copy(
                update={"url": client_url_robot.url.replace(robot.token, break_it["token"])}
            )
        async with make_sink(config(client_url_robot), db, clock) as sink:
            for i in range(5):
                await sink.send(make_alert(i))
            for _ in range(30):  # five minutes: plenty of time for a retry storm to show
                await sink.wait_idle()
                clock.advance(10)
            await sink.wait_idle()
            await sink.send(make_alert(99))  # after the robot is disabled: stored as failed, no request
            await sink.wait_idle()
            assert sink.outbox.counts() == {
                DeliveryState.PENDING: 0,
                DeliveryState.SENT: 0,
                DeliveryState.FAILED_PERMANENT: 6,
            }
            assert sink.status()[client_url_robot.name]["disabled"]
    assert len(robot.requests) == requests
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert f"robot={client_url_robot.name}" in message and f"code={code.split()[0]}" in message
    assert code.split(" ", 1)[1] in message
    for secret in filter(None, (client_secret, robot.secret, robot.token, break_it.get("token"))):
        assert secret not in caplog.text
    assert client_url_robot.url not in caplog.text


# --------------------------------------------------------------------------------------- crash and restart


async def test_killed_mid_request_restart_sends_the_rest_and_only_the_in_flight_one_twice(
    clock: ManualClock, db: Path
) -> None:
    alerts = [make_alert(i) for i in range(10)]
    async with fake("dingtalk", clock) as robot:
        cfg = config(robot_for(robot))
        first = make_sink(cfg, db, clock)
        await first.start()
        for s in alerts[:3]:
            await first.send(s)
            await first.wait_idle()
        robot.mode = "hang"  # the next request reaches the platform but its answer never comes back
        for s in alerts[3:]:
            await first.send(s)
        await wait_for(lambda: len(robot.requests) == 4)
        await first.stop(flush=False)  # "kill -9": no flush, the in-flight request is abandoned
        robot.release()

        clock.advance(1)
        async with make_sink(cfg, db, clock) as second:
            await drain(second, clock, 5, until=lambda: second.outbox.counts()[DeliveryState.PENDING] == 0)

    seen = robot.delivered_ids(include_unanswered=True)
    counts = Counter(seen)
    assert set(counts) == {sid(s) for s in alerts}
    assert counts[sid(alerts[3])] <= 2  # the one in flight may arrive twice ...
    assert all(counts[sid(s)] == 1 for s in alerts if s is not alerts[3])  # ... nothing else
    assert robot.delivered_ids() == [sid(s) for s in alerts]  # acknowledged: each once, in order


async def test_sink_dropped_without_stop_restart_delivers_pending(clock: ManualClock, db: Path) -> None:
    async with fake("feishu", clock) as robot:
        cfg = config(robot_for(robot))
        await robot.stop()
        first = make_sink(cfg, db, clock)
        await first.start()
        alerts = [make_alert(i) for i in range(7)]
        for s in alerts:
            await first.send(s)
        await first.wait_idle()
        # Simulate the process dying: tasks gone, connection never closed cleanly.
        for task in list(first._tasks.values()):
            task.cancel()
        await robot.start()
        async with make_sink(cfg, db, clock) as second:
            await drain(second, clock, 10, until=lambda: second.outbox.counts()[DeliveryState.PENDING] == 0)
        await first.stop(flush=False)
    assert_exactly_once_in_order(robot, alerts)


async def test_stop_flushes_what_can_go_out_and_keeps_the_rest(clock: ManualClock, db: Path) -> None:
    async with fake("wecom", clock) as robot:
        cfg = config(robot_for(robot))
        sink = make_sink(cfg, db, clock)
        await sink.start()
        for i in range(3):
            await sink.send(make_alert(i))
        await sink.stop()  # no wait_idle: stop() itself delivers them
        assert len(robot.accepted) == 3
        with pytest.raises(RuntimeError, match="stopped; call start"):
            await sink.send(make_alert(4))
        with pytest.raises(RuntimeError, match="cannot be restarted"):
            await sink.start()

        await robot.stop()
        sink = make_sink(cfg, db, clock)
        await sink.start()
        await sink.send(make_alert(5))
        await sink.stop()  # robot down: flush gives up quickly, the alert stays pending
        await robot.start()
        async with make_sink(cfg, db, clock) as again:
            await drain(again, clock, 10, until=lambda: again.outbox.counts()[DeliveryState.PENDING] == 0)
    assert robot.delivered_ids() == [sid(make_alert(i)) for i in (0, 1, 2, 5)]


# ------------------------------------------------------------------------------------------------ routing


def _at_cst(hh: int, mm: int) -> int:
    return int(datetime(2026, 1, 2, hh, mm, tzinfo=timezone(timedelta(hours=8))).timestamp() * 1000)


async def test_quiet_hours_silence_ended_rooms_but_never_a_live_one(db: Path) -> None:
    clock = ManualClock(_at_cst(2, 0))
    async with fake("wecom", clock) as robot:
        cfg = config(robot_for(robot), quiet_hours="23:30-08:00")
        live = {"live-room"}
        async with make_sink(cfg, db, clock, is_live=lambda room: room in live) as sink:
            quiet = make_alert(0, room="ended-room")
            loud = make_alert(1, room="live-room")
            await sink.send(quiet)
            await sink.send(loud)
            await sink.wait_idle()
            clock.set(_at_cst(8, 1))
            later = make_alert(2, room="ended-room")
            await sink.send(later)
            await sink.wait_idle()
            assert [d.alert_id for d in sink.outbox.deliveries()] == [loud.id, later.id]
    assert robot.delivered_ids() == [sid(loud), sid(later)]


async def test_rules_and_min_severity_pick_the_robots(clock: ManualClock, db: Path) -> None:
    async with fake("wecom", clock) as wecom, fake("feishu", clock) as feishu:
        cfg = config(
            robot_for(wecom, rules=("negative_surge", "coupon")),
            robot_for(feishu, min_severity="critical"),
        )
        async with make_sink(cfg, db, clock) as sink:
            neg = make_alert(0)
            down = make_alert(1, rule="source_down", severity=Severity.CRITICAL)
            info = make_alert(2, rule="source_down", severity=Severity.INFO)
            coupon = make_alert(3, kind=SuggestionKind.COUPON, rule=None, text="现在发 5 元券")
            prompt = make_alert(4, kind=SuggestionKind.PROMPT, rule=None)
            for s in (neg, down, info, coupon, prompt):
                await sink.send(s)
                await sink.wait_idle()
            stored = {d.alert_id for d in sink.outbox.deliveries()}
    assert wecom.delivered_ids() == [sid(neg), sid(coupon)]
    assert feishu.delivered_ids() == [sid(down)]
    assert prompt.id not in stored and info.id not in stored


# ------------------------------------------------------------------------------------------------ alerts test


async def test_send_test_reports_each_robot(clock: ManualClock) -> None:
    async with (
        fake("wecom", clock) as wecom,
        fake("dingtalk", clock) as ding,
        fake("feishu", clock) as feishu,
        fake("webhook", clock) as hook,
    ):
        robots = [
            robot_for(wecom, mentions=("zhangsan",)),
            robot_for(ding, secret="SECnot0the0right0one"),
            robot_for(feishu),
            robot_for(hook),
        ]
        results = await send_test(robots, clock=clock, screen_url="http://127.0.0.1:8080/control")
        await feishu.stop()
        [(name, ok, detail)] = await send_test([robots[2]], clock=clock)
    assert results[0] == ("wecom-ops", True, "ok")
    assert results[1][:2] == ("dingtalk-ops", False)
    assert results[1][2].startswith("code=310000 sign not match")
    assert results[2] == ("feishu-ops", True, "ok")
    assert results[3] == ("webhook-ops", True, "ok")
    assert "测试消息" in wecom.text_of(wecom.accepted[0].body or {})
    assert (name, ok) == ("feishu-ops", False) and detail.startswith("network error")
    assert feishu.token not in detail

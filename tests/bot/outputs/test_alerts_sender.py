"""Sender edge cases through the Transport seam (a plain function stands in for the robot, as httpx's
MockTransport does): message-level rejections, unclassifiable answers, clock skew, per-attempt signing
and a crashing transport."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from bot.advisors.base import Severity, Suggestion, SuggestionKind
from bot.clock import ManualClock
from bot.outputs.alerts import AlertsConfig, AlertSink, DeliveryState, HttpRequest, HttpResponse, RobotConfig
from bot.outputs.alerts.sender import UNKNOWN_MAX_ATTEMPTS

T0 = 1_767_268_800_000
LOGGER = "bot.outputs.alerts"
Handler = Callable[[HttpRequest], HttpResponse]


class StubTransport:
    """Answers each request with `handler(request)`; records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[HttpRequest] = []

    async def post(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        return self.handler(request)


def answer(body: object, status: int = 200) -> HttpResponse:
    return HttpResponse(status, {}, body if isinstance(body, str) else json.dumps(body))


def alert(i: int) -> Suggestion:
    return Suggestion(
        id=f"{i:02x}c0ffee",
        room="room1",
        kind=SuggestionKind.ALERT,
        created_ts=T0 + i,
        expires_ts=T0 + i + 60_000,
        text="看一下评论区",
        reason=f"第 {i} 条告警",
        severity=Severity.WARNING,
        rule="distrust",
    )


def sink_with(
    kind: str, handler: Handler, tmp_path: Path, clock: ManualClock, **robot_kw: object
) -> tuple[AlertSink, StubTransport]:
    urls = {
        "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=stub-key-000000",
        "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token=stub-token-000000",
    }
    robot = RobotConfig(name="stub", kind=kind, url=urls[kind], **robot_kw)  # type: ignore[arg-type]
    transport = StubTransport(handler)
    cfg = AlertsConfig(robots=(robot,), retry_base_s=2.0, retry_max_s=30.0)
    sink = AlertSink(
        cfg, outbox_path=tmp_path / "o.db", clock=clock, transport=transport, rng=random.Random(3)
    )
    return sink, transport


async def settle(sink: AlertSink, clock: ManualClock, seconds: float, step: float = 1.0) -> None:
    await sink.wait_idle()
    for _ in range(round(seconds / step)):
        clock.advance(step)
        await sink.wait_idle()


async def test_a_rejected_message_fails_alone_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, LOGGER)
    clock = ManualClock(T0)

    def handler(request: HttpRequest) -> HttpResponse:
        content = json.loads(request.body)["markdown"]["content"]
        if "第 0 条" in content or "第 2 条" in content:
            return answer({"errcode": 44004, "errmsg": "empty content, hint: [x]"})
        return answer({"errcode": 0, "errmsg": "ok"})

    sink, transport = sink_with("wecom", handler, tmp_path, clock)
    async with sink:
        for i in range(4):
            await sink.send(alert(i))
            await sink.wait_idle()
        states = [(d.alert_id[:2], d.state) for d in sink.outbox.deliveries()]
    assert states == [
        ("00", DeliveryState.FAILED_PERMANENT),
        ("01", DeliveryState.SENT),
        ("02", DeliveryState.FAILED_PERMANENT),
        ("03", DeliveryState.SENT),
    ]
    assert len(transport.requests) == 4  # no retries for a message the platform refuses
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "code=44004" in errors[0].getMessage()


async def test_an_unclassifiable_answer_is_retried_a_few_times_then_given_up(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    sink, transport = sink_with("wecom", lambda r: answer("<html>proxy login</html>"), tmp_path, clock)
    async with sink:
        await sink.send(alert(0))
        await settle(sink, clock, 300)
        [row] = sink.outbox.deliveries()
    assert len(transport.requests) == UNKNOWN_MAX_ATTEMPTS
    assert row.state is DeliveryState.FAILED_PERMANENT and row.attempts == UNKNOWN_MAX_ATTEMPTS
    assert row.last_error is not None and "not a JSON object" in row.last_error


async def test_dingtalk_invalid_timestamp_is_retried_once_with_a_fresh_signature(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = ManualClock(T0)
    sink, transport = sink_with(
        "dingtalk",
        lambda r: answer({"errcode": 310000, "errmsg": "invalid timestamp"}),
        tmp_path,
        clock,
        secret="SECstub0secret",
    )
    async with sink:
        await sink.send(alert(0))
        await settle(sink, clock, 120)
        assert sink.status()["stub"]["disabled"] == "code=310000 invalid timestamp"
    assert len(transport.requests) == 2
    stamps = [dict(parse_qsl(urlsplit(r.url).query))["timestamp"] for r in transport.requests]
    signs = [dict(parse_qsl(urlsplit(r.url).query))["sign"] for r in transport.requests]
    assert stamps[0] != stamps[1] and signs[0] != signs[1]  # signed per attempt
    assert [r.levelname for r in caplog.records if "310000" in r.getMessage()] == ["WARNING", "ERROR"]
    assert "SECstub0secret" not in caplog.text and "stub-token-000000" not in caplog.text


async def test_retries_are_signed_again_and_back_off_exponentially(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    sink, transport = sink_with(
        "dingtalk", lambda r: answer("bad gateway", 502), tmp_path, clock, secret="SECx1"
    )
    async with sink:
        await sink.send(alert(0))
        await settle(sink, clock, 200)
        [row] = sink.outbox.deliveries()
    times = [int(dict(parse_qsl(urlsplit(r.url).query))["timestamp"]) for r in transport.requests]
    gaps = [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 5
    assert gaps[:4] == sorted(gaps[:4])  # growing ...
    assert max(gaps) <= 30 + 1  # ... up to the cap (1 s clock steps)
    assert row.state is DeliveryState.PENDING and row.attempts == len(times)  # never given up


async def test_a_crashing_transport_is_logged_and_the_sender_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    clock = ManualClock(T0)
    calls = {"n": 0}

    def handler(request: HttpRequest) -> HttpResponse:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("bug in a transport")
        return answer({"errcode": 0, "errmsg": "ok"})

    sink, transport = sink_with("wecom", handler, tmp_path, clock)
    async with sink:
        await sink.send(alert(0))
        await settle(sink, clock, 5)
        [row] = sink.outbox.deliveries()
    assert row.state is DeliveryState.SENT and row.attempts == 2
    assert "sender failed; restarting" in caplog.text

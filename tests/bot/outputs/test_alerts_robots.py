"""Pure parts of chat alerts: signing (spec §4 worked examples), rendering, answer classification, config."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta, timezone

import pytest
from pydantic import ValidationError

from bot.advisors.base import Severity, Suggestion, SuggestionKind, make_suggestion_id
from bot.outputs.alerts.config import AlertsConfig, RobotConfig, parse_quiet_hours
from bot.outputs.alerts.robots import (
    KEYWORD,
    RenderContext,
    Verdict,
    build_request,
    classify_answer,
    content_limit,
    dingtalk_sign,
    dingtalk_signed_url,
    feishu_sign,
    redact_url,
    render_alert,
    render_digest,
    scrubber,
    short_id,
    truncate_utf8,
    webhook_signature,
)

CTX = RenderContext(tz=timezone(timedelta(hours=8)), screen_url="http://127.0.0.1:8080/control")
T0 = 1_767_268_800_000  # 2026-01-01 20:00:00 +08:00


def alert(n: int = 0, **kw: object) -> Suggestion:
    fields: dict[str, object] = {
        "id": make_suggestion_id("room1", "alert", T0 + n, "negative_surge"),
        "room": "room1",
        "kind": SuggestionKind.ALERT,
        "created_ts": T0 + n * 1000,
        "expires_ts": T0 + n * 1000 + 60_000,
        "text": "先安抚情绪，讲清七天无理由退换",
        "reason": f"近60秒负面弹幕占比 32%（基线 8%），共 {45 + n} 条",
        "examples": ("骗人的吧", "假货别买", "退款怎么这么慢"),
        "severity": Severity.WARNING,
        "rule": "negative_surge",
    }
    fields.update(kw)
    return Suggestion(**fields)  # type: ignore[arg-type]


def robot(kind: str, **kw: object) -> RobotConfig:
    urls = {
        "wecom": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa",
        "dingtalk": "https://oapi.dingtalk.com/robot/send?access_token=abcdef0123456789abcdef",
        "feishu": "https://open.feishu.cn/open-apis/bot/v2/hook/0f7e6a1c-aaaa-bbbb-cccc-1234567890ab",
        "webhook": "https://example.invalid/hooks/livebot",
    }
    return RobotConfig(name=f"{kind}-1", kind=kind, url=urls[kind], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ signing


def test_dingtalk_sign_matches_the_spec_worked_example() -> None:
    secret, ts = "SECexampleSecretForDocsOnly002", 1700000000000
    digest = hmac.new(secret.encode(), f"{ts}\n{secret}".encode(), hashlib.sha256).hexdigest()
    assert digest == "99486eaf805270fd629906c410004cf3c50df5be52fd705d1d9167f9969cae35"
    assert dingtalk_sign(secret, ts) == "mUhur4BScP1imQbEEABM88UN9b5S/XBdHZFn+ZacrjU="
    url = dingtalk_signed_url("https://oapi.dingtalk.com/robot/send?access_token=<TOKEN>", secret, ts)
    assert url == (
        "https://oapi.dingtalk.com/robot/send?access_token=<TOKEN>&timestamp=1700000000000"
        "&sign=mUhur4BScP1imQbEEABM88UN9b5S%2FXBdHZFn%2BZacrjU%3D"
    )


def test_feishu_sign_matches_the_spec_worked_example_and_not_the_dingtalk_mistake() -> None:
    secret, ts = "exampleFeishuSecret000", 1700000000
    assert feishu_sign(secret, ts) == "SLMdmCqoqj9bVSPGhlg/FuVl6tOgUVVqyuqNKe+wtH0="
    key = f"{ts}\n{secret}".encode()
    assert hmac.new(key, b"", hashlib.sha256).hexdigest() == (
        "48b31d982aa8aa3f5b5523c686583f16e565ead3a051556acaea8d29efb0b47d"
    )
    dingtalk_style = base64.b64encode(hmac.new(secret.encode(), key, hashlib.sha256).digest()).decode()
    assert dingtalk_style == "ZfLsfGIRrJ41PJG8X790mJvsDdZcQkUZPWXUfE1a3Ak="
    assert feishu_sign(secret, ts) != dingtalk_style


def test_build_request_signs_per_platform() -> None:
    now = 1700000000000
    ding = build_request(robot("dingtalk", secret="SECexampleSecretForDocsOnly002"), {"msgtype": "text"}, now)
    assert ding.url.endswith(
        "&timestamp=1700000000000&sign=mUhur4BScP1imQbEEABM88UN9b5S%2FXBdHZFn%2BZacrjU%3D"
    )

    feishu = build_request(robot("feishu", secret="exampleFeishuSecret000"), {"msg_type": "text"}, now)
    body = json.loads(feishu.body)
    assert body["timestamp"] == "1700000000"
    assert body["sign"] == "SLMdmCqoqj9bVSPGhlg/FuVl6tOgUVVqyuqNKe+wtH0="
    assert feishu.url == robot("feishu").url

    hook = build_request(robot("webhook", secret="s3cret-key"), {"id": "x"}, now)
    assert hook.headers["X-Livebot-Timestamp"] == "1700000000"
    expected = hmac.new(b"s3cret-key", b"1700000000." + hook.body, hashlib.sha256).hexdigest()
    assert (
        hook.headers["X-Livebot-Signature"]
        == f"sha256={expected}"
        == webhook_signature("s3cret-key", 1700000000, hook.body)
    )

    wecom = build_request(robot("wecom"), {"msgtype": "text"}, now)
    assert wecom.url == robot("wecom").url and "X-Livebot-Signature" not in wecom.headers


# ------------------------------------------------------------------------------------------------ rendering


def test_short_id_is_the_suggestion_id_prefix() -> None:
    s = alert()
    assert short_id(s.id) == s.id[:6]
    assert len(short_id("not-a-hex-id")) == 6
    assert short_id("not-a-hex-id") == short_id("not-a-hex-id")


def test_truncate_utf8_never_cuts_a_character() -> None:
    text = "负面激增" * 10
    for limit in range(1, 40):
        cut = truncate_utf8(text, limit)
        assert len(cut.encode()) <= limit
        cut.encode().decode()  # valid UTF-8
    assert truncate_utf8("短", 10) == "短"


@pytest.mark.parametrize("kind", ["wecom", "dingtalk", "feishu"])
@pytest.mark.parametrize("fmt", ["markdown", "text"])
def test_alert_message_has_what_numbers_examples_action_link_and_id(kind: str, fmt: str) -> None:
    s = alert()
    msg = render_alert(robot(kind, format=fmt), s, CTX)
    sent = json.dumps(msg.payload, ensure_ascii=False)  # Feishu cards carry title and severity in the header
    for needle in (
        KEYWORD,
        "负面激增",
        "警告",
        "近60秒负面弹幕占比 32%（基线 8%），共 45 条",
        "骗人的吧",
        "先安抚情绪",
        "http://127.0.0.1:8080/control",
        f"#{s.id[:6]}",
        "20:00:00",
        "room1",
    ):
        assert needle in sent, (needle, sent)
    assert msg.alert_ids == (s.id,)


def test_platform_bodies_and_mentions() -> None:
    s = alert(severity=Severity.CRITICAL)
    wecom_md = render_alert(robot("wecom", mentions=("zhangsan",)), s, CTX).payload
    assert wecom_md["msgtype"] == "markdown"
    assert "<@zhangsan>" in wecom_md["markdown"]["content"]
    assert '<font color="warning">严重</font>' in wecom_md["markdown"]["content"]

    wecom_text = render_alert(
        robot("wecom", format="text", mentions=("zhangsan", "13800001111", "all")), s, CTX
    )
    assert wecom_text.payload["text"]["mentioned_list"] == ["zhangsan", "@all"]
    assert wecom_text.payload["text"]["mentioned_mobile_list"] == ["13800001111"]

    ding = render_alert(robot("dingtalk", mentions=("13800001111", "user123")), s, CTX).payload
    assert ding["msgtype"] == "markdown"
    assert ding["markdown"]["title"].startswith(KEYWORD)
    assert ding["at"] == {"atMobiles": ["13800001111"], "atUserIds": ["user123"], "isAtAll": False}
    assert "@13800001111" in ding["markdown"]["text"] and "@user123" in ding["markdown"]["text"]
    assert ding["markdown"]["text"].startswith("#### ")

    ding_all = render_alert(robot("dingtalk", format="text", mentions=("all",)), s, CTX).payload
    assert ding_all["msgtype"] == "text" and ding_all["at"]["isAtAll"] is True

    card = render_alert(robot("feishu", mentions=("ou_abc", "all")), s, CTX).payload
    assert card["msg_type"] == "interactive"
    assert card["card"]["header"]["template"] == "red"
    content = card["card"]["elements"][0]["text"]["content"]
    assert card["card"]["elements"][0]["text"]["tag"] == "lark_md"
    assert "<at id=ou_abc></at>" in content and "<at id=all></at>" in content

    feishu_text = render_alert(robot("feishu", format="text", mentions=("ou_abc",)), s, CTX).payload
    assert feishu_text["msg_type"] == "text"
    assert '<at user_id="ou_abc">' in feishu_text["content"]["text"]


def test_generic_webhook_body_follows_the_project_schema() -> None:
    s = alert(data={"count": 45, "platform": "bilibili"})
    body = render_alert(robot("webhook"), s, CTX).payload
    assert set(body) == {
        "id",
        "rule",
        "severity",
        "room",
        "platform",
        "title",
        "text",
        "count",
        "examples",
        "ts",
    }
    assert body["id"] == s.id and body["rule"] == "negative_surge" and body["severity"] == "warn"
    assert body["count"] == 45 and body["platform"] == "bilibili" and body["ts"] == s.created_ts
    assert body["examples"] == ["骗人的吧", "假货别买", "退款怎么这么慢"]


@pytest.mark.parametrize("kind", ["wecom", "dingtalk", "feishu"])
@pytest.mark.parametrize("fmt", ["markdown", "text"])
def test_long_alerts_are_cut_to_the_platform_limit_keeping_id_link_and_mentions(kind: str, fmt: str) -> None:
    mentions = ("ou_abc",) if kind == "feishu" else ("zhangsan",)
    r = robot(kind, format=fmt, mentions=mentions)
    s = alert(reason="很长的原因" * 2000, examples=tuple("例句" * 100 for _ in range(10)))
    msg = render_alert(r, s, CTX)
    assert len(msg.content.encode()) <= content_limit(r)
    assert f"#{s.id[:6]}" in msg.content
    assert "http://127.0.0.1:8080/control" in msg.content
    msg.content.encode().decode()


def test_digest_folds_in_order_and_respects_the_size_limit() -> None:
    r = robot("wecom")
    items = [alert(i) for i in range(60)]
    first = render_digest(r, items, CTX)
    assert 1 < len(first.alert_ids) < 60
    assert first.alert_ids == tuple(s.id for s in items[: len(first.alert_ids)])
    assert len(first.payload["markdown"]["content"].encode()) <= 4096
    content = first.payload["markdown"]["content"]
    positions = [content.index(f"#{s.id[:6]} ") for s in items[: len(first.alert_ids)]]
    assert positions == sorted(positions)
    assert f"告警汇总 {len(first.alert_ids)} 条" in content
    assert "负面激增" in content
    rest = render_digest(r, items[len(first.alert_ids) :], CTX)
    assert rest.alert_ids[0] == items[len(first.alert_ids)].id


def test_digest_of_several_rooms_names_each_room() -> None:
    items = [alert(0), alert(1, room="room2", id="abcdef12")]
    msg = render_digest(robot("dingtalk"), items, CTX)
    assert "[room1]" in msg.content and "[room2]" in msg.content
    assert "2 个直播间" in msg.content


# ------------------------------------------------------------------------------------------------ answers


@pytest.mark.parametrize(
    ("kind", "status", "body", "verdict", "code"),
    [
        ("wecom", 200, {"errcode": 0, "errmsg": "ok"}, Verdict.OK, "0"),
        (
            "wecom",
            200,
            {"errcode": 45009, "errmsg": "api freq out of limit, hint: [x]"},
            Verdict.RETRY,
            "45009",
        ),
        (
            "wecom",
            200,
            {"errcode": 93000, "errmsg": "invalid webhook url, hint: [x]"},
            Verdict.ROBOT,
            "93000",
        ),
        ("wecom", 200, {"errcode": 93004, "errmsg": "robot disabled"}, Verdict.ROBOT, "93004"),
        ("wecom", 200, {"errcode": 93008, "errmsg": "not in group"}, Verdict.ROBOT, "93008"),
        ("wecom", 200, {"errcode": 44004, "errmsg": "empty content"}, Verdict.MESSAGE, "44004"),
        ("dingtalk", 200, {"errcode": 0, "errmsg": "ok"}, Verdict.OK, "0"),
        ("dingtalk", 200, {"errcode": 310000, "errmsg": "sign not match"}, Verdict.ROBOT, "310000"),
        ("dingtalk", 200, {"errcode": 310000, "errmsg": "keywords not in content"}, Verdict.ROBOT, "310000"),
        (
            "dingtalk",
            200,
            {"errcode": 310000, "errmsg": "ip 1.2.3.4 not in whitelist"},
            Verdict.ROBOT,
            "310000",
        ),
        ("dingtalk", 200, {"errcode": 310000, "errmsg": "invalid timestamp"}, Verdict.SKEW, "310000"),
        ("dingtalk", 200, {"errcode": 130101, "errmsg": "send too fast"}, Verdict.RETRY, "130101"),
        ("dingtalk", 200, {"errcode": 300001, "errmsg": "token is not exist"}, Verdict.ROBOT, "300001"),
        (
            "feishu",
            200,
            {"StatusCode": 0, "StatusMessage": "success", "code": 0, "msg": "success"},
            Verdict.OK,
            "0",
        ),
        ("feishu", 200, {"StatusCode": 0, "StatusMessage": "success"}, Verdict.OK, "0"),
        ("feishu", 200, {"code": 19021, "msg": "sign match fail"}, Verdict.SKEW, "19021"),
        ("feishu", 200, {"code": 19022, "msg": "Ip Not Allowed"}, Verdict.ROBOT, "19022"),
        ("feishu", 200, {"code": 19024, "msg": "Key Words Not Found"}, Verdict.ROBOT, "19024"),
        ("feishu", 200, {"code": 9499, "msg": "Bad Request"}, Verdict.MESSAGE, "9499"),
        ("feishu", 200, {"code": 11232, "msg": "frequency limited"}, Verdict.RETRY, "11232"),
        ("webhook", 204, None, Verdict.OK, "204"),
        ("webhook", 401, {"error": "bad signature"}, Verdict.ROBOT, "http 401"),
        ("webhook", 429, {"error": "slow down"}, Verdict.RETRY, "http 429"),
        ("wecom", 502, None, Verdict.RETRY, "http 502"),
        ("feishu", 200, None, Verdict.UNKNOWN, "http 200"),
    ],
)
def test_classify_answer(kind: str, status: int, body: object, verdict: Verdict, code: str) -> None:
    from bot.outputs.alerts.config import RobotKind

    text = json.dumps(body) if body is not None else "<html>gateway</html>"
    outcome = classify_answer(RobotKind(kind), status, {}, text)
    assert (outcome.verdict, outcome.code) == (verdict, code)


def test_retry_after_and_dingtalk_throttle_set_a_minimum_delay() -> None:
    from bot.outputs.alerts.config import RobotKind

    assert classify_answer(RobotKind.WEBHOOK, 429, {"Retry-After": "30"}, "").min_delay_s == 30
    ding = classify_answer(RobotKind.DINGTALK, 200, {}, '{"errcode":130101,"errmsg":"send too fast"}')
    assert ding.min_delay_s == 600


def test_secrets_and_url_keys_are_scrubbed_from_error_text() -> None:
    r = robot("dingtalk", secret="SECverysecretvalue")
    scrub = scrubber(r)
    leak = f"Cannot connect to {r.url}&timestamp=1&sign=x (secret SECverysecretvalue)"
    cleaned = scrub(leak)
    assert "abcdef0123456789abcdef" not in cleaned and "SECverysecretvalue" not in cleaned
    assert redact_url(robot("feishu").url) == "https://open.feishu.cn"
    assert "0f7e6a1c" not in scrubber(robot("feishu"))(f"error at {robot('feishu').url}")


# ------------------------------------------------------------------------------------------------ config


def test_config_validation_messages() -> None:
    with pytest.raises(ValidationError, match="WeCom markdown messages can only @ user ids"):
        robot("wecom", mentions=("all",))
    with pytest.raises(ValidationError, match="starts with 'SEC'"):
        robot("dingtalk", secret="nope")
    with pytest.raises(ValidationError, match="absolute http"):
        RobotConfig(name="x", kind="wecom", url="qyapi.weixin.qq.com/send?key=1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="unique"):
        AlertsConfig(robots=(robot("wecom"), robot("wecom")))
    with pytest.raises(ValidationError, match="23:30-08:00"):
        AlertsConfig(quiet_hours="late night")
    with pytest.raises(ValidationError, match="extra"):
        RobotConfig.model_validate({"name": "x", "kind": "wecom", "url": "https://a.b/c", "token": "t"})
    with pytest.raises(ValidationError, match="unknown robots"):
        AlertsConfig(robots=(robot("wecom"),), rooms={"r1": {"robots": ["nobody"]}})  # type: ignore[dict-item]
    assert parse_quiet_hours("23:30-08:00") == (23 * 60 + 30, 8 * 60)
    assert parse_quiet_hours("") is None


def test_config_from_toml_shape() -> None:
    import tomllib

    data = tomllib.loads(
        """
        quiet_hours = "23:30-08:00"
        screen_url = "http://127.0.0.1:8080/control"
        [[robots]]
        name = "ops-wecom"
        kind = "wecom"
        url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc"
        mentions = ["zhangsan"]
        rules = ["negative_surge", "source_down"]
        min_severity = "warning"
        [[robots]]
        name = "ops-ding"
        kind = "dingtalk"
        url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
        secret = "SECabc"
        mentions = ["13800001111", "all"]
        [rooms.room1]
        quiet_hours = ""
        """
    )
    cfg = AlertsConfig.model_validate(data)
    assert [r.name for r in cfg.robots] == ["ops-wecom", "ops-ding"]
    assert cfg.robots[0].min_severity is Severity.WARNING
    assert cfg.robots[1].rules == ("*",)
    assert cfg.rooms["room1"].quiet_hours == ""

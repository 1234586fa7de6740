"""Robot platforms: message rendering, signing, HTTP transport and answer classification.

Spec: ../shared/protocols/chat_alerts.md (§1 WeCom, §2 DingTalk, §3 Feishu, §4 signing examples,
§5 generic webhook, §6 client rules). Everything here except `AiohttpTransport` is pure.

All three Chinese robots answer HTTP 200 even on failure, so success is decided by the JSON code (§6).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote_plus, urlsplit

import aiohttp
import yarl

from bot.advisors.base import SEVERITY_ORDER, Severity, Suggestion, SuggestionKind
from bot.outputs.alerts.config import MessageFormat, RobotConfig, RobotKind, classify_mention
from nlp.topics import TOPIC_LABELS

KEYWORD = "【场控】"
"""Put in every title and text: DingTalk/Feishu keyword security checks need one fixed word (spec §2, §3)."""

# Content limits in UTF-8 bytes (spec §1; DingTalk has no published limit and Feishu caps the body at 20 KB,
# so both are kept short on purpose, "keep messages short").
_CONTENT_LIMITS: dict[tuple[RobotKind, MessageFormat], int] = {
    (RobotKind.WECOM, MessageFormat.TEXT): 2048,
    (RobotKind.WECOM, MessageFormat.MARKDOWN): 4096,
    (RobotKind.DINGTALK, MessageFormat.TEXT): 4000,
    (RobotKind.DINGTALK, MessageFormat.MARKDOWN): 4000,
    (RobotKind.FEISHU, MessageFormat.TEXT): 4000,
    (RobotKind.FEISHU, MessageFormat.MARKDOWN): 4000,
    (RobotKind.WEBHOOK, MessageFormat.TEXT): 8000,
    (RobotKind.WEBHOOK, MessageFormat.MARKDOWN): 8000,
}

RULE_TITLES: dict[str, str] = {
    "negative_surge": "负面激增",
    "confusion_surge": "疑问激增",
    "rate_collapse": "弹幕骤降",
    "source_down": "数据源断开",
    "source_reconnecting": "数据源重连中",
    "distrust": "信任危机",
    "sensitive_word": "敏感词",
    "script_switch": "话术切换",
    "coupon": "发券建议",
    "prompt": "互动口令",
    "answer_card": "答疑卡",
    "escalation": "建议未处理",
    "compliance": "合规风险",
    "platform_lag": "平台延迟",
    "opening_deadline": "开场超时",
    "session_length": "场次时长",
    "rhythm": "节奏提醒",
    "test": "测试消息",
}

SEVERITY_LABELS: dict[Severity, str] = {
    Severity.INFO: "提示",
    Severity.WARNING: "警告",
    Severity.CRITICAL: "严重",
}

_WECOM_COLORS = {Severity.INFO: "info", Severity.WARNING: "warning", Severity.CRITICAL: "warning"}
_FEISHU_TEMPLATES = {Severity.INFO: "blue", Severity.WARNING: "orange", Severity.CRITICAL: "red"}
_WEBHOOK_SEVERITY = {Severity.INFO: "info", Severity.WARNING: "warn", Severity.CRITICAL: "critical"}

_HEX_ID = re.compile(r"^[0-9a-f]{6,}$")
SHORT_ID_LEN = 6
MAX_EXAMPLES = 3
_EXAMPLE_CHARS = 60
_DIGEST_LINE_CHARS = 48


# --------------------------------------------------------------------------------------------- helpers


def short_id(alert_id: str) -> str:
    """The `a1b2c3` shown as `#a1b2c3`: the id's prefix when it is hex (make_suggestion_id), else a hash."""
    if _HEX_ID.match(alert_id):
        return alert_id[:SHORT_ID_LEN]
    return hashlib.sha1(alert_id.encode()).hexdigest()[:SHORT_ID_LEN]


def truncate_utf8(text: str, max_bytes: int, ellipsis: str = "…") -> str:
    """Cut `text` to at most `max_bytes` UTF-8 bytes, never in the middle of a character."""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - len(ellipsis.encode())
    if room <= 0:
        return raw[:max_bytes].decode(errors="ignore")
    return raw[:room].decode(errors="ignore") + ellipsis


def _clip(text: str, chars: int) -> str:
    one_line = " ".join(text.split())
    return one_line if len(one_line) <= chars else one_line[: chars - 1] + "…"


def _nbytes(text: str) -> int:
    return len(text.encode())


def alert_title(s: Suggestion) -> str:
    """Chinese headline: the rule (plus topic) in words, e.g. 疑问激增（尺码）."""
    key = s.rule or str(s.kind)
    title = RULE_TITLES.get(key, key)
    if s.topic:
        title += f"（{TOPIC_LABELS.get(s.topic, s.topic)}）"
    return title


def routing_key(s: Suggestion) -> str:
    """What `RobotConfig.rules` matches: the alert rule, or the suggestion kind for non-alert suggestions."""
    if s.kind is SuggestionKind.ALERT:
        return s.rule or str(s.kind)
    return str(s.kind)


def content_limit(robot: RobotConfig) -> int:
    return _CONTENT_LIMITS[(robot.kind, robot.format)]


# --------------------------------------------------------------------------------------------- signing


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk 加签 (spec §2, §4): Base64(HMAC-SHA256(key=secret, msg=timestamp + LF + secret)).

    Not URL-encoded here; `dingtalk_signed_url` does that.
    """
    string_to_sign = f"{timestamp_ms}\n{secret}"
    digest = hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    """Append `timestamp` and the URL-encoded `sign` (`+`→%2B, `/`→%2F, `=`→%3D) to the robot URL."""
    sep = "&" if urlsplit(url).query else "?"
    return f"{url}{sep}timestamp={timestamp_ms}&sign={quote_plus(dingtalk_sign(secret, timestamp_ms))}"


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu signature (spec §3, §4): Base64(HMAC-SHA256(key=timestamp + LF + secret, msg=empty)).

    The key/message roles are the opposite of DingTalk's.
    """
    string_to_sign = f"{timestamp_s}\n{secret}"
    digest = hmac.new(string_to_sign.encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """Generic webhook (spec §5): `sha256=` + hex HMAC-SHA256(key=secret, msg=timestamp + "." + raw body)."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One POST, signed for one attempt (spec §6: sign per attempt, an old signature can expire)."""

    url: str
    """Already percent-encoded; sent as is."""
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def build_request(robot: RobotConfig, payload: dict[str, Any], now_ms: int) -> HttpRequest:
    """Sign and serialise `payload` for `robot` at time `now_ms`."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    url = robot.url
    if robot.kind is RobotKind.DINGTALK and robot.secret:
        url = dingtalk_signed_url(url, robot.secret, now_ms)
    elif robot.kind is RobotKind.FEISHU and robot.secret:
        ts = now_ms // 1000
        # Timestamp as a string, as in Feishu's official sample (spec §3).
        payload = {"timestamp": str(ts), "sign": feishu_sign(robot.secret, ts), **payload}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    if robot.kind is RobotKind.WEBHOOK and robot.secret:
        ts = now_ms // 1000
        headers["X-Livebot-Timestamp"] = str(ts)
        headers["X-Livebot-Signature"] = webhook_signature(robot.secret, ts, body)
    return HttpRequest(url=url, body=body, headers=headers)


# --------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What every message needs besides the alert: the host-screen link and the local zone for times."""

    tz: tzinfo
    screen_url: str = ""


@dataclass(frozen=True, slots=True)
class _Mentions:
    users: tuple[str, ...]
    mobiles: tuple[str, ...]
    everyone: bool

    @classmethod
    def of(cls, robot: RobotConfig) -> _Mentions:
        kinds = [(classify_mention(m), m) for m in robot.mentions]
        return cls(
            users=tuple(m for k, m in kinds if k == "user"),
            mobiles=tuple(m for k, m in kinds if k == "mobile"),
            everyone=any(k == "all" for k, _ in kinds),
        )


class _Dialect:
    """Markup of one (platform, format): how headings, labels, quotes, links and @s are written."""

    def __init__(self, robot: RobotConfig) -> None:
        self.robot = robot
        self.markdown = robot.format is MessageFormat.MARKDOWN and robot.kind is not RobotKind.WEBHOOK
        self.kind = robot.kind
        # DingTalk markdown joins single newlines into one paragraph; a blank line breaks.
        self.sep = "\n\n" if self.markdown and self.kind is RobotKind.DINGTALK else "\n"

    def heading(self, title: str, severity: Severity) -> str | None:
        label = SEVERITY_LABELS[severity]
        if not self.markdown:
            return f"{title} · {label}"
        if self.kind is RobotKind.FEISHU:
            return None  # the card header carries the title
        if self.kind is RobotKind.WECOM:
            return f'### {title} · <font color="{_WECOM_COLORS[severity]}">{label}</font>'
        return f"#### {title} · {label}"

    def label(self, name: str, value: str) -> str:
        return f"**{name}**：{value}" if self.markdown else f"{name}：{value}"

    def quote(self, line: str) -> str:
        if self.markdown and self.kind is not RobotKind.FEISHU:
            return f"> {line}"
        return f"  「{line}」"

    def meta(self, line: str) -> str:
        if self.markdown and self.kind is RobotKind.WECOM:
            return f'<font color="comment">{line}</font>'
        if self.markdown and self.kind is RobotKind.DINGTALK:
            return f"> {line}"
        return line

    def link(self, url: str) -> str | None:
        if not url:
            return None
        return f"[打开场控屏]({url})" if self.markdown else f"场控屏：{url}"

    def mention_line(self) -> str | None:
        """@s written into the content; the structured lists are added by the payload builder."""
        m = _Mentions.of(self.robot)
        parts: list[str] = []
        if self.kind is RobotKind.WECOM and self.markdown:
            parts = [f"<@{u}>" for u in m.users]
        elif self.kind is RobotKind.DINGTALK:
            parts = [f"@{x}" for x in (*m.mobiles, *m.users)]
        elif self.kind is RobotKind.FEISHU and self.markdown:
            parts = [f"<at id={u}></at>" for u in m.users] + (["<at id=all></at>"] if m.everyone else [])
        elif self.kind is RobotKind.FEISHU:
            parts = [f'<at user_id="{u}">{u}</at>' for u in m.users]
            if m.everyone:
                parts.append('<at user_id="all">所有人</at>')
        return " ".join(parts) or None


def _fit(dialect: _Dialect, head: list[str], body: list[str], tail: list[str], limit: int) -> str:
    """Join the parts; if too long, cut the body (never the id, the link or the @s) by UTF-8 bytes."""
    sep = dialect.sep
    content = sep.join([*head, *body, *tail])
    if _nbytes(content) <= limit:
        return content
    fixed = sep.join([*head, *tail])
    budget = limit - _nbytes(fixed) - 2 * _nbytes(sep)
    if budget <= 0:
        return truncate_utf8(content, limit)
    cut = truncate_utf8(sep.join(body), budget)
    return sep.join([*head, cut, *tail])


def _time_of(ts_ms: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz).strftime("%H:%M:%S")


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A platform body ready to sign, and which alerts it carries (one, or several folded into a digest)."""

    payload: dict[str, Any]
    alert_ids: tuple[str, ...]
    title: str
    content: str

    @property
    def is_digest(self) -> bool:
        return len(self.alert_ids) > 1


def render_alert(robot: RobotConfig, s: Suggestion, ctx: RenderContext) -> RenderedMessage:
    """One alert: what happened (reason with numbers), example comments, the suggested action, link, @s."""
    if robot.kind is RobotKind.WEBHOOK:
        return _webhook_alert(s, ctx)
    d = _Dialect(robot)
    sid = short_id(s.id)
    title = f"{KEYWORD}{alert_title(s)} #{sid}"
    heading = d.heading(title, s.severity)
    head = [heading] if heading else []
    # The id sits in the heading; a Feishu card's heading is its header, so its body repeats the id.
    meta = f"直播间 {s.room} · {_time_of(s.created_ts, ctx.tz)}" + ("" if heading else f" · #{sid}")
    head.append(d.meta(meta))
    body: list[str] = []
    if s.reason:
        body.append(d.label("情况", s.reason))
    examples = [_clip(e, _EXAMPLE_CHARS) for e in s.examples[:MAX_EXAMPLES] if e.strip()]
    if examples:
        body.append(d.label("例句", ""))
        body.extend(d.quote(e) for e in examples)
    if s.text:
        body.append(d.label("建议", s.text))
    if s.needs_review:
        body.append(d.label("置信度", f"{s.confidence:.0%}（请人工确认）"))
    tail = [t for t in (d.link(ctx.screen_url), d.mention_line()) if t]
    content = _fit(d, head, body, tail, content_limit(robot))
    payload = _platform_payload(robot, d, title, content, s.severity)
    return RenderedMessage(payload=payload, alert_ids=(s.id,), title=title, content=content)


def render_digest(robot: RobotConfig, items: Sequence[Suggestion], ctx: RenderContext) -> RenderedMessage:
    """Fold several alerts, in order, into one message: one line per alert with #id, rule and a short reason.

    Takes as many leading `items` as fit the platform's size limit (at least one); the caller sends the rest
    later. A single item renders as a normal alert.
    """
    if not items:
        raise ValueError("render_digest needs at least one alert")
    if len(items) == 1:
        return render_alert(robot, items[0], ctx)
    if robot.kind is RobotKind.WEBHOOK:
        # The generic body describes one alert; webhooks have no rate limit to fold for.
        return _webhook_alert(items[0], ctx)
    d = _Dialect(robot)
    severity = max((s.severity for s in items), key=lambda sev: SEVERITY_ORDER[sev])
    rooms = {s.room for s in items}
    tail = [t for t in (d.link(ctx.screen_url), d.mention_line()) if t]
    limit = content_limit(robot)
    lines: list[str] = []
    taken: list[Suggestion] = []
    for s in items:
        where = f"[{s.room}] " if len(rooms) > 1 else ""
        one_line = _clip(s.reason or s.text, _DIGEST_LINE_CHARS)
        bullet = "- " if d.markdown else "· "
        line = (
            f"{bullet}#{short_id(s.id)} {_time_of(s.created_ts, ctx.tz)} {where}{alert_title(s)}：{one_line}"
        )
        head = _digest_head(d, [*taken, s], rooms, severity)
        if taken and _nbytes(d.sep.join([*head, *lines, line, *tail])) > limit:
            break
        lines.append(line)
        taken.append(s)
    if len(taken) == 1:
        return render_alert(robot, taken[0], ctx)
    head = _digest_head(d, taken, rooms, severity)
    title = f"{KEYWORD}告警汇总 {len(taken)} 条 #{short_id(taken[0].id)}–#{short_id(taken[-1].id)}"
    content = _fit(d, head, lines, tail, limit)
    payload = _platform_payload(robot, d, title, content, severity)
    return RenderedMessage(
        payload=payload, alert_ids=tuple(s.id for s in taken), title=title, content=content
    )


def _digest_head(d: _Dialect, taken: Sequence[Suggestion], rooms: set[str], severity: Severity) -> list[str]:
    title = f"{KEYWORD}告警汇总 {len(taken)} 条"
    where = f"直播间 {next(iter(rooms))}" if len(rooms) == 1 else f"{len(rooms)} 个直播间"
    head = [h for h in (d.heading(title, severity),) if h]
    head.append(d.meta(f"{where} · 告警过快，已按时间顺序合并"))
    return head


def render_test(robot: RobotConfig, ctx: RenderContext, now_ms: int) -> RenderedMessage:
    """The `livebot alerts test` message."""
    s = Suggestion(
        id=hashlib.sha1(f"test|{robot.name}|{now_ms}".encode()).hexdigest()[:8],
        room="test",
        kind=SuggestionKind.ALERT,
        created_ts=now_ms,
        expires_ts=now_ms,
        text="无需处理：这是 livebot alerts test 发出的测试消息。",
        reason=f"机器人「{robot.name}」配置正常，能收到场控告警。",
        severity=Severity.INFO,
        rule="test",
    )
    return render_alert(robot, s, ctx)


def _platform_payload(
    robot: RobotConfig, d: _Dialect, title: str, content: str, severity: Severity
) -> dict[str, Any]:
    m = _Mentions.of(robot)
    if robot.kind is RobotKind.WECOM:
        if d.markdown:
            return {"msgtype": "markdown", "markdown": {"content": content}}
        text: dict[str, Any] = {"content": content}
        users = [*m.users, *(["@all"] if m.everyone else [])]
        if users:
            text["mentioned_list"] = users
        if m.mobiles:
            text["mentioned_mobile_list"] = list(m.mobiles)
        return {"msgtype": "text", "text": text}
    if robot.kind is RobotKind.DINGTALK:
        at = {"atMobiles": list(m.mobiles), "atUserIds": list(m.users), "isAtAll": m.everyone}
        if d.markdown:
            return {"msgtype": "markdown", "markdown": {"title": title, "text": content}, "at": at}
        return {"msgtype": "text", "text": {"content": content}, "at": at}
    if robot.kind is RobotKind.FEISHU:
        if d.markdown:
            return {
                "msg_type": "interactive",
                "card": {
                    "header": {
                        "title": {"tag": "plain_text", "content": f"{title} · {SEVERITY_LABELS[severity]}"},
                        "template": _FEISHU_TEMPLATES[severity],
                    },
                    "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": content}}],
                },
            }
        return {"msg_type": "text", "content": {"text": content}}
    raise ValueError(f"no chat payload for robot kind {robot.kind}")


def _webhook_alert(s: Suggestion, ctx: RenderContext) -> RenderedMessage:
    """This project's generic JSON body (spec §5)."""
    sid = short_id(s.id)
    title = f"{KEYWORD}{alert_title(s)} #{sid}"
    lines = [
        f"{title} · {SEVERITY_LABELS[s.severity]}",
        f"直播间 {s.room} · {_time_of(s.created_ts, ctx.tz)}",
    ]
    if s.reason:
        lines.append(f"情况：{s.reason}")
    examples = [_clip(e, _EXAMPLE_CHARS) for e in s.examples[:MAX_EXAMPLES] if e.strip()]
    if examples:
        lines.append("例句：" + " ".join(f"「{e}」" for e in examples))
    if s.text:
        lines.append(f"建议：{s.text}")
    if ctx.screen_url:
        lines.append(f"场控屏：{ctx.screen_url}")
    content = truncate_utf8("\n".join(lines), _CONTENT_LIMITS[(RobotKind.WEBHOOK, MessageFormat.TEXT)])
    count = s.data.get("count", 1)
    payload = {
        "id": s.id,
        "rule": s.rule or str(s.kind),
        "severity": _WEBHOOK_SEVERITY[s.severity],
        "room": s.room,
        "platform": str(s.data.get("platform", "")),
        "title": title,
        "text": content,
        "count": count if isinstance(count, int) else 1,
        "examples": [_clip(e, _EXAMPLE_CHARS * 2) for e in s.examples[:MAX_EXAMPLES]],
        "ts": s.created_ts,
    }
    return RenderedMessage(payload=payload, alert_ids=(s.id,), title=title, content=content)


# --------------------------------------------------------------------------------------------- answers


class Verdict(StrEnum):
    OK = "ok"
    RETRY = "retry"  # network error, 5xx, 429 or a platform rate-limit code: back off and retry
    SKEW = "skew"  # maybe clock skew (DingTalk invalid timestamp, Feishu 19021): retry once, then ROBOT
    MESSAGE = "message"  # this message was rejected (empty, too large): drop it, the robot keeps working
    ROBOT = "robot"  # the robot is misconfigured (key, token, signature, keyword, IP): stop until fixed
    UNKNOWN = "unknown"  # an answer we can't classify: retry a few times, then give up on the message


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, with the platform's own code and message for the log."""

    verdict: Verdict
    code: str = ""
    message: str = ""
    min_delay_s: float = 0.0
    """Wait at least this long before retrying (Retry-After, DingTalk's 10-minute throttle)."""

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    def describe(self) -> str:
        if self.ok:
            return "ok"
        return f"code={self.code} {self.message}".strip()


_DINGTALK_THROTTLE_S = 600.0  # "exceeding it throttles the robot for 10 minutes" (spec §2)

_WECOM_CODES: dict[int, Verdict] = {
    45009: Verdict.RETRY,  # api freq out of limit
    93000: Verdict.ROBOT,  # invalid webhook URL / robot removed from the group
    93004: Verdict.ROBOT,  # robot disabled
    93008: Verdict.ROBOT,  # robot not in the group
    44004: Verdict.MESSAGE,  # empty content
    40008: Verdict.MESSAGE,  # invalid message type
    40058: Verdict.MESSAGE,  # content too long (WeCom global error table)
}

_FEISHU_CODES: dict[int, Verdict] = {
    11232: Verdict.RETRY,  # frequency limited
    19021: Verdict.SKEW,  # sign match fail or timestamp is not within one hour
    19022: Verdict.ROBOT,  # Ip Not Allowed
    19024: Verdict.ROBOT,  # Key Words Not Found
    9499: Verdict.MESSAGE,  # Bad Request (malformed body or > 20 KB)
}


def _retry_after(headers: dict[str, str]) -> float:
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def classify_answer(kind: RobotKind, status: int, headers: dict[str, str], text: str) -> Outcome:
    """Decide success per platform from the HTTP status and the JSON answer (spec §6)."""
    if status == 429 or status >= 500:
        return Outcome(Verdict.RETRY, f"http {status}", _clip(text, 120), _retry_after(headers))
    if kind is RobotKind.WEBHOOK:
        if 200 <= status < 300:
            return Outcome(Verdict.OK, str(status))
        verdict = Verdict.ROBOT if status in (401, 403, 404, 405, 410) else Verdict.MESSAGE
        return Outcome(verdict, f"http {status}", _clip(text, 120))
    if status != 200:
        # A proxy or the platform refusing the URL itself (404 = wrong path): nothing a retry can fix.
        verdict = Verdict.ROBOT if status in (401, 403, 404, 405, 410) else Verdict.UNKNOWN
        return Outcome(verdict, f"http {status}", _clip(text, 120))
    data = _json_object(text)
    if data is None:
        return Outcome(Verdict.UNKNOWN, "http 200", "answer is not a JSON object: " + _clip(text, 80))
    if kind is RobotKind.FEISHU:
        return _classify_feishu(data)
    return _classify_errcode(kind, data)


def _classify_errcode(kind: RobotKind, data: dict[str, Any]) -> Outcome:
    code = data.get("errcode")
    message = str(data.get("errmsg", ""))
    if not isinstance(code, int):
        return Outcome(Verdict.UNKNOWN, "?", "answer has no errcode")
    if code == 0:
        return Outcome(Verdict.OK, "0", message)
    if kind is RobotKind.WECOM:
        return Outcome(_WECOM_CODES.get(code, Verdict.UNKNOWN), str(code), message)
    # DingTalk
    if code == 130101:
        return Outcome(Verdict.RETRY, str(code), message, _DINGTALK_THROTTLE_S)
    if code == 310000:
        verdict = Verdict.SKEW if "timestamp" in message.lower() else Verdict.ROBOT
        return Outcome(verdict, str(code), message)
    if 300000 <= code < 301000:  # token is not exist and friends
        return Outcome(Verdict.ROBOT, str(code), message)
    return Outcome(Verdict.UNKNOWN, str(code), message)


def _classify_feishu(data: dict[str, Any]) -> Outcome:
    if "code" in data:
        code, message = data.get("code"), str(data.get("msg", ""))
    else:  # older answers carry only StatusCode/StatusMessage
        code, message = data.get("StatusCode"), str(data.get("StatusMessage", ""))
    if not isinstance(code, int):
        return Outcome(Verdict.UNKNOWN, "?", "answer has no code")
    if code == 0:
        return Outcome(Verdict.OK, "0", message)
    return Outcome(_FEISHU_CODES.get(code, Verdict.UNKNOWN), str(code), message)


# --------------------------------------------------------------------------------------------- transport


class TransportError(Exception):
    """A request never got an HTTP answer (refused, reset, timeout). The text holds no URL or secret."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    text: str


class Transport(Protocol):
    """The robot I/O seam (like httpx's BaseTransport): one POST in, one answer out."""

    async def post(self, request: HttpRequest) -> HttpResponse:
        """Raises TransportError when no answer arrived."""
        ...


def redact_url(url: str) -> str:
    """Only scheme and host: WeCom/DingTalk keys live in the query and Feishu's in the path."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def scrubber(robot: RobotConfig) -> Callable[[str], str]:
    """A function that removes the robot's URL credentials and secret from any text (error messages)."""
    parts = urlsplit(robot.url)
    needles = [robot.url, parts.path, parts.query]
    needles += [value for _, _, value in (pair.partition("=") for pair in parts.query.split("&"))]
    needles += [seg for seg in parts.path.split("/") if len(seg) >= 8]
    if robot.secret:
        needles.append(robot.secret)
    needles = sorted({n for n in needles if len(n) >= 6}, key=len, reverse=True)

    def scrub(text: str) -> str:
        for needle in needles:
            text = text.replace(needle, "***")
        return text

    return scrub


class AiohttpTransport:
    """POSTs with aiohttp; translates aiohttp/OS errors into TransportError at this boundary."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def post(self, request: HttpRequest) -> HttpResponse:
        try:
            # encoded=True: the DingTalk sign is already percent-encoded and must not be encoded twice.
            async with self._session.post(
                yarl.URL(request.url, encoded=True),
                data=request.body,
                headers=request.headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                text = await resp.text(errors="replace")
                return HttpResponse(resp.status, dict(resp.headers), text)
        except TimeoutError as exc:
            raise TransportError("request timed out") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc

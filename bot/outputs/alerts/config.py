"""Config models for field-control chat alerts (`[alerts]`, `[[alerts.robots]]`, `[alerts.rooms.<room>]`).

Spec: ../shared/protocols/chat_alerts.md. bot/config.py embeds `AlertsConfig` as the `alerts` section.
"""

from __future__ import annotations

import re
from datetime import timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.advisors.base import Severity

_QUIET_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
_MOBILE_RE = re.compile(r"^\+?\d{6,15}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

ALL_MENTION = "all"


class RobotKind(StrEnum):
    WECOM = "wecom"  # 企业微信群机器人: key in the URL, no signing
    DINGTALK = "dingtalk"  # 钉钉自定义机器人: optional 加签 (timestamp + sign query)
    FEISHU = "feishu"  # 飞书自定义机器人: optional signature (timestamp + sign in the body)
    WEBHOOK = "webhook"  # this project's own JSON body, optional HMAC headers


class MessageFormat(StrEnum):
    MARKDOWN = "markdown"  # WeCom/DingTalk markdown, Feishu interactive card (lark_md)
    TEXT = "text"  # plain text everywhere


def parse_quiet_hours(value: str) -> tuple[int, int] | None:
    """`"23:30-08:00"` → (start, end) minutes after midnight; `""` → None (no quiet hours).

    Raises:
        ValueError: the value is not `HH:MM-HH:MM` or start equals end.
    """
    if value == "":
        return None
    m = _QUIET_RE.match(value.strip())
    if m is None:
        raise ValueError(f"quiet hours must look like '23:30-08:00' (HH:MM-HH:MM), got {value!r}")
    start = int(m.group(1)) * 60 + int(m.group(2))
    end = int(m.group(3)) * 60 + int(m.group(4))
    if start == end:
        raise ValueError(f"quiet hours start and end are equal ({value!r}); use '' for no quiet hours")
    return start, end


def classify_mention(mention: str) -> str:
    """'all' (or '@all'), 'mobile' (digits) or 'user' (a platform user id / open_id)."""
    if mention.lower() in (ALL_MENTION, "@all"):
        return "all"
    if _MOBILE_RE.match(mention):
        return "mobile"
    return "user"


def load_timezone(name: str) -> tzinfo:
    """Zone for quiet hours and message times; Asia/Shanghai works even without tzdata installed."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        if name in ("Asia/Shanghai", "UTC+8"):
            return timezone(timedelta(hours=8), "CST")
        if name == "UTC":
            return timezone.utc
        raise ValueError(f"unknown time zone {name!r}") from None


class RobotConfig(BaseModel):
    """One group-chat robot (`[[alerts.robots]]`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    """Unique robot name, used in logs, the outbox and `livebot alerts test` output (letters, digits, _.-)."""
    kind: RobotKind
    """Platform: wecom | dingtalk | feishu | webhook."""
    url: str = Field(min_length=8, max_length=2048)
    """The full webhook URL (any host, so a proxy or a local test server works). Secret: never logged."""
    secret: str | None = Field(default=None, min_length=1, max_length=512)
    """DingTalk 加签 secret (`SEC…`), Feishu signing secret, or the generic webhook HMAC key. Never logged."""
    mentions: tuple[str, ...] = ()
    """Who to @: platform user ids (WeCom userid, DingTalk userId, Feishu open_id), mobiles, or "all"."""
    rules: tuple[str, ...] = ("*",)
    """Alert rule names this robot receives; "*" = every alert. Non-alert suggestions are sent only when
    their kind (script_switch, coupon, prompt) is listed explicitly."""
    rooms: tuple[str, ...] = ("*",)
    """Rooms this robot serves; "*" = every room."""
    min_severity: Severity = Severity.INFO
    """Alerts below this severity are not sent to this robot."""
    format: MessageFormat = MessageFormat.MARKDOWN
    """markdown (WeCom/DingTalk markdown, Feishu card) or text. WeCom markdown can only @ user ids."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"robot name {v!r} may only hold letters, digits, '_', '.', '-'")
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Don't echo the URL: it usually carries the robot's key.
            raise ValueError("url must be an absolute http(s) URL")
        return v

    @field_validator("rules", "rooms")
    @classmethod
    def _check_non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(not item for item in v):
            raise ValueError('must be a non-empty list of names (or ["*"])')
        return v

    @model_validator(mode="after")
    def _check_mentions(self) -> RobotConfig:
        kinds = {classify_mention(m) for m in self.mentions}
        if self.kind is RobotKind.WECOM and self.format is MessageFormat.MARKDOWN and kinds - {"user"}:
            raise ValueError(
                'WeCom markdown messages can only @ user ids; use format = "text" to @all or @ a mobile'
            )
        if self.kind is RobotKind.FEISHU and "mobile" in kinds:
            raise ValueError("Feishu robots @ members by open_id/user_id, not by mobile")
        if self.kind is RobotKind.WECOM and self.secret is not None:
            raise ValueError(
                "WeCom group robots have no signing secret: the key in the url is the credential"
            )
        if self.kind is RobotKind.WEBHOOK and self.mentions:
            raise ValueError("generic webhook robots have no @mentions")
        if self.kind is RobotKind.DINGTALK and self.secret is not None and not self.secret.startswith("SEC"):
            raise ValueError("a DingTalk 加签 secret starts with 'SEC'")
        return self

    def wants(self, key: str, *, is_alert: bool) -> bool:
        """Does this robot take suggestions with routing key `key` (alert rule, or suggestion kind)?"""
        if key in self.rules:
            return True
        return is_alert and "*" in self.rules

    def serves(self, room: str) -> bool:
        return "*" in self.rooms or room in self.rooms


class RoomAlertsConfig(BaseModel):
    """Per-room overrides (`[alerts.rooms.<room>]`); unset fields inherit the `[alerts]` values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quiet_hours: str | None = None
    """Overrides `alerts.quiet_hours` for this room ("" = never quiet)."""
    min_severity: Severity | None = None
    """Raises the bar for this room on top of each robot's own `min_severity`."""
    robots: tuple[str, ...] | None = None
    """Only these robots (by name) get this room's alerts; unset = every robot whose `rooms` match."""

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet(cls, v: str | None) -> str | None:
        if v is not None:
            parse_quiet_hours(v)
        return v


class AlertsConfig(BaseModel):
    """The `[alerts]` section: robots, quiet hours, the outbox and delivery tuning."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    robots: tuple[RobotConfig, ...] = ()
    """`[[alerts.robots]]` entries; empty = chat alerts off."""
    quiet_hours: str = ""
    """Local time range without alerts, e.g. "23:30-08:00"; a room that is live is never silenced."""
    timezone: str = "Asia/Shanghai"
    """Zone for quiet hours and the times printed in messages."""
    screen_url: str = ""
    """Link to the host screen (control view) added to every message; "" = no link."""
    outbox: str | None = None
    """SQLite file of the outbox; unset = the store's file (table `alert_outbox`)."""
    flush_timeout_s: Annotated[float, Field(ge=0, le=120)] = 5.0
    """On stop, how long to keep delivering what is pending before leaving it for the next start."""
    retry_base_s: Annotated[float, Field(gt=0, le=600)] = 2.0
    """First retry delay after a network error, 5xx or rate-limit answer; doubles per failure, with jitter."""
    retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """Cap of the retry delay."""
    request_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """Total timeout of one HTTP request to a robot."""
    rooms: dict[str, RoomAlertsConfig] = Field(default_factory=dict)
    """Per-room overrides, keyed by room id."""

    @field_validator("quiet_hours")
    @classmethod
    def _check_quiet(cls, v: str) -> str:
        parse_quiet_hours(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _check_tz(cls, v: str) -> str:
        load_timezone(v)
        return v

    @field_validator("screen_url")
    @classmethod
    def _check_screen_url(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"screen_url must be an http(s) URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_names(self) -> AlertsConfig:
        names = [r.name for r in self.robots]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"robot names must be unique, repeated: {', '.join(dupes)}")
        for room, override in self.rooms.items():
            unknown = sorted(set(override.robots or ()) - set(names))
            if unknown:
                raise ValueError(f"rooms.{room}.robots names unknown robots: {', '.join(unknown)}")
        return self

"""The one record every source produces (DESIGN.md *Interfaces*); nothing downstream knows a platform."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    CHAT = "chat"
    GIFT = "gift"
    LIKE = "like"
    ENTER = "enter"
    FOLLOW = "follow"
    SHARE = "share"
    STATS = "stats"
    SYSTEM = "system"


class SystemEvent(StrEnum):
    LIVE_START = "live_start"
    LIVE_END = "live_end"
    SOURCE_UP = "source_up"
    SOURCE_DOWN = "source_down"


STATS_KEYS = ("online", "viewers_total", "likes_total")

PLATFORM_LABELS: dict[str, str] = {
    "douyin": "抖音", "taobao": "淘宝", "kuaishou": "快手", "bilibili": "B站", "channels": "视频号",
    "xiaohongshu": "小红书", "jd": "京东", "pinduoduo": "拼多多", "tiktok": "TikTok", "custom": "其他平台",
}
"""Chinese names of the platforms for the host, field control and alerts (the screens' common.js holds the
same map; a test compares them)."""


def platform_label(platform: str) -> str:
    return PLATFORM_LABELS.get(platform, platform)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a live room."""

    platform: str
    """Lowercase source name: bilibili, douyin, kuaishou, taobao, simulator, ..."""
    room: str
    """Room key (livebot's room name; several platforms may feed one merged room)."""
    kind: EventKind
    ts: int
    """Source time, Unix milliseconds."""
    received_ts: int
    """Receive time from the Clock, Unix milliseconds."""
    msg_id: str | None = None
    """Source message id; duplicates after a reconnect are dropped by it."""
    user_id: str | None = None
    """Salted hash of the platform user id (bot.privacy), never the raw id."""
    user_name: str | None = None
    """Nickname, only when privacy.store_names is on."""
    text: str = ""
    count: int = 1
    value: float = 0.0
    """Money value in CNY yuan."""
    gift_name: str | None = None
    stats: Mapping[str, int] | None = field(default=None, hash=False)
    event: str | None = None
    """System event name (SystemEvent values; others are informational)."""

    def to_json(self) -> dict[str, Any]:
        """The replay-JSONL object: generic JSON format with the hashed user id, plus received_ts."""
        obj: dict[str, Any] = {
            "platform": self.platform,
            "room": self.room,
            "kind": str(self.kind),
            "ts": self.ts,
            "received_ts": self.received_ts,
        }
        if self.msg_id is not None:
            obj["id"] = self.msg_id
        if self.user_id is not None:
            user: dict[str, Any] = {"id": self.user_id}
            if self.user_name is not None:
                user["name"] = self.user_name
            obj["user"] = user
        if self.text:
            obj["text"] = self.text
        if self.count != 1:
            obj["count"] = self.count
        if self.value:
            obj["value"] = self.value
        if self.gift_name is not None:
            obj["gift"] = {"name": self.gift_name}
        if self.stats is not None:
            obj["stats"] = dict(self.stats)
        if self.event is not None:
            obj["event"] = self.event
        return obj

    def to_line(self) -> str:
        """One compact JSON line with no raw newline (protocols/generic_json.md)."""
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))

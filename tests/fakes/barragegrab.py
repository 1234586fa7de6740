"""A fake DouyinBarrageGrab push socket speaking its real JSON-in-JSON envelope.

Messages are built from the examples of protocols/douyin_barragegrab.md §4: the Type 1 and Type 6 strings
are the spec's verbatim, the others are derived exactly as the spec describes (take Type 1's `Data`, change
`MsgId`/`Content`, add the listed keys, re-serialize `Data` into the envelope with the new `Type`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.fakes.generic_push import PushServer

EXAMPLE_TYPE1 = (
    '{"Type":1,"ProcessName":"chrome","Data":"{\\"MsgId\\":7400000000000000101,\\"User\\":{\\"Id\\":100000001,'
    '\\"IsAdmin\\":false,\\"IsAnchor\\":false,\\"ShortId\\":0,\\"DisplayId\\":\\"demo_viewer_01\\",'
    '\\"Nickname\\":\\"示例观众甲\\",\\"Level\\":0,\\"PayLevel\\":12,\\"Gender\\":2,'
    '\\"HeadImgUrl\\":\\"https://example.invalid/avatar/100000001.jpeg\\",'
    '\\"SecUid\\":\\"MS4wLjABAAAAexample100000001\\",\\"FansClub\\":{\\"ClubName\\":\\"示例团\\",\\"Level\\":3},'
    '\\"FollowerCount\\":35,\\"FollowStatus\\":0,\\"FollowingCount\\":120},\\"Owner\\":{\\"UserId\\":\\"900000000001\\",'
    '\\"SecUid\\":\\"MS4wLjABAAAAanchorExample\\",\\"Nickname\\":\\"示例主播\\",'
    '\\"HeadUrl\\":\\"https://example.invalid/avatar/anchor.jpeg\\",\\"FollowStatus\\":0},'
    '\\"Onwer\\":\\"该字段存在拼写错误，请修正为 ‘Owner’ 后使用\\",\\"Content\\":\\"这个有大码吗\\",'
    '\\"RoomId\\":\\"7400000000000000001\\",\\"WebRoomId\\":\\"123456789012\\",\\"RoomTitle\\":\\"示例直播间\\",'
    '\\"IsAnonymous\\":false,\\"Appid\\":\\"1128\\"}"}'
)
EXAMPLE_TYPE6 = (
    '{"Type":6,"ProcessName":"chrome","Data":"{\\"MsgId\\":7400000000000000106,\\"User\\":null,'
    '\\"Owner\\":{\\"UserId\\":\\"900000000001\\",\\"SecUid\\":\\"MS4wLjABAAAAanchorExample\\",'
    '\\"Nickname\\":\\"示例主播\\",\\"HeadUrl\\":\\"https://example.invalid/avatar/anchor.jpeg\\",'
    '\\"FollowStatus\\":0},\\"Onwer\\":\\"该字段存在拼写错误，请修正为 ‘Owner’ 后使用\\",'
    '\\"Content\\":\\"当前直播间人数 842，累计直播间人数 1.2万\\",\\"RoomId\\":\\"7400000000000000001\\",'
    '\\"WebRoomId\\":\\"123456789012\\",\\"RoomTitle\\":\\"示例直播间\\",\\"IsAnonymous\\":false,'
    '\\"Appid\\":\\"1128\\",\\"OnlineUserCount\\":842,\\"TotalUserCount\\":12034,'
    '\\"TotalUserCountStr\\":\\"1.2万\\",\\"OnlineUserCountStr\\":\\"842\\"}"}'
)

VIEWER_ID = 100000001
VIEWER_NAME = "示例观众甲"
ANCHOR_USER_ID = "900000000001"
WEB_ROOM_ID = "123456789012"
ROOM_ID = "7400000000000000001"
MSG_ID_BASE = 7400000000000000100

# Spec §4: the keys each Type adds to (or changes in) Type 1's Data.
_TYPE_CHANGES: dict[int, dict[str, Any]] = {
    1: {},
    2: {"Content": "示例观众甲 为主播点了15个赞，总点赞3021", "Count": 15, "Total": 3021},
    3: {"Content": "示例观众甲 $来了 直播间人数:842", "CurrentCount": 842, "EnterTipType": 0},
    4: {"Content": "示例观众甲 关注了主播"},
    5: {
        "Content": "示例观众甲 送出 小心心(可连击) x 3个，增量2个",
        "GiftId": 5655,
        "GiftName": "小心心",
        "GroupId": 1700000000123,
        "GiftCount": 2,
        "RepeatCount": 3,
        "DiamondCount": 1,
        "Combo": True,
        "ImgUrl": "https://example.invalid/gift/5655.png",
        "ToUser": None,
    },
    6: {
        "User": None,
        "Content": "当前直播间人数 842，累计直播间人数 1.2万",
        "OnlineUserCount": 842,
        "TotalUserCount": 12034,
        "TotalUserCountStr": "1.2万",
        "OnlineUserCountStr": "842",
    },
    7: {"Content": "恭喜 示例观众甲 成为第3级粉丝团成员", "Type": 1, "Level": 3},
    8: {"Content": "示例观众甲 分享了直播间到微信", "ShareType": 1},
    9: {"User": None, "Content": "直播已结束"},
}
TYPES = tuple(_TYPE_CHANGES)
_V279_ONLY_DATA = ("RoomTitle", "IsAnonymous", "Appid", "EnterTipType")
_V279_ONLY_USER = ("IsAdmin", "IsAnchor")


def example_data(type_: int, *, version: str = "2.7.9", **changes: Any) -> dict[str, Any]:
    """The inner `Data` object of the spec's example for `type_`, with `changes` applied last."""
    data: dict[str, Any] = json.loads(json.loads(EXAMPLE_TYPE1)["Data"])
    data["MsgId"] = MSG_ID_BASE + type_
    data.update(copy.deepcopy(_TYPE_CHANGES[type_]))
    if version == "2.7.6":
        for key in _V279_ONLY_DATA:
            data.pop(key, None)
        if isinstance(data.get("User"), dict):
            for key in _V279_ONLY_USER:
                data["User"].pop(key, None)
        data["Onwer"] = data.pop("Owner")  # the misspelt key held the anchor object before v2.7.9
    elif version != "2.7.9":
        raise ValueError(f"no fixture for BarrageGrab {version}")
    data.update(changes)
    return data


def envelope(type_: int, data: dict[str, Any] | str | None, *, process: str = "chrome") -> str:
    """One push message as BarrageGrab sends it: compact JSON, non-ASCII unescaped, `Data` a string."""
    inner = data if isinstance(data, str) or data is None else _compact(data)
    return _compact({"Type": type_, "ProcessName": process, "Data": inner})


def example_message(type_: int, *, version: str = "2.7.9", **changes: Any) -> str:
    return envelope(type_, example_data(type_, version=version, **changes))


def _compact(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


class FakeBarrageGrab(PushServer):
    """BarrageGrab's push socket: any path is accepted; no auth; every client gets every message."""

    def __init__(self, *, replay_on_connect: int = 0) -> None:
        super().__init__(path="/", replay_on_connect=replay_on_connect)

    def _route(self) -> str:
        return "/{tail:.*}"

    async def push_example(self, type_: int, *, version: str = "2.7.9", **changes: Any) -> None:
        await self.push(example_message(type_, version=version, **changes))

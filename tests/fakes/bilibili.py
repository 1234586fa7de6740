"""A fake Bilibili live backend speaking the byte-exact protocol of ../shared/protocols/bilibili.md.

One aiohttp app on 127.0.0.1, port 0, serves both halves:
- bootstrap HTTP (§6): `nav` (WBI key material; logged in when the request carries the configured SESSDATA),
  `/` (sets `buvid3`), `room/v1/Room/get_info` (short → real id), `getDanmuInfo` (checks the WBI signature,
  answers -352 when it is wrong, issues a fresh token `tk1`, `tk2`, … per call);
- the danmaku websocket on `/sub` (§3–§4): checks the AUTH packet byte by byte and its JSON fields, replies
  AUTH_REPLY, answers every HEARTBEAT with a HEARTBEAT_REPLY carrying the echo quirk, and pushes whatever
  frames a test hands it (`push`), including malformed ones (`MALFORMED`); `drop()` closes the live socket.

Packets and frames are built here with the spec's own recipe (`packet`), independently of
`bot.sources.bilibili_wire`, so the fake can catch a codec bug instead of sharing it. Anything the client
gets wrong is recorded in `violations`; tests assert it stays empty.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import urllib.parse
import zlib
from collections.abc import Mapping
from typing import Any

import brotli
from aiohttp import WSMsgType, web

HEADER = struct.Struct(">IHHII")

# --- the spec's fixture recipe (bilibili.md §8) ---------------------------------------------------


def packet(op: int, body: bytes, ver: int = 0, seq: int = 0) -> bytes:
    return HEADER.pack(16 + len(body), 16, ver, op, seq) + body


def body(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def plain_frame(*objs: Mapping[str, Any]) -> bytes:
    """Several op-5 ver-0 packets back to back in one websocket message."""
    return b"".join(packet(5, body(obj)) for obj in objs)


def zlib_frame(*objs: Mapping[str, Any]) -> bytes:
    return packet(5, zlib.compress(plain_frame(*objs)), ver=2)


def brotli_frame(*objs: Mapping[str, Any]) -> bytes:
    return packet(5, brotli.compress(plain_frame(*objs)), ver=3)


AUTH_REPLY_OK = packet(8, b'{"code":0}', ver=1, seq=1)
AUTH_REPLY_TOKEN_ERROR = packet(8, b'{"code":-101}', ver=1, seq=1)


def heartbeat_reply(popularity: int, echo: bytes) -> bytes:
    # pack_len says 20, but the server appends the client's heartbeat body (bilibili.md §2 quirk).
    return HEADER.pack(20, 16, 1, 3, 0) + popularity.to_bytes(4, "big") + echo


_GOOD_INNER = packet(5, b'{"cmd":"ONLINE_RANK_COUNT","data":{"count":1}}')
MALFORMED: dict[str, bytes] = {
    "truncated_header": bytes.fromhex("0000003f00100000"),
    "lying_length": HEADER.pack(500, 16, 0, 5, 0) + b'{"cmd":"ONLINE_RANK_COUNT","data":{"count":1}}',
    "short_length": HEADER.pack(8, 16, 0, 5, 0) + b"{}",
    "bad_zlib": packet(5, b"\x78\x9c not a zlib stream", ver=2),
    "truncated_zlib": packet(5, zlib.compress(_GOOD_INNER)[:-6], ver=2),
    "bad_brotli": packet(5, b"\xff\xfe definitely not brotli", ver=3),
    "non_json": packet(5, "这不是JSON {".encode()),
    "not_an_object": packet(5, b"[1, 2, 3]"),
    "no_cmd": packet(5, b'{"data": {}}'),
    "unknown_op": packet(99, b'{"cmd":"X"}'),
    "unknown_ver": packet(5, b'{"cmd":"X"}', ver=7),
}
"""Frames that break the wire format, one way each (named for the test ids)."""

# --- command fixtures (bilibili.md §7–§8) -----------------------------------------------------------

DANMU_MSG_SPEC = json.loads(
    r"""{"cmd":"DANMU_MSG","dm_v2":"","info":[
 [0,1,25,16777215,1767225600123,1767225600,0,"9f8e7d6c",0,0,0,"",0,"{}","{}",
  {"extra":"{\"send_from_me\":false,\"mode\":0,\"color\":16777215,\"dm_type\":0,\"font_size\":25,\"content\":\"这个链接多少钱？\",\"id_str\":\"a1b2c3d4e5f60718293a4b5c6d7e8f90\",\"reply_mid\":0}",
   "mode":0,"show_player_type":0,
   "user":{"uid":12345678,"base":{"name":"示例观众小林","face":"https://example.invalid/face/12345678.jpg","is_mystery":false,"name_color":0,"name_color_str":""},
           "medal":{"name":"示例团","level":12,"guard_level":3,"ruid":87654321,"color":1725515,"is_light":1}}},
  {"activity_identity":"","activity_source":0,"not_show":0},0],
 "这个链接多少钱？",
 [12345678,"示例观众小林",0,0,0,10000,1,""],
 [12,"示例团","示例主播",1017,1725515,"",0,6809855,1725515,5414290,3,1,87654321],
 [21,0,5805790,">50000",0],["",""],0,3,null,{"ts":1767225600,"ct":"ABCDEF12"},0,0,null,null,0,105,[10],null]}"""
)
"""The invented DANMU_MSG of bilibili.md §8, verbatim."""

INTERACT_WORD_V2_SPEC_PB = (
    "CM7C8QUSEuekuuS+i+inguS8l+Wwj+aelygBMPkHOITy1soGsgFGCM7C8QUSPwoS56S65L6L6KeC5LyX5bCP5p6XEilodHRwczovL2V4"
    "YW1wbGUuaW52YWxpZC9mYWNlLzEyMzQ1Njc4LmpwZw=="
)
"""INTERACT_WORD_V2 `pb` of bilibili.md §8: uid 12345678, msg_type 1 (enter), room 1017, ts 1767225604."""


def danmu(
    text: str, *, id_str: str | None, uid: int = 12345678, ts_ms: int = 1767225600123
) -> dict[str, Any]:
    """A DANMU_MSG in the spec's layout with a different text, sender and message id."""
    msg = json.loads(json.dumps(DANMU_MSG_SPEC))
    extra = json.loads(msg["info"][0][15]["extra"])
    extra["content"] = text
    if id_str is None:
        del extra["id_str"]
    else:
        extra["id_str"] = id_str
    msg["info"][0][15]["extra"] = json.dumps(extra, ensure_ascii=False)
    msg["info"][0][4] = ts_ms
    msg["info"][1] = text
    msg["info"][2][0] = uid
    return msg


def send_gift(
    *, tid: str, num: int = 1, price: int = 1000, coin_type: str = "gold", uid: int = 222
) -> dict[str, Any]:
    return {
        "cmd": "SEND_GIFT",
        "data": {
            "uid": uid,
            "uname": "送礼的人",
            "face": "https://example.invalid/f.jpg",
            "giftName": "小花花",
            "giftId": 31036,
            "num": num,
            "price": price,
            "total_coin": price * num,
            "coin_type": coin_type,
            "action": "投喂",
            "timestamp": 1767225601,
            "guard_level": 0,
            "rnd": "1767225601",
            "tid": tid,
            "batch_combo_id": "",
            "blind_gift": None,
        },
    }


def guard_buy(*, level: int = 3, num: int = 1, price: int = 198_000, uid: int = 333) -> dict[str, Any]:
    return {
        "cmd": "GUARD_BUY",
        "data": {
            "uid": uid,
            "username": "上舰的人",
            "guard_level": level,
            "num": num,
            "price": price,
            "gift_id": 10003,
            "gift_name": "舰长",
            "start_time": 1767225602,
            "end_time": 1767225602,
        },
    }


def super_chat(
    *, sc_id: int = 9001, price: int = 30, message: str = "主播这件有S码吗", uid: int = 444
) -> dict[str, Any]:
    return {
        "cmd": "SUPER_CHAT_MESSAGE",
        "roomid": 1017,
        "data": {
            "id": sc_id,
            "uid": uid,
            "price": price,
            "message": message,
            "message_trans": "",
            "start_time": 1767225603,
            "end_time": 1767225663,
            "time": 60,
            "user_info": {"uname": "留言的人", "face": "https://example.invalid/f.jpg", "guard_level": 0},
            "gift": {"gift_id": 12000, "gift_name": "醒目留言"},
        },
    }


def interact_word(msg_type: int, *, uid: int = 555) -> dict[str, Any]:
    return {
        "cmd": "INTERACT_WORD",
        "data": {
            "uid": uid,
            "uname": "路过的人",
            "msg_type": msg_type,
            "timestamp": 1767225605,
            "roomid": 1017,
        },
    }


def interact_word_v2(pb: str = INTERACT_WORD_V2_SPEC_PB) -> dict[str, Any]:
    return {"cmd": "INTERACT_WORD_V2", "data": {"dmscore": 10, "pb": pb}}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _pb(*fields: tuple[int, int | str | bytes]) -> bytes:
    """Minimal protobuf writer for fixtures: ints are varints, str/bytes length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            raw = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return bytes(out)


def send_gift_v2_pb(*items: Mapping[str, Any], uid: int = 666, uname: str = "新版送礼") -> str:
    """SendGiftBroadcast (bilibili.md §7): 1 uid, 2 uname, 10 repeated item; base64 as in `data.pb`."""
    encoded_items = [
        _pb(
            (1, item.get("gift_id", 31036)),
            (2, item["gift_name"]),
            (3, item.get("num", 1)),
            (5, item.get("price", 1000)),
            (7, item.get("total_coin", item.get("price", 1000) * item.get("num", 1))),
            (8, item.get("coin_type", "gold")),
            (9, item["tid"]),
            (10, item.get("timestamp", 1767225606)),
            (18, "投喂"),
            (35, _pb((1, "https://example.invalid/gift.png"))),
        )
        for item in items
    ]
    message = _pb(
        (1, uid), (2, uname), (3, "https://example.invalid/f.jpg"), *((10, i) for i in encoded_items)
    )
    return base64.b64encode(message).decode()


def send_gift_v2(*items: Mapping[str, Any], uid: int = 666) -> dict[str, Any]:
    return {"cmd": "SEND_GIFT_V2", "data": {"pb": send_gift_v2_pb(*items, uid=uid)}}


def like_click(*, uid: int = 777) -> dict[str, Any]:
    return {
        "cmd": "LIKE_INFO_V3_CLICK",
        "data": {
            "uid": uid,
            "uname": "点赞的人",
            "like_text": "为主播点赞了",
            "msg_type": 6,
            "fans_medal": {},
        },
    }


def like_update(click_count: int) -> dict[str, Any]:
    return {"cmd": "LIKE_INFO_V3_UPDATE", "data": {"click_count": click_count}}


def watched_change(num: int) -> dict[str, Any]:
    text = f"{num / 10000:.1f}万" if num >= 10000 else str(num)
    return {"cmd": "WATCHED_CHANGE", "data": {"num": num, "text_small": text, "text_large": f"{text}人看过"}}


def online_rank_count(count: int) -> dict[str, Any]:
    return {"cmd": "ONLINE_RANK_COUNT", "data": {"count": count, "count_text": str(count)}}


def live(live_key: str = "584931201234567890") -> dict[str, Any]:
    return {
        "cmd": "LIVE",
        "live_key": live_key,
        "live_platform": "pc",
        "roomid": 1017,
        "live_time": 1767225500,
    }


def preparing() -> dict[str, Any]:
    return {"cmd": "PREPARING", "roomid": "1017", "round": 0, "send_time": 1767229200123}


# --- WBI (bilibili.md §6), written independently of bot.sources.bilibili_wire ------------------------

WBI_IMG_URL = "https://i0.hdslb.com/bfs/wbi/7cd084941338484aae1ad9425b84077c.png"
WBI_SUB_URL = "https://i0.hdslb.com/bfs/wbi/4932caff0ff746eab6f01bf08b70ac45.png"
_MIXIN_ORDER = [46, 47, 18, 2, 53, 8, 23, 32, 15, 50, 10, 31, 58, 3, 45, 35]
_MIXIN_ORDER += [27, 43, 5, 49, 33, 9, 42, 19, 29, 28, 14, 39, 12, 38, 41, 13]


def _mixin() -> str:
    raw = WBI_IMG_URL.rsplit("/", 1)[1].split(".")[0] + WBI_SUB_URL.rsplit("/", 1)[1].split(".")[0]
    return "".join(raw[i] for i in _MIXIN_ORDER)


def wbi_signature_ok(query: Mapping[str, str]) -> bool:
    params = {k: v for k, v in query.items() if k != "w_rid"}
    if "wts" not in params or "w_rid" not in query:
        return False
    cleaned = {k: "".join(c for c in params[k] if c not in "!'()*") for k in sorted(params)}
    expected = hashlib.md5((urllib.parse.urlencode(cleaned) + _mixin()).encode()).hexdigest()
    return query["w_rid"] == expected


# --- the server --------------------------------------------------------------------------------------


class FakeBilibili:
    """Bootstrap endpoints + danmaku websocket on 127.0.0.1:<port 0>. Use as an async context manager."""

    def __init__(
        self,
        *,
        room_id: int = 1017,
        short_id: int = 1,
        anchor_uid: int = 87654321,
        sessdata: str | None = None,
        viewer_mid: int = 24680,
        buvid: str = "FAKE-BUVID3-0001infoc",
        fail_room_init: bool = False,
        fail_danmu_info: bool = False,
        reject_auths: int = 0,
        silent_auths: int = 0,
        answer_heartbeats: bool = True,
        popularity: int = 1,
        stale_wbi_key: bool = False,
    ) -> None:
        self.room_id = room_id
        self.short_id = short_id
        self.anchor_uid = anchor_uid
        self.sessdata = sessdata
        self.viewer_mid = viewer_mid
        self.buvid = buvid
        self.fail_room_init = fail_room_init
        self.fail_danmu_info = fail_danmu_info
        self.reject_auths = reject_auths
        """Reply code -101 to this many of the next AUTH packets."""
        self.silent_auths = silent_auths
        """Never reply to this many of the next AUTH packets (the client must time out)."""
        self.answer_heartbeats = answer_heartbeats
        self.popularity = popularity
        self.stale_wbi_key = stale_wbi_key
        """Serve WBI key material in nav that getDanmuInfo does not accept (signatures fail with -352)."""

        self.requests: list[tuple[str, dict[str, str], str]] = []
        """(path, query, Cookie header) of every HTTP request."""
        self.tokens: list[str] = []
        self.auths: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.heartbeat_bodies: list[bytes] = []
        self.connections = 0
        self.violations: list[str] = []
        self.ws_headers: list[dict[str, str]] = []
        self._accepted = 0

        self._live: list[web.WebSocketResponse] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/x/web-interface/nav", self._nav)
        app.router.add_get("/", self._home)
        app.router.add_get("/room/v1/Room/get_info", self._room_init)
        app.router.add_get("/xlive/web-room/v1/index/getDanmuInfo", self._danmu_info)
        app.router.add_get("/sub", self._sub)
        app.on_shutdown.append(self._close_sockets)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeBilibili:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/sub"

    # control

    async def wait_for(self, predicate: Any, timeout: float = 3.0) -> None:
        """Wait until `predicate()` holds (checked whenever the fake's state changes)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def wait_authed(self, count: int = 1, timeout: float = 3.0) -> None:
        """Wait until `count` connections have been accepted (AUTH_REPLY OK sent) and one is live."""
        await self.wait_for(lambda: self._accepted >= count and bool(self._live), timeout)

    async def push(self, frame: bytes) -> None:
        """Send one websocket binary message on the live (most recent) connection."""
        if not self._live:
            raise AssertionError("no live connection to push to")
        await self._live[-1].send_bytes(frame)

    async def drop(self) -> None:
        """Close the live connection from the server side."""
        if self._live:
            ws = self._live.pop()
            await ws.close()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # HTTP

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.path, dict(request.query), request.headers.get("Cookie", "")))

    def _cookies(self, request: web.Request) -> dict[str, str]:
        return dict(request.cookies)

    async def _nav(self, request: web.Request) -> web.Response:
        self._record(request)
        img_url = WBI_IMG_URL.replace("7cd0", "0000") if self.stale_wbi_key else WBI_IMG_URL
        data: dict[str, Any] = {"wbi_img": {"img_url": img_url, "sub_url": WBI_SUB_URL}}
        if self.sessdata is not None and self._cookies(request).get("SESSDATA") == self.sessdata:
            data.update(isLogin=True, mid=self.viewer_mid, uname="已登录的场控")
            return web.json_response({"code": 0, "message": "0", "data": data})
        data["isLogin"] = False
        return web.json_response({"code": -101, "message": "账号未登录", "data": data})

    async def _home(self, request: web.Request) -> web.Response:
        self._record(request)
        response = web.Response(text="<!DOCTYPE html><title>bilibili</title>", content_type="text/html")
        response.set_cookie("buvid3", self.buvid, path="/")
        response.set_cookie("b_nut", "1767225600", path="/")
        return response

    async def _room_init(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.fail_room_init:
            return web.Response(status=500, text="upstream error")
        asked = request.query.get("room_id", "")
        if asked not in (str(self.room_id), str(self.short_id)):
            return web.json_response({"code": 1, "message": "未找到该房间", "data": None})
        data = {"room_id": self.room_id, "short_id": self.short_id, "uid": self.anchor_uid, "live_status": 1}
        return web.json_response({"code": 0, "msg": "ok", "message": "ok", "data": data})

    async def _danmu_info(self, request: web.Request) -> web.Response:
        self._record(request)
        query = dict(request.query)
        if self.fail_danmu_info:
            return web.json_response({"code": 65530, "message": "token错误", "data": None})
        if not wbi_signature_ok(query):
            return web.json_response({"code": -352, "message": "-352", "data": {"v_voucher": "voucher"}})
        if query.get("id") != str(self.room_id) or query.get("type") != "0":
            self.violations.append(f"getDanmuInfo asked for id={query.get('id')} type={query.get('type')}")
        token = f"tk{len(self.tokens) + 1}"
        self.tokens.append(token)
        host = {"host": "127.0.0.1", "port": self.port, "wss_port": self.port, "ws_port": self.port}
        return web.json_response({"code": 0, "message": "0", "data": {"token": token, "host_list": [host]}})

    # websocket

    def _check_auth(self, data: bytes) -> dict[str, Any] | None:
        if len(data) < 16:
            self.violations.append(f"auth packet of {len(data)} bytes")
            return None
        pack_len, header_len, ver, op, seq = HEADER.unpack_from(data)
        wrong = [
            f"{name}={got} (want {want})"
            for name, got, want in (
                ("pack_len", pack_len, len(data)),
                ("header_len", header_len, 16),
                ("ver", ver, 1),
                ("op", op, 7),
                ("seq", seq, 1),
            )
            if got != want
        ]
        try:
            auth = json.loads(data[16:])
        except ValueError:
            self.violations.append("auth body is not JSON")
            return None
        expected_types = {
            "uid": int,
            "roomid": int,
            "protover": int,
            "platform": str,
            "type": int,
            "buvid": str,
        }
        for key, type_ in expected_types.items():
            if not isinstance(auth.get(key), type_):
                wrong.append(f"auth.{key}={auth.get(key)!r}")
        if auth.get("roomid") != self.room_id:
            wrong.append(f"auth.roomid={auth.get('roomid')} (want the real id {self.room_id})")
        if (auth.get("protover"), auth.get("platform"), auth.get("type")) != (3, "web", 2):
            trio = (auth.get("protover"), auth.get("platform"), auth.get("type"))
            wrong.append(f"auth protover/platform/type={trio}")
        if auth.get("uid") not in (0, self.viewer_mid if self.sessdata else 0):
            wrong.append(f"auth.uid={auth.get('uid')} is not the cookie owner")
        if "key" in auth and not isinstance(auth["key"], str):
            wrong.append("auth.key is not a string")
        if wrong:
            self.violations.append("bad AUTH: " + ", ".join(wrong))
        return auth

    def _token_ok(self, auth: Mapping[str, Any]) -> bool:
        # Only the newest token is valid, as after a real re-bootstrap; no key at all is tolerated (degraded).
        return "key" not in auth or (bool(self.tokens) and auth["key"] == self.tokens[-1])

    async def _sub(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self.ws_headers.append(dict(request.headers))
        try:
            first = await ws.receive(timeout=5)
            if first.type != WSMsgType.BINARY:
                self.violations.append(f"first websocket message is {first.type.name}, not a binary AUTH")
                return ws
            auth = self._check_auth(first.data)
            if auth is None:
                return ws
            self.auths.append(auth)
            await self._notify()
            if self.silent_auths > 0:
                self.silent_auths -= 1
                async for _ in ws:  # say nothing until the client gives up
                    pass
                return ws
            if self.reject_auths > 0 or not self._token_ok(auth):
                self.reject_auths = max(0, self.reject_auths - 1)
                await ws.send_bytes(AUTH_REPLY_TOKEN_ERROR)
                await ws.close()
                return ws
            await ws.send_bytes(AUTH_REPLY_OK)
            self._accepted += 1
            self._live.append(ws)
            await self._notify()
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    await self._client_packet(ws, message.data)
                else:
                    self.violations.append(f"client sent a {message.type.name} message")
        finally:
            if ws in self._live:
                self._live.remove(ws)
            await self._notify()
        return ws

    async def _client_packet(self, ws: web.WebSocketResponse, data: bytes) -> None:
        if len(data) < 16:
            self.violations.append(f"client packet of {len(data)} bytes")
            return
        pack_len, header_len, ver, op, seq = HEADER.unpack_from(data)
        if (pack_len, header_len, ver, op, seq) != (len(data), 16, 1, 2, 1):
            self.violations.append(f"unexpected client packet header {data[:16].hex()}")
            return
        self.heartbeats += 1
        self.heartbeat_bodies.append(data[16:])
        if self.answer_heartbeats:
            await ws.send_bytes(heartbeat_reply(self.popularity, data[16:]))
        await self._notify()

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self._live):
            await ws.close()

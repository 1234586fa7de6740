"""Fake group-chat robots: WeCom, DingTalk, Feishu and the generic webhook, on 127.0.0.1:<free port>.

Each fake speaks its platform as ../shared/protocols/chat_alerts.md describes it: the same URL shape, the
credential check (key / access_token / hook token), signature verification done the way the platform does
it (computed here independently of bot code), keyword checks, the size limits, the platform's success JSON,
its error codes, its rate limit (and DingTalk's 10-minute throttle). Tests can also take it down
(connection refused), make it answer 503 (outage), or make it hang mid-request (to simulate a killed client).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

NowMs = Callable[[], int]

_ID_RE = re.compile(r"#([0-9a-f]{6})")

DEFAULT_LIMITS: dict[str, tuple[tuple[int, int], ...]] = {
    "wecom": ((20, 60_000),),
    "dingtalk": ((20, 60_000),),
    "feishu": ((5, 1_000), (100, 60_000)),
    "webhook": (),
}
"""(requests, window ms) the platform enforces per robot (spec §1–§3)."""


@dataclass(slots=True)
class Received:
    """One HTTP request that reached the fake, and how the fake answered it."""

    ts_ms: int
    body: dict[str, Any] | None
    code: str
    """The platform code answered ("0" = accepted), or "http 503" / "hang"."""
    raw_query: str = ""

    @property
    def accepted(self) -> bool:
        return self.code == "0"


class FakeRobot:
    """One robot of one platform. `url` is what goes into RobotConfig.url."""

    def __init__(
        self,
        kind: str,
        *,
        now_ms: NowMs,
        secret: str | None = None,
        token: str = "c0ffee00-1111-2222-3333-abcdefabcdef",
        keywords: tuple[str, ...] = (),
        limits: tuple[tuple[int, int], ...] | None = None,
    ) -> None:
        if kind not in DEFAULT_LIMITS:
            raise ValueError(f"unknown robot kind {kind!r}")
        self.kind = kind
        self.secret = secret
        self.token = token
        self.keywords = keywords
        self.limits = DEFAULT_LIMITS[kind] if limits is None else limits
        self._now_ms = now_ms
        self.requests: list[Received] = []
        """Every request that reached the handler, in arrival order."""
        self.mode = "ok"
        """"ok", "outage" (HTTP 503 from a gateway) or "hang" (keep the request open until `release()`)."""
        self._gate = asyncio.Event()
        self._throttled_until = 0
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def url(self) -> str:
        """The robot's webhook URL with its credential, as the platform hands it out."""
        if self._port == 0:
            raise RuntimeError("FakeRobot is not started")
        if self.kind == "wecom":
            return f"{self.base}/cgi-bin/webhook/send?key={self.token}"
        if self.kind == "dingtalk":
            return f"{self.base}/robot/send?access_token={self.token}"
        if self.kind == "feishu":
            return f"{self.base}/open-apis/bot/v2/hook/{self.token}"
        return f"{self.base}/hooks/livebot"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen (again) on the same port as before, or a free one the first time."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/cgi-bin/webhook/send", self._wecom)
        app.router.add_post("/robot/send", self._dingtalk)
        app.router.add_post("/open-apis/bot/v2/hook/{token}", self._feishu)
        app.router.add_post("/hooks/livebot", self._webhook)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, reuse_address=True)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening: clients now get 'connection refused'."""
        self._gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._gate = asyncio.Event()

    async def __aenter__(self) -> FakeRobot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def release(self) -> None:
        """Let hanging requests finish (and stop hanging new ones)."""
        self.mode = "ok"
        self._gate.set()

    # -- what arrived

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.accepted]

    def text_of(self, body: dict[str, Any]) -> str:
        """The message content the group sees (titles that only show in the chat list are left out)."""
        if self.kind == "wecom":
            msgtype = body.get("msgtype", "")
            return str(body.get(msgtype, {}).get("content", ""))
        if self.kind == "dingtalk":
            if body.get("msgtype") == "markdown":
                return str(body["markdown"].get("text", ""))
            return str(body.get("text", {}).get("content", ""))
        if self.kind == "feishu":
            if body.get("msg_type") == "interactive":
                return "\n".join(
                    str(e.get("text", {}).get("content", ""))
                    for e in body.get("card", {}).get("elements", [])
                )
            return str(body.get("content", {}).get("text", ""))
        return f"{body.get('title', '')}\n{body.get('text', '')}"

    def ids_per_message(self, *, include_unanswered: bool = False) -> list[list[str]]:
        """The `#xxxxxx` alert ids each accepted message carried, in order (a digest carries several)."""
        out = []
        for r in self.requests:
            if r.body is None or not (r.accepted or (include_unanswered and r.code == "hang")):
                continue
            out.append(list(dict.fromkeys(_ID_RE.findall(self.text_of(r.body)))))
        return out

    def delivered_ids(self, *, include_unanswered: bool = False) -> list[str]:
        return [i for ids in self.ids_per_message(include_unanswered=include_unanswered) for i in ids]

    def max_in_window(self, window_ms: int) -> int:
        """The most requests that arrived within any `window_ms` (what the platform's limiter sees)."""
        times = [r.ts_ms for r in self.requests]
        best = 0
        for i, t in enumerate(times):
            best = max(best, sum(1 for u in times[: i + 1] if t - u < window_ms))
        return best

    # -- shared steps

    def _rate_limited(self, now: int) -> bool:
        """Count this request; True if it breaks a window (the platform counts rejected requests too)."""
        if now < self._throttled_until:
            return True
        times = [r.ts_ms for r in self.requests] + [now]
        for limit, window in self.limits:
            if sum(1 for t in times if now - t < window) > limit:
                if self.kind == "dingtalk":
                    self._throttled_until = now + 10 * 60_000  # spec §2: throttled for 10 minutes
                return True
        return False

    async def _read_json(self, request: web.Request) -> dict[str, Any] | None:
        raw = await request.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    async def _front(self, request: web.Request, body: dict[str, Any] | None) -> web.Response | None:
        """Outage and hang behaviour, before the platform logic."""
        now = self._now_ms()
        if self.mode == "outage":
            self.requests.append(Received(now, body, "http 503", request.query_string))
            return web.Response(status=503, text="<html>503 Service Temporarily Unavailable</html>")
        if self.mode == "hang":
            self.requests.append(Received(now, body, "hang", request.query_string))
            await self._gate.wait()
            return web.Response(status=502, text="upstream gone")
        return None

    def _answer(
        self, request: web.Request, body: dict[str, Any] | None, code: int, payload: dict[str, Any]
    ) -> web.Response:
        self.requests.append(Received(self._now_ms(), body, str(code), request.query_string))
        return web.json_response(payload)

    def _has_keyword(self, text: str) -> bool:
        return not self.keywords or any(k in text for k in self.keywords)

    # -- WeCom (spec §1): the key is the credential, no signing

    async def _wecom(self, request: web.Request) -> web.Response:
        body = await self._read_json(request)
        if (early := await self._front(request, body)) is not None:
            return early

        def err(code: int, msg: str) -> web.Response:
            hint = f", hint: [1700000000_00_fake], from ip: 127.0.0.1, more info at https://open.work.weixin.qq.com/devtool/query?e={code}"
            return self._answer(request, body, code, {"errcode": code, "errmsg": msg + hint})

        if request.query.get("key") != self.token:
            return err(93000, "invalid webhook url")
        if self._rate_limited(self._now_ms()):
            return err(45009, "api freq out of limit")
        if body is None:
            return err(40008, "invalid message type")
        msgtype = body.get("msgtype")
        limits = {"text": 2048, "markdown": 4096}
        if msgtype not in limits:
            return err(40008, "invalid message type")
        content = str(body.get(msgtype, {}).get("content", ""))
        if not content:
            return err(44004, "empty content")
        if len(content.encode()) > limits[msgtype]:
            return err(40058, "content exceed max length")
        return self._answer(request, body, 0, {"errcode": 0, "errmsg": "ok"})

    # -- DingTalk (spec §2): access_token, optional 加签 in the query, keywords

    async def _dingtalk(self, request: web.Request) -> web.Response:
        body = await self._read_json(request)
        if (early := await self._front(request, body)) is not None:
            return early

        def err(code: int, msg: str) -> web.Response:
            return self._answer(request, body, code, {"errcode": code, "errmsg": msg})

        # Parse the raw query as a form decoder does: an unencoded '+' in the sign becomes a space.
        query = dict(parse_qsl(request.query_string, keep_blank_values=True))
        if query.get("access_token") != self.token:
            return err(300001, "token is not exist")
        if self.secret is not None:
            ts = query.get("timestamp", "")
            if not ts.isdigit() or abs(int(ts) - self._now_ms()) > 3600_000:
                return err(310000, "invalid timestamp")
            string_to_sign = f"{ts}\n{self.secret}"
            expected = base64.b64encode(
                hmac.new(self.secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
            ).decode()
            if not hmac.compare_digest(query.get("sign", ""), expected):
                return err(
                    310000, "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]"
                )
        if self._rate_limited(self._now_ms()):
            return err(130101, "send too fast, exceed 20 times per minute")
        if body is None or body.get("msgtype") not in ("text", "markdown"):
            return err(40035, "缺少参数 json")
        if body["msgtype"] == "markdown":
            md = body.get("markdown", {})
            text = f"{md.get('title', '')}\n{md.get('text', '')}"
        else:
            text = str(body.get("text", {}).get("content", ""))
        if not self._has_keyword(text):
            return err(
                310000,
                "keywords not in content, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            )
        return err(0, "ok")

    # -- Feishu (spec §3): hook token in the path, timestamp + sign in the body, keywords, 20 KB

    async def _feishu(self, request: web.Request) -> web.Response:
        raw_size = request.content_length or 0
        body = await self._read_json(request)
        if (early := await self._front(request, body)) is not None:
            return early

        def err(code: int, msg: str) -> web.Response:
            return self._answer(request, body, code, {"code": code, "data": {}, "msg": msg})

        if request.match_info["token"] != self.token:
            return err(19001, "param invalid: incoming webhook access token invalid")
        if body is None or raw_size > 20 * 1024:
            return err(9499, "Bad Request")
        if self.secret is not None:
            ts = str(body.get("timestamp", ""))
            ok_ts = ts.isdigit() and abs(int(ts) - self._now_ms() // 1000) <= 3600
            string_to_sign = f"{ts}\n{self.secret}"
            expected = base64.b64encode(
                hmac.new(string_to_sign.encode(), b"", hashlib.sha256).digest()
            ).decode()
            if not ok_ts or not hmac.compare_digest(str(body.get("sign", "")), expected):
                return err(19021, "sign match fail or timestamp is not within one hour from current time")
        if self._rate_limited(self._now_ms()):
            return err(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]")
        if body.get("msg_type") not in ("text", "post", "interactive"):
            return err(9499, "Bad Request")
        text = self.text_of(body)
        if body.get("msg_type") == "interactive":
            text += "\n" + str(body["card"].get("header", {}).get("title", {}).get("content", ""))
        if not self._has_keyword(text):
            return err(19024, "Key Words Not Found")
        self.requests.append(Received(self._now_ms(), body, "0", request.query_string))
        return web.json_response(
            {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
        )

    # -- generic webhook (spec §5): HMAC headers, any 2xx is success

    async def _webhook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = await self._read_json(request)
        if (early := await self._front(request, body)) is not None:
            return early
        now = self._now_ms()
        if self.secret is not None:
            ts = request.headers.get("X-Livebot-Timestamp", "")
            expected = (
                "sha256="
                + hmac.new(self.secret.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
            )
            ok_ts = ts.isdigit() and abs(int(ts) - now // 1000) <= 3600
            if not ok_ts or not hmac.compare_digest(request.headers.get("X-Livebot-Signature", ""), expected):
                self.requests.append(Received(now, body, "401"))
                return web.json_response({"error": "bad signature"}, status=401)
        if self._rate_limited(now):
            self.requests.append(Received(now, body, "429"))
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "30"})
        required = {"id", "rule", "severity", "room", "platform", "title", "text", "count", "examples", "ts"}
        if body is None or not required <= body.keys():
            self.requests.append(Received(now, body, "400"))
            return web.json_response({"error": "bad body"}, status=400)
        self.requests.append(Received(now, body, "0"))
        return web.json_response({"ok": True})


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll `predicate` on the event loop (for states a ManualClock can't signal, like an open request)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.002)
    if not predicate():
        raise AssertionError(f"condition not reached within {timeout_s}s")

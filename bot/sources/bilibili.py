"""Bilibili live source: HTTP bootstrap, then the danmaku websocket (../shared/protocols/bilibili.md).

This module is the socket loop only; every byte is decoded by the sans-I/O `bot.sources.bilibili_wire`.

Lifecycle of `run()` (blivedm `ws_base.py`, with the project's exponential backoff):
1. bootstrap (§6): uid from `nav` when a SESSDATA cookie is set, the WBI key, a `buvid3` cookie, the real
   room id, then the WBI-signed `getDanmuInfo` for a token and host list. Every step degrades instead of
   failing (§5);
2. connect, send AUTH, wait `auth_timeout_s` for AUTH_REPLY; a rejected or missing reply forces a new
   bootstrap;
3. heartbeat at once and every `heartbeat_s`; nothing received for `receive_timeout_s` counts as a disconnect;
4. on any disconnect: sleep `policy.next_delay()` (interruptible by `stop()`), rotate the host, repeat; every
   `max(3, len(hosts))` failed attempts in a row redo the bootstrap.

Events are emitted in arrival order, each awaited before the next frame is read: ordering matters more
than throughput, and live pipelines never block a source (bot.sources.base `Emit`). Messages seen before a
reconnect are dropped by `msg_id` (a bounded LRU), because the server may replay the recent past.

Timing uses the injected Clock only, so tests drive heartbeats and timeouts with a ManualClock or short
intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from bot.clock import Clock
from bot.errors import ProtocolError, SourceError
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.base import Emit, ReconnectPolicy, SourceState, SourceStatus, room_logger
from bot.sources.bilibili_wire import (
    MAX_PACKET_LEN,
    PLATFORM,
    AuthReply,
    Command,
    Frame,
    HeartbeatReply,
    commands_to_events,
    decode_frame,
    encode_auth,
    encode_heartbeat,
    wbi_mixin_key,
    wbi_sign,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_API_BASE = "https://api.live.bilibili.com"
DEFAULT_NAV_BASE = "https://api.bilibili.com"
DEFAULT_WWW_BASE = "https://www.bilibili.com"
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
"""One desktop UA for HTTP and websocket alike: the web token is bound to it (bilibili.md §1)."""
ORIGIN = "https://live.bilibili.com"

NAV_PATH = "/x/web-interface/nav"
ROOM_INIT_PATH = "/room/v1/Room/get_info"
DANMU_INFO_PATH = "/xlive/web-room/v1/index/getDanmuInfo"

WBI_KEY_TTL_MS = (11 * 3600 + 59 * 60 + 30) * 1000
"""How long a WBI mixin key is reused (blivedm: 11 h 59 m 30 s)."""
CODE_NOT_LOGGED_IN = -101
CODE_RISK_CONTROL = -352
"""getDanmuInfo rejected the WBI signature or the client (bilibili.md §6): drop the cached key."""
HTTP_TIMEOUT_S = 10.0
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)  # per bootstrap request, never on the websocket
CONNECT_TIMEOUT_S = 10.0
EXECUTOR_FRAME_BYTES = 32 * 1024
"""Frames this big are decoded in a worker thread so brotli never stalls the event loop (§2 step 6)."""


@dataclass(frozen=True, slots=True)
class DanmuHost:
    """One entry of getDanmuInfo's `host_list`."""

    host: str
    wss_port: int = 443

    @property
    def url(self) -> str:
        return f"wss://{self.host}:{self.wss_port}/sub"


FALLBACK_HOSTS = (DanmuHost("broadcastlv.chat.bilibili.com", 443),)
"""Used when getDanmuInfo fails (bilibili.md §5 *Degraded start*)."""


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Everything one connection attempt needs from the HTTP bootstrap."""

    room_id: int
    """Real (long) room id; the given id when room init failed."""
    anchor_uid: int
    uid: int
    """Logged-in viewer's mid, 0 when anonymous; AUTH must carry the cookie owner's uid or 0."""
    buvid: str
    token: str | None
    """None when getDanmuInfo failed: AUTH is then sent without `key`."""
    hosts: tuple[DanmuHost, ...]


def parse_cookie_header(cookie: str) -> dict[str, str]:
    """`"SESSDATA=…; buvid3=…"` (as copied from a browser) → {name: value}; malformed pieces are ignored."""
    cookies: dict[str, str] = {}
    for piece in cookie.split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name:
            cookies[name.strip()] = value.strip()
    return cookies


def parse_host_list(raw: Any) -> tuple[DanmuHost, ...]:
    """getDanmuInfo `data.host_list` → hosts; entries without a host name or a valid port are dropped."""
    hosts = []
    if isinstance(raw, list):
        for entry in raw:
            if not isinstance(entry, dict):
                continue
            host, port = entry.get("host"), entry.get("wss_port", 443)
            if isinstance(host, str) and host and isinstance(port, int) and 0 < port < 65536:
                hosts.append(DanmuHost(host, port))
    return tuple(hosts)


_CLOSED_TYPES = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})


class _AuthRejected(Exception):
    """AUTH_REPLY carried a non-zero code (internal: turns into a re-bootstrap)."""


class BilibiliSource:
    """One Bilibili live room as a Source (bot.sources.base)."""

    def __init__(
        self,
        room_id: int,
        *,
        hasher: ViewerHasher,
        clock: Clock,
        room: str | None = None,
        api_base: str = DEFAULT_API_BASE,
        nav_base: str | None = None,
        www_base: str | None = None,
        ws_url: str | Sequence[str] | None = None,
        cookie: str | None = None,
        store_names: bool = False,
        policy: ReconnectPolicy | None = None,
        heartbeat_s: float = 30.0,
        auth_timeout_s: float = 5.0,
        receive_timeout_s: float | None = None,
        dedupe_size: int = 4096,
        trust_env: bool = False,
    ) -> None:
        """
        Args:
            room_id: the room number from the live URL; short ids are resolved to the real one.
            room: livebot's room key for Events (default: `str(room_id)`).
            api_base: live API base. When it is overridden (a test server or proxy) and `nav_base` /
                `www_base` are not given, the `nav` and buvid requests go there too.
            ws_url: danmaku websocket URL(s) replacing the bootstrap host list (rotated on reconnect).
            cookie: browser Cookie header (`SESSDATA=…; buvid3=…`); sent to Bilibili only, never logged.
            receive_timeout_s: silence that counts as a dead link (default `heartbeat_s + 5`, §1).
            trust_env: honour HTTP(S)_PROXY / NO_PROXY from the environment.
        """
        if room_id <= 0:
            raise ValueError(f"room_id must be a positive integer, got {room_id}")
        if heartbeat_s <= 0 or auth_timeout_s <= 0:
            raise ValueError("heartbeat_s and auth_timeout_s must be positive")
        if dedupe_size < 1:
            raise ValueError("dedupe_size must be at least 1")
        self.room_id = room_id
        self.room = room if room is not None else str(room_id)
        self._hasher = hasher
        self._clock = clock
        custom_api = api_base.rstrip("/") != DEFAULT_API_BASE
        self._api_base = api_base.rstrip("/")
        self._nav_base = (nav_base or (self._api_base if custom_api else DEFAULT_NAV_BASE)).rstrip("/")
        self._www_base = (www_base or (self._api_base if custom_api else DEFAULT_WWW_BASE)).rstrip("/")
        self._ws_urls: tuple[str, ...] = (ws_url,) if isinstance(ws_url, str) else tuple(ws_url or ())
        self._cookies = parse_cookie_header(cookie) if cookie else {}
        self._store_names = store_names
        self._policy = policy if policy is not None else ReconnectPolicy()
        self.heartbeat_s = heartbeat_s
        self.auth_timeout_s = auth_timeout_s
        self.receive_timeout_s = receive_timeout_s if receive_timeout_s is not None else heartbeat_s + 5
        self._dedupe_size = dedupe_size
        self._trust_env = trust_env
        self._log = room_logger(logger, room=self.room, platform=PLATFORM)

        self.status = SourceStatus(name=f"{PLATFORM}:{room_id}", platform=PLATFORM, room=self.room)
        self.popularity: int | None = None
        """Last HEARTBEAT_REPLY value (deprecated by Bilibili; for display only)."""
        self.duplicates_dropped = 0
        self.bootstraps = 0
        self.current_url: str | None = None

        self._boot: Bootstrap | None = None
        self._force_bootstrap = False
        self._wbi_key: str | None = None
        self._wbi_expires_ms = 0
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._logged_unknown: set[str] = set()
        self._logged_error_keys: set[str] = set()
        self._warned_anonymous = False
        self._last_rx_ms = 0
        self._running = False
        self._stopping = False
        self._stop_event = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Ask run() to return; it closes the socket and returns soon after. Safe to call any time."""
        self._stopping = True
        self._stop_event.set()

    async def run(self, emit: Emit) -> None:
        """Connect and emit Events until stop() is called; connection problems never escape."""
        if self._running:
            raise RuntimeError("BilibiliSource.run() is already running")
        self._running = True
        self.status.state = SourceState.CONNECTING
        self._log.info("starting (room id %d)", self.room_id)
        try:
            async with aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(),  # cookies are managed by hand: any host, never logged
                trust_env=self._trust_env,
            ) as session:
                await self._loop(session, emit)
        finally:
            self._running = False
            self.status.state = SourceState.STOPPED
            self._log.info("stopped")

    async def _loop(self, session: aiohttp.ClientSession, emit: Emit) -> None:
        while not self._stopping:
            if self._needs_bootstrap():
                boot = await self._until_stopped(self._bootstrap(session))
                if boot is None:
                    return
                self._boot = boot
                self._force_bootstrap = False
            reason = await self._until_stopped(self._connection(session, emit))
            if reason is None or self._stopping:
                return
            self.status.reconnects += 1
            if self.status.down_since_ms is None:
                self.status.down_since_ms = self._clock.now_ms()
            self.status.state = SourceState.RECONNECTING
            delay = self._policy.next_delay()
            self._log.warning(
                "disconnected: %s; reconnecting in %.1fs (attempt %d, %d in total)",
                reason,
                delay,
                self._policy.retry_count,
                self._policy.total_retry_count,
            )
            await self._until_stopped(self._clock.sleep(delay))

    async def _until_stopped(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Run `coro` unless stop() comes first; then cancel it and return None."""
        if self._stopping:
            coro.close()
            return None
        task = asyncio.ensure_future(coro)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            return None
        return task.result()

    async def _within(self, seconds: float, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` for at most `seconds` of Clock time; TimeoutError otherwise."""
        task = asyncio.ensure_future(coro)
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        if task.cancelled():
            raise TimeoutError(f"timed out after {seconds:g}s")
        return task.result()

    # --- bootstrap (bilibili.md §6) ------------------------------------------------------------------

    def _needs_bootstrap(self) -> bool:
        if self._boot is None or self._force_bootstrap:
            return True
        retries = self._policy.retry_count
        return retries > 0 and retries % max(3, len(self._boot.hosts)) == 0

    def _request_headers(self) -> dict[str, str]:
        if not self._cookies:
            return {}
        return {"Cookie": "; ".join(f"{name}={value}" for name, value in self._cookies.items())}

    def _absorb_cookies(self, response: aiohttp.ClientResponse) -> None:
        # A browser jar would keep what the server sets (buvid3, b_nut, …); so do we, silently.
        for name, morsel in response.cookies.items():
            if morsel.value:
                self._cookies.setdefault(name, morsel.value)

    async def _get_json(
        self, session: aiohttp.ClientSession, url: str, params: Mapping[str, str] | None = None
    ) -> Any:
        path = url.split("://", 1)[-1].split("/", 1)[-1]
        try:
            async with session.get(
                url, params=params, headers=self._request_headers(), timeout=_HTTP_TIMEOUT
            ) as response:
                self._absorb_cookies(response)
                if response.status != 200:
                    raise SourceError(f"GET /{path} returned HTTP {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SourceError(f"GET /{path} failed: {type(exc).__name__}: {exc}") from exc

    async def _bootstrap(self, session: aiohttp.ClientSession) -> Bootstrap:
        """Run §6 steps 1–5; each failure falls back as §5 *Degraded start* says, so this never raises."""
        self.bootstraps += 1
        uid = 0
        logged_in = "SESSDATA" in self._cookies
        now = self._clock.now_ms()
        if logged_in or self._wbi_key is None or now >= self._wbi_expires_ms:
            uid = await self._fetch_nav(session, logged_in)
        if uid == 0 and not self._warned_anonymous:
            self._warned_anonymous = True
            self._log.info(
                "not logged in: Bilibili hides viewer names and uids, so unique-viewer counts are "
                "approximate; set a SESSDATA cookie for production"
            )
        if "buvid3" not in self._cookies:
            try:
                async with session.get(
                    self._www_base + "/", headers=self._request_headers(), timeout=_HTTP_TIMEOUT
                ) as response:
                    self._absorb_cookies(response)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._log.warning("could not fetch a buvid3 cookie: %s", type(exc).__name__)
        room_id, anchor_uid = await self._fetch_room(session)
        token, hosts = await self._fetch_danmu_info(session, room_id)
        boot = Bootstrap(room_id, anchor_uid, uid, self._cookies.get("buvid3", ""), token, hosts)
        self._log.info(
            "bootstrapped: real room id %d, %s, token %s, %d host(s)",
            room_id,
            "logged in" if uid else "anonymous",
            "received" if token else "missing",
            len(hosts),
        )
        return boot

    async def _fetch_nav(self, session: aiohttp.ClientSession, logged_in: bool) -> int:
        """GET nav: refresh the WBI key; return the viewer uid when logged in (else 0)."""
        try:
            nav = await self._get_json(session, self._nav_base + NAV_PATH)
        except SourceError as exc:
            self._log.warning("nav request failed (%s); continuing without login/WBI key", exc)
            return 0
        data = nav.get("data") if isinstance(nav, dict) else None
        if not isinstance(data, dict):
            self._log.warning("nav response has no data object")
            return 0
        wbi = data.get("wbi_img")
        if (
            isinstance(wbi, dict)
            and isinstance(wbi.get("img_url"), str)
            and isinstance(wbi.get("sub_url"), str)
        ):
            try:
                self._wbi_key = wbi_mixin_key(wbi["img_url"], wbi["sub_url"])
                self._wbi_expires_ms = self._clock.now_ms() + WBI_KEY_TTL_MS
            except ProtocolError as exc:
                self._log.warning("nav WBI key unusable: %s", exc)
        else:
            self._log.warning("nav response has no wbi_img; getDanmuInfo will likely be rejected")
        if not logged_in:
            return 0
        mid = data.get("mid")
        if nav.get("code") == CODE_NOT_LOGGED_IN or not data.get("isLogin") or not isinstance(mid, int):
            self._log.warning(
                "the configured cookie is not logged in (expired SESSDATA?); continuing anonymously"
            )
            return 0
        return mid

    async def _fetch_room(self, session: aiohttp.ClientSession) -> tuple[int, int]:
        try:
            reply = await self._get_json(
                session, self._api_base + ROOM_INIT_PATH, {"room_id": str(self.room_id)}
            )
        except SourceError as exc:
            self._log.warning("room init failed (%s); using room id %d as given", exc, self.room_id)
            return self.room_id, 0
        code = reply.get("code") if isinstance(reply, dict) else None
        data = reply.get("data") if isinstance(reply, dict) else None
        if code != 0 or not isinstance(data, dict) or not isinstance(data.get("room_id"), int):
            self._log.warning("room init returned code %r; using room id %d as given", code, self.room_id)
            return self.room_id, 0
        anchor = data.get("uid")
        return data["room_id"], anchor if isinstance(anchor, int) else 0

    async def _fetch_danmu_info(
        self, session: aiohttp.ClientSession, room_id: int
    ) -> tuple[str | None, tuple[DanmuHost, ...]]:
        params: dict[str, str] = {"id": str(room_id), "type": "0"}
        if self._wbi_key is not None:
            params = wbi_sign(params, self._wbi_key, self._clock.now_ms() // 1000)
        try:
            reply = await self._get_json(session, self._api_base + DANMU_INFO_PATH, params)
        except SourceError as exc:
            self._log.warning("getDanmuInfo failed (%s); using the fallback host without a token", exc)
            return None, FALLBACK_HOSTS
        code = reply.get("code") if isinstance(reply, dict) else None
        data = reply.get("data") if isinstance(reply, dict) else None
        if code == CODE_RISK_CONTROL:
            self._wbi_key = None  # maybe stale: fetch a fresh one next time
        if code != 0 or not isinstance(data, dict):
            self._log.warning("getDanmuInfo returned code %r; using the fallback host without a token", code)
            return None, FALLBACK_HOSTS
        token = data.get("token")
        hosts = parse_host_list(data.get("host_list"))
        if not isinstance(token, str) or not hosts:
            self._log.warning(
                "getDanmuInfo returned no token or hosts; using the fallback host without a token"
            )
            return None, FALLBACK_HOSTS
        return token, hosts

    # --- one connection --------------------------------------------------------------------------

    def _next_url(self, boot: Bootstrap) -> str:
        urls = self._ws_urls or tuple(host.url for host in boot.hosts)
        return urls[self._policy.retry_count % len(urls)]

    async def _connection(self, session: aiohttp.ClientSession, emit: Emit) -> str:
        """Connect, authenticate and read until the link ends; returns why it ended."""
        boot = self._boot
        assert boot is not None  # _loop bootstraps first
        url = self._next_url(boot)
        self.current_url = url

        async def connect() -> aiohttp.ClientWebSocketResponse:
            return await session.ws_connect(
                url,
                headers=self._request_headers(),
                origin=ORIGIN,
                autoping=True,
                max_msg_size=MAX_PACKET_LEN,
            )

        try:
            ws = await self._within(CONNECT_TIMEOUT_S, connect())
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._note_error(f"connect to {url} failed: {type(exc).__name__}: {exc}")
            return f"connect to {url} failed ({type(exc).__name__})"
        async with ws:
            try:
                await ws.send_bytes(
                    encode_auth(boot.room_id, uid=boot.uid, buvid=boot.buvid, token=boot.token)
                )
                first = await self._within(self.auth_timeout_s, self._await_auth(ws))
            except _AuthRejected as exc:
                self._force_bootstrap = True
                self._note_error(f"auth rejected: {exc}")
                return f"auth rejected ({exc}); bootstrapping again"
            except TimeoutError:
                self._force_bootstrap = True
                self._note_error("no auth reply")
                return f"no auth reply within {self.auth_timeout_s:g}s; bootstrapping again"
            except (aiohttp.ClientError, ConnectionError) as exc:
                return f"auth failed: {type(exc).__name__}"
            if first is None:
                self._force_bootstrap = True  # a bad token may just get the socket closed (§4)
                self._note_error("closed before the auth reply")
                return "closed before the auth reply; bootstrapping again"
            return await self._connected(ws, first, emit)

    async def _await_auth(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[Frame, bytes] | None:
        """Read until AUTH_REPLY; return its frame (it may hold more messages), or None on close."""
        while True:
            message = await ws.receive()
            if message.type in _CLOSED_TYPES or message.type == aiohttp.WSMsgType.ERROR:
                return None
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            frame = decode_frame(message.data)
            for item in frame.messages:
                if isinstance(item, AuthReply):
                    if not item.ok:
                        raise _AuthRejected(f"code {item.code}")
                    return frame, message.data
            self._record_frame_errors(frame, message.data)
            if frame.messages:
                self._log.debug(
                    "ignored %d message(s) that arrived before the auth reply", len(frame.messages)
                )

    async def _connected(
        self, ws: aiohttp.ClientWebSocketResponse, first: tuple[Frame, bytes], emit: Emit
    ) -> str:
        self.status.state = SourceState.CONNECTED
        self.status.down_since_ms = None
        self._last_rx_ms = self._clock.now_ms()
        self._log.info("connected to %s", self.current_url)
        await emit(self._system_event(SystemEvent.SOURCE_UP))
        await self._handle_frame(*first, emit)
        tasks = {
            asyncio.ensure_future(self._receive(ws, emit)),
            asyncio.ensure_future(self._heartbeat(ws)),
            asyncio.ensure_future(self._watchdog()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
        reason = next(iter(done)).result()
        if not self._stopping:
            # Status first, so whoever handles source_down already sees RECONNECTING.
            self.status.state = SourceState.RECONNECTING
            self.status.down_since_ms = self._clock.now_ms()
            self.status.last_error = reason  # the source_down alert quotes it
            await emit(self._system_event(SystemEvent.SOURCE_DOWN))
        return reason

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, emit: Emit) -> str:
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.BINARY:
                self._last_rx_ms = self._clock.now_ms()
                await self._on_frame(message.data, emit)
            elif message.type in _CLOSED_TYPES:
                return f"server closed the connection (code {ws.close_code})"
            elif message.type == aiohttp.WSMsgType.ERROR:
                return f"websocket error: {ws.exception()!r}"
            else:
                self._log.debug("ignored a non-binary websocket message (%s)", message.type.name)

    async def _heartbeat(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        # One heartbeat right after AUTH_REPLY, then one per interval (bilibili.md §1 step 4).
        while True:
            try:
                await ws.send_bytes(encode_heartbeat())
            except (aiohttp.ClientError, ConnectionError) as exc:
                return f"heartbeat send failed ({type(exc).__name__})"
            await self._clock.sleep(self.heartbeat_s)

    async def _watchdog(self) -> str:
        while True:
            idle_s = (self._clock.now_ms() - self._last_rx_ms) / 1000
            if idle_s >= self.receive_timeout_s:
                return f"nothing received for {idle_s:.1f}s"
            await self._clock.sleep(self.receive_timeout_s - idle_s)

    # --- frames → Events -------------------------------------------------------------------------

    async def _on_frame(self, data: bytes, emit: Emit) -> None:
        if len(data) >= EXECUTOR_FRAME_BYTES:
            frame = await asyncio.get_running_loop().run_in_executor(None, decode_frame, data)
        else:
            frame = decode_frame(data)
        await self._handle_frame(frame, data, emit)

    async def _handle_frame(self, frame: Frame, data: bytes, emit: Emit) -> None:
        self._record_frame_errors(frame, data)
        commands = []
        for message in frame.messages:
            if isinstance(message, Command):
                commands.append(message)
            elif isinstance(message, HeartbeatReply):
                self.popularity = message.popularity
        if any(not isinstance(message, AuthReply) for message in frame.messages):
            self._policy.reset()  # one good message ends a failure streak (blivedm retry_count)
        if not commands:
            return
        now = self._clock.now_ms()
        errors: list[ProtocolError] = []
        events, unknown = commands_to_events(
            commands,
            room=self.room,
            hasher=self._hasher,
            received_ts=now,
            store_names=self._store_names,
            errors=errors,
        )
        for error in errors:
            self._record_error(error, "skipped a malformed command")
        for cmd in unknown:
            self.status.unknown_kinds[cmd] += 1
            if cmd not in self._logged_unknown:
                self._logged_unknown.add(cmd)
                self._log.warning("unknown cmd %s (logged once, counted in status)", cmd)
        self.status.messages += len(commands)
        self.status.last_message_ms = now
        for event in events:
            if event.msg_id is not None and self._is_duplicate(event.msg_id):
                self.duplicates_dropped += 1
                self._log.debug("dropped duplicate %s %s", event.kind, event.msg_id)
                continue
            await emit(event)

    def _is_duplicate(self, msg_id: str) -> bool:
        if msg_id in self._seen_ids:
            self._seen_ids.move_to_end(msg_id)
            return True
        self._seen_ids[msg_id] = None
        if len(self._seen_ids) > self._dedupe_size:
            self._seen_ids.popitem(last=False)
        return False

    def _record_frame_errors(self, frame: Frame, data: bytes) -> None:
        for error in frame.errors:
            # Only the 16 header bytes: a body may hold viewer names (STYLE.md *Logging*).
            self._record_error(
                error, f"skipped a bad packet in a {len(data)}-byte frame (header {data[:16].hex()})"
            )

    def _record_error(self, error: ProtocolError, context: str) -> None:
        """Count every protocol error; log the first of each kind at WARNING, repeats at DEBUG."""
        self._note_error(str(error))
        kind = error.key or "protocol"
        level = logging.DEBUG if kind in self._logged_error_keys else logging.WARNING
        self._logged_error_keys.add(kind)
        self._log.log(level, "%s: %s", context, error)

    def _note_error(self, message: str) -> None:
        self.status.errors += 1
        self.status.last_error = message

    def _system_event(self, name: SystemEvent) -> Event:
        now = self._clock.now_ms()
        return Event(
            platform=PLATFORM,
            room=self.room,
            kind=EventKind.SYSTEM,
            ts=now,
            received_ts=now,
            event=name.value,
        )

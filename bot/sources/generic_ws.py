"""Generic JSON event websockets (../shared/protocols/generic_json.md): ingest server and outgoing client.

`GenericIngestServer` is the documented transport: livebot listens on `/ingest` and adapters push events.
`GenericWsClient` covers the reverse set-up: an upstream that *serves* the same format and waits for us.

`ReconnectingWsSource` is the reconnect loop both the generic client and the DouyinBarrageGrab client
(bot.sources.douyin_push) share: connect, read frames, on loss back off with the injected ReconnectPolicy,
and drop messages replayed after a reconnect by their id.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Collection, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from bot.clock import Clock, SystemClock
from bot.errors import ConfigError, ProtocolError, SourceError
from bot.events import Event, EventKind, SystemEvent
from bot.privacy import ViewerHasher
from bot.sources.base import (
    Emit,
    RecentIds,
    ReconnectPolicy,
    RoomLogger,
    SourceState,
    SourceStatus,
    room_logger,
)
from bot.sources.generic_json import (
    MAX_MESSAGE_BYTES,
    decode_message,
    parse_event,
    ts_skewed,
)

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

GENERIC_PLATFORM = "generic"
ANY_ROOM = "*"
"""Status room of a source that carries events of many rooms (each event names its own)."""
INGEST_PATH = "/ingest"


def safe_url(url: str) -> str:
    """The URL without query, fragment or credentials, fit for a log line (a token may hide there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or "" (all interfaces): treat as reachable from outside


class _OnceLog:
    """Logs the first occurrence of each problem at WARNING and the repeats at DEBUG (they are counted)."""

    def __init__(self, log: RoomLogger) -> None:
        self._log = log
        self._seen: set[str] = set()

    def warn(self, key: str, msg: str, *args: object) -> None:
        if key in self._seen:
            self._log.debug(msg, *args)
        else:
            self._seen.add(key)
            self._log.warning(msg + " (further ones are counted, logged at DEBUG)", *args)


class _GenericIngest:
    """Per-message logic shared by the generic server and client: decode, validate, dedupe, count, emit."""

    def __init__(
        self,
        status: SourceStatus,
        log: RoomLogger,
        *,
        hasher: ViewerHasher,
        clock: Clock,
        room: str | None,
        store_names: bool,
        dedupe_capacity: int,
    ) -> None:
        self.status = status
        self.recent = RecentIds(dedupe_capacity)
        self.duplicates = 0
        self.ts_skewed = 0
        self._log = log
        self._once = _OnceLog(log)
        self._hasher = hasher
        self._clock = clock
        self._room = room
        self._store_names = store_names

    async def feed(self, data: str | bytes, emit: Emit) -> list[tuple[int, str]]:
        """Handle one websocket message; returns `(index, reason)` for every rejected event."""
        now = self._clock.now_ms()
        try:
            decoded = decode_message(data)
        except ProtocolError as exc:
            return [self._reject(0, exc, "message")]
        if isinstance(decoded, list):
            items: list[object] = decoded
        elif isinstance(decoded, dict):
            items = [decoded]
        else:
            not_events = ProtocolError("message must be an event object or an array of them", key="event")
            return [self._reject(0, not_events, "message")]
        errors: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            try:
                event = parse_event(
                    item, hasher=self._hasher, received_ts=now, room=self._room, store_names=self._store_names
                )
            except ProtocolError as exc:
                if exc.key == "kind" and isinstance(item, dict) and isinstance(item.get("kind"), str):
                    self.status.unknown_kinds[item["kind"][:32]] += 1
                errors.append(self._reject(index, exc, exc.key or "event"))
                continue
            if self.recent.seen(f"{event.platform}/{event.room}", event.msg_id):
                self.duplicates += 1
                self._log.debug("dropped duplicate id=%s of room %s", event.msg_id, event.room)
                continue
            if ts_skewed(event):
                self.ts_skewed += 1
                self._once.warn(
                    "ts_skew", "event ts %d is more than 24 h from receive time %d; kept", event.ts, now
                )
            self.status.messages += 1
            self.status.last_message_ms = now
            await emit(event)
        return errors

    def _reject(self, index: int, exc: ProtocolError, key: str) -> tuple[int, str]:
        self.status.errors += 1
        self.status.last_error = str(exc)
        self._once.warn(f"bad:{key}", "rejected event at index %d: %s", index, exc)
        return index, str(exc)


class GenericIngestServer:
    """Websocket server at `/ingest` where adapters push generic-JSON events (one object or a batch each).

    Events of many rooms may arrive here; each names its room and platform, and the caller maps them to
    livebot rooms (or passes `room=` to force one). An invalid event is answered with
    `{"error": ..., "index": i}` and the connection stays open; only a message over 64 KiB closes it (1009).
    Off loopback a token is mandatory. A connection whose `Origin` header is not in `allowed_origins` is
    refused (1008), so a web page open in the host's browser cannot inject comments into the room.
    """

    def __init__(
        self,
        *,
        port: int,
        hasher: ViewerHasher,
        host: str = "127.0.0.1",
        token: str | None = None,
        clock: Clock | None = None,
        room: str | None = None,
        store_names: bool = False,
        allowed_origins: Collection[str] = (),
        name: str = "generic-ingest",
        dedupe_capacity: int = 2048,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is out of range 0-65535", key="port")
        if token is not None and not token:
            raise ConfigError("token must not be empty", key="token")
        if token is None and not is_loopback(host):
            raise ConfigError(
                f"a token is required to listen on the non-loopback address {host!r}", key="token"
            )
        self.status = SourceStatus(name=name, platform=GENERIC_PLATFORM, room=room or ANY_ROOM)
        self._log = room_logger(logger, room=self.status.room, platform=GENERIC_PLATFORM)
        self._ingest = _GenericIngest(
            self.status,
            self._log,
            hasher=hasher,
            clock=clock or SystemClock(),
            room=room,
            store_names=store_names,
            dedupe_capacity=dedupe_capacity,
        )
        self._host = host
        self._port = port
        self._token = token
        self._allowed_origins = frozenset(allowed_origins)
        self._emit: Emit | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ran = False
        self.connections_total = 0
        self.refused = 0

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0); valid once started."""
        if not self._started.is_set():
            raise RuntimeError("GenericIngestServer is not listening yet")
        return self._port

    @property
    def url(self) -> str:
        host = self._host if is_loopback(self._host) else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{INGEST_PATH}"

    @property
    def duplicates(self) -> int:
        return self._ingest.duplicates

    @property
    def ts_skewed(self) -> int:
        return self._ingest.ts_skewed

    @property
    def running(self) -> bool:
        return self._started.is_set() and not self._stopping.is_set()

    async def wait_started(self) -> None:
        await self._started.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, emit: Emit) -> None:
        """Listen until stop(); connected sources are closed with GOING_AWAY on the way out.

        Raises:
            SourceError: the address cannot be bound.
        """
        if self._ran:
            raise RuntimeError("GenericIngestServer.run() can only be called once")
        self._ran = True
        self._emit = emit
        if self._stopping.is_set():
            self.status.state = SourceState.STOPPED
            return
        self.status.state = SourceState.CONNECTING
        app = web.Application()
        app.router.add_get(INGEST_PATH, self._handle)
        app.on_shutdown.append(self._close_sockets)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            try:
                await site.start()
            except OSError as exc:
                self.status.state = SourceState.FAILED
                self.status.last_error = str(exc)
                raise SourceError(
                    f"cannot listen on {self._host}:{self._port}: {exc.strerror or exc}",
                    room=self.status.room,
                ) from exc
            self._port = int(runner.addresses[0][1])
            self.status.state = SourceState.CONNECTED
            self._started.set()
            self._log.info("listening on %s:%d%s", self._host, self._port, INGEST_PATH)
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            if self.status.state is not SourceState.FAILED:
                self.status.state = SourceState.STOPPED
            self._log.info("ingest server stopped")

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.query.get("token")
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return given is not None and hmac.compare_digest(given.encode(), self._token.encode())

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        origin = request.headers.get("Origin")
        peer = request.remote
        if origin is not None and origin not in self._allowed_origins:
            self.refused += 1
            self._log.warning("refused connection from %s: origin %r is not allowed", peer, origin)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"origin not allowed")
            return ws
        if not self._authorized(request):
            self.refused += 1
            self._log.warning("refused connection from %s: missing or bad token", peer)  # never log the token
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"bad token")
            return ws
        self.connections_total += 1
        self._sockets.add(ws)
        self._log.info("source connected from %s (%d open)", peer, len(self._sockets))
        try:
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._on_text(ws, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    await self._on_binary(ws)
                elif msg.type is WSMsgType.ERROR:
                    self.status.errors += 1
                    self.status.last_error = str(ws.exception())
                    self._log.warning("closing connection from %s: %s", peer, ws.exception())
        finally:
            self._sockets.discard(ws)
            self._log.info("source from %s disconnected (code %s)", peer, ws.close_code)
        return ws

    async def _on_text(self, ws: web.WebSocketResponse, data: str) -> None:
        assert self._emit is not None  # set by run() before the site accepts connections
        for index, reason in await self._ingest.feed(data, self._emit):
            await ws.send_json({"error": reason, "index": index})

    async def _on_binary(self, ws: web.WebSocketResponse) -> None:
        reason = "binary frames are not accepted; send JSON as text frames"
        self.status.errors += 1
        self.status.last_error = reason
        await ws.send_json({"error": reason, "index": 0})

    async def _close_sockets(self, _app: web.Application) -> None:
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"livebot is shutting down")


class ReconnectingWsSource:
    """Base of outgoing websocket sources: connect, read, back off and reconnect until stop().

    Subclasses implement `_on_message`. When the source knows its room (`status.room` is not `*`) and
    `system_events` is on, it emits `system` events `source_up` on every connect and `source_down` when a
    live connection is lost, so outages land in the room's timeline and in recorded logs.
    """

    def __init__(
        self,
        url: str,
        *,
        status: SourceStatus,
        clock: Clock | None = None,
        policy: ReconnectPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        heartbeat_s: float | None = 30.0,
        connect_timeout_s: float = 10.0,
        max_msg_size: int = 4 * 1024 * 1024,
        system_events: bool = True,
    ) -> None:
        self.status = status
        self.policy = policy or ReconnectPolicy()
        self._url = url
        self._log_url = safe_url(url)
        self._clock: Clock = clock or SystemClock()
        self._headers = dict(headers or {})
        self._heartbeat_s = heartbeat_s
        self._connect_timeout_s = connect_timeout_s
        self._max_msg_size = max_msg_size
        self._system_events = system_events and status.room != ANY_ROOM
        self._log = room_logger(logger, room=status.room, platform=status.platform)
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()
        self._emit: Emit | None = None
        self._ran = False
        self.connects = 0

    @property
    def running(self) -> bool:
        return self._ran and self.status.state not in (SourceState.STOPPED, SourceState.FAILED)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, emit: Emit) -> None:
        """Read until stop(); connection failures are retried forever with backoff and jitter."""
        if self._ran:
            raise RuntimeError(f"{type(self).__name__}.run() can only be called once")
        self._ran = True
        self._emit = emit
        self.status.state = SourceState.CONNECTING
        timeout = aiohttp.ClientTimeout(total=None, connect=self._connect_timeout_s)
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while not self._stopping.is_set():
                    reason = await self._until_stopped(self._connect_once(session), stop_wait)
                    if reason is None:  # stop() was called
                        break
                    self._on_lost(reason)
                    if self._connected.is_set():
                        self._connected.clear()
                        await self._emit_system(SystemEvent.SOURCE_DOWN)
                    delay = self.policy.next_delay()
                    self.status.state = SourceState.RECONNECTING
                    self.status.reconnects += 1
                    # A long outage retries every max_s: log its start and then every 10th attempt.
                    attempt = self.policy.retry_count
                    self._log.log(
                        logging.WARNING if attempt == 1 or attempt % 10 == 0 else logging.DEBUG,
                        "connection to %s lost (%s); reconnecting in %.2f s (attempt %d)",
                        self._log_url,
                        reason,
                        delay,
                        attempt,
                    )
                    await self._until_stopped(self._clock.sleep(delay), stop_wait)
        finally:
            stop_wait.cancel()
            self._connected.clear()
            self.status.state = SourceState.STOPPED
            self._log.info("stopped")

    async def _until_stopped(self, coro: Coroutine[Any, Any, _T], stop_wait: asyncio.Task[Any]) -> _T | None:
        """Run `coro` until it finishes or stop() is called; None when stopped first."""
        task = asyncio.ensure_future(coro)
        await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # run() itself is being cancelled: let it go
        return None

    async def _connect_once(self, session: aiohttp.ClientSession) -> str:
        """One connection: returns why it ended (never raises for network trouble)."""
        try:
            async with session.ws_connect(
                self._url, headers=self._headers, heartbeat=self._heartbeat_s, max_msg_size=self._max_msg_size
            ) as ws:
                self.connects += 1
                self.status.state = SourceState.CONNECTED
                self.status.down_since_ms = None
                self._connected.set()
                self._log.info("connected to %s", self._log_url)
                await self._emit_system(SystemEvent.SOURCE_UP)
                async for msg in ws:
                    if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                        self.status.last_message_ms = self._clock.now_ms()
                        self.policy.reset()  # one good message: the next loss starts from the short delay
                        await self._on_message(msg.data)
                    elif msg.type is WSMsgType.ERROR:
                        return f"websocket error: {ws.exception()}"
                return f"closed by the server (code {ws.close_code})"
        except aiohttp.WSServerHandshakeError as exc:
            return f"handshake refused: HTTP {exc.status} {exc.message}"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    def _on_lost(self, reason: str) -> None:
        self.status.last_error = reason
        if self.status.down_since_ms is None:
            self.status.down_since_ms = self._clock.now_ms()

    async def _emit_system(self, name: SystemEvent) -> None:
        if not self._system_events or self._emit is None:
            return
        now = self._clock.now_ms()
        await self._emit(
            Event(
                platform=self.status.platform,
                room=self.status.room,
                kind=EventKind.SYSTEM,
                ts=now,
                received_ts=now,
                event=str(name),
            )
        )

    async def _on_message(self, data: str | bytes) -> None:
        raise NotImplementedError


class GenericWsClient(ReconnectingWsSource):
    """Connects out to a websocket that pushes generic-JSON events; duplicates after a reconnect are dropped.

    Args:
        url: ws:// or wss:// address of the upstream.
        room: livebot room that overrides every event's `room` (and enables source_up/source_down events);
            None keeps each event's own room.
        token: sent as `Authorization: Bearer <token>`.
    """

    def __init__(
        self,
        url: str,
        *,
        hasher: ViewerHasher,
        room: str | None = None,
        token: str | None = None,
        clock: Clock | None = None,
        policy: ReconnectPolicy | None = None,
        store_names: bool = False,
        name: str = "generic-ws",
        dedupe_capacity: int = 2048,
        heartbeat_s: float | None = 30.0,
        system_events: bool = True,
    ) -> None:
        status = SourceStatus(name=name, platform=GENERIC_PLATFORM, room=room or ANY_ROOM)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        super().__init__(
            url,
            status=status,
            clock=clock,
            policy=policy,
            headers=headers,
            heartbeat_s=heartbeat_s,
            max_msg_size=MAX_MESSAGE_BYTES,
            system_events=system_events,
        )
        self._ingest = _GenericIngest(
            status,
            self._log,
            hasher=hasher,
            clock=self._clock,
            room=room,
            store_names=store_names,
            dedupe_capacity=dedupe_capacity,
        )

    @property
    def duplicates(self) -> int:
        return self._ingest.duplicates

    @property
    def ts_skewed(self) -> int:
        return self._ingest.ts_skewed

    async def _on_message(self, data: str | bytes) -> None:
        assert self._emit is not None  # set by run() before connecting
        await self._ingest.feed(data, self._emit)

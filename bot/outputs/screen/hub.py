"""The websocket hub: fans snapshots and suggestions out to every page, takes control actions back.

Each client has its own writer task and its own queues, so one slow tablet on bad Wi-Fi never delays
the others. Snapshots are replaceable (the newest one says everything an older one did), so a client's
snapshot queue is short and drops its oldest entry when full. Suggestions, statuses and action results
are never dropped: a client that falls `max_pending_messages` behind is disconnected instead, and the
page reconnects and receives the current snapshot and the pending suggestions again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.clock import Clock
from bot.errors import LivebotError, ProtocolError
from bot.outputs.screen.protocol import Action, dumps, parse_message

log = logging.getLogger(__name__)

SnapshotProvider = Callable[[], Mapping[str, Mapping[str, Any]]]
"""Returns {room: snapshot dict}; called once per tick, whatever the number of clients."""
SnapshotSteps = Callable[[], AsyncIterator[tuple[str, Mapping[str, Any]]]]
"""Optional: the same snapshots one room at a time, so the 2 Hz loop lets other work run between rooms
(the periodic broadcast uses it; a page that just connected still gets `SnapshotProvider` at once)."""
ActionHandler = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
"""(room, validated action dict) → result dict: `ok` (default True), optional `error`, `message`,
and `suggestion` (the updated Suggestion JSON, which the hub then pushes to every page)."""

MAX_BAD_MESSAGES = 10
"""Rejected page messages tolerated on one socket before it is closed as a policy violation."""
ACTION_TIMEOUT_S = 10.0
MAX_SUGGESTIONS_PER_ROOM = 200

_ERRORS_ZH = {
    "malformed": "消息格式不正确，已忽略",
    "binary": "不支持二进制消息",
    "forbidden": "没有场控权限：请使用场控口令打开 /control",
    "unknown_room": "没有这个直播间",
    "no_room": "请先选择直播间",
    "timeout": "操作超时，请重试",
    "internal": "服务器内部错误，操作未完成",
}


@dataclass(slots=True)
class HubStats:
    clients: int = 0
    connections: int = 0
    snapshots_sent: int = 0
    snapshots_dropped: int = 0
    suggestions: int = 0
    actions: int = 0
    rejected: int = 0
    slow_disconnects: int = 0


class Client:
    """One connected page: its socket, its rights and its two outbound queues."""

    _ids = itertools.count(1)

    def __init__(
        self, ws: web.WebSocketResponse, *, can_control: bool, peer: str, max_pending_messages: int,
        max_pending_snapshots: int, send_timeout_s: float, stats: HubStats,
    ) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self.can_control = can_control
        self.peer = peer
        self.bad_messages = 0
        self._messages: deque[str] = deque()
        self._snapshots: deque[str] = deque(maxlen=max_pending_snapshots)
        self._max_messages = max_pending_messages
        self._send_timeout = send_timeout_s
        self._stats = stats
        self._wake = asyncio.Event()
        self._closing = False
        self._close_code: int = WSCloseCode.GOING_AWAY
        self._close_reason = ""
        self.task: asyncio.Task[None] | None = None

    def push_snapshot(self, data: str) -> None:
        if self._closing:
            return
        if len(self._snapshots) == self._snapshots.maxlen:
            self._stats.snapshots_dropped += 1  # deque(maxlen) drops the oldest on append
        self._snapshots.append(data)
        self._wake.set()

    def push(self, data: str) -> None:
        """Queue a message that must not be lost; a client too far behind is disconnected instead."""
        if self._closing:
            return
        if len(self._messages) >= self._max_messages:
            self._stats.slow_disconnects += 1
            log.warning("screen client %d (%s) is %d messages behind; disconnecting it", self.id, self.peer,
                        len(self._messages))
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")
            return
        self._messages.append(data)
        self._wake.set()

    def close(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        self._messages.clear()
        self._snapshots.clear()
        self._close_code = code
        self._close_reason = reason
        self._wake.set()

    async def write_loop(self) -> None:
        """The only coroutine that writes to this socket; suggestions go out before snapshots."""
        try:
            while not self._closing:
                await self._wake.wait()
                self._wake.clear()
                while (self._messages or self._snapshots) and not self._closing:
                    if self._messages:
                        data = self._messages.popleft()
                    else:
                        data = self._snapshots.popleft()
                        self._stats.snapshots_sent += 1
                    async with asyncio.timeout(self._send_timeout):
                        await self.ws.send_str(data)
        except TimeoutError:
            log.warning("screen client %d (%s) did not take a frame in %.0fs; disconnecting it", self.id,
                        self.peer, self._send_timeout)
            self._stats.slow_disconnects += 1
            self.close(WSCloseCode.TRY_AGAIN_LATER, "too slow")
        except (ConnectionError, RuntimeError) as e:
            # The page went away mid-send; the read side sees the close and unregisters the client.
            log.debug("screen client %d (%s) send failed: %s", self.id, self.peer, e)
            self._closing = True
        if self._closing and not self.ws.closed:
            with contextlib.suppress(Exception):
                await self.ws.close(code=self._close_code, message=self._close_reason.encode())


class Hub:
    """Connected pages, the 2 Hz snapshot loop, the suggestion registry and action routing."""

    def __init__(
        self,
        *,
        snapshot_provider: SnapshotProvider,
        action_handler: ActionHandler,
        clock: Clock,
        snapshot_hz: float = 2.0,
        snapshot_steps: SnapshotSteps | None = None,
        max_pending_messages: int = 1000,
        max_pending_snapshots: int = 2,
        send_timeout_s: float = 10.0,
    ) -> None:
        if snapshot_hz <= 0:
            raise ValueError("snapshot_hz must be positive")
        self._provider = snapshot_provider
        self._steps = snapshot_steps
        self._handler = action_handler
        self._clock = clock
        self.snapshot_hz = snapshot_hz
        self._period_ms = round(1000 / snapshot_hz)
        self._max_pending_messages = max_pending_messages
        self._max_pending_snapshots = max_pending_snapshots
        self._send_timeout = send_timeout_s
        self.clients: set[Client] = set()
        self.stats = HubStats()
        self._suggestions: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self._last_snapshot: str | None = None
        self._last_snapshot_ms = 0
        self._rooms: list[str] = []
        self._provider_failures = 0
        self._rejections: Counter[str] = Counter()

    # -- outbound ---------------------------------------------------------------------------------

    def _snapshot_message(self) -> str:
        return self._encode_snapshot(self._clock.now_ms(), dict(self._provider()))

    def _encode_snapshot(self, now: int, rooms: dict[str, Any]) -> str:
        self._rooms = list(rooms)
        data = dumps({"type": "snapshot", "server_ms": now, "rooms": rooms})
        self._last_snapshot, self._last_snapshot_ms = data, now
        return data

    def _snapshot_failed(self) -> None:
        # A provider bug must not kill the loop: pages show the stale banner, the log says why.
        self._provider_failures += 1
        if self._provider_failures == 1 or self._provider_failures % 100 == 0:
            log.exception("screen snapshot failed (%d times so far)", self._provider_failures)

    def broadcast_snapshot(self) -> None:
        """Serialise one snapshot and queue it for every client (the same string for all)."""
        try:
            data = self._snapshot_message()
        except Exception:
            self._snapshot_failed()
            return
        self._push_snapshot(data)

    async def broadcast_snapshot_stepwise(self) -> None:
        """`broadcast_snapshot`, built room by room through `snapshot_steps` (falls back to the provider)."""
        if self._steps is None:
            self.broadcast_snapshot()
            return
        try:
            now = self._clock.now_ms()
            rooms = {room: snap async for room, snap in self._steps()}
            data = self._encode_snapshot(now, rooms)
        except Exception:
            self._snapshot_failed()
            return
        self._push_snapshot(data)

    def _push_snapshot(self, data: str) -> None:
        for c in self.clients:
            c.push_snapshot(data)

    async def run_snapshots(self) -> None:
        """Broadcast at `snapshot_hz` on the injected clock until cancelled."""
        next_ms = self._clock.now_ms()
        while True:
            if self.clients or self._steps is None:
                await self.broadcast_snapshot_stepwise()
            next_ms += self._period_ms
            now = self._clock.now_ms()
            if next_ms <= now:
                next_ms = now + self._period_ms  # fell behind (or the clock jumped): skip, never burst
            await self._clock.sleep((next_ms - now) / 1000)

    def publish_suggestion(self, room: str, suggestion: Mapping[str, Any]) -> None:
        """Remember the suggestion (latest state wins) and push it to every page now."""
        s = dict(suggestion)
        sid = str(s.get("id", ""))
        if not sid:
            raise ValueError("a suggestion needs an id")
        s["room"] = room
        reg = self._suggestions.setdefault(room, OrderedDict())
        reg[sid] = s
        reg.move_to_end(sid)
        while len(reg) > MAX_SUGGESTIONS_PER_ROOM:
            reg.popitem(last=False)
        self.stats.suggestions += 1
        data = dumps({"type": "suggestion", **s})
        for c in self.clients:
            c.push(data)

    def publish_status(self, fields: Mapping[str, Any], room: str | None = None) -> None:
        data = dumps(self._status(fields, room))
        for c in self.clients:
            c.push(data)

    def _status(self, fields: Mapping[str, Any], room: str | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "status", "server_ms": self._clock.now_ms()}
        if room is not None:
            msg["room"] = room
        msg.update(fields)
        return msg

    def pending_suggestions(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Suggestions still waiting for a decision, oldest first (what a new page must see)."""
        now = self._clock.now_ms() if now_ms is None else now_ms
        out = []
        for reg in self._suggestions.values():
            for s in reg.values():
                expires = s.get("expires_ts")
                if s.get("state", "pending") == "pending" and (not isinstance(expires, int) or expires > now):
                    out.append(s)
        return out

    def suggestion(self, room: str, sid: str) -> dict[str, Any] | None:
        reg = self._suggestions.get(room)
        return None if reg is None else reg.get(sid)

    # -- one connection ---------------------------------------------------------------------------

    async def serve(self, ws: web.WebSocketResponse, *, can_control: bool, peer: str) -> None:
        """Run one prepared socket until it closes: greet, stream, and answer its actions."""
        client = Client(
            ws, can_control=can_control, peer=peer, max_pending_messages=self._max_pending_messages,
            max_pending_snapshots=self._max_pending_snapshots, send_timeout_s=self._send_timeout,
            stats=self.stats,
        )
        self.clients.add(client)
        self.stats.clients = len(self.clients)
        self.stats.connections += 1
        client.task = asyncio.create_task(client.write_loop(), name=f"screen-client-{client.id}")
        log.debug("screen client %d connected from %s (control=%s)", client.id, peer, can_control)
        try:
            self._greet(client)
            await self._read_loop(client)
        finally:
            self.clients.discard(client)
            self.stats.clients = len(self.clients)
            client.close()
            with contextlib.suppress(asyncio.CancelledError):
                await client.task
            log.debug("screen client %d disconnected (code %s)", client.id, ws.close_code)

    def _greet(self, client: Client) -> None:
        now = self._clock.now_ms()
        if self._last_snapshot is None or now - self._last_snapshot_ms >= self._period_ms:
            try:
                self._snapshot_message()
            except Exception:
                log.exception("screen snapshot failed while greeting client %d", client.id)
        client.push(dumps(self._status(
            {"hello": True, "can_control": client.can_control, "rooms": self._rooms,
             "snapshot_hz": self.snapshot_hz}, None,
        )))
        if self._last_snapshot is not None:
            # Queued in order (not as a replaceable snapshot): hello → snapshot → pending suggestions.
            client.push(self._last_snapshot)
        for s in self.pending_suggestions(now):
            client.push(dumps({"type": "suggestion", **s}))

    async def _read_loop(self, client: Client) -> None:
        ws = client.ws
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await self._on_text(client, msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._reject(client, "binary", "binary frame")
            elif msg.type is WSMsgType.ERROR:
                # aiohttp already closed the socket (1009 for an oversized frame, 1002 for a broken one).
                self._log_rejection(client, "ws_error", str(ws.exception()))
                break
            if client.bad_messages >= MAX_BAD_MESSAGES:
                log.warning("screen client %d (%s) sent %d bad messages; closing it", client.id, client.peer,
                            client.bad_messages)
                client.close(WSCloseCode.POLICY_VIOLATION, "too many bad messages")
                break

    def _log_rejection(self, client: Client, code: str, detail: str) -> None:
        self.stats.rejected += 1
        self._rejections[code] += 1
        n = self._rejections[code]
        # Log the first few of each kind and then every 100th: a broken page must not flood the log.
        if n <= 3 or n % 100 == 0:
            log.warning("screen client %d (%s) message rejected (%s, %d so far): %s", client.id, client.peer,
                        code, n, detail)

    def _reject(self, client: Client, code: str, detail: str, req: str | None = None) -> None:
        client.bad_messages += 1
        self._log_rejection(client, code, detail)
        reply: dict[str, Any] = {"type": "error", "error": code, "message": _ERRORS_ZH.get(code, detail)}
        if req is not None:
            reply["req"] = req
        client.push(dumps(reply))

    async def _on_text(self, client: Client, text: str) -> None:
        try:
            action = parse_message(text)
        except ProtocolError as e:
            self._reject(client, "malformed", str(e))
            return
        reply, updated = await self._run_action(client, action)
        client.push(dumps(reply))
        if updated is not None:
            # After the reply: the acting page learns its result first, then every page gets the update.
            self.publish_suggestion(str(reply["room"]), updated)

    def _result(self, action: Action, room: str | None, ok: bool, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "action_result", "ok": ok, "action": str(action.action), "room": room,
                               "id": action.id}
        if action.req is not None:
            out["req"] = action.req
        out.update(fields)
        return out

    async def _run_action(
        self, client: Client, action: Action
    ) -> tuple[dict[str, Any], Mapping[str, Any] | None]:
        """Check rights and room, call the handler; → (action_result, updated suggestion or None)."""
        if not client.can_control:
            self._log_rejection(client, "forbidden", f"{action.action} without control rights")
            return self._result(action, action.room, False, error="forbidden",
                                message=_ERRORS_ZH["forbidden"]), None
        room = action.room
        if room is None:
            if len(self._rooms) != 1:
                return self._result(action, None, False, error="no_room", message=_ERRORS_ZH["no_room"]), None
            room = self._rooms[0]
        elif self._rooms and room not in self._rooms:
            return self._result(action, room, False, error="unknown_room",
                                message=_ERRORS_ZH["unknown_room"]), None
        self.stats.actions += 1
        payload = action.as_dict() | {"room": room}
        try:
            async with asyncio.timeout(ACTION_TIMEOUT_S):
                result = dict(await self._handler(room, payload))
        except TimeoutError:
            log.error("room=%s screen action %s timed out after %.0fs", room, action.action, ACTION_TIMEOUT_S)
            return self._result(action, room, False, error="timeout", message=_ERRORS_ZH["timeout"]), None
        except LivebotError as e:
            log.warning("room=%s screen action %s failed: %s", room, action.action, e)
            return self._result(action, room, False, error="failed", message=str(e)), None
        except Exception:
            log.exception("room=%s screen action %s crashed", room, action.action)
            return self._result(action, room, False, error="internal", message=_ERRORS_ZH["internal"]), None
        updated = result.pop("suggestion", None)
        if not (isinstance(updated, Mapping) and updated.get("id")):
            updated = None
        ok = bool(result.pop("ok", True))
        log.info("room=%s screen action %s id=%s ok=%s", room, action.action, action.id, ok)
        return self._result(action, room, ok, **result), updated

    # -- shutdown ---------------------------------------------------------------------------------

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, reason: str = "server shutdown") -> None:
        clients: Iterable[Client] = list(self.clients)
        for c in clients:
            c.close(code, reason)
        tasks = [c.task for c in clients if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
